"""The service `annot` that `flux-annotate serve --flux` registers with the
broker (SPEC §15, docs/flux.md), called with Flux's own raw RPC
(`flux.Flux(uri).rpc("annot.getattr", ...)`) on a four-broker instance
(`flux start --test-size=4`: every rank a broker process of its own, joined
by Flux's overlay), from rank 0 and from a leaf rank, as the instance
owner and as a real other uid (65534) admitted by the instance's access
configuration. Each answer is compared with what the Unix socket gives.

Needs $FLUX_ANNOT_TEST_FLUX_PREFIX (set by .ci/run; see tests/fluxinst.py).
"""

import collections
import errno
import json
import os
import re
import signal
import struct
import sys
import time

import pytest

from flux_annot.wire.client import Client
from flux_annot.errors import AnnotError
from fluxinst import FluxInstance, Mirror, flux_prefix, flux_pythonpath, submit, wait_for
from serverproc import NOBODY, Raw, is_root, run_as

SIZE = 4
LEAF = SIZE - 1

needs_root = pytest.mark.skipif(not is_root(), reason="dropping to another uid (nobody) needs root")


@pytest.fixture(scope="module")
def inst():
    i = FluxInstance(flux_prefix(), size=SIZE, access_guests=True).start()
    pp = flux_pythonpath(i.prefix)
    if pp not in sys.path:
        sys.path.insert(0, pp)  # Flux's bindings, for the raw RPCs of the tests
    # imported here, before any test forks a guest: uid 65534 cannot read
    # this Python's site-packages (the bindings' yaml, cffi)
    import flux  # noqa: F401
    import flux.constants  # noqa: F401
    import flux.core.inner  # noqa: F401
    yield i
    i.cleanup()


@pytest.fixture(scope="module")
def mirror(inst, tmp_path_factory):
    m = Mirror(inst, tmp_path_factory.mktemp("broker") / "mirror.db").start()
    # Ready is reported once `annot` is registered (serve's third line).
    assert "serving as the service 'annot' of the Flux instance" in m.stderr_text()
    m.wait_synced()
    yield m
    m.cleanup()


def rpc(uri, topic, payload=None):
    """One raw Flux RPC: ("ok", payload) or ("err", errno, sentence)."""
    pp = flux_pythonpath(flux_prefix())
    if pp not in sys.path:
        sys.path.insert(0, pp)  # Flux's bindings
    import flux

    h = flux.Flux(uri)
    try:
        return ["ok", h.rpc(topic, payload).get()]
    except OSError as e:
        return ["err", e.errno, e.strerror]
    finally:
        del h


def sock(mirror, payload_fn):
    """The same call through the Unix socket: ("ok", payload) or ("err", errno, sentence)."""
    try:
        with Client(mirror.socket) as c:
            return ["ok", payload_fn(c)]
    except AnnotError as e:
        return ["err", e.errno, e.message]


def job_in_mirror(mirror, jobid):
    wait_for(f"job {jobid} in the mirror", lambda: sock(mirror, lambda c: c.get(jobid))[0] == "ok")


