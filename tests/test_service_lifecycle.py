"""docs/lifecycle.md: life cycle and alloc responses, one test per row of the table,
malformed responses, `state` transitions, and a t2206-style life cycle
(flux-core t/t2206-job-manager-annotate.t: five jobs on two cores)."""

import errno
import itertools

import pytest

from flux_annot import AnnotationService, Cred, sched
from flux_annot.errors import AnnotError

OWNER_UID, ALICE, BOB = 1000, 2001, 2002
OWNER = Cred(OWNER_UID, owner=True)
A = Cred(ALICE)


@pytest.fixture
def svc():
    s = AnnotationService(owner_uid=OWNER_UID, batch_window=3600)
    yield s
    s.close()


def ann(svc, id, cred=OWNER):
    return svc.get(cred, id)["annotations"]


def st(svc, id):
    return svc.get(OWNER, id)["state"]


def states_published(svc, sub):
    svc.flush()
    return [tuple(t[:2]) for batch in sub for t in batch.get("transitions", [])]


# -- submit ------------------------------------------------------------------


def test_submit_creates_sched_job_and_refuses_known_id(svc):
    svc.submit(7, ALICE, t_submit=1700000000.5)
    assert svc.get(A, 7) == {"id": 7, "userid": ALICE, "state": "SCHED", "annotations": None}
    with pytest.raises(AnnotError) as ei:
        svc.submit(7, BOB)
    assert ei.value.errno == errno.EEXIST
    assert svc.get(OWNER, 7)["userid"] == ALICE
    for bad in ((-1, ALICE), (1 << 64, ALICE), ("8", ALICE), (8, -5), (8, 1 << 32)):
        with pytest.raises(ValueError):
            svc.submit(*bad)
    with pytest.raises(ValueError):
        svc.submit(8, ALICE, t_submit="now")
    assert list(svc.jobs) == [7]
    assert svc.stats()["jobs"]["SCHED"] == 1


# -- the alloc response table ----------------------------------------------


def test_annotate_row(svc):
    svc.submit(1, ALICE)
    assert svc.alloc_response(sched.annotate(1, t_estimate=5.0, reason_pending="busy")) == {}
    assert svc.alloc_response(sched.annotate(1, t_estimate=None, jobs_ahead=3)) == {}
    assert ann(svc, 1) == {"sched": {"reason_pending": "busy", "jobs_ahead": 3}}
    assert st(svc, 1) == "SCHED"
    with pytest.raises(ValueError) as ei:
        svc.alloc_response({"id": 1, "type": 1})
    assert ei.value.errno == errno.EPROTO and "annotations" in str(ei.value)


def test_success_row_annotations_then_run_in_one_batch(svc):
    svc.submit(1, ALICE)
    svc.alloc_response(sched.annotate(1, t_estimate=5.0, jobs_ahead=0))
    svc.flush()
    sub = svc.subscribe(OWNER)
    assert svc.alloc_response(sched.success(1, resource_summary="rank0/core0")) == {}
    assert st(svc, 1) == "RUN"
    assert ann(svc, 1) == {"sched": {"resource_summary": "rank0/core0"}}
    svc.flush()
    batches = list(sub)
    assert len(batches) == 1
    b = batches[0]
    assert [t[:2] for t in b["transitions"]] == [[1, "RUN"]]
    assert b["annotations"] == [[1, {"sched": {"resource_summary": "rank0/core0"}}]]
    # SUCCESS without annotations is fine too
    svc.submit(2, ALICE)
    svc.alloc_response({"id": 2, "type": 0})
    assert st(svc, 2) == "RUN" and ann(svc, 2) is None


def test_success_snapshot_is_durable(tmp_path):
    path = tmp_path / "s.db"
    s = AnnotationService(owner_uid=OWNER_UID, store=str(path))
    s.submit(1, ALICE)
    s.submit(2, ALICE)
    s.alloc_response(sched.annotate(1, t_estimate=9.0))
    s.alloc_response(sched.annotate(2, reason_pending="volatile, lost"))
    s.memo(A, 2, {"durable": True})
    s.memo(A, 2, {"gone": True}, volatile=True)
    s.alloc_response(sched.success(1, resource_summary="rank0"))
    s.memo(A, 1, {"v": 1}, volatile=True)  # after the alloc: lost
    s.close()
    s = AnnotationService(owner_uid=OWNER_UID, store=str(path))
    try:
        assert s.get(OWNER, 1) == {
            "id": 1,
            "userid": ALICE,
            "state": "RUN",
            "annotations": {"sched": {"resource_summary": "rank0"}},
        }
        assert ann(s, 2) == {"user": {"durable": True}}
        assert st(s, 2) == "SCHED"
    finally:
        s.close()


