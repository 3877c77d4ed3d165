"""Restart from the SQLite store (docs/durability.md): seq continuity, exactly the durable state."""

import os
import signal
import subprocess
import sys
import textwrap

from flux_annot import AnnotationService, Cred, sched

OWNER = 1000
ALICE = 2001


def open_svc(path, **kw):
    return AnnotationService(owner_uid=OWNER, store=str(path), batch_window=3600.0, **kw)


def test_seq_continues_across_restarts(tmp_path):
    path = tmp_path / "s.db"
    svc = open_svc(path)
    svc.submit(1, ALICE)
    svc.flush()
    svc.alloc_response(sched.annotate(1, t_estimate=1.0))
    svc.flush()
    last = svc.hub.last_seq
    svc.close()
    svc = open_svc(path)
    assert svc.hub.last_seq == last
    sub = svc.subscribe(Cred.owner_of(svc))
    svc.memo(Cred(ALICE), 1, {"x": 1})
    svc.flush()
    assert [b["seq"] for b in sub] == [last + 1]
    svc.close()
    svc = open_svc(path)
    assert svc.hub.last_seq == last + 1
    svc.close()


def test_restart_keeps_exactly_the_durable_state(tmp_path):
    path = tmp_path / "s.db"
    svc = open_svc(path)
    own = Cred.owner_of(svc)
    alice = Cred(ALICE)
    for i in (1, 2, 3, 4):
        svc.submit(i, ALICE, t_submit=100.0 + i)
    # job 1: pending with sched notes (volatile), a durable and a volatile memo
    svc.alloc_response(sched.annotate(1, t_estimate=50.0, reason_pending="busy"))
    svc.memo(alice, 1, {"keep": 1})
    svc.memo(alice, 1, {"gone": 2}, volatile=True)
    # job 2: allocated; snapshot holds sched + a volatile site note; later notes
    svc.annotate(own, 2, {"site": {"rack": 7}}, volatile=True)
    svc.alloc_response(sched.success(2, resource_summary="rank0"))
    svc.memo(alice, 2, {"after": True})
    svc.memo(alice, 2, {"after": None, "v": 1}, volatile=True)  # volatile delete: undone
    svc.state(2, "CLEANUP")
    # job 3: denied
    svc.alloc_response(sched.annotate(3, t_estimate=9.0))
    svc.memo(alice, 3, {"why": "test"})
    svc.alloc_response(sched.deny(3, "too big"))
    # job 4: a durable memo made volatile-then-durable with the same value
    svc.memo(alice, 4, {"same": 1}, volatile=True)
    svc.memo(alice, 4, {"same": 1})
    svc.flush()
    before = {i: svc.get(own, i) for i in (1, 2, 3, 4)}
    svc.close()

    svc = open_svc(path)
    after = {i: svc.get(own, i) for i in (1, 2, 3, 4)}
    assert after[1] == {"id": 1, "userid": ALICE, "state": "SCHED",
                        "annotations": {"user": {"keep": 1}}}
    assert after[2]["state"] == "CLEANUP"
    assert after[2]["annotations"] == {
        "site": {"rack": 7},
        "sched": {"resource_summary": "rank0"},
        "user": {"after": True},
    }
    assert after[3]["state"] == "INACTIVE"
    assert after[3]["annotations"] == {"user": {"why": "test"}}
    assert after[3].get("exception") == before[3].get("exception") == "too big"
    assert after[4] == before[4]
    assert svc.stats()["jobs"]["SCHED"] == 2
    # the restored service goes on: job 1 can still be allocated
    svc.alloc_response(sched.success(1))
    svc.flush()
    assert svc.get(own, 1)["state"] == "RUN"
    svc.close()


def test_store_none_keeps_nothing(tmp_path):
    svc = AnnotationService(owner_uid=OWNER, store=None)
    svc.submit(1, ALICE)
    svc.flush()
    assert svc.stats()["store_bytes"] == 0
    svc.close()
    assert list(tmp_path.iterdir()) == []


