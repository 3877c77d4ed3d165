"""`flux-annotate dashboard` over plain HTTP: the token, bad requests, the
event stream, one subscription for many pages, a page that stops reading
(docs/dashboard.md). The page itself is tested in Chromium
(test_dashboard_browser.py)."""

import json
import socket
import subprocess
import sys
import threading
import time

import pytest

from flux_annot import Client, merge, sched

from dashproc import DashboardProc, SSEReader, get, http_raw, status_of, wait_for
from serverproc import ServerProc


@pytest.fixture
def server():
    srv = ServerProc().start()
    yield srv
    srv.cleanup()


@pytest.fixture
def dash(server):
    d = DashboardProc(server.path).start()
    yield d
    d.stop()


def _submit(client, n, start=1):
    for i in range(start, start + n):
        client.submit(i, 0)


def health(dash):
    r = get(dash.host, dash.port, "/healthz?token=" + dash.token)
    return json.loads(r.split(b"\r\n\r\n", 1)[1])


def caught_up(dash, client):
    """Wait until the dashboard's model has the service's last batch."""
    seq = client.stats()["seq"]
    wait_for(lambda: health(dash)["seq"] >= seq, 30, what="the dashboard to catch up")


def test_every_request_without_the_token_is_403(dash):
    for path in ("/", "/events", "/static/dashboard.js", "/static/merge.js", "/healthz",
                 "/nope", "/?token=wrong", "/events?token=" + dash.token[:-1],
                 "/?token=" + dash.token + "x", "/?token=%ff%fe"):
        r = get(dash.host, dash.port, path)
        assert status_of(r) == 403, (path, r[:200])
        assert b"needs its token" in r
    # a cookie with the wrong value is refused too
    r = get(dash.host, dash.port, "/", [("Cookie", f"flux-annot-dashboard-{dash.port}=nope")])
    assert status_of(r) == 403


def test_token_in_url_sets_cookie_and_leaves_the_address_bar(dash):
    r = get(dash.host, dash.port, "/?token=" + dash.token)
    assert status_of(r) == 303
    head = r.split(b"\r\n\r\n")[0].decode()
    assert "Location: /" in head
    cookie = [ln for ln in head.split("\r\n") if ln.lower().startswith("set-cookie:")]
    assert len(cookie) == 1
    assert f"flux-annot-dashboard-{dash.port}={dash.token}" in cookie[0]
    assert "HttpOnly" in cookie[0] and "SameSite=Strict" in cookie[0]
    # the cookie alone now opens the page and its files
    c = [("Cookie", f"flux-annot-dashboard-{dash.port}={dash.token}")]
    page = get(dash.host, dash.port, "/", c)
    assert status_of(page) == 200
    assert b"<title>flux-annot dashboard</title>" in page
    assert b"Content-Security-Policy: default-src 'none'" in page
    for name, marker in (("merge.js", b"FluxMerge"), ("dashboard.js", b"EventSource"),
                         ("dashboard.css", b".tl-bar")):
        r = get(dash.host, dash.port, "/static/" + name, c)
        assert status_of(r) == 200 and marker in r, name