def test_deny_row(svc):
    svc.submit(1, ALICE)
    svc.memo(A, 1, {"mine": 1})
    svc.alloc_response(sched.annotate(1, reason_pending="looking"))
    assert svc.alloc_response(sched.deny(1, "unsatisfiable request")) == {}
    got = svc.get(A, 1)
    assert got["state"] == "INACTIVE"
    assert got["annotations"] == {"user": {"mine": 1}}
    assert got["exception"] == "unsatisfiable request"
    assert svc.stats()["jobs"]["INACTIVE"] == 1


def test_cancel_row(svc):
    svc.submit(1, ALICE)
    svc.memo(A, 1, {"mine": 1})
    svc.alloc_response(sched.annotate(1, reason_pending="looking", jobs_ahead=4))
    assert svc.alloc_response(sched.cancel(1)) == {}
    assert st(svc, 1) == "SCHED"
    assert ann(svc, 1) == {"user": {"mine": 1}}
    # requeued: the scheduler can annotate and allocate it again
    svc.alloc_response(sched.annotate(1, jobs_ahead=0))
    svc.alloc_response(sched.success(1))
    assert st(svc, 1) == "RUN"


@pytest.mark.parametrize("typ", [0, 1, 2, 3])
def test_response_for_job_not_in_sched_is_ignored(svc, typ):
    svc.submit(1, ALICE)
    svc.alloc_response(sched.annotate(1, reason_pending="x"))
    svc.alloc_response(sched.success(1, resource_summary="r0"))
    svc.memo(A, 1, {"k": 1})
    payload = {"id": 1, "type": typ, "annotations": {"sched": {"late": True}}, "note": "n"}
    before = svc.get(OWNER, 1)
    assert svc.alloc_response(payload) == {"ignored": True}
    assert svc.alloc_response(dict(payload, id=424242)) == {"ignored": True}
    assert svc.get(OWNER, 1) == before
    assert svc.stats()["ignored"] == 2


@pytest.mark.parametrize(
    "payload, field",
    [
        ({"type": 1, "annotations": {}}, "'id'"),
        ({"id": "1", "type": 1, "annotations": {}}, "'id'"),
        ({"id": 1.0, "type": 1, "annotations": {}}, "'id'"),
        ({"id": 1, "annotations": {}}, "'type'"),
        ({"id": 1, "type": 7, "annotations": {}}, "'type'"),
        ({"id": 1, "type": "ANNOTATE", "annotations": {}}, "'type'"),
        ({"id": 1, "type": 1}, "'annotations'"),
        ({"id": 1, "type": 1, "annotations": [1]}, "'annotations'"),
        ({"id": 1, "type": 0, "annotations": "x"}, "'annotations'"),
        ({"id": 1, "type": 2, "note": 5}, "'note'"),
        ([1, 1], "object"),
    ],
)
def test_malformed_alloc_response_is_eproto(svc, payload, field):
    svc.submit(1, ALICE)
    svc.alloc_response(sched.annotate(1, t_estimate=1.0))
    before = svc.get(OWNER, 1)
    with pytest.raises(ValueError) as ei:
        svc.alloc_response(payload)
    assert ei.value.errno == errno.EPROTO
    assert field in str(ei.value)
    assert svc.get(OWNER, 1) == before
    assert svc.stats()["rejected"]["malformed"] == 1


def test_alloc_annotations_bad_json_is_rejected(svc):
    svc.submit(1, ALICE)
    for bad in ({"sched": {"x": float("nan")}}, {"sched": {"x": object()}}, {"sched": {"": 1}}):
        with pytest.raises(ValueError):
            svc.alloc_response({"id": 1, "type": 1, "annotations": bad})
    assert ann(svc, 1) is None and st(svc, 1) == "SCHED"


# -- state() -------------------------------------------------------------------

ALLOWED = {("RUN", "CLEANUP"), ("CLEANUP", "INACTIVE"), ("RUN", "INACTIVE"), ("SCHED", "INACTIVE")}
ALL = ["NEW", "DEPEND", "PRIORITY", "SCHED", "RUN", "CLEANUP", "INACTIVE"]


def _bring(svc, id, state):
    svc.submit(id, ALICE)
    if state in ("RUN", "CLEANUP", "INACTIVE"):
        svc.alloc_response(sched.success(id))
    if state in ("CLEANUP", "INACTIVE"):
        svc.state(id, "CLEANUP")
    if state == "INACTIVE":
        svc.state(id, "INACTIVE")


@pytest.mark.parametrize(
    "src, dst", list(itertools.product(["SCHED", "RUN", "CLEANUP", "INACTIVE"], ALL))
)
def test_state_transitions(svc, src, dst):
    _bring(svc, 1, src)
    counts = svc.stats()["jobs"]
    if (src, dst) in ALLOWED:
        svc.state(1, dst)
        assert st(svc, 1) == dst
    else:
        with pytest.raises(ValueError) as ei:
            svc.state(1, dst)
        assert ei.value.errno == errno.EINVAL
        assert src in str(ei.value) and dst in str(ei.value)
        assert st(svc, 1) == src and svc.stats()["jobs"] == counts


