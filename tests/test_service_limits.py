"""docs/limits.md, one test per row of the limits table (small configured limits
where the default would make a slow test), errnos and messages included;
every rejection changes nothing and is counted by reason."""

import errno
import json

import pytest

from flux_annot import AnnotationService, Cred, sched
from flux_annot.errors import AnnotError, LimitError

OWNER_UID, ALICE, BOB = 1000, 2001, 2002
OWNER = Cred(OWNER_UID, owner=True)
A = Cred(ALICE)


def make(limits=None):
    svc = AnnotationService(owner_uid=OWNER_UID, config={"limits": limits or {}})
    svc.submit(1, ALICE)
    svc.submit(2, ALICE)
    svc.submit(3, BOB)
    return svc


def everything(svc):
    return [svc.get(OWNER, i) for i in svc.jobs], svc.stats()["jobs"]


def rejected(svc, reason):
    return svc.stats()["rejected"].get(reason, 0)


def nested(depth):
    """An annotations object of the given depth (the object itself counts 1)."""
    inner = 1
    for _ in range(depth - 1):
        inner = {"k": inner}
    return {"user": inner}


def test_guest_payload_size_checked_before_parsing():
    svc = make()
    before = everything(svc)
    big = '{"user":{"a":"' + "x" * 4100 + '"}}'
    with pytest.raises(LimitError) as ei:
        svc.annotate(A, 1, big)
    assert ei.value.errno == errno.E2BIG
    assert str(ei.value) == "annotation payload exceeds 4096 bytes for guests"
    # by length alone: not even valid JSON, still E2BIG (not EINVAL)
    with pytest.raises(LimitError) as ei:
        svc.annotate(A, 1, b"{" * 5000)
    assert ei.value.errno == errno.E2BIG
    # a memo is measured as the annotations it makes
    with pytest.raises(LimitError):
        svc.memo(A, 1, {"a": "x" * 4090})
    assert everything(svc) == before
    assert rejected(svc, "payload_size") == 3
    svc.annotate(OWNER, 1, big)  # the owner is not limited
    assert len(svc.get(OWNER, 1)["annotations"]["user"]["a"]) == 4100


def test_guest_namespace_size_after_merge():
    svc = make({"guest_namespace_bytes": 40})
    svc.memo(A, 1, {"a": "x" * 20})  # {"a":"xxx..."} = 28 bytes
    before = everything(svc)
    with pytest.raises(LimitError) as ei:
        svc.memo(A, 1, {"b": "y" * 6})  # would be 28 + 13 = 41 bytes
    assert ei.value.errno == errno.E2BIG and "40 bytes" in str(ei.value)
    assert everything(svc) == before
    assert rejected(svc, "namespace_size") == 1
    svc.memo(A, 1, {"b": "y" * 5})  # exactly 40: allowed
    assert len(json.dumps(svc.get(A, 1)["annotations"]["user"], separators=(",", ":"))) == 40
    # the owner may grow it; the guest may still shrink it
    svc.annotate(OWNER, 1, {"user": {"c": "z" * 50}})
    svc.memo(A, 1, {"a": None})
    assert svc.get(A, 1)["annotations"]["user"] == {"b": "y" * 5, "c": "z" * 50}


def test_guest_user_total_over_active_jobs():
    svc = make({"guest_user_total_bytes": 60, "guest_namespace_bytes": 4096})
    svc.memo(A, 1, {"a": "x" * 20})  # 28 bytes
    svc.memo(A, 2, {"a": "y" * 20})  # 28 → total 56
    before = everything(svc)
    with pytest.raises(LimitError) as ei:
        svc.memo(A, 2, {"b": "z" * 5})  # +12 → 68
    assert ei.value.errno == errno.EDQUOT and "60-byte" in str(ei.value)
    assert everything(svc) == before
    assert rejected(svc, "user_total") == 1
    svc.memo(BOB_CRED, 3, {"b": "z" * 30})  # another user's total is separate
    # the owner's writes into alice's job count toward her total
    svc.annotate(OWNER, 1, {"user": {"a": None}})  # frees 28
    svc.memo(A, 2, {"b": "z" * 5})
    svc.annotate(OWNER, 1, {"user": {"big": "q" * 40}})
    with pytest.raises(LimitError):
        svc.memo(A, 2, {"c": 1})
    # an inactive job no longer counts
    svc.state(1, "INACTIVE")
    svc.memo(A, 2, {"c": 1})
    assert svc.get(A, 2)["annotations"]["user"]["c"] == 1


BOB_CRED = Cred(BOB)


