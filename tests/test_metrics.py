"""`serve --metrics` as an operator sees it (docs/operations.md): the
Prometheus exposition parsed with prometheus_client's own parser after
known traffic (counts exact), bad addresses refused before the store is
touched, nothing on TCP without --metrics, systemd's readiness datagram,
the journal's priority prefixes, and the store going down and up."""

import errno
import os
import socket
import subprocess
import sys
import time

import pytest

from flux_annot.wire.client import Client
from flux_annot.errors import AnnotError
from metricsproc import CMD, Serve, listening_tcp_ports, value
from serverproc import NOBODY, is_root, run_as


@pytest.fixture
def served(tmp_path):
    servers = []

    def start(*extra, store=None, env=None, **kw):
        s = Serve(store=store or tmp_path / "annot.db", extra=extra, env=env)
        servers.append(s)
        return s.start(**kw)

    yield start
    for s in servers:
        s.cleanup()


def quiet(c):
    """Let the last batch close and commit (the window is 10 ms)."""
    time.sleep(0.3)
    return c.stats()


def test_counts_after_known_traffic_are_exact(served):
    s = served("--metrics", "127.0.0.1:0")
    uid = os.getuid()
    with Client(s.socket) as c:
        stream = c.events()  # a subscriber, on a connection of its own
        for j in range(1, 6):
            c.submit(j, uid)
        for _ in range(3):
            c.annotate(1, {"workflow": {"step": 1}}, volatile=True)
        for _ in range(2):
            c.annotate(2, {"workflow": {"step": 2}})
        c.memo(1, {"a": 1})
        c.memo(1, {"a": 2}, volatile=True)
        for _ in range(4):
            c.alloc_response({"id": 3, "type": 1, "annotations": {"sched": {"t_estimate": 9.5}}})
        c.get(1)
        c.get(2)
        with pytest.raises(AnnotError) as e:
            c.get(999)
        assert e.value.errno == errno.ENOENT
        with pytest.raises(AnnotError) as e:
            c.rpc("job-manager.no-such-topic", {})
        assert e.value.errno == errno.ENOSYS
        with pytest.raises(AnnotError) as e:  # EINVAL from the frame decoder
            c.annotate(1, {"workflow": {"": 1}})
        assert e.value.errno == errno.EINVAL
        c.list()
        st = quiet(c)  # one stats request
        snap, text = s.scrape()
        next(stream)  # the subscription is live
        want = {
            "job-manager.submit": 5,
            "job-manager.annotate": 3 + 2 + 1,
            "job-manager.memo": 2,
            "job-manager.alloc-response": 4,
            "job-manager.getattr": 3,
            "job-manager.list": 1,
            "job-manager.events": 1,
            "job-manager.stats": 1,
            "job-manager.state": 0,
            "unknown": 1,
        }
        for topic, n in want.items():
            assert value(snap, "flux_annot_requests_total", topic=topic) == n, topic
        assert value(snap, "flux_annot_rejections_total", reason="unknown_job") == 1
        assert value(snap, "flux_annot_rejections_total", reason="invalid") == 1
        assert value(snap, "flux_annot_rejections_total", reason="rate") == 0
        assert value(snap, "flux_annot_protocol_errors_total") == 2  # ENOSYS, EINVAL frame
        assert value(snap, "flux_annot_jobs", state="SCHED") == 5
        assert value(snap, "flux_annot_subscribers") == 1
        assert value(snap, "flux_annot_streams") == 1
        assert value(snap, "flux_annot_connections") == 2  # the client's, the stream's
        assert value(snap, "flux_annot_store_up") == 1
        assert value(snap, "flux_annot_ready") == 1
        # the same figures `stats` shows, and one commit per batch, each in the histogram
        assert value(snap, "flux_annot_batches_total") == st["batches"] > 0
        assert value(snap, "flux_annot_published_entries_total") == st["entries_published"]
        assert st["entries_published"] >= 5 + 2  # 5 transitions, jobs 1..3 annotated
        assert value(snap, "flux_annot_commit_duration_seconds_count") == st["batches"]
        assert value(snap, "flux_annot_commit_duration_seconds_bucket", le="+Inf") == st["batches"]
        assert value(snap, "flux_annot_commit_duration_seconds_sum") > 0
        assert value(snap, "flux_annot_seq") == st["seq"]
        assert value(snap, "flux_annot_events_per_second") > 0
        assert value(snap, "process_resident_memory_bytes") > 1 << 20
        assert value(snap, "flux_annot_table_memory_bytes") == st["memory_bytes"]
        assert "# TYPE flux_annot_commit_duration_seconds histogram" in text
        # more of the same moves the counters by exactly that much
        for _ in range(7):
            c.annotate(1, {"workflow": {"step": 3}}, volatile=True)
        snap2, _ = s.scrape()
        assert value(snap2, "flux_annot_requests_total", topic="job-manager.annotate") == 6 + 7
        stream.close()
    assert s.stop() == 0


