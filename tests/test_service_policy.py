"""docs/policy.md, one test per row of the namespace table and per rule below it,
through the public API (AnnotationService, Cred), messages included."""

import errno

import pytest

from flux_annot import AnnotationService, Cred, sched
from flux_annot.errors import AnnotError

OWNER_UID, ALICE, BOB = 1000, 2001, 2002
OWNER = Cred(OWNER_UID, owner=True)
A, B = Cred(ALICE), Cred(BOB)


def make(config=None):
    svc = AnnotationService(owner_uid=OWNER_UID, config=config)
    svc.submit(1, ALICE)
    svc.submit(2, BOB)
    return svc


def ann(svc, id, cred=OWNER):
    return svc.get(cred, id)["annotations"]


def refused(exc_info, errnum, message):
    assert exc_info.value.errno == errnum
    assert message in str(exc_info.value)


# -- row `sched` -------------------------------------------------------------


def test_sched_written_by_alloc_response_read_by_everyone():
    svc = make()
    assert svc.alloc_response(sched.annotate(1, t_estimate=100.0)) == {}
    for cred in (OWNER, A, B):
        assert ann(svc, 1, cred) == {"sched": {"t_estimate": 100.0}}


@pytest.mark.parametrize("cred", [OWNER, A])
def test_sched_annotate_refused_for_everyone(cred):
    svc = make()
    svc.alloc_response(sched.annotate(1, t_estimate=1.0))
    with pytest.raises(PermissionError) as ei:
        svc.annotate(cred, 1, {"sched": {"t_estimate": 5}})
    refused(ei, errno.EPERM, "the sched namespace is reserved for the scheduler")
    with pytest.raises(AnnotError) as ei:  # deleting it is writing it too
        svc.annotate(cred, 1, '{"sched":null}')
    refused(ei, errno.EPERM, "the sched namespace is reserved for the scheduler")
    assert ann(svc, 1) == {"sched": {"t_estimate": 1.0}}


# -- row `user` --------------------------------------------------------------


def test_user_written_by_job_owner_and_instance_owner():
    svc = make()
    svc.memo(A, 1, {"note": "mine"})
    svc.annotate(OWNER, 1, {"user": {"from": "admin"}})
    svc.annotate(A, 1, b'{"user":{"n":1}}')
    assert ann(svc, 1) == {"user": {"note": "mine", "from": "admin", "n": 1}}


def test_user_not_written_by_other_guests():
    svc = make()
    with pytest.raises(PermissionError) as ei:
        svc.memo(B, 1, {"x": 1})
    refused(ei, errno.EPERM, "guests can only annotate their own jobs")
    with pytest.raises(AnnotError) as ei:
        svc.annotate(B, 1, {"user": {"x": 1}})
    refused(ei, errno.EPERM, "guests can only annotate their own jobs")
    assert ann(svc, 1) is None


def test_user_read_by_job_owner_and_instance_owner_only():
    svc = make()
    svc.alloc_response(sched.annotate(1, reason_pending="waiting"))
    svc.memo(A, 1, {"secret": "s"})
    whole = {"sched": {"reason_pending": "waiting"}, "user": {"secret": "s"}}
    assert ann(svc, 1, OWNER) == whole
    assert ann(svc, 1, A) == whole
    assert ann(svc, 1, B) == {"sched": {"reason_pending": "waiting"}}
    listed = {j["id"]: j["annotations"] for j in svc.list(B)}
    assert listed == {1: {"sched": {"reason_pending": "waiting"}}, 2: None}
    listed = {j["id"]: j["annotations"] for j in svc.list(A)}
    assert listed[1] == whole


# -- row "any other" ---------------------------------------------------------


def test_other_namespace_written_by_owner_only():
    svc = make()
    svc.annotate(OWNER, 1, {"workflow": {"stage": 3}, "site": {"x": True}})
    with pytest.raises(PermissionError) as ei:
        svc.annotate(A, 1, {"workflow": {"stage": 4}})
    refused(ei, errno.EPERM, "'workflow'")
    with pytest.raises(PermissionError) as ei:
        svc.annotate(A, 1, {"user": {"ok": 1}, "site": None})
    refused(ei, errno.EPERM, "'site'")
    assert ann(svc, 1) == {"workflow": {"stage": 3}, "site": {"x": True}}


def test_other_namespace_read_by_owner_and_job_user_not_others():
    svc = make()
    svc.annotate(OWNER, 1, {"workflow": {"stage": 3}})
    assert ann(svc, 1, OWNER) == {"workflow": {"stage": 3}}
    # docs/DESIGN.md: the job's own user sees its whole tree
    assert ann(svc, 1, A) == {"workflow": {"stage": 3}}
    assert ann(svc, 1, B) is None


# -- the rules below the table ---------------------------------------------------


def test_guest_patch_only_user_key_names_offender():
    svc = make()
    for bad in ({"user": {"a": 1}, "foo": {"b": 1}}, '{"user":{"a":1},"foo":null}'):
        with pytest.raises(AnnotError) as ei:
            svc.annotate(A, 1, bad)
        refused(ei, errno.EPERM, "'foo'")
    assert ann(svc, 1) is None