def test_reads_and_memo_through_the_broker_equal_the_socket(inst, mirror):
    held = submit(inst, "--urgency=0", "sleep", "300")
    other = submit(inst, "--urgency=0", "sleep", "300")
    inst.flux("job", "memo", str(held), "note=held", 'deep={"a":[1,2]}')
    job_in_mirror(mirror, other)
    wait_for("the memo in the mirror",
             lambda: (sock(mirror, lambda c: c.get(held))[1]["annotations"] or {}).get("user"))
    for rank in (0, LEAF):
        uri = inst.rank_uri(rank)
        for jobid in (held, other):
            assert rpc(uri, "annot.getattr", {"id": jobid}) == sock(mirror, lambda c: c.get(jobid))
        assert rpc(uri, "annot.list", {}) == ["ok", {"jobs": sock(mirror, lambda c: c.list())[1]}]
        assert rpc(uri, "annot.list", {"states": ["SCHED"], "max": 1})[1]["jobs"][0]["state"] == "SCHED"
        # an error keeps its errno and sentence
        assert rpc(uri, "annot.getattr", {"id": 123456789}) == sock(mirror, lambda c: c.get(123456789))
        assert rpc(uri, "annot.getattr", {"id": "x"}) == [
            "err", errno.EINVAL, "payload field 'id' must be a job id (an integer)"]
    # A memo from the leaf rank goes to Flux, and is answered once it is back.
    assert rpc(inst.rank_uri(LEAF), "annot.memo", {"id": other, "memo": {"via": "rank3"}}) == ["ok", {}]
    assert inst.jobs()[other]["annotations"] == {"user": {"via": "rank3"}}
    assert sock(mirror, lambda c: c.get(other))[1]["annotations"] == {"user": {"via": "rank3"}}
    # A volatile one is answered without waiting for a commit, and is there too.
    assert rpc(inst.rank_uri(LEAF), "annot.memo",
               {"id": other, "memo": {"v": 1}, "volatile": True}) == ["ok", {}]
    assert sock(mirror, lambda c: c.get(other))[1]["annotations"] == {"user": {"via": "rank3", "v": 1}}
    inst.flux("job", "memo", str(other), "v=null")
    # What Flux owns stays refused, as on the socket.
    for topic, payload in (("annot.submit", {"id": 5, "userid": 0}),
                           ("annot.annotate", {"id": other, "annotations": {"sched": {"x": 1}}})):
        got = rpc(inst.rank_uri(LEAF), topic, payload)
        assert got[:2] == ["err", errno.EPERM] and "Flux instance owns" in got[2], got
    assert rpc(inst.rank_uri(0), "annot.nope", {}) == ["err", errno.ENOSYS, "unknown topic 'annot.nope'"]
    st = rpc(inst.rank_uri(0), "annot.stats")[1]
    assert st["server"]["broker"]["registered"] and st["server"]["broker"]["uri"] == inst.uri
    # one wake-up of the service's loop per request at most (none for the responses)
    import flux

    h = flux.Flux(inst.rank_uri(LEAF))
    for _ in range(200):
        h.rpc("annot.getattr", {"id": other}).get()
    del h
    st2 = rpc(inst.rank_uri(0), "annot.stats")[1]["server"]["broker"]
    b1 = st["server"]["broker"]
    # (a handle that goes away sends annot.disconnect: a message too)
    messages = st2["requests"] - b1["requests"] + st2["disconnects"] - b1["disconnects"]
    assert st2["wakeups"] - b1["wakeups"] <= messages
    for jobid in (held, other):
        inst.flux("cancel", str(jobid))


@needs_root
def test_a_guest_on_a_leaf_rank_sees_and_writes_only_its_own(inst, mirror):
    noted = submit(inst, "--urgency=0", "sleep", "300")
    plain = submit(inst, "--urgency=0", "sleep", "300")
    inst.flux("job", "memo", str(noted), "secret=owner-only")
    wait_for("the memo in the mirror",
             lambda: (sock(mirror, lambda c: c.get(noted))[1]["annotations"] or {}).get("user"))
    job_in_mirror(mirror, plain)
    sent = mirror.stats()["flux"]["memos_sent"]
    uri, path = inst.rank_uri(LEAF), mirror.socket

    def guest():
        out = {"got": rpc(uri, "annot.getattr", {"id": noted}),
               "list": rpc(uri, "annot.list", {}),
               "memo": rpc(uri, "annot.memo", {"id": plain, "memo": {"x": 1}}),
               "big": rpc(uri, "annot.memo", {"id": plain, "memo": {"x": "y" * 5000}})}
        with Client(path) as c:  # the same guest on the socket
            for name, call in (("memo_sock", lambda: c.memo(plain, {"x": 1})),
                               ("big_sock", lambda: c.memo(plain, {"x": "y" * 5000}))):
                try:
                    call()
                    out[name] = "ok"
                except AnnotError as e:
                    out[name] = ["err", e.errno, e.message]
        return out

    r = run_as(NOBODY, guest)
    assert "value" in r, r
    v = r["value"]
    assert v["got"][0] == "ok" and v["got"][1]["userid"] == 0
    assert v["got"][1]["annotations"] is None  # the owner's `user` is not the guest's to read
    assert all("user" not in (j["annotations"] or {}) for j in v["list"][1]["jobs"])
    assert noted in [j["id"] for j in v["list"][1]["jobs"]]
    assert v["memo"] == v["memo_sock"] == ["err", errno.EPERM, "guests can only annotate their own jobs"]
    assert v["big"] == v["big_sock"] and v["big"][:2] == ["err", errno.E2BIG]
    # Nothing reached Flux.
    assert mirror.stats()["flux"]["memos_sent"] == sent
    assert "memo" not in inst.flux("job", "eventlog", str(plain)).stdout
    for jobid in (noted, plain):
        inst.flux("cancel", str(jobid))


