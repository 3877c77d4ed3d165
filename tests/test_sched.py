"""flux_annot.sched: RFC 27 payloads."""

from flux_annot import sched


def test_annotate_only_given_keys():
    assert sched.annotate(5, t_estimate=10.5) == {
        "id": 5,
        "type": 1,
        "annotations": {"sched": {"t_estimate": 10.5}},
    }
    assert sched.annotate(5, reason_pending="insufficient resources", jobs_ahead=2) == {
        "id": 5,
        "type": 1,
        "annotations": {"sched": {"reason_pending": "insufficient resources", "jobs_ahead": 2}},
    }
    # None is passed on: it deletes the key (docs/data-model.md)
    assert sched.annotate(5, t_estimate=None)["annotations"] == {"sched": {"t_estimate": None}}


def test_success_clears_pending_notes():
    assert sched.success(9, resource_summary="rank0/core0") == {
        "id": 9,
        "type": 0,
        "annotations": {
            "sched": {
                "t_estimate": None,
                "reason_pending": None,
                "jobs_ahead": None,
                "resource_summary": "rank0/core0",
            }
        },
    }
    assert "resource_summary" not in sched.success(9)["annotations"]["sched"]


def test_deny_cancel():
    assert sched.deny(3, "unsatisfiable") == {"id": 3, "type": 2, "note": "unsatisfiable"}
    assert sched.cancel(3) == {"id": 3, "type": 3}