CHILD = textwrap.dedent(
    """
    import sys
    from flux_annot import AnnotationService, Cred
    svc = AnnotationService(owner_uid=1000, store=sys.argv[1], batch_window=3600.0)
    svc.submit(1, 2001)
    svc.flush()
    i = 0
    while True:
        i += 1
        svc.memo(Cred(2001), 1, {"k%d" % (i % 50): i})
        svc.annotate(Cred.owner_of(svc), 1, {"site": {"last": i}})
        svc.flush()
        print("ok", i, flush=True)
    """
)


def test_kill_9_loses_nothing_acknowledged(tmp_path):
    path = tmp_path / "s.db"
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path)],
        stdout=subprocess.PIPE,
        text=True,
    )
    acked = 0
    try:
        for line in proc.stdout:
            acked = int(line.split()[1])
            if acked >= 300:
                break
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
    assert acked >= 300
    svc = open_svc(path)
    tree = svc.get(Cred.owner_of(svc), 1)["annotations"]
    # Everything acknowledged is there (later, unacknowledged ones may be too).
    assert tree["site"]["last"] >= acked
    last = tree["site"]["last"]
    for i in range(max(1, last - 49), last + 1):
        assert tree["user"]["k%d" % (i % 50)] == i
    svc.close()


def test_replay_skips_a_stored_patch_the_table_refuses(tmp_path, caplog):
    from flux_annot.service.store import Store

    path = tmp_path / "s.db"
    st = Store(path)
    st.write_batch(
        1,
        [
            (1, "submit", {"userid": ALICE}, 1.0),
            (1, "memo", {"a": 1}, 1.0),
            (1, "annotate", '{"site":', 1.0),  # truncated: not JSON
            (1, "memo", {"b": 2}, 1.0),
            (2, "submit", {"userid": ALICE}, 1.0),
            (2, "memo", {"c": 3}, 1.0),
        ],
        {1: (ALICE, "SCHED", 1.0), 2: (ALICE, "SCHED", 1.0)},
    )
    st.close()
    svc = open_svc(path)
    own = Cred.owner_of(svc)
    assert svc.get(own, 1)["annotations"] == {"user": {"a": 1, "b": 2}}
    assert svc.get(own, 2)["annotations"] == {"user": {"c": 3}}
    assert "stored patch skipped" in caplog.text
    svc.close()


def test_service_refuses_a_foreign_file_and_leaves_it(tmp_path):
    import pytest

    from flux_annot import AnnotError

    path = tmp_path / "precious.db"
    path.write_bytes(b"SQLite format 3\0" + b"\x07" * 4000)
    before = path.read_bytes()
    with pytest.raises(AnnotError) as ei:
        open_svc(path)
    assert "not a flux-annot store" in str(ei.value)
    assert path.read_bytes() == before


def test_replay_alloc_snapshot_resets_and_foreign_spelling_is_parsed(tmp_path):
    from flux_annot.service.store import Store

    path = tmp_path / "s.db"
    st = Store(path)
    st.write_batch(
        1,
        [
            (1, "submit", {"userid": ALICE}, 1.0),
            (1, "memo", {"old": 1}, 1.0),
            # spaced JSON, as another tool could write it: parsed, still a reset
            (1, "alloc", '{ "annotations" : {"annotations": {"x": 1}} }', 2.0),
            (1, "memo", {"new": 2}, 3.0),
            (2, "submit", {"userid": ALICE}, 1.0),
            (2, "memo", {"gone": 1}, 1.0),
            (2, "alloc", {"annotations": None}, 2.0),
        ],
        {1: (ALICE, "RUN", 1.0), 2: (ALICE, "RUN", 1.0)},
    )
    st.close()
    svc = open_svc(path)
    own = Cred.owner_of(svc)
    assert svc.get(own, 1)["annotations"] == {"annotations": {"x": 1}, "user": {"new": 2}}
    assert svc.get(own, 2)["annotations"] is None
    svc.close()