@needs_root
def test_the_guest_rate_holds_through_the_broker(inst, mirror):
    uri = inst.rank_uri(LEAF)
    before = mirror.stats()["rejected"].get("rate", 0)

    def flood():
        import flux

        h = flux.Flux(uri)
        # pipelined: all sent first; job 1 is unknown (ENOENT once admitted)
        futs = collections.deque(h.rpc("annot.getattr", {"id": 1}) for _ in range(1000))
        out = {"ok": 0, "eagain": 0, "other": []}
        while futs:
            f = futs.popleft()  # dropped once read: a waited-on future holds an fd
            try:
                f.get()
                out["other"].append("a reply")
            except OSError as e:
                if e.errno == errno.ENOENT:
                    out["ok"] += 1
                elif e.errno == errno.EAGAIN:
                    out["eagain"] += 1
                    out["sentence"] = e.strerror
                else:
                    out["other"].append([e.errno, e.strerror])
        return out

    r = run_as(NOBODY, flood)
    assert "value" in r, r
    v = r["value"]
    assert v["other"] == []
    # burst 400 at 200/s: a thousand requests sent at once cannot all pass
    assert v["eagain"] >= 300 and v["ok"] >= 400, v
    assert "rate" in v["sentence"]
    assert mirror.stats()["rejected"]["rate"] - before == v["eagain"]
    time.sleep(2.5)  # the bucket refills: the guest is served again
    assert run_as(NOBODY, lambda: rpc(uri, "annot.getattr", {"id": 1}))["value"][:2] == [
        "err", errno.ENOENT]


def _socket_reply(path, payload):
    """The socket's reply to a getattr frame with the raw `payload` bytes."""
    raw = Raw(path)
    try:
        body = b'{"topic":"job-manager.getattr","matchtag":7,"payload":' + payload + b"}"
        frame = struct.pack(">I", len(body)) + body
        # an oversized frame is refused from its header (the socket closes
        # then): send only its start
        try:
            raw.sock.sendall(frame if len(body) <= 1 << 20 else frame[:65536])
        except BrokenPipeError:
            pass  # refused from its header (a guest's limit is lower): the reply came first
        r = raw.recv()
    finally:
        raw.close()
    return [r["errnum"] and "err" or "ok", r["errnum"], r.get("errstr")]


def _unplaced(sentence):
    """A sentence without its byte offset (of the frame on the socket, of the
    payload through the broker)."""
    return re.sub(r"at byte \d+", "at byte N", sentence)


DEEP = b'{"id":' * 100_000 + b"1" + b"}" * 100_000
HOSTILE = {
    "not json": b"this is not JSON",
    "deep": DEEP,
    "invalid utf-8": b'{"id":1,"x":"\xff\xfe"}',
    "2 MB": b'{"id":1,"x":"' + b"a" * (2 << 20) + b'"}',
    # a payload that ends the object and adds members cannot change the request
    "members added": b'{"id":1},"matchtag":1,"topic":"job-manager.submit"',
}


def _hostile(uri, path):
    """Each hostile payload through the broker and through the socket, then
    a plain request through the broker (the service serves on)."""
    out = {name: [rpc(uri, "annot.getattr", p), _socket_reply(path, p)]
           for name, p in HOSTILE.items()}
    out["after"] = rpc(uri, "annot.stats")[0]
    return out


@pytest.mark.parametrize("who", ["owner rank 0", "owner leaf", "guest leaf"])
def test_hostile_payloads_get_what_the_socket_gives_and_the_service_serves_on(inst, mirror, who):
    uri = inst.rank_uri(0 if who.endswith("rank 0") else LEAF)
    if who.startswith("guest"):
        if not is_root():
            pytest.skip("dropping to another uid (nobody) needs root")
        r = run_as(NOBODY, lambda: _hostile(uri, mirror.socket))
        assert "value" in r, r
        got = r["value"]
    else:
        got = _hostile(uri, mirror.socket)
    for name in ("not json", "deep", "invalid utf-8"):
        flux_err, sock_err = got[name]
        assert flux_err[:2] == sock_err[:2] and flux_err[0] == "err", (name, got[name])
        assert _unplaced(flux_err[2]) == _unplaced(sock_err[2]), name
    limit = 8 if who.startswith("guest") else 64
    assert got["deep"][0] == ["err", errno.EINVAL, f"payload field 'id': nesting depth exceeds {limit}"]
    assert got["not json"][0][:2] == ["err", errno.EPROTO]
    assert got["invalid utf-8"][0][:2] == ["err", errno.EINVAL]
    # the length differs by the envelope of each transport; the socket then closes
    assert got["2 MB"][0][:2] == got["2 MB"][1][:2] == ["err", errno.EMSGSIZE]
    assert "exceeds the limit of 1048576 bytes" in got["2 MB"][0][2]
    assert got["members added"][0] == ["err", errno.EPROTO, "the payload is not one JSON object"]
    assert got["after"] == "ok"
    assert mirror.proc.poll() is None