@pytest.mark.skipif(not is_root(), reason="a guest needs another uid (root runs the suite in CI)")
def test_guest_refusals_are_counted_by_reason(served, tmp_path):
    cfg = tmp_path / "site.toml"
    cfg.write_text("[limits]\nguest_rate = 0.1\nguest_burst = 3\n")
    s = served("--metrics", "127.0.0.1:0", "--config", str(cfg))
    with Client(s.socket) as c:
        c.submit(1, NOBODY)

    def guest():
        out = []
        with Client(s.socket) as g:
            for patch in ({"sched": {"x": 1}}, {"user": {"x": "y" * 5000}}):
                try:
                    g.annotate(1, patch)
                except AnnotError as e:
                    out.append(e.errno)
            for _ in range(2):  # the second one finds the bucket empty
                try:
                    g.get(1)
                    out.append(0)
                except AnnotError as e:
                    out.append(e.errno)
        return out

    got = run_as(NOBODY, guest)["value"]
    assert got == [errno.EPERM, errno.E2BIG, 0, errno.EAGAIN]
    snap, _ = s.scrape()
    assert value(snap, "flux_annot_rejections_total", reason="permission") == 1
    assert value(snap, "flux_annot_rejections_total", reason="payload_size") == 1
    assert value(snap, "flux_annot_rejections_total", reason="rate") == 1
    assert value(snap, "flux_annot_requests_total", topic="job-manager.annotate") == 2
    assert value(snap, "flux_annot_requests_total", topic="job-manager.getattr") == 2
    assert value(snap, "flux_annot_guest_rate_buckets") == 1


def test_metrics_address_from_the_config_file(served, tmp_path):
    cfg = tmp_path / "site.toml"
    cfg.write_text('[metrics]\nlisten = "127.0.0.1:0"\n')
    s = served("--config", str(cfg))
    assert s.url.startswith("http://127.0.0.1:")
    snap, _ = s.scrape()
    assert value(snap, "flux_annot_store_up") == 1


def _serve_fails(tmp_path, *extra, store=None):
    store = store or tmp_path / "new.db"
    r = subprocess.run(CMD + ["serve", "--socket", str(tmp_path / "s"), "--store", str(store),
                              *extra], capture_output=True, text=True, timeout=60)
    return r


@pytest.mark.parametrize("listen, says", [
    ("9464", "does not parse: expected ADDR:PORT"),
    ("localhost:http", "does not parse: expected ADDR:PORT"),
    ("127.0.0.1:70000", "port 70000 is out of range"),
    (":9464", "the address is missing"),
    ("[::1:9464", "does not parse"),
    ("[nonsense]:9464", "'nonsense' is not an IPv6 address"),
    ("bad host:9464", "is not an address or a host name"),
    ("192.0.2.1:9464", "Cannot assign requested address"),  # not this host's address
])
def test_bad_address_stops_serve_before_the_store(tmp_path, listen, says):
    r = _serve_fails(tmp_path, "--metrics", listen)
    assert r.returncode == 1, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and says in lines[0], r.stderr
    assert lines[0].startswith("flux-annotate: serve: ")
    assert listen in lines[0]
    assert not (tmp_path / "new.db").exists()  # nothing created
    assert not (tmp_path / "new.db.lock").exists()
    assert not (tmp_path / "s").exists()


def test_port_in_use_is_named_before_the_store_lock(served, tmp_path):
    # A service runs on the store; a second serve on the same store whose
    # metrics port is taken names the port, not the store: it stopped
    # before it tried the store's lock. The first one is untouched.
    first = served(store=tmp_path / "annot.db")
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    port = busy.getsockname()[1]
    try:
        r = _serve_fails(tmp_path, "--metrics", f"127.0.0.1:{port}", store=tmp_path / "annot.db")
    finally:
        busy.close()
    assert r.returncode == 1
    assert r.stderr.strip() == (f"flux-annotate: serve: cannot listen for metrics on "
                                f"127.0.0.1:{port}: Address already in use")
    with Client(first.socket) as c:
        c.submit(1, os.getuid())
    # with the port free again, the same command meets the store's lock
    r = _serve_fails(tmp_path, "--metrics", f"127.0.0.1:{port}", store=tmp_path / "annot.db")
    assert r.returncode == 1 and "store is in use" in r.stderr