def test_state_arguments(svc):
    _bring(svc, 1, "RUN")
    with pytest.raises(ValueError) as ei:
        svc.state(1, "FINISHED")
    assert "FINISHED" in str(ei.value)
    with pytest.raises(ValueError):
        svc.state(1, "CLEANUP", note=3)
    with pytest.raises(LookupError):
        svc.state(99, "CLEANUP")
    svc.state(1, "c")  # abbreviations and lower case, as flux jobs
    assert st(svc, 1) == "CLEANUP"


def test_canceled_while_pending_discards_sched_keeps_note_and_user(svc):
    svc.submit(1, ALICE)
    svc.memo(A, 1, {"why": "test"})
    svc.alloc_response(sched.annotate(1, reason_pending="busy"))
    svc.state(1, "INACTIVE", note="canceled by user")
    got = svc.get(A, 1)
    assert got["annotations"] == {"user": {"why": "test"}}
    assert got["exception"] == "canceled by user" and got["state"] == "INACTIVE"
    svc.submit(2, ALICE)
    svc.state(2, "INACTIVE")  # no note: no exception key
    assert "exception" not in svc.get(A, 2)


def test_annotate_allowed_in_every_state_but_inactive(svc):
    _bring(svc, 1, "SCHED")
    svc.memo(A, 1, {"s": 1})
    svc.alloc_response(sched.success(1))
    svc.memo(A, 1, {"r": 1})
    svc.state(1, "CLEANUP")
    svc.memo(A, 1, {"c": 1})
    svc.annotate(OWNER, 1, {"site": {"c": 1}})
    svc.state(1, "INACTIVE")
    with pytest.raises(LookupError):
        svc.memo(A, 1, {"i": 1})
    assert ann(svc, 1, A) == {"user": {"s": 1, "r": 1, "c": 1}, "site": {"c": 1}}


# -- t2206-style -----------------------------------------------------------------


def test_t2206_five_jobs_two_cores(svc):
    """Two cores: jobs 1, 2 run; 3, 4, 5 wait with estimates; 4 is canceled;
    all finish. Which notes survive where."""
    for id in range(1, 6):
        svc.submit(id, ALICE, t_submit=1000.0 + id)
    svc.memo(A, 3, {"purpose": "keep me"})
    sub = svc.subscribe(A)

    # a scheduling cycle
    svc.alloc_response(sched.success(1, resource_summary="rank0/core0"))
    svc.alloc_response(sched.success(2, resource_summary="rank0/core1"))
    for ahead, id in enumerate((3, 4, 5)):
        svc.alloc_response(
            sched.annotate(
                id,
                t_estimate=2000.0 + ahead,
                reason_pending="insufficient resources",
                jobs_ahead=ahead,
            )
        )
    listing = {j["id"]: (j["state"], j["annotations"]) for j in svc.list(A)}
    assert listing[1] == ("RUN", {"sched": {"resource_summary": "rank0/core0"}})
    assert listing[3] == (
        "SCHED",
        {
            "user": {"purpose": "keep me"},
            "sched": {"t_estimate": 2000.0, "reason_pending": "insufficient resources", "jobs_ahead": 0},
        },
    )
    assert listing[5][1]["sched"]["jobs_ahead"] == 2

    # cancel 4 while pending: its pending notes go, the job is inactive
    svc.state(4, "INACTIVE", note="canceled")
    assert svc.get(A, 4)["annotations"] is None
    svc.alloc_response(sched.annotate(5, jobs_ahead=1))  # the next cycle

    # 1 finishes, 3 gets its core; its pending notes are replaced by the allocation
    svc.state(1, "CLEANUP")
    svc.state(1, "INACTIVE")
    svc.alloc_response(sched.success(3, resource_summary="rank0/core0"))
    svc.alloc_response(sched.annotate(5, jobs_ahead=0))
    assert ann(svc, 3) == {
        "user": {"purpose": "keep me"},
        "sched": {"resource_summary": "rank0/core0"},
    }
    # 2 finishes, 5 runs; then everything finishes
    svc.state(2, "INACTIVE")
    svc.alloc_response(sched.success(5, resource_summary="rank0/core1"))
    for id in (3, 5):
        svc.state(id, "CLEANUP")
        svc.state(id, "INACTIVE")

    final = {j["id"]: j for j in svc.list(OWNER)}
    assert all(j["state"] == "INACTIVE" for j in final.values())
    assert final[1]["annotations"] == {"sched": {"resource_summary": "rank0/core0"}}
    assert final[2]["annotations"] == {"sched": {"resource_summary": "rank0/core1"}}
    assert final[3]["annotations"] == {
        "user": {"purpose": "keep me"},
        "sched": {"resource_summary": "rank0/core0"},
    }
    assert final[4]["annotations"] is None and final[4]["exception"] == "canceled"
    assert final[5]["annotations"] == {"sched": {"resource_summary": "rank0/core1"}}
    assert svc.stats()["jobs"] == {"SCHED": 0, "RUN": 0, "CLEANUP": 0, "INACTIVE": 5}
    # a guest sees the scheduler's notes of alice's jobs but not her memo
    assert svc.get(Cred(BOB), 3)["annotations"] == {"sched": {"resource_summary": "rank0/core0"}}
    # the watcher saw every job reach INACTIVE, RUN always after its allocation
    seen = states_published(svc, sub)
    assert sorted(i for i, s in seen if s == "INACTIVE") == [1, 2, 3, 4, 5]
    assert sorted(i for i, s in seen if s == "RUN") == [1, 2, 3, 5]


