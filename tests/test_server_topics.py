"""Every topic of docs/protocol.md over a real server process, and their errors."""

import errno
import json
import os
import signal
import struct
import time

import pytest

from flux_annot.wire.client import Client
from flux_annot.errors import (
    AnnotError,
    AnnotPermissionError,
    AnnotValueError,
    LimitError,
    UnknownJobError,
)
from serverproc import Raw, ServerProc


@pytest.fixture
def server(tmp_path):
    s = ServerProc(store=tmp_path / "annot.db").start()
    yield s
    s.cleanup()


@pytest.fixture
def client(server):
    with Client(server.path) as c:
        yield c


ME = os.getuid()


def test_socket_modes(server):
    st = os.stat(server.path)
    assert oct(st.st_mode & 0o777) == "0o666"
    assert oct(os.stat(os.path.dirname(server.path)).st_mode & 0o777) == "0o755"


def test_submit_get_annotate_memo_list(client):
    client.submit(1, ME, t_submit=1700000000.5)
    client.submit(2, 4242)
    assert client.get(1) == {"id": 1, "userid": ME, "state": "SCHED", "annotations": None}
    client.annotate(1, {"workflow": {"step": 3}})
    client.annotate(1, {"site": {"x": [1, 2]}}, volatile=True)
    client.memo(1, {"note": "hi"})
    assert client.get(1)["annotations"] == {
        "workflow": {"step": 3},
        "site": {"x": [1, 2]},
        "user": {"note": "hi"},
    }
    client.annotate(1, '{"site": null}')  # JSON text is accepted too
    assert "site" not in client.get(1)["annotations"]
    jobs = client.list()
    assert [j["id"] for j in jobs] == [1, 2]
    assert [j["id"] for j in client.list(userid=4242)] == [2]
    assert len(client.list(max=1)) == 1
    assert client.list(states=["RUN"]) == []


def test_alloc_response_and_state(client):
    client.submit(5, ME)
    assert client.alloc_response({"id": 5, "type": 1, "annotations": {"sched": {"t": 1}}}) == {}
    assert client.get(5)["annotations"] == {"sched": {"t": 1}}
    client.alloc_response({"id": 5, "type": 0, "annotations": {"sched": {"r": "rank0"}}})
    assert client.get(5)["state"] == "RUN"
    assert client.alloc_response({"id": 5, "type": 1, "annotations": {"sched": {"t": 2}}}) == {
        "ignored": True
    }
    client.state(5, "INACTIVE", note="done")
    assert client.get(5)["state"] == "INACTIVE"
    with pytest.raises(UnknownJobError, match="inactive"):
        client.annotate(5, {"user": {"a": 1}})


def test_stats(client):
    client.submit(1, ME)
    st = client.stats()
    assert st["jobs"]["SCHED"] == 1
    assert st["server"]["connections"] >= 1
    assert st["server"]["requests"] >= 2


def test_events_stream_snapshot_live_and_end_on_shutdown(server, client):
    client.submit(1, ME)
    client.annotate(1, {"workflow": {"a": 1}})
    ev = client.events(snapshot=True)
    snap = next(ev)
    assert snap["snapshot"] is True
    assert [j["id"] for j in snap["jobs"]] == [1]
    client.annotate(1, {"workflow": {"a": 2}})
    live = next(ev)
    assert live["seq"] == snap["seq"] + 1
    assert live["annotations"] == [[1, {"workflow": {"a": 2}}]]
    assert server.stop() == 0  # SIGTERM: the stream ends with ENODATA
    assert list(ev) == []


def test_errors_are_the_service_errors(client):
    client.submit(1, ME)
    with pytest.raises(AnnotError) as ei:
        client.submit(1, ME)
    assert ei.value.errno == errno.EEXIST
    with pytest.raises(UnknownJobError, match="unknown job id"):
        client.annotate(99, {"user": {"a": 1}})
    with pytest.raises(AnnotPermissionError, match="sched"):
        client.annotate(1, {"sched": {"a": 1}})
    with pytest.raises(AnnotValueError):
        client.annotate(1, {"user": {"a.b": 1}})
    assert client.get(1)["annotations"] is None  # nothing changed
    with pytest.raises(AnnotValueError) as ei:
        client.rpc("job-manager.annotate", {"id": "x", "annotations": {}})
    assert ei.value.errno == errno.EINVAL and "'id'" in str(ei.value)
    with pytest.raises(AnnotValueError, match="'annotations'"):
        client.rpc("job-manager.annotate", {"id": 1, "annotations": [1]})
    with pytest.raises(AnnotValueError, match="'volatile'"):
        client.rpc("job-manager.annotate", {"id": 1, "annotations": {}, "volatile": 1})
    with pytest.raises(AnnotValueError, match="'userid'"):
        client.rpc("job-manager.submit", {"id": 7})
    with pytest.raises(AnnotError) as ei:
        client.rpc("job-manager.nope", {})
    assert ei.value.errno == errno.ENOSYS
    assert client.get(1)["annotations"] is None
    assert [j["id"] for j in client.list()] == [1]


