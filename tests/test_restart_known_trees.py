"""Snapshot rows from the live tree (issue 5): a job with no volatile change
since its last durable state has its live tree written as its snapshot row.
Through the public service API, any sequence of calls, restarts included,
must restart to exactly what replaying the eventlog gives, and to the
durable state a model of docs/durability.md expects (volatile changes since the job's
last durable entry gone, everything else kept)."""

import json
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flux_annot import AnnotationService, AnnotError, Cred, sched
from flux_annot.core import JobTable
from flux_annot.service.replay import permissive_limits, restore_from_eventlog
from flux_annot.service.store import Store

OWNER = 1000
ALICE = 2001
IDS = [5, (1 << 64) - 2]  # one id past 2**63: stored negative


def open_svc(path):
    return AnnotationService(owner_uid=OWNER, store=str(path), batch_window=3600.0)


def compact(obj):
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def user_size(tree):
    user = (tree or {}).get("user")
    return 0 if user is None else len(compact(user))


class Model:
    """The durable tree each job should restart with (docs/durability.md), kept in a
    table of its own from what the calls did, not from the store."""

    def __init__(self):
        self.table = JobTable(permissive_limits())
        self.allocated = set()

    def merge(self, jid, patch):
        self.table.annotate(jid, patch)

    def snapshot(self, jid, tree):  # SUCCESS: the alloc snapshot is the live tree
        self.table.remove(jid)
        if tree is not None:
            self.table.annotate(jid, compact(tree))
        self.allocated.add(jid)

    def left_pending(self, jid):  # DENY, CANCEL, SCHED -> INACTIVE
        if jid not in self.allocated and self.table.get(jid) is not None:
            self.table.annotate(jid, b'{"sched":null}')

    def tree(self, jid):
        tree = self.table.get(jid)
        return None if tree is None else json.loads(tree)


_vals = st.one_of(st.none(), st.integers(-2, 2), st.sampled_from(["a", "é"]))
_obj = st.dictionaries(st.sampled_from(["k", "l"]), _vals, max_size=2)
# One namespace per patch (two-key patches bias hypothesis toward `user`,
# whose service path differs from the other namespaces').
_patch = st.builds(lambda ns, v: {ns: v}, st.sampled_from(["user", "site"]),
                   st.one_of(st.none(), _obj))
_job = st.integers(0, len(IDS) - 1)
_op = st.one_of(
    st.tuples(st.just("annotate"), _job, _patch, st.booleans(), st.booleans()),
    st.tuples(st.just("memo"), _job, _obj, st.booleans(), st.booleans()),
    st.tuples(st.just("sched-annotate"), _job,
              st.dictionaries(st.sampled_from(["k", "l"]), st.integers(0, 2), min_size=1)),
    st.tuples(st.just("success"), _job, st.sampled_from([None, "r0", "r1"])),
    st.tuples(st.just("deny"), _job, st.sampled_from(["", "no"])),
    st.tuples(st.just("cancel"), _job),
    st.tuples(st.just("state"), _job, st.sampled_from(["CLEANUP", "INACTIVE"]),
              st.sampled_from([None, "gone"])),
    st.tuples(st.just("flush")),
    st.tuples(st.just("restart")),
)


def run(svc, model, op, path):
    """Do one call; update the model only if the service accepted it."""
    own = Cred.owner_of(svc)
    kind = op[0]
    if kind == "flush":
        svc.flush()
        return svc
    if kind == "restart":
        svc.close()
        return open_svc(path)
    jid = IDS[op[1]]
    try:
        if kind == "submit":
            svc.submit(jid, ALICE)
        elif kind in ("annotate", "memo"):
            _, _, obj, volatile, as_owner = op
            cred = own if as_owner else Cred(ALICE)
            getattr(svc, kind)(cred, jid, obj, volatile=volatile)
            if not volatile:
                model.merge(jid, compact({"user": obj} if kind == "memo" else obj))
        elif kind == "sched-annotate":
            svc.alloc_response(sched.annotate(jid, **op[2]))
        elif kind == "success":
            if svc.alloc_response(sched.success(jid, resource_summary=op[2])) == {}:
                model.snapshot(jid, svc.get(own, jid)["annotations"])
        elif kind == "deny":
            if svc.alloc_response(sched.deny(jid, op[2])) == {}:
                model.left_pending(jid)
        elif kind == "cancel":
            if svc.alloc_response(sched.cancel(jid)) == {}:
                model.left_pending(jid)
        else:
            was = svc.get(own, jid)["state"]
            svc.state(jid, op[2], note=op[3])
            if was == "SCHED":
                model.left_pending(jid)
    except AnnotError:
        pass  # refused (unknown job, bad transition, permission): changes nothing
    return svc