def test_unknown_and_inactive_jobs():
    svc = make()
    with pytest.raises(LookupError) as ei:
        svc.annotate(OWNER, 99, {"user": {"a": 1}})
    refused(ei, errno.ENOENT, "unknown job id")
    with pytest.raises(AnnotError) as ei:
        svc.memo(A, 99, {"a": 1})
    refused(ei, errno.ENOENT, "unknown job id")
    with pytest.raises(AnnotError) as ei:
        svc.get(A, 99)
    refused(ei, errno.ENOENT, "unknown job id")
    svc.memo(A, 1, {"kept": 1})
    svc.state(1, "INACTIVE")
    for cred in (OWNER, A):
        with pytest.raises(AnnotError) as ei:
            svc.memo(cred, 1, {"a": 1})
        refused(ei, errno.ENOENT, "job is inactive")
    assert ann(svc, 1, A) == {"user": {"kept": 1}}  # still readable


def test_guest_sees_own_jobs_whole():
    svc = make()
    svc.annotate(OWNER, 2, {"site": {"rack": 4}, "user": {"o": 1}})
    svc.alloc_response(sched.annotate(2, jobs_ahead=0))
    assert ann(svc, 2, B) == {"site": {"rack": 4}, "user": {"o": 1}, "sched": {"jobs_ahead": 0}}
    assert ann(svc, 2, A) == {"sched": {"jobs_ahead": 0}}


# -- configurable ------------------------------------------------------------------


def test_config_makes_namespace_public():
    svc = make({"namespace": {"workflow": {"read": ["all"]}}})
    svc.annotate(OWNER, 1, {"workflow": {"stage": 3}, "site": {"x": 1}})
    assert ann(svc, 1, B) == {"workflow": {"stage": 3}}


def test_config_default_public_uses_exclude_mode():
    svc = make({"namespace": {"default": {"read": ["all"]}}})
    svc.annotate(OWNER, 1, {"workflow": {"s": 1}, "user": {"u": 1}})
    svc.alloc_response(sched.annotate(1, t_estimate=2.0))
    assert ann(svc, 1, B) == {"workflow": {"s": 1}, "sched": {"t_estimate": 2.0}}


def test_config_owner_may_write_sched_and_guest_may_not_write_user():
    svc = make(
        {"namespace": {"sched": {"write": ["sched", "owner"]}, "user": {"write": ["owner"]}}}
    )
    svc.annotate(OWNER, 1, {"sched": {"t_estimate": 7}})
    with pytest.raises(PermissionError) as ei:
        svc.memo(A, 1, {"a": 1})
    refused(ei, errno.EPERM, "'user'")
    assert ann(svc, 1) == {"sched": {"t_estimate": 7}}


def test_config_guest_may_write_a_namespace():
    svc = make({"namespace": {"workflow": {"write": ["owner", "job-owner"]}}})
    svc.annotate(A, 1, {"workflow": {"mine": True}})
    assert ann(svc, 1) == {"workflow": {"mine": True}}


def test_config_limits_alloc_response_namespaces():
    svc = make()
    with pytest.raises(PermissionError) as ei:
        svc.alloc_response({"id": 1, "type": 1, "annotations": {"user": {"x": 1}}})
    refused(ei, errno.EPERM, "'user'")
    svc = make({"namespace": {"default": {"write": ["owner", "sched"]}}})
    svc.alloc_response({"id": 1, "type": 1, "annotations": {"resources": {"x": 1}}})
    assert ann(svc, 1) == {"resources": {"x": 1}}


def test_bad_annotations_type():
    svc = make()
    for bad, cred in ((["user"], A), (42, OWNER), ('["x"]', A), ("{nope", OWNER)):
        with pytest.raises(ValueError) as ei:
            svc.annotate(cred, 1, bad)
        assert ei.value.errno in (errno.EINVAL, errno.EPROTO)
    with pytest.raises(ValueError):
        svc.annotate(A, 1, {"user": {"a": 1}}, volatile="yes")
    assert ann(svc, 1) is None
    assert svc.stats()["rejected"]["invalid"] == 5


def test_namespace_values_must_be_objects():
    """docs/data-model.md: each namespace's value is an object (null deletes it)."""
    svc = make()
    svc.memo(A, 1, {"k": 1})
    before = ann(svc, 1)
    for cred, bad in (
        (OWNER, {"user": 5}),
        (OWNER, '{"site":"x"}'),
        (A, {"user": [1]}),
        (A, b'{"user":true}'),
    ):
        with pytest.raises(ValueError) as ei:
            svc.annotate(cred, 1, bad)
        assert ei.value.errno == errno.EINVAL and "must be an object" in str(ei.value)
    for cred in (OWNER, A):
        with pytest.raises(ValueError) as ei:
            svc.memo(cred, 1, "5")
        assert str(ei.value) == "memo must be a JSON object"
    with pytest.raises(ValueError) as ei:
        svc.alloc_response({"id": 1, "type": 1, "annotations": {"sched": "busy"}})
    assert ei.value.errno == errno.EPROTO and "'sched'" in str(ei.value)
    assert ann(svc, 1) == before
    svc.annotate(A, 1, '{"user":null}')  # null deletes the namespace
    assert ann(svc, 1) is None


def test_cred_must_be_a_cred():
    svc = make()
    for call in (
        lambda: svc.get(ALICE, 1),
        lambda: svc.list("owner"),
        lambda: svc.memo(None, 1, {"a": 1}),
        lambda: svc.annotate({"userid": ALICE}, 1, {"user": {"a": 1}}),
    ):
        with pytest.raises(ValueError) as ei:
            call()
        assert "cred must be a flux_annot.Cred" in str(ei.value)
    assert ann(svc, 1) is None