class Stream:
    """A streaming `annot.events` client in a process of its own (forked: so
    its end is a real client going away; `uid`: as that user), writing each
    response as a JSON line to a pipe."""

    def __init__(self, inst, uri, uid=None):
        flux_pythonpath(inst.prefix)  # the bindings are on sys.path (the inst fixture)
        r, w = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:  # the child: never returns into pytest
            try:
                os.close(r)
                if uid is not None:
                    os.setgroups([])
                    os.setgid(uid)
                    os.setuid(uid)
                import flux
                from flux.constants import FLUX_RPC_STREAMING

                h = flux.Flux(uri)
                f = h.rpc("annot.events", {"snapshot": True}, flags=FLUX_RPC_STREAMING)
                while True:
                    try:
                        line = json.dumps(f.get())
                    except OSError as e:
                        os.write(w, (json.dumps({"errnum": e.errno}) + "\n").encode())
                        break
                    f.reset()
                    os.write(w, (line + "\n").encode())
            finally:
                os._exit(0)
        os.close(w)
        self.out = os.fdopen(r)

    def next(self, timeout=30):
        import select

        if not select.select([self.out], [], [], timeout)[0]:
            pytest.fail("no response on the stream")
        line = self.out.readline()
        assert line, "the stream's process ended"
        return json.loads(line)

    def kill(self):
        os.kill(self.pid, signal.SIGKILL)
        os.waitpid(self.pid, 0)
        self.out.close()


def subscribers(mirror):
    return mirror.stats()["subscribers"]


def test_events_through_the_broker_and_a_disconnect_forgets_the_stream(inst, mirror):
    jobid = submit(inst, "--urgency=0", "sleep", "300")
    job_in_mirror(mirror, jobid)
    before = subscribers(mirror)
    s = Stream(inst, inst.rank_uri(LEAF))
    try:
        snap = s.next()
        assert snap["snapshot"] is True and jobid in [j["id"] for j in snap["jobs"]]
        assert subscribers(mirror) == before + 1
        inst.flux("job", "memo", str(jobid), "step=7")  # a change made on rank 0
        while True:
            batch = s.next()
            assert batch["seq"] > snap["seq"]
            if [jobid, {"user": {"step": 7}}] in batch.get("annotations", []):
                break
    finally:
        s.kill()  # the client goes away: Flux sends the service annot.disconnect
    wait_for("the service to forget the stream", lambda: subscribers(mirror) == before, 20)
    assert rpc(inst.rank_uri(0), "annot.stats")[1]["server"]["broker"]["disconnects"] >= 1
    inst.flux("cancel", str(jobid))


@needs_root
def test_a_guests_stream_never_carries_what_it_may_not_read(inst, mirror):
    noted = submit(inst, "--urgency=0", "sleep", "300")
    inst.flux("job", "memo", str(noted), "secret=before")
    wait_for("the memo in the mirror",
             lambda: (sock(mirror, lambda c: c.get(noted))[1]["annotations"] or {}).get("user"))
    s = Stream(inst, inst.rank_uri(LEAF), uid=NOBODY)
    try:
        snap = s.next()
        assert snap["snapshot"] is True
        seen = {j["id"]: j for j in snap["jobs"]}
        assert seen[noted]["annotations"] is None  # the owner's `user` is not in it
        inst.flux("job", "memo", str(noted), "secret=after")  # invisible to the guest
        inst.flux("cancel", str(noted))  # a transition: everyone sees it
        batches = []
        while not any(t[0] == noted and t[1] == "INACTIVE"
                      for b in batches for t in b.get("transitions", [])):
            batches.append(s.next())
        text = json.dumps(batches)
        assert "secret" not in text and '"user"' not in text
    finally:
        s.kill()


