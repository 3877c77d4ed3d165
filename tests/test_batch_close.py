"""When batches close and what a slow subscriber gets (docs/events.md):

- a batch closes the moment it holds `[batch] max_entries` entries, not at
  the next call or when its window passes;
- a subscriber that stops reading is dropped with EOVERFLOW after what was
  already on its way, and its connection never hangs — with a file store
  (commits on the writer thread) as with `:memory:`.
"""

import errno
import os
import socket

import pytest

from flux_annot.wire.client import Client
from flux_annot.service.policy import Cred
from flux_annot.service.service import AnnotationService
from serverproc import Raw, ServerProc

ME = os.getuid()


def test_in_process_batch_closes_when_it_holds_max_entries(tmp_path):
    svc = AnnotationService(
        owner_uid=ME, config={"batch": {"max_entries": 10, "window": 3600.0}}
    )
    own = Cred.owner_of(svc)
    for j in range(1, 101):
        svc.submit(j, ME)
    svc.flush()
    sub = svc.subscribe(own, topics=["job-annotations"])
    for j in range(1, 101):
        svc.annotate(own, j, {"workflow": {"n": j}}, volatile=True)
    batches = list(sub)  # no flush: the tenth closed with its tenth entry
    assert [len(b["annotations"]) for b in batches] == [10] * 10
    assert [e[0] for b in batches for e in b["annotations"]] == list(range(1, 101))


@pytest.mark.parametrize("store", [":memory:", "file"])
def test_server_batch_closes_when_it_holds_max_entries(tmp_path, store):
    cfg = tmp_path / "c.toml"
    # a window no test waits for: every batch must close by its entry count
    cfg.write_text("[batch]\nmax_entries = 10\nwindow = 3600\n")
    s = ServerProc(store=tmp_path / "a.db" if store == "file" else store, config=cfg).start()
    try:
        with Client(s.path, timeout=60) as c:
            w = Raw(s.path)
            w.sock.settimeout(60)
            for j in range(1, 51):  # 2 entries each: 10 full batches, sent at once
                w.send("job-manager.submit", j, {"id": j, "userid": ME})
            assert sorted(w.recv()["matchtag"] for _ in range(50)) == list(range(1, 51))
            w.close()
            ev = Raw(s.path)
            ev.sock.settimeout(60)
            ev.send("job-manager.events", 1, {"topics": ["job-annotations"]})
            c.stats()  # the subscription is in place (served in order)
            for j in range(1, 51):
                c.annotate(j, {"workflow": {"n": j}}, volatile=True)
            for j in range(1, 51):
                c.annotate(j, {"workflow": {"m": j}}, volatile=True)
            got = []
            while len(got) < 100:
                r = ev.recv()
                assert r is not None and r["errnum"] == 0, r
                got += [e[0] for e in r["payload"]["annotations"]]
            assert got == list(range(1, 51)) * 2
            ev.close()
    finally:
        s.cleanup()


@pytest.mark.parametrize("store", [":memory:", "file"])
def test_a_subscriber_that_stops_reading_gets_eoverflow(tmp_path, store):
    cfg = tmp_path / "c.toml"
    cfg.write_text("[events]\nsubscriber_queue_bytes = 65536\n[batch]\nwindow = 0\n")
    s = ServerProc(store=tmp_path / "a.db" if store == "file" else store, config=cfg).start()
    try:
        sub = Raw(s.path)
        sub.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
        sub.sock.settimeout(60)
        sub.send("job-manager.events", 1, {"topics": ["job-annotations"]})
        with Client(s.path, timeout=60) as c:
            for j in range(1, 501):
                c.submit(j, ME)
            # ~500 batches of ~4 KB: one annotation of a new job each, each
            # answered before the next is sent (no two in one batch)
            for j in range(1, 501):
                c.annotate(j, {"workflow": {"pad": "p" * 4000}})
            stats = c.stats()
        assert stats["dropped_subscribers"] == 1
        n = 0
        while True:
            r = sub.recv()  # never hangs: the stream ends
            assert r is not None, "connection closed without EOVERFLOW"
            if r["errnum"] != 0:
                break
            n += 1
        assert r["errnum"] == errno.EOVERFLOW and "too slow" in r["errstr"], r
        assert 0 < n < 500
        sub.close()
    finally:
        s.cleanup()
