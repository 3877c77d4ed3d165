"""The server commits batches on a writer thread (events.EventHub.start_writer):
replies to non-volatile requests and published batches wait for their
commit, the event loop does not, and a failed commit is retried."""

import asyncio
import contextlib
import errno
import os
import shutil
import tempfile
import threading
import time
from errno import EIO

import pytest

from flux_annot.wire import protocol
from flux_annot.errors import AnnotError
from flux_annot.wire.server import serve
from flux_annot.service.service import AnnotationService
from serverproc import Raw

ME = os.getuid()


class GatedStore:
    """Wraps the service's store: write_batch can be held (gate) or made to fail."""

    def __init__(self, store):
        self.store = store
        self.real = store.write_batch
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.fail = 0
        self.threads = set()
        self.seqs = []
        store.write_batch = self.write_batch

    def write_batch(self, seq, entries, jobs, known=None, **kw):
        self.threads.add(threading.current_thread().name)
        self.entered.set()
        assert self.gate.wait(20)
        if self.fail:
            self.fail -= 1
            raise AnnotError(EIO, "store write failed (test)")
        self.real(seq, entries, jobs, known, **kw)
        self.seqs.append(seq)


@pytest.fixture
def served(tmp_path):
    """A server on a SQLite store, run in a thread; yields (socket path, service, gate)."""
    with _served(tmp_path, 0.005) as (path, svc, gated, _loop):
        yield path, svc, gated


@contextlib.contextmanager
def _served(tmp_path, window, before=None, config=None):
    """The server of `served` with a batch window; before(svc): called
    before it serves. Yields (socket path, service, gate, its loop)."""
    d = tempfile.mkdtemp(prefix="fa-writer-", dir="/tmp")
    path = os.path.join(d, "socket")
    svc = AnnotationService(store=tmp_path / "annot.db", batch_window=window, config=config)
    if before is not None:
        before(svc)
    gated = GatedStore(svc.store)
    ready = threading.Event()
    box = {}

    def run():
        async def main():
            box["loop"] = asyncio.get_running_loop()
            box["stop"] = asyncio.Event()
            await serve(path, service=svc, ready=ready, stop=box["stop"], handle_signals=False)

        asyncio.run(main())

    t = threading.Thread(target=run, daemon=True)
    t.start()
    assert ready.wait(20)
    try:
        yield path, svc, gated, box["loop"]
    finally:
        gated.gate.set()
        box["loop"].call_soon_threadsafe(box["stop"].set)
        t.join(20)
        svc.close()
        shutil.rmtree(d, ignore_errors=True)


def test_reply_waits_for_commit_loop_does_not(served):
    path, svc, gated = served
    c = Raw(path)
    c.send("job-manager.submit", 1, {"id": 7, "userid": ME})
    assert c.recv()["matchtag"] == 1
    ev = Raw(path)
    ev.send("job-manager.events", 1, {"topics": ["job-annotations"]})

    gated.entered.clear()
    gated.gate.clear()
    c.send("job-manager.annotate", 2, {"id": 7, "annotations": {"workflow": {"a": 1}}})
    assert gated.entered.wait(20)  # its batch is being committed, held there
    # The loop still serves requests meanwhile; only the held reply waits.
    c.send("job-manager.annotate", 3, {"id": 7, "annotations": {"site": {"b": 2}}, "volatile": True})
    assert c.recv() == {"matchtag": 3, "errnum": 0, "payload": {}}
    c.send("job-manager.getattr", 4, {"id": 7})
    got = c.recv()
    assert got["matchtag"] == 4
    assert got["payload"]["annotations"] == {"workflow": {"a": 1}, "site": {"b": 2}}
    gated.gate.set()
    assert c.recv() == {"matchtag": 2, "errnum": 0, "payload": {}}
    # Published in seq order, each batch once, only after its commit.
    batches = [ev.recv()["payload"], ev.recv()["payload"]]
    assert [b["annotations"] for b in batches] == [
        [[7, {"workflow": {"a": 1}}]],
        [[7, {"workflow": {"a": 1}, "site": {"b": 2}}]],
    ]
    assert batches[1]["seq"] == batches[0]["seq"] + 1
    assert gated.seqs == sorted(gated.seqs)
    assert all(name.startswith("flux-annot-store") for name in gated.threads)
    c.close()
    ev.close()


def test_failed_commit_is_retried(served):
    path, svc, gated = served
    c = Raw(path)
    c.send("job-manager.submit", 1, {"id": 9, "userid": ME})
    assert c.recv()["errnum"] == 0
    gated.fail = 1
    c.send("job-manager.memo", 2, {"id": 9, "memo": {"x": 1}})
    assert c.recv() == {"matchtag": 2, "errnum": 0, "payload": {}}
    c.send("job-manager.stats", 3, {})
    stats = c.recv()["payload"]
    assert stats["store_errors"] == 1
    assert stats["seq"] == gated.seqs[-1]
    c.close()


def test_snapshot_waits_for_batches_in_flight(served):
    path, svc, gated = served
    c = Raw(path)
    c.send("job-manager.submit", 1, {"id": 5, "userid": ME})
    assert c.recv()["errnum"] == 0
    gated.entered.clear()
    gated.gate.clear()
    c.send("job-manager.memo", 2, {"id": 5, "memo": {"n": 1}})
    assert gated.entered.wait(20)
    threading.Timer(0.2, gated.gate.set).start()
    ev = Raw(path)
    ev.send("job-manager.events", 1, {"snapshot": True})
    snap = ev.recv()["payload"]
    assert snap["snapshot"] is True
    assert gated.seqs and snap["seq"] == gated.seqs[-1]  # committed before shown
    assert snap["jobs"][0]["annotations"] == {"user": {"n": 1}}
    assert c.recv()["matchtag"] == 2
    c.close()
    ev.close()