def check_restart(path, model):
    svc = open_svc(path)
    own = Cred.owner_of(svc)
    try:
        store = Store(path, lock=False)  # beside the running service
        table = JobTable(permissive_limits())
        rows = restore_from_eventlog(store, table)
        store.close()
        assert sorted(r[0] for r in rows) == sorted(svc.jobs)
        for jid in svc.jobs:
            got = svc.get(own, jid)["annotations"]
            record = table.get(jid)
            assert got == (None if record is None else json.loads(record)), jid
            assert got == model.tree(jid), jid
            assert svc.jobs[jid].user_bytes == user_size(got), jid
    finally:
        svc.close()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=st.lists(_op, min_size=8, max_size=30))
def test_restart_equals_eventlog_replay_and_durable_state(ops):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "s.db"
        model = Model()
        svc = open_svc(path)
        for i in range(len(IDS)):
            svc = run(svc, model, ("submit", i), path)
        for op in ops:
            svc = run(svc, model, op, path)
        svc.close()
        check_restart(path, model)


def test_volatile_change_then_durable_one_in_the_same_batch(tmp_path):
    """The case a flag never cleared gets wrong: the live tree holds a
    volatile note when the batch closes, the snapshot row must not."""
    path = tmp_path / "s.db"
    svc = open_svc(path)
    own = Cred.owner_of(svc)
    svc.submit(1, ALICE)
    svc.annotate(own, 1, {"site": {"v": 1}}, volatile=True)
    svc.memo(Cred(ALICE), 1, {"d": 1})
    svc.flush()
    svc.memo(Cred(ALICE), 1, {"e": 2})  # next batch: still not the live tree
    svc.close()
    svc = open_svc(path)
    assert svc.get(own, 1)["annotations"] == {"user": {"d": 1, "e": 2}}
    assert svc.jobs[1].user_bytes == len(b'{"d":1,"e":2}')
    svc.close()


def test_success_makes_the_live_tree_durable_again(tmp_path):
    path = tmp_path / "s.db"
    svc = open_svc(path)
    own = Cred.owner_of(svc)
    svc.submit(1, ALICE)
    svc.alloc_response(sched.annotate(1, t_estimate=5.0))  # volatile
    svc.annotate(own, 1, {"site": {"v": 1}}, volatile=True)
    svc.flush()
    svc.alloc_response(sched.success(1, resource_summary="r0"))
    svc.annotate(own, 1, {"site": {"w": 2}})
    svc.close()
    svc = open_svc(path)
    assert svc.get(own, 1)["annotations"] == {
        "sched": {"resource_summary": "r0"},
        "site": {"v": 1, "w": 2},
    }
    svc.close()


def test_volatile_memo_and_sched_notes_stay_out_of_the_snapshot(tmp_path):
    """The other two ways a live tree leaves its durable tree: a volatile memo
    (the `user` path) and an ANNOTATE alloc response of a pending job."""
    path = tmp_path / "s.db"
    svc = open_svc(path)
    own = Cred.owner_of(svc)
    svc.submit(1, ALICE)
    svc.submit(2, ALICE)
    svc.memo(Cred(ALICE), 1, {"v": 1}, volatile=True)
    svc.annotate(own, 1, {"site": {"d": 1}})
    svc.alloc_response(sched.annotate(2, t_estimate=5.0))
    svc.annotate(own, 2, {"site": {"d": 2}})
    svc.close()
    svc = open_svc(path)
    assert svc.get(own, 1)["annotations"] == {"site": {"d": 1}}
    assert svc.jobs[1].user_bytes == 0
    assert svc.get(own, 2)["annotations"] == {"site": {"d": 2}}
    svc.close()
