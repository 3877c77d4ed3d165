"""Snapshot + deltas in order rebuild exactly the trees `get` returns (docs/events.md)."""

import copy

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flux_annot import AnnotationService, Cred, merge, sched
from flux_annot.errors import AnnotError

OWNER = 1000
USERS = (2001, 2002)
IDS = (1, 2, 3, 4)

keys = st.sampled_from(["a", "b", "c"])
leaf = st.one_of(st.none(), st.integers(-3, 3), st.text("xy", max_size=2), st.lists(st.integers(0, 2), max_size=2))
value = st.recursive(leaf, lambda inner: st.dictionaries(keys, inner, max_size=2), max_leaves=4)
patch = st.dictionaries(keys, value, max_size=3)

op = st.one_of(
    st.tuples(st.just("sched"), st.sampled_from(IDS), patch),
    st.tuples(st.just("memo"), st.sampled_from(IDS), patch, st.booleans()),
    st.tuples(st.just("site"), st.sampled_from(IDS), patch, st.booleans()),
    st.tuples(st.just("success"), st.sampled_from(IDS)),
    st.tuples(st.just("deny"), st.sampled_from(IDS)),
    st.tuples(st.just("cancel"), st.sampled_from(IDS)),
    st.tuples(st.just("state"), st.sampled_from(IDS), st.sampled_from(["CLEANUP", "INACTIVE"])),
    st.tuples(st.just("flush")),
)


def apply(svc, o):
    own = Cred.owner_of(svc)
    kind = o[0]
    try:
        if kind == "sched":
            svc.alloc_response({"id": o[1], "type": sched.ANNOTATE, "annotations": {"sched": o[2]}})
        elif kind == "memo":
            svc.memo(Cred(USERS[o[1] % 2]), o[1], o[2], volatile=o[3])
        elif kind == "site":
            svc.annotate(own, o[1], {"site": o[2]}, volatile=o[3])
        elif kind == "success":
            svc.alloc_response(sched.success(o[1], resource_summary="r%d" % o[1]))
        elif kind == "deny":
            svc.alloc_response(sched.deny(o[1], "no"))
        elif kind == "cancel":
            svc.alloc_response(sched.cancel(o[1]))
        elif kind == "state":
            svc.state(o[1], o[2])
        else:
            svc.flush()
    except AnnotError:
        pass


def rebuild(items):
    """Apply a snapshot then its deltas; returns {id: tree}."""
    items = list(items)
    assert items and items[0].get("snapshot") is True
    trees = {j["id"]: j["annotations"] for j in items[0]["jobs"]}
    seq = items[0]["seq"]
    for b in items[1:]:
        assert b["seq"] > seq
        seq = b["seq"]
        for jobid, d in b.get("annotations", []):
            trees[jobid] = None if d is None else merge(copy.deepcopy(trees.get(jobid)), d)
    return trees


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(op, max_size=12), st.lists(op, max_size=25))
def test_snapshot_plus_deltas_equal_get(before, after):
    svc = AnnotationService(owner_uid=OWNER, batch_window=3600.0)
    try:
        for i in IDS:
            svc.submit(i, USERS[i % 2])
        for o in before:
            apply(svc, o)
        own = Cred.owner_of(svc)
        subs = {
            own: svc.subscribe(own, snapshot=True, delta=True),
            Cred(USERS[0]): svc.subscribe(Cred(USERS[0]), snapshot=True, delta=True),
        }
        full = svc.subscribe(own)
        got = {c: [] for c in subs}
        last_full = {}
        for o in after:
            apply(svc, o)
            if o[0] == "flush":
                for c, s in subs.items():
                    got[c].extend(s)
        svc.flush()
        for c, s in subs.items():
            got[c].extend(s)
        for b in full:
            for jobid, tree in b.get("annotations", []):
                last_full[jobid] = tree
        for c, items in got.items():
            trees = rebuild(items)
            for i in IDS:
                assert trees.get(i) == svc.get(c, i)["annotations"], (c, i)
        for jobid, tree in last_full.items():
            assert tree == svc.get(own, jobid)["annotations"]
    finally:
        svc.close()