def test_in_process_service_still_commits_in_flush(tmp_path):
    svc = AnnotationService(store=tmp_path / "a.db")
    gated = GatedStore(svc.store)
    svc.submit(1, ME)
    seq = svc.flush()
    assert gated.seqs == [seq] and threading.current_thread().name in gated.threads
    svc.close()


def test_group_commit_while_a_commit_is_in_flight(served):
    """What arrives while a batch is being committed closes as one batch
    when that commit is done, however many windows (5 ms here) pass."""
    path, svc, gated = served
    c = Raw(path)
    for i in range(1, 5):
        c.send("job-manager.submit", i, {"id": i, "userid": ME})
    assert [c.recv()["errnum"] for _ in range(4)] == [0] * 4
    ev = Raw(path)
    ev.send("job-manager.events", 1, {"topics": ["job-annotations"]})
    gated.entered.clear()
    gated.gate.clear()
    c.send("job-manager.memo", 10, {"id": 1, "memo": {"n": 1}})
    assert gated.entered.wait(20)
    for i in (2, 3, 4):
        time.sleep(0.02)  # several batch windows
        c.send("job-manager.memo", 10 + i, {"id": i, "memo": {"n": i}})
    time.sleep(0.02)
    gated.gate.set()
    assert sorted(c.recv()["matchtag"] for _ in range(4)) == [10, 12, 13, 14]
    first, second = ev.recv()["payload"], ev.recv()["payload"]
    assert first["annotations"] == [[1, {"user": {"n": 1}}]]
    assert second["seq"] == first["seq"] + 1
    assert second["annotations"] == [[i, {"user": {"n": i}}] for i in (2, 3, 4)]
    c.close()
    ev.close()


def test_replies_waiting_on_a_commit_do_not_wait_out_the_window(tmp_path):
    """A non-volatile request that arrives while a commit is in flight is
    answered once that commit and the next are done, not after the batch
    window (120 s here; the socket gives up after 20 s): its batch closes
    when the writer is free (group commit)."""

    def submit(svc):
        svc.submit(1, ME)
        svc.flush()

    with _served(tmp_path, 120.0, before=submit) as (path, svc, gated, loop):
        c = Raw(path)
        gated.entered.clear()
        gated.gate.clear()
        c.send("job-manager.memo", 2, {"id": 1, "memo": {"n": 1}})
        c.send("job-manager.stats", 3, {})
        assert c.recv()["matchtag"] == 3  # the memo is applied, its batch open
        loop.call_soon_threadsafe(svc.flush)  # close it: its commit is held
        assert gated.entered.wait(20)
        c.send("job-manager.memo", 4, {"id": 1, "memo": {"n": 2}})
        c.send("job-manager.stats", 5, {})
        assert c.recv()["matchtag"] == 5
        gated.gate.set()
        assert [c.recv() for _ in range(2)] == [
            {"matchtag": 2, "errnum": 0, "payload": {}},
            {"matchtag": 4, "errnum": 0, "payload": {}},
        ]
        c.send("job-manager.getattr", 6, {"id": 1})
        assert c.recv()["payload"]["annotations"] == {"user": {"n": 2}}
        c.close()
    assert len(gated.seqs) == 2  # one commit each: the second did not wait for the window


def test_pipelined_durable_requests_each_get_their_timeout(tmp_path):
    """Durable annotates and memos pipelined on two connections, all waiting
    on one commit that keeps failing: each request is answered ETIMEDOUT
    under its own matchtag, on its own connection; the store recovers."""

    def submit(svc):
        svc.submit(1, ME)
        svc.flush()

    cfg = {"store": {"commit_timeout": 0.3}}
    with _served(tmp_path, 0.005, before=submit, config=cfg) as (path, svc, gated, _loop):
        a, b = Raw(path), Raw(path)
        gated.fail = 10**6
        a.sock.sendall(b"".join(
            protocol.request("job-manager.annotate", mt, {"id": 1, "annotations": {"site": {"n": mt}}})
            for mt in (2, 3, 4)
        ))
        b.send("job-manager.memo", 7, {"id": 1, "memo": {"m": 1}})
        got_a = [a.recv() for _ in range(3)]
        got_b = b.recv()
        assert [r["matchtag"] for r in got_a] == [2, 3, 4] and got_b["matchtag"] == 7
        for r in got_a + [got_b]:
            assert r["errnum"] == errno.ETIMEDOUT and "applied in memory" in r["errstr"]
        gated.fail = 0
        b.send("job-manager.getattr", 8, {"id": 1})
        assert b.recv()["payload"]["annotations"] == {"site": {"n": 4}, "user": {"m": 1}}
        a.close()
        b.close()


def test_shutdown_gives_up_on_a_broken_store(tmp_path):
    """A store that never commits cannot hang the shutdown: the batch is
    given up after a few tries (logged), the hub commits synchronously again."""
    svc = AnnotationService(store=tmp_path / "b.db")
    gated = GatedStore(svc.store)

    async def main():
        svc.hub.start_writer(asyncio.get_running_loop())
        svc.submit(1, ME)
        gated.fail = 10**6
        svc.flush()
        svc.hub.stop_writer()

    asyncio.run(asyncio.wait_for(main(), 30))
    assert svc.hub.stats()["store_errors"] >= 5 and svc.hub.last_seq == 0
    gated.fail = 0
    svc.store.close()