# -- batches ---------------------------------------------------------------------


def test_batch_closes_when_window_passes():
    s = AnnotationService(owner_uid=OWNER_UID, batch_window=0)
    sub = s.subscribe(OWNER)
    s.submit(1, ALICE)
    assert list(sub) == []  # still open
    s.alloc_response(sched.annotate(1, t_estimate=1.0))  # window 0: this call closes it
    got = list(sub)
    assert len(got) == 1 and got[0]["transitions"][0][:2] == [1, "SCHED"]
    s.close()
    assert [b["annotations"] for b in sub] == [[[1, {"sched": {"t_estimate": 1.0}}]]]


def test_batch_closes_when_full():
    s = AnnotationService(owner_uid=OWNER_UID, config={"batch": {"max_entries": 5, "window": 3600}})
    sub = s.subscribe(OWNER)
    for id in range(1, 5):  # 2 entries each (submit entry + transition)
        s.submit(id, ALICE)  # the 4th call finds 6 >= 5 waiting: closes first
    assert [len(b["transitions"]) for b in sub] == [3]
    s.close()


def test_config_window_wins_over_argument():
    s = AnnotationService(owner_uid=OWNER_UID, batch_window=5, config={"batch": {"window": 0}})
    assert s.config.batch.window == 0
    s.close()
    s = AnnotationService(owner_uid=OWNER_UID, batch_window=5)
    assert s.config.batch.window == 5
    s.close()
    with pytest.raises(ValueError):
        AnnotationService(batch_window=-1)


def test_stats_shape(svc):
    svc.submit(1, ALICE)
    svc.alloc_response(sched.annotate(1, t_estimate=1.0))
    svc.memo(A, 1, {"a": 1})
    svc.get(A, 1)
    s = svc.stats()
    assert s["jobs"]["SCHED"] == 1
    assert s["requests"]["alloc-response"] == 1 and s["requests"]["memo"] == 1
    assert s["requests"]["submit"] == 1 and s["requests"]["get"] == 1
    assert s["ignored"] == 0 and s["rejected"] == {}
    assert s["memory_bytes"] > 0


def test_restart_keeps_states_notes_and_user_totals(tmp_path):
    path = str(tmp_path / "s.db")
    cfg = {"limits": {"guest_user_total_bytes": 40}}
    s = AnnotationService(owner_uid=OWNER_UID, store=path, config=cfg)
    s.submit(1, ALICE)
    s.submit(2, ALICE)
    s.submit(3, ALICE)
    s.memo(A, 1, {"a": "x" * 20})  # 28 bytes of alice's 40
    s.alloc_response(sched.deny(2, "no such resources"))
    s.alloc_response(sched.success(3))
    s.state(3, "CLEANUP", note="node failure")
    s.close()
    s = AnnotationService(owner_uid=OWNER_UID, store=path, config=cfg)
    try:
        assert [s.get(OWNER, i)["state"] for i in (1, 2, 3)] == ["SCHED", "INACTIVE", "CLEANUP"]
        assert s.get(A, 2)["exception"] == "no such resources"
        assert s.get(A, 3)["exception"] == "node failure"
        assert s.stats()["jobs"] == {"SCHED": 1, "RUN": 0, "CLEANUP": 1, "INACTIVE": 1}
        with pytest.raises(AnnotError) as ei:  # the total came back from the store
            s.memo(A, 3, {"b": "y" * 10})
        assert ei.value.errno == errno.EDQUOT
        s.state(1, "INACTIVE")  # frees it
        s.memo(A, 3, {"b": "y" * 10})
        # ids keep working after a restart: EEXIST, life cycle goes on
        with pytest.raises(AnnotError):
            s.submit(1, ALICE)
        s.state(3, "INACTIVE")
    finally:
        s.close()
