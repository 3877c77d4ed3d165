"""Restart from the per-job snapshot rows (docs/durability.md, issue 4): the snapshot the
store keeps with each batch equals a replay of the eventlog, restart reads it
in bulk, and the cases it cannot serve fall back to the eventlog."""

import json
import logging
import sqlite3
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flux_annot import AnnotationService, AnnotError, Cred, sched
from flux_annot.core import JobTable
from flux_annot.errors import EDQUOT, EINVAL
from flux_annot.service.replay import permissive_limits, restore, restore_from_eventlog
from flux_annot.service.store import SCHEMA_VERSION, Store

OWNER = 1000
ALICE = 2001


def open_svc(path, **kw):
    return AnnotationService(owner_uid=OWNER, store=str(path), batch_window=3600.0, **kw)


def eventlog_trees(store):
    """{jobid: tree bytes} from replaying the eventlog itself (the record)."""
    table = JobTable(permissive_limits())
    rows = restore_from_eventlog(store, table)
    return {r[0]: table.get(r[0]) for r in rows}


def snapshot_of(store):
    notes = store.notes()
    out = {}
    for sid, _u, _t, _s, tree, ub in store.snapshot_rows():
        jid = sid + (1 << 64) if sid < 0 else sid
        out[jid] = (tree, ub, notes.get(jid))
    return out


def user_size(tree):
    if tree is None:
        return 0
    user = json.loads(tree).get("user")
    if user is None:
        return 0
    return len(json.dumps(user, separators=(",", ":"), ensure_ascii=False).encode())


# One entry: (job index, name, context). Values are small so merges collide.
_vals = st.one_of(st.none(), st.integers(-3, 3), st.sampled_from(["a", "é", "x\n"]))
_obj = st.dictionaries(st.sampled_from(["k", "l", "m"]), _vals, max_size=3)
_patch = st.dictionaries(
    st.sampled_from(["sched", "user", "site"]),
    st.one_of(st.none(), _obj, st.dictionaries(st.sampled_from(["n"]), _obj, max_size=1)),
    max_size=2,
)
_entry = st.one_of(
    st.tuples(st.integers(0, 3), st.just("memo"), _obj),
    st.tuples(st.integers(0, 3), st.just("annotate"), _patch),
    st.tuples(st.integers(0, 3), st.just("alloc"), _patch.map(lambda p: {"annotations": p or None})),
    # as the hub sends it: pre-encoded bytes (here not always canonical: nulls)
    st.tuples(st.integers(0, 3), st.just("alloc"), _patch.map(
        lambda p: json.dumps({"annotations": p or None}, separators=(",", ":")).encode())),
    st.tuples(st.integers(0, 3), st.sampled_from(["state", "cancel"]), st.just({})),
    st.tuples(st.integers(0, 3), st.just("exception"),
              st.sampled_from(["", "deny one", "deny two"]).map(
                  lambda n: {"type": "alloc", "severity": 0, "note": n})),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches=st.lists(st.lists(_entry, max_size=6), min_size=1, max_size=5))
def test_snapshot_rows_equal_the_eventlog_replay(batches):
    ids = [5, 6, (1 << 64) - 2, 7]  # one id past 2**63: stored negative
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "s.db"
        store = Store(path, synchronous="OFF")
        notes = {}
        for seq, batch in enumerate(batches, 1):
            entries, jobs = [], {}
            for j, name, ctx in batch:
                jid = ids[j]
                if jid not in jobs:
                    entries.append((jid, "submit", {"userid": ALICE}, 1.0))
                    jobs[jid] = (ALICE, "SCHED", 1.0)
                entries.append((jid, name, ctx, 2.0))
                if name == "exception" and ctx["note"]:
                    notes[jid] = ctx["note"]
            store.write_batch(seq, entries, jobs)
        store.close()
        store = Store(path)  # reopened: what a restart reads
        want = eventlog_trees(store)
        got = snapshot_of(store)
        assert set(got) == set(want)
        table = JobTable()
        restored = restore(store, table)
        assert sorted(restored.ids) == sorted(want)
        for jid, (tree, ub, note) in got.items():
            assert table.get(jid) == want[jid], jid  # what the restarted service holds
            assert ub == user_size(want[jid])
            assert note == notes.get(jid)
        store.close()


def test_restart_uses_snapshots_and_keeps_user_totals(tmp_path):
    """Totals come from the stored sizes: the limit bites the same after restart."""
    path = tmp_path / "s.db"
    cfg = {"limits": {"guest_user_total_bytes": 40}}
    svc = open_svc(path, config=cfg)
    alice = Cred(ALICE)
    for i in (1, 2, 3):
        svc.submit(i, ALICE)
    svc.memo(alice, 1, {"a": "x" * 20})  # {"a":"xxx..."} is 28 bytes
    svc.memo(alice, 3, {"b": 1})
    svc.state(3, "INACTIVE", note="gone")  # inactive: no longer counts
    svc.flush()
    svc.close()
    svc = open_svc(path, config=cfg)
    assert svc.user_bytes.get(ALICE) == 28
    with pytest.raises(AnnotError) as ei:
        svc.memo(alice, 2, {"c": "y" * 8})  # 16 more bytes: 44 > 40
    assert ei.value.errno == EDQUOT
    assert svc.get(Cred.owner_of(svc), 2)["annotations"] is None
    svc.memo(alice, 2, {"c": 1})  # 7 bytes fit
    assert svc.get(Cred.owner_of(svc), 3)["exception"] == "gone"
    svc.close()