def test_bad_requests_get_4xx_and_the_dashboard_keeps_serving(dash):
    t = dash.token
    cases = [
        (b"GARBAGE\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n", 400),
        (b"\x00\xff\xfe binary\r\n\r\n", 400),
        (f"GET /nope?token={t} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode(), 404),
        (f"GET /static/..%2fdashboard.py?token={t} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
         .encode(), 404),
        (f"GET /static/../dashboard.py?token={t} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
         .encode(), 404),
        (f"POST /events?token={t} HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
         f"Connection: close\r\n\r\n{{}}".encode(), 405),
        (f"GET /?token={t} HTTP/1.1\r\nHost: x\r\nX-Big: {'a' * 20000}\r\n\r\n".encode(), 400),
    ]
    for data, want in cases:
        r = http_raw(dash.host, dash.port, data)
        got = status_of(r)
        assert got is not None and 400 <= got < 500, (data[:60], r[:200])
        assert got == want or (want == 400 and got in (400, 431)), (data[:60], r[:200])
    # half a request, then the client goes away
    s = socket.create_connection((dash.host, dash.port))
    s.sendall(b"GET /events?tok")
    s.close()
    assert dash.proc.poll() is None
    r = get(dash.host, dash.port, "/healthz?token=" + t)
    assert status_of(r) == 200
    assert json.loads(r.split(b"\r\n\r\n", 1)[1])["status"] == "live"


def test_stream_starts_with_a_snapshot_then_relays_deltas(server, dash):
    with Client(server.path) as c:
        _submit(c, 3)
        c.annotate(1, {"user": {"a": 1, "b": {"c": 2}}})
        caught_up(dash, c)
        page = SSEReader(dash.host, dash.port, dash.token)
        try:
            ev, data = page.next()
            assert ev == "snapshot"
            snap = json.loads(data)
            assert sorted(j[0] for j in snap["jobs"]) == ["1", "2", "3"]
            assert [j for j in snap["jobs"] if j[0] == "1"][0][1:] == [
                0, "SCHED", {"user": {"a": 1, "b": {"c": 2}}}]
            assert snap["status"] == "live"
            c.annotate(1, {"user": {"b": None}})
            c.submit(2**63 + 5, 0)  # an id a JavaScript number cannot hold
            seen = {}
            owners = {}
            big = str(2**63 + 5)
            # a new job's owner comes with its batch, or in an `owners`
            # frame once the dashboard has asked the service
            while "1" not in seen or big not in seen or big not in owners:
                ev, data = page.next()
                b = json.loads(data)
                owners.update(b.get("owners", {}))
                if ev != "batch":
                    continue
                for jid, patch in b.get("annotations", ()):
                    seen[jid] = patch
                for jid, state, _ts in b.get("transitions", ()):
                    seen[jid] = state
                assert b["seq"] > snap["seq"]
            assert owners[big] == 0
            assert seen["1"] == {"user": {"b": None}}  # the delta, not the whole tree
            assert seen[str(2**63 + 5)] == "SCHED"
        finally:
            page.close()


def test_twenty_pages_cost_the_service_one_subscription(server, dash):
    with Client(server.path) as c:
        _submit(c, 5)
        pages = [SSEReader(dash.host, dash.port, dash.token) for _ in range(20)]
        try:
            for p in pages:
                assert p.next()[0] == "snapshot"
            stats = c.stats()
            assert stats["subscribers"] == 1
            c.annotate(3, {"user": {"x": 1}})
            for p in pages:
                while True:
                    ev, data = p.next()
                    if ev == "batch" and json.loads(data).get("annotations"):
                        assert json.loads(data)["annotations"] == [["3", {"user": {"x": 1}}]]
                        break
            assert c.stats()["subscribers"] == 1
        finally:
            for p in pages:
                p.close()


def test_a_page_that_stops_reading_is_dropped_and_others_go_on(server):
    dash = DashboardProc(server.path, extra=["--page-buffer", str(2 << 20)]).start()
    try:
        with Client(server.path) as c:
            _submit(c, 20)
            stalled = SSEReader(dash.host, dash.port, dash.token, rcvbuf=4096)
            reader = SSEReader(dash.host, dash.port, dash.token)
            assert reader.next()[0] == "snapshot"
            got = {"seq": 0, "error": None}

            def read():  # a page that keeps reading
                try:
                    while True:
                        ev, data = reader.next()
                        if ev == "batch":
                            got["seq"] = json.loads(data)["seq"]
                except Exception as e:  # noqa: BLE001 - reported below
                    got["error"] = e

            t = threading.Thread(target=read, daemon=True)
            t.start()
            rss0 = dash.rss_kib()
            big = "x" * 60000
            # ~30 MB of events: far more than socket buffers and the bound hold
            for i in range(500):
                c.annotate(1 + i % 20, {"site": {"blob": f"{i}{big}"}}, volatile=True)
                if i % 20 == 19:  # the reading page keeps up (the stalled one cannot)
                    seq = c.stats()["seq"]
                    wait_for(lambda: got["seq"] >= seq or got["error"], 30, what="the reader")
            last = c.stats()["seq"]
            wait_for(lambda: health(dash)["dropped_pages"] == 1, 30, what="the stalled page dropped")
            # the stalled page finds its stream closed once it reads what was sent
            stalled.sock.settimeout(10)
            with pytest.raises(EOFError):
                while True:
                    stalled.next()
            # the page that reads got everything
            wait_for(lambda: got["seq"] >= last or got["error"], 30, what="the reading page")
            assert got["error"] is None and got["seq"] >= last
            assert health(dash)["pages"] == 1
            assert dash.rss_kib() - rss0 < 40 * 1024  # about the bound, not 30 MB per page
            assert c.stats()["subscribers"] == 1
            stalled.close()
            reader.close()
    finally:
        dash.stop()


def test_service_restart_banner_status_and_resume(tmp_path):
    srv = ServerProc(store=tmp_path / "annot.db").start()
    dash = DashboardProc(srv.path).start()
    try:
        with Client(srv.path) as c:
            _submit(c, 2)
        page = SSEReader(dash.host, dash.port, dash.token)
        assert page.next()[0] == "snapshot"
        srv.stop()
        while True:
            ev, data = page.next()
            if ev == "status" and json.loads(data)["status"] == "disconnected":
                break
        srv.start()
        with Client(srv.path) as c:
            c.memo(2, {"back": True})
        got_live = False
        while True:
            ev, data = page.next()
            msg = json.loads(data)
            if ev == "status" and msg["status"] == "live" or ev == "snapshot":
                got_live = True
            if ev in ("batch", "snapshot") and (
                ["2", {"user": {"back": True}}] in msg.get("annotations", [])
                or any(j[0] == "2" and j[3] == {"user": {"back": True}} for j in msg.get("jobs", []))
            ):
                break
        assert got_live
        page.close()
    finally:
        dash.stop()
        srv.cleanup()


def test_cli_usage_errors_and_a_busy_port(dash):
    fa = [sys.executable, "-m", "flux_annot", "dashboard", "--socket", dash.socket_path]
    r = subprocess.run(fa + ["--port", "70000"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "--port must be between 0 and 65535" in r.stderr
    r = subprocess.run(fa + ["--port", str(dash.port)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 1
    assert f"cannot listen on 127.0.0.1:{dash.port}" in r.stderr


def test_sigterm_ends_the_dashboard_and_its_pages(dash):
    page = SSEReader(dash.host, dash.port, dash.token)
    assert page.next()[0] == "snapshot"
    t0 = time.monotonic()
    assert dash.stop() == 0
    assert time.monotonic() - t0 < 15
    with pytest.raises((EOFError, OSError)):
        while True:
            page.next()
    page.close()


def test_without_aiohttp_the_command_says_which_extra_to_install():
    code = ("import sys; sys.modules['aiohttp'] = None\n"
            "from flux_annot.cli import main\n"
            "sys.exit(main(['dashboard']))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert "needs the dashboard extra (aiohttp is missing)" in r.stderr
    assert "pip install 'flux-annot[dashboard]'" in r.stderr


def test_a_service_that_lost_its_state_gives_every_page_a_new_snapshot(server, dash):
    # an in-memory service restarts empty: the dashboard cannot resume
    # (its seq is in the new service's future), resynchronises, and every
    # page is sent the new state whole
    with Client(server.path) as c:
        _submit(c, 4)
        caught_up(dash, c)
    pages = [SSEReader(dash.host, dash.port, dash.token) for _ in range(3)]
    try:
        for p in pages:
            assert len(json.loads(p.next()[1])["jobs"]) == 4
        server.stop()
        server.start()
        with Client(server.path) as c:
            c.submit(100, 0)
            c.memo(100, {"fresh": 1})
        for p in pages:
            statuses, jobs = [], None
            while True:
                ev, data = p.next()
                msg = json.loads(data)
                if ev == "status":
                    statuses.append(msg["status"])
                elif ev == "snapshot":
                    jobs = {j[0]: j[3] for j in msg["jobs"]}
                elif ev == "batch" and jobs is not None:
                    for jid, patch in msg.get("annotations", ()):
                        jobs[jid] = merge(jobs.get(jid), patch)
                    for jid, *_ in msg.get("transitions", ()):
                        jobs.setdefault(jid, None)
                if jobs is not None and jobs.get("100") == {"user": {"fresh": 1}}:
                    break
            assert "1" not in jobs and list(jobs) == ["100"]
            assert "disconnected" in statuses and "resync" in statuses
        assert health(dash)["status"] == "live"
    finally:
        for p in pages:
            p.close()