def test_config_metrics_listen_must_be_a_string(tmp_path):
    cfg = tmp_path / "site.toml"
    cfg.write_text("[metrics]\nlisten = 9464\n")
    r = _serve_fails(tmp_path, "--config", str(cfg))
    assert r.returncode == 1
    assert r.stderr.strip() == ("flux-annotate: serve: config: metrics.listen must be a string, "
                                "not int")
    assert not (tmp_path / "new.db").exists()


def test_without_prometheus_client_metrics_says_what_to_install(tmp_path):
    code = ("import sys; sys.modules['prometheus_client'] = None\n"
            "from flux_annot.cli import main\n"
            "sys.exit(main(sys.argv[1:]))\n")
    r = subprocess.run([sys.executable, "-c", code, "serve", "--socket", str(tmp_path / "s"),
                        "--store", str(tmp_path / "new.db"), "--metrics", "127.0.0.1:0"],
                       capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert r.returncode == 1
    assert r.stderr.strip() == (
        "flux-annotate: serve: --metrics needs prometheus_client (prometheus_client is "
        "missing): pip install 'flux-annot[metrics]'")
    assert not (tmp_path / "new.db").exists()


def test_nothing_listens_on_tcp_without_metrics(served):
    plain = served(store=":memory:")
    assert listening_tcp_ports(plain.proc.pid) == []
    # the same check sees the metrics port when there is one
    with_metrics = served("--metrics", "127.0.0.1:0", store=":memory:")
    port = int(with_metrics.url.rsplit(":", 1)[1].split("/")[0])
    assert listening_tcp_ports(with_metrics.proc.pid) == [port]


def test_readiness_and_stopping_reach_notify_socket(served, tmp_path):
    path = str(tmp_path / "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(60)
    env = dict(os.environ, NOTIFY_SOCKET=path)
    s = served(store=tmp_path / "annot.db", env=env, wait=False)
    msg = sock.recv(4096).decode()
    lines = msg.split("\n")
    assert lines[0] == "READY=1" and lines[1] == f"STATUS=serving on {s.socket}"
    with Client(s.socket) as c:  # ready means it answers
        c.submit(1, os.getuid())
    s.proc.send_signal(15)
    assert sock.recv(4096).decode() == "STOPPING=1"
    assert s.stop() == 0
    sock.close()


def test_log_lines_carry_journald_priorities(tmp_path):
    # stderr is the journal when $JOURNAL_STREAM names it (device:inode)
    s = Serve(store=tmp_path / "annot.db")
    try:
        with open(s.log, "wb"):
            pass
        st = os.stat(s.log)
        s.env = dict(os.environ, JOURNAL_STREAM=f"{st.st_dev}:{st.st_ino}")
        s.start()
        assert s.stop() == 0
        lines = s.stderr_text().splitlines()
        assert lines[0] == f"<6>serving on {s.socket} (store: {tmp_path / 'annot.db'})"
        assert lines[-2:] == ["<6>stopping: committing the open batch, answering waiting "
                              "requests", "<6>stopped"]
        assert all(line.startswith("<6>") for line in lines)
    finally:
        s.cleanup()


def test_store_up_follows_a_failing_store(served, tmp_path):
    db = tmp_path / "annot.db"
    s = served("--metrics", "127.0.0.1:0", store=db)
    with Client(s.socket) as c:
        c.submit(1, os.getuid())
        locker = subprocess.Popen(
            [sys.executable, "-c", "import sqlite3, sys\n"
             "db = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
             "db.execute('BEGIN EXCLUSIVE')\nprint('locked', flush=True)\n"
             "sys.stdin.readline()\ndb.execute('ROLLBACK')\n", str(db)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            assert locker.stdout.readline().strip() == "locked"
            c.annotate(1, {"workflow": {"a": 1}}, volatile=True)  # a batch to commit
            deadline = time.monotonic() + 30
            while c.stats()["store_state"] == "ok":
                assert time.monotonic() < deadline
                time.sleep(0.1)
            snap, _ = s.scrape()
            assert value(snap, "flux_annot_store_up") == 0
            assert value(snap, "flux_annot_store_errors_total") >= 1
        finally:
            locker.stdin.write("\n")
            locker.stdin.flush()
            locker.wait(30)
        deadline = time.monotonic() + 30
        while c.stats()["store_state"] != "ok":
            assert time.monotonic() < deadline
            time.sleep(0.1)
        snap, _ = s.scrape()
        assert value(snap, "flux_annot_store_up") == 1
    assert s.stop() == 0
    log = s.stderr_text()
    assert log.count("durable changes are refused") == 1  # one line down ...
    assert log.count("recovered after") == 1  # ... one line up
    assert "Traceback" not in log


def test_notify_reaches_an_abstract_socket_and_never_fails(monkeypatch):
    from flux_annot.ops import daemon

    name = f"fa-notify-{os.getpid()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(10)
    try:
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert daemon.notify("READY=1", "STATUS=x") is True
        assert sock.recv(100) == b"READY=1\nSTATUS=x"
    finally:
        sock.close()
    # the manager went away: nothing raised, the service goes on
    assert daemon.notify("STOPPING=1") is False
    monkeypatch.delenv("NOTIFY_SOCKET")
    assert daemon.notify("READY=1") is False


def test_before_ready_and_with_a_stalled_loop_a_scrape_still_answers():
    import asyncio
    import threading
    import urllib.request

    from flux_annot.ops.metrics import MetricsEndpoint
    from metricsproc import samples

    ep = MetricsEndpoint("127.0.0.1:0")
    loop = asyncio.new_event_loop()
    t = threading.Thread(target=loop.run_forever)
    t.start()
    release = threading.Event()
    try:
        def scrape():
            with urllib.request.urlopen(ep.url(), timeout=30) as r:
                return samples(r.read().decode())

        # before the service is up (its start-up replay): not ready, the process shown
        snap = scrape()
        assert value(snap, "flux_annot_ready") == 0
        assert value(snap, "flux_annot_loop_responsive") == 1
        assert value(snap, "process_resident_memory_bytes") > 0

        class Stalled:  # a server whose loop is busy with something else
            pass

        srv = Stalled()
        srv.loop = loop
        ep.attach(srv)
        loop.call_soon_threadsafe(release.wait, 60)
        snap = scrape()
        assert value(snap, "flux_annot_loop_responsive") == 0
        assert value(snap, "flux_annot_ready") == 0
        assert ("flux_annot_requests_total", (("topic", "job-manager.memo"),)) not in snap
    finally:
        release.set()
        loop.call_soon_threadsafe(loop.stop)
        t.join(30)
        loop.close()
        ep.close()


def test_the_estimate_accuracy_summary_becomes_series():
    # SPEC §17: the accuracy summary of §16 (stats' "accuracy") as series,
    # formatted from a snapshot of a real service with that summary added
    from prometheus_client import CollectorRegistry, generate_latest

    from flux_annot import AnnotationService
    from flux_annot.ops import metrics
    from metricsproc import samples

    svc = AnnotationService()

    class Srv:
        service, hub = svc, svc.hub
        conns, nconn_total, nrequests, nerrors = set(), 0, 0, 0

    snap = metrics.read(Srv())
    snap["events_per_second"] = 0.0
    snap["accuracy"] = {"jobs_with_estimates": 7, "jobs_started": 5, "jobs_never_started": 1,
                        "bad_estimates": 2,
                        "last": {"count": 5, "bias": 12.5, "median_abs": 10.0, "p90_abs": 40.0}}

    class Endpoint:
        def snapshot(self):
            return snap, True

    reg = CollectorRegistry()
    reg.register(metrics.ServiceCollector(Endpoint()))
    got = samples(generate_latest(reg).decode())
    assert value(got, "flux_annot_estimate_jobs", kind="started") == 5
    assert value(got, "flux_annot_estimate_jobs", kind="never_started") == 1
    assert value(got, "flux_annot_estimate_jobs", kind="with_estimates") == 7
    assert value(got, "flux_annot_estimates_invalid_total") == 2
    assert value(got, "flux_annot_estimate_error_seconds", stat="bias") == 12.5
    assert value(got, "flux_annot_estimate_error_seconds", stat="p90_abs") == 40.0
    # no summary (a service without §16's history): no such series
    snap["accuracy"] = None
    got = samples(generate_latest(reg).decode())
    assert not [k for k in got if k[0].startswith("flux_annot_estimate")]
    svc.close()
