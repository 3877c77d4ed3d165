"""Property tests (hypothesis) over random request sequences:

- a rejected request never changes anything: every job's `get` as the
  owner, the job counts of `stats`, the open batch and the per-user totals
  are exactly as before;
- no input makes the service raise anything but an `AnnotError`;
- the per-user byte totals that the service keeps incrementally always equal
  a recomputation by scanning (the obviously-correct model).
"""

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flux_annot import AnnotationService, Cred
from flux_annot.errors import AnnotError

OWNER_UID, ALICE, BOB = 1000, 2001, 2002
CREDS = [Cred(OWNER_UID, owner=True), Cred(ALICE), Cred(BOB)]
JOBS = [1, 2, 3, 4, 5]
STATES = ["SCHED", "RUN", "CLEANUP", "INACTIVE", "NEW", "R", "bogus"]
LIMITS = {
    "guest_payload_bytes": 120,
    "guest_namespace_bytes": 60,
    "guest_user_total_bytes": 100,
    "guest_rate": 0.001,
    "guest_burst": 12,
    "depth_guest": 4,
    "depth_owner": 6,
    "key_bytes": 8,
    "object_keys": 4,
}

keys = st.sampled_from(["a", "b", "c", "d", "e", "", "x.y", "long_key_9"])
scalars = st.none() | st.booleans() | st.integers(-5, 10**6) | st.text("ab\"\\é\n", max_size=12)
values = st.recursive(
    scalars,
    lambda c: st.lists(c, max_size=3) | st.dictionaries(keys, c, max_size=5),
    max_leaves=10,
)
namespaces = st.sampled_from(["user", "user", "user", "sched", "site", "a.b"])
patches = st.dictionaries(namespaces, values, max_size=3)


def as_form(draw_form, obj):
    if draw_form == "str":
        return json.dumps(obj)
    if draw_form == "bytes":
        return json.dumps(obj, ensure_ascii=False).encode()
    return obj


annotate_op = st.tuples(
    st.just("annotate"),
    st.sampled_from(range(3)),
    st.sampled_from(JOBS),
    patches | st.sampled_from([[], 5, "[1]", "{bad", '{"user":{"a":1}} x']),
    st.sampled_from(["dict", "str", "bytes"]),
    st.booleans(),
)
memo_op = st.tuples(
    st.just("memo"),
    st.sampled_from(range(3)),
    st.sampled_from(JOBS),
    st.dictionaries(keys, values, max_size=4),
    st.sampled_from(["dict", "str"]),
    st.booleans(),
)
alloc_op = st.tuples(
    st.just("alloc"),
    st.fixed_dictionaries(
        {"id": st.sampled_from(JOBS + ["1", 1.5]), "type": st.sampled_from([0, 1, 1, 1, 2, 3, 4, "1"])},
        optional={
            "annotations": st.dictionaries(st.sampled_from(["sched", "user"]), values, max_size=2)
            | st.just([1]),
            "note": st.sampled_from(["denied", 7]),
        },
    ),
)
state_op = st.tuples(
    st.just("state"),
    st.sampled_from(JOBS),
    st.sampled_from(STATES),
    st.sampled_from([None, "bye", 3]),
)
submit_op = st.tuples(st.just("submit"), st.sampled_from(JOBS + [-1]), st.sampled_from([ALICE, BOB]))
ops = st.lists(st.one_of(annotate_op, memo_op, alloc_op, state_op, submit_op), max_size=30)


def make():
    svc = AnnotationService(owner_uid=OWNER_UID, config={"limits": LIMITS}, batch_window=3600)
    svc.submit(1, ALICE)
    svc.submit(2, ALICE)
    svc.alloc_response({"id": 2, "type": 0, "annotations": {"sched": {"r": "rank0"}}})
    svc.submit(3, BOB)
    svc.submit(4, ALICE)
    svc.memo(CREDS[1], 4, {"old": 1})
    svc.state(4, "INACTIVE")
    return svc


def full_state(svc):
    owner = CREDS[0]
    return (
        [svc.get(owner, i) for i in svc.jobs],
        svc.stats()["jobs"],
        svc.hub.size(),
        {u: svc.user_bytes.get(u) for u in (ALICE, BOB, OWNER_UID)},
    )


def scanned_user_bytes(svc):
    out = {}
    for i, job in svc.jobs.items():
        if job.state == "INACTIVE":
            continue
        tree = svc.get(CREDS[0], i)["annotations"] or {}
        if "user" in tree:
            n = len(json.dumps(tree["user"], separators=(",", ":"), ensure_ascii=False).encode())
            out[job.userid] = out.get(job.userid, 0) + n
    return out


def run(svc, op):
    kind = op[0]
    if kind == "annotate":
        _, c, id, patch, form, volatile = op
        svc.annotate(CREDS[c], id, as_form(form, patch), volatile=volatile)
    elif kind == "memo":
        _, c, id, memo, form, volatile = op
        svc.memo(CREDS[c], id, as_form(form, memo), volatile=volatile)
    elif kind == "alloc":
        svc.alloc_response(op[1])
    elif kind == "state":
        svc.state(op[1], op[2], note=op[3])
    else:
        svc.submit(op[1], op[2])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops)
def test_rejected_requests_change_nothing(seq):
    svc = make()
    rejected = 0
    for op in seq:
        before = full_state(svc)
        try:
            run(svc, op)
        except AnnotError:
            rejected += 1
            assert full_state(svc) == before, op
        totals = {u: svc.user_bytes.get(u) for u in (ALICE, BOB, OWNER_UID)}
        scanned = scanned_user_bytes(svc)
        assert totals == {u: scanned.get(u, 0) for u in totals}, op
    assert sum(svc.stats()["rejected"].values()) == rejected
    svc.close()