def test_guest_rate_per_userid():
    svc = make({"guest_rate": 0.001, "guest_burst": 3})
    for i in range(3):
        svc.memo(A, 1, {"n": i})
    before = everything(svc)
    with pytest.raises(LimitError) as ei:
        svc.memo(A, 1, {"n": 99})
    assert ei.value.errno == errno.EAGAIN and "0.001 per second" in str(ei.value)
    # checked first: even a bad request costs only a token check
    with pytest.raises(LimitError) as ei:
        svc.annotate(A, 1, b"{" * 10000)
    assert ei.value.errno == errno.EAGAIN
    assert everything(svc) == before
    assert rejected(svc, "rate") == 2
    svc.memo(BOB_CRED, 3, {"n": 1})  # per userid
    for i in range(10):  # owner and scheduler are not rate limited
        svc.annotate(OWNER, 1, {"user": {"o": i}})
        svc.alloc_response(sched.annotate(1, jobs_ahead=i))


@pytest.mark.parametrize("who, limit", [("guest", 8), ("owner", 64)])
def test_depth(who, limit):
    svc = make()
    cred = A if who == "guest" else OWNER
    svc.annotate(cred, 1, nested(limit))
    before = everything(svc)
    with pytest.raises(ValueError) as ei:
        svc.annotate(cred, 1, json.dumps(nested(limit + 1)))
    assert ei.value.errno == errno.EINVAL and str(limit) in str(ei.value)
    assert everything(svc) == before


def test_depth_counts_like_the_spec():
    svc = make({"depth_guest": 3})
    svc.annotate(A, 1, {"user": {"a": [1]}})  # depth 3
    with pytest.raises(ValueError):
        svc.annotate(A, 1, {"user": {"a": {"b": [1]}}})  # depth 4


def test_key_length():
    svc = make()
    svc.memo(A, 1, {"k" * 256: 1})
    before = everything(svc)
    for cred in (A, OWNER):
        with pytest.raises(ValueError) as ei:
            svc.memo(cred, 1, {"k" * 257: 1})
        assert ei.value.errno == errno.EINVAL and "256" in str(ei.value)
    assert everything(svc) == before


def test_keys_per_object():
    svc = make({"object_keys": 4})
    svc.memo(A, 1, {str(i): i for i in range(4)})
    before = everything(svc)
    with pytest.raises(ValueError) as ei:
        svc.memo(OWNER, 1, {str(i): i for i in range(5)})
    assert ei.value.errno == errno.EINVAL and "4" in str(ei.value)
    # the limit holds for the merged result too
    with pytest.raises(ValueError):
        svc.memo(A, 1, {"x": 1})
    assert everything(svc) == before


def test_default_object_keys_1024():
    svc = make()
    svc.memo(OWNER, 1, {str(i): 0 for i in range(1024)})
    with pytest.raises(AnnotError) as ei:
        svc.memo(OWNER, 2, {str(i): 0 for i in range(1025)})
    assert ei.value.errno == errno.EINVAL and "1024" in str(ei.value)


def test_order_of_checks_is_cheapest_first():
    svc = make({"guest_namespace_bytes": 10})
    # too long AND on someone else's job AND in a forbidden namespace: E2BIG (length)
    with pytest.raises(AnnotError) as ei:
        svc.annotate(A, 3, {"sched": {"x": "y" * 5000}})
    assert ei.value.errno == errno.E2BIG
    # too deep AND on someone else's job: EINVAL (C parse) before EPERM
    with pytest.raises(AnnotError) as ei:
        svc.annotate(A, 3, nested(9))
    assert ei.value.errno == errno.EINVAL
    # someone else's job AND namespace too big: EPERM before E2BIG
    with pytest.raises(AnnotError) as ei:
        svc.memo(A, 3, {"a": "x" * 100})
    assert ei.value.errno == errno.EPERM
    # forbidden namespace AND too big: EPERM
    with pytest.raises(AnnotError) as ei:
        svc.annotate(A, 1, {"site": {"a": "x" * 100}})
    assert ei.value.errno == errno.EPERM


def test_rejections_counted_by_reason():
    svc = make({"guest_rate": 0.001, "guest_burst": 4})
    for call in (
        lambda: svc.memo(A, 3, {"a": 1}),
        lambda: svc.memo(A, 77, {"a": 1}),
        lambda: svc.annotate(A, 1, {"user": {"": 1}}),
        lambda: svc.annotate(A, 1, "x" * 5000),
        lambda: svc.memo(A, 1, {"a": 1}),
    ):
        with pytest.raises(AnnotError):
            call()
    r = svc.stats()["rejected"]
    assert r == {"permission": 1, "unknown_job": 1, "invalid": 1, "payload_size": 1, "rate": 1}


def test_guest_rate_counts_reads_too():
    svc = make({"guest_rate": 0.001, "guest_burst": 3})
    svc.get(A, 1)
    svc.list(A)
    svc.memo(A, 1, {"a": 1})
    for call in (lambda: svc.get(A, 1), lambda: svc.list(A), lambda: svc.subscribe(A)):
        with pytest.raises(LimitError) as ei:
            call()
        assert ei.value.errno == errno.EAGAIN
    assert rejected(svc, "rate") == 3
    for _ in range(10):
        svc.get(OWNER, 1)
        svc.list(OWNER)