def test_snapshot_the_table_refuses_falls_back_to_the_eventlog(tmp_path, caplog):
    """Limits lowered since the write: only the too-deep patch is lost, as replay does."""
    path = tmp_path / "s.db"
    svc = open_svc(path)
    own = Cred.owner_of(svc)
    svc.submit(1, ALICE)
    svc.submit(2, ALICE)
    svc.annotate(own, 1, {"site": {"a": {"b": {"c": 1}}}})
    svc.annotate(own, 1, {"flat": {"v": 1}})
    svc.annotate(own, 2, {"flat": {"v": 2}})
    svc.flush()
    svc.close()
    caplog.set_level(logging.WARNING)
    svc = open_svc(path, config={"limits": {"depth_owner": 3}})
    assert svc.get(own, 1)["annotations"] == {"flat": {"v": 1}}
    assert svc.get(own, 2)["annotations"] == {"flat": {"v": 2}}
    assert "replaying its eventlog" in caplog.text and "stored patch skipped" in caplog.text
    svc.close()


def test_schema_1_store_is_refused_untouched(tmp_path):
    path = tmp_path / "old.db"
    Store(path).close()
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version=1")
    db.commit()
    db.close()
    before = path.read_bytes()
    with pytest.raises(AnnotError) as ei:
        open_svc(path)
    assert ei.value.errno == EINVAL
    assert "older development version" in str(ei.value) and f"schema {SCHEMA_VERSION}" in str(ei.value)
    assert path.read_bytes() == before


def test_failed_batch_leaves_the_snapshot_unchanged(tmp_path):
    st_ = Store(tmp_path / "s.db")
    st_.write_batch(1, [(1, "submit", {}, 0.0), (1, "memo", {"a": 1}, 0.0)], {1: (1, "SCHED", 0.0)})
    st_._last_seq = 0  # seq 1 again: its first entry is a duplicate key
    with pytest.raises(AnnotError):
        st_.write_batch(1, [(1, "submit", {}, 0.0), (1, "memo", {"a": 2}, 0.0)], {1: (1, "SCHED", 0.0)})
    st_._last_seq = 1
    assert snapshot_of(st_) == {1: (b'{"user":{"a":1}}', 7, None)}
    st_.close()


def test_restart_after_alloc_and_later_volatile_change(tmp_path):
    """The snapshot is the durable tree, not the live one: volatile changes after
    the last durable entry are gone after restart, earlier ones stay (in alloc)."""
    path = tmp_path / "s.db"
    svc = open_svc(path)
    own = Cred.owner_of(svc)
    svc.submit(1, ALICE)
    svc.alloc_response(sched.annotate(1, t_estimate=5.0))  # volatile, pending
    svc.alloc_response(sched.success(1, resource_summary="r0"))  # alloc snapshot
    svc.memo(Cred(ALICE), 1, {"d": 1})  # durable
    svc.annotate(own, 1, {"site": {"v": 1}}, volatile=True)  # lost
    svc.flush()
    assert svc.get(own, 1)["annotations"]["site"] == {"v": 1}
    svc.close()
    svc = open_svc(path)
    assert svc.get(own, 1)["annotations"] == {
        "sched": {"resource_summary": "r0"},
        "user": {"d": 1},
    }
    svc.close()


def test_exception_notes_from_any_context_spelling(tmp_path):
    """The note column follows the last readable note; unreadable contexts keep it."""
    st_ = Store(tmp_path / "s.db")
    st_.write_batch(
        1,
        [
            (1, "submit", {"userid": ALICE}, 0.0),
            (1, "exception", '{"type":"cancel","severity":0,"note":"first"}', 1.0),
            (2, "submit", {"userid": ALICE}, 0.0),
            (2, "exception", {"type": "alloc", "severity": 0, "note": "denied"}, 1.0),
        ],
        {1: (ALICE, "INACTIVE", 0.0), 2: (ALICE, "INACTIVE", 0.0)},
    )
    st_.write_batch(
        2,
        [
            (1, "exception", "not json", 2.0),  # kept in the eventlog, note unchanged
            (2, "exception", b'{"type":"cancel","severity":0,"note":"later"}', 2.0),
        ],
        {1: (ALICE, "INACTIVE", 0.0), 2: (ALICE, "INACTIVE", 0.0)},
    )
    st_.close()
    svc = open_svc(tmp_path / "s.db")
    own = Cred.owner_of(svc)
    assert svc.get(own, 1)["exception"] == "first"
    assert svc.get(own, 2)["exception"] == "later"
    assert len(list(svc.store.entries(("exception",)))) == 4
    svc.close()


def test_snapshot_after_a_known_tree_merges_onto_that_tree(tmp_path):
    """A row written as given (a known tree) is what the next batch of that
    job merges onto, not an older row the store wrote itself before."""
    path = tmp_path / "s.db"
    store = Store(path, synchronous="OFF")
    jobs = {5: (ALICE, "SCHED", 1.0)}
    store.write_batch(1, [(5, "submit", {"userid": ALICE}, 1.0),
                          (5, "annotate", b'{"site":{"a":1}}', 2.0)], jobs)
    # the service knew the durable tree: {"site":{"b":2}} (e.g. after SUCCESS)
    store.write_batch(2, [(5, "alloc", b'{"annotations":{"site":{"b":2}}}', 3.0)], jobs,
                      known={5: (b'{"site":{"b":2}}', 0)})
    store.write_batch(3, [(5, "annotate", b'{"site":{"c":3}}', 4.0)], jobs)
    store.close()
    store = Store(path)
    assert snapshot_of(store)[5][0] == b'{"site":{"b":2,"c":3}}' == eventlog_trees(store)[5]
    store.close()