def test_a_stream_since_a_seq_and_one_too_old(inst, mirror):
    import flux
    from flux.constants import FLUX_RPC_NORESPONSE, FLUX_RPC_STREAMING

    seq = mirror.stats()["seq"]
    base = subscribers(mirror)
    h = flux.Flux(inst.rank_uri(LEAF))
    jobid = submit(inst, "--urgency=0", "sleep", "300")
    assert seq > 0  # the mirror has published the jobs of the tests before
    f = h.rpc("annot.events", {"since": seq - 1}, flags=FLUX_RPC_STREAMING)
    assert f.get()["seq"] == seq  # the backlog from since+1, no gap
    h.rpc("annot.cancel", {"matchtag": f.pimpl.get_matchtag()}, flags=FLUX_RPC_NORESPONSE)
    while True:  # what was sent before the cancel, then ENODATA
        f.reset()
        try:
            f.get()
        except OSError as e:
            assert e.errno == errno.ENODATA
            break
    f = h.rpc("annot.events", {"since": 10**12}, flags=FLUX_RPC_STREAMING)
    with pytest.raises(OSError) as ei:
        f.get()
    sock_err = None
    try:
        with Client(mirror.socket) as c:
            next(iter(c.events(since=10**12)))
    except AnnotError as e:
        sock_err = (e.errno, e.message)
    assert (ei.value.errno, ei.value.strerror) == sock_err
    assert subscribers(mirror) == base
    inst.flux("cancel", str(jobid))


def test_a_canceled_stream_ends_with_enodata(inst, mirror):
    import flux
    from flux.constants import FLUX_RPC_NORESPONSE, FLUX_RPC_STREAMING

    before = subscribers(mirror)
    h = flux.Flux(inst.rank_uri(LEAF))
    f = h.rpc("annot.events", {"snapshot": True}, flags=FLUX_RPC_STREAMING)
    assert f.get()["snapshot"] is True
    f.reset()
    assert subscribers(mirror) == before + 1
    h.rpc("annot.cancel", {"matchtag": f.pimpl.get_matchtag()}, flags=FLUX_RPC_NORESPONSE)
    with pytest.raises(OSError) as ei:
        f.get()
    assert ei.value.errno == errno.ENODATA
    assert subscribers(mirror) == before
    del h


def test_the_transport_watches_the_connectors_socket(inst):
    """The broker transport waits on the local connector's socket itself
    (found among the registrations of the handle's pollfd), which wakes the
    loop once per request, not once more per response; anything else falls
    back to the pollfd."""
    import socket as _socket

    import flux
    from flux.core.inner import lib

    from flux_annot.flux.broker_server import _connector_socket

    h = flux.Flux(inst.uri)
    fd = _connector_socket(lib.flux_pollfd(h.handle))
    assert fd is not None
    s = _socket.socket(fileno=os.dup(fd))
    try:
        assert s.family == _socket.AF_UNIX and s.getpeername() == inst.uri[len("local://"):]
    finally:
        s.close()
    r, w = os.pipe()
    try:
        assert _connector_socket(r) is None  # not an epoll set
    finally:
        os.close(r)
        os.close(w)
    del h


def test_the_service_comes_back_with_flux(tmp_path):
    """Flux restarts under a running mirror: the mirror registers `annot`
    again by itself (stats says when it is not registered)."""
    inst = FluxInstance(flux_prefix()).start()
    m = Mirror(inst, tmp_path / "m.db").start()
    try:
        m.wait_synced()
        assert rpc(inst.uri, "annot.stats")[0] == "ok"
        inst.kill()  # gone at once
        wait_for("the mirror to notice", lambda: not m.stats()["server"]["broker"]["registered"])
        inst.start()
        wait_for("annot registered again", lambda: rpc(inst.uri, "annot.stats")[0] == "ok", 30)
        st = rpc(inst.uri, "annot.stats")[1]["server"]["broker"]
        assert st["registered"] and st["uri"] == inst.uri
        assert m.proc.poll() is None
    finally:
        m.cleanup()
        inst.cleanup()


def test_one_service_per_instance_and_it_goes_with_the_mirror(inst, mirror, tmp_path):
    # (last in this file: it stops the module's mirror)
    second = Mirror(inst, tmp_path / "m2.db")
    try:
        with pytest.raises(pytest.fail.Exception, match="exited at start"):
            second.start(timeout=30)
        assert second.proc.returncode == 1
        assert "already has a service named 'annot'" in second.stderr_text()
    finally:
        second.cleanup()
    assert rpc(inst.rank_uri(LEAF), "annot.stats")[0] == "ok"  # the first serves on
    assert mirror.stop() == 0
    got = rpc(inst.rank_uri(LEAF), "annot.stats")
    assert got[:2] == ["err", errno.ENOSYS]