@pytest.mark.parametrize(
    "body, errnum, field",
    [
        (b"\xc3\x28", errno.EPROTO, "UTF-8"),
        (b"{not json", errno.EPROTO, "JSON"),
        (b"[]", errno.EPROTO, "object"),
        (b'{"topic":"job-manager.stats","payload":{}}', errno.EPROTO, "matchtag"),
        (b'{"topic":7,"matchtag":3,"payload":{}}', errno.EPROTO, "topic"),
        (b'{"topic":"job-manager.stats","matchtag":3}', errno.EPROTO, "payload"),
        (b'{"topic":"job-manager.stats","matchtag":3,"payload":"x"}', errno.EPROTO, "payload"),
        (b'{"topic":"job-manager.getattr","matchtag":3,"payload":{"id":-1}}', errno.EINVAL, "id"),
        (b'{"topic":"job-manager.list","matchtag":3,"payload":{"max":"9"}}', errno.EINVAL, "max"),
        (b'{"topic":"job-manager.events","matchtag":3,"payload":{"since":1.5}}', errno.EINVAL, "since"),
    ],
)
def test_malformed_frames_keep_the_connection(server, body, errnum, field):
    raw = Raw(server.path)
    raw.send_body(body)
    resp = raw.recv()
    assert resp["errnum"] == errnum
    assert field in resp["errstr"]
    raw.send("job-manager.stats", 11, {})  # still usable
    resp = raw.recv()
    assert resp["matchtag"] == 11 and resp["errnum"] == 0
    raw.close()


def test_oversize_frame_emsgsize_then_close(server, client):
    raw = Raw(server.path)
    # Only the header: the server must answer from the length alone.
    raw.sock.sendall(struct.pack(">I", (1 << 20) + 1))
    resp = raw.recv()
    assert resp["errnum"] == errno.EMSGSIZE and resp["matchtag"] == 0
    assert raw.recv() is None  # closed
    raw.close()
    with pytest.raises(LimitError):  # the client refuses it locally
        client.annotate(1, {"user": {"x": "a" * (1 << 20)}})
    client.submit(1, ME)  # the server goes on
    assert client.get(1)["id"] == 1


def test_disconnect_mid_frame(server, client):
    raw = Raw(server.path)
    frame = b'{"topic":"job-manager.submit","matchtag":1,"payload":{"id":3,"userid":0}}'
    raw.sock.sendall(struct.pack(">I", len(frame)) + frame[:20])
    raw.close()
    client.submit(4, ME)
    with pytest.raises(UnknownJobError):
        client.get(3)
    for _ in range(100):  # the server notices the close within a few turns
        if client.stats()["server"]["connections"] == 1:
            break
        time.sleep(0.02)
    assert client.stats()["server"]["connections"] == 1


def test_restart_on_the_same_store(tmp_path):
    s = ServerProc(store=tmp_path / "a.db").start()
    try:
        with Client(s.path) as c:
            c.submit(1, ME)
            c.annotate(1, {"workflow": {"kept": True}})
            c.annotate(1, {"site": {"lost": True}}, volatile=True)
        assert s.stop() == 0
        s.start()
        with Client(s.path) as c:
            assert c.get(1)["annotations"] == {"workflow": {"kept": True}}
    finally:
        s.cleanup()


def test_stale_socket_is_replaced_but_live_one_is_refused(tmp_path):
    s = ServerProc(store=":memory:").start()
    try:
        other = ServerProc()
        other.path = s.path
        with pytest.raises(RuntimeError, match="already listening"):
            other.start()
        s.proc.send_signal(signal.SIGKILL)  # leaves a stale socket file
        s.proc.wait()
        s.stop()
        assert os.path.exists(s.path)
        s.start()
        with Client(s.path) as c:
            assert c.stats()["jobs_total"] == 0
    finally:
        s.cleanup()


def test_bad_config_stops_the_server_with_a_message(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text("[batch]\nwindoww = 1\n")
    s = ServerProc(config=cfg)
    with pytest.raises(RuntimeError, match="windoww"):
        s.start()
    s.cleanup()


def test_sigterm_sends_deferred_replies_and_exits_0(server):
    raw = Raw(server.path)
    raw.send("job-manager.submit", 1, {"id": 1, "userid": ME})
    assert raw.recv()["errnum"] == 0
    n = 200
    for i in range(n):
        raw.send("job-manager.annotate", 100 + i, {"id": 1, "annotations": {"w": {"i": i}}})
    os.kill(server.proc.pid, signal.SIGTERM)
    got = set()
    while True:
        r = raw.recv()
        if r is None:
            break
        assert r["errnum"] == 0, r
        got.add(r["matchtag"])
    assert got == set(range(100, 100 + n))
    assert server.stop() == 0
    raw.close()
