"""Helpers that build RFC 27 `sched.alloc` responses for `alloc_response`.

Each returns the payload dict ``{"id", "type", "annotations"?, "note"?}``
with the RFC 27 type numbers. Annotations go under the `sched` namespace,
as Flux schedulers do; only the keys given are sent (an unchanged estimate
need not be re-sent), and a value of None deletes the key (§2).

    svc.alloc_response(sched.annotate(id, t_estimate=t, reason_pending="..."))
    svc.alloc_response(sched.success(id, resource_summary="rank0/core[0-1]"))
"""

SUCCESS = 0
ANNOTATE = 1
DENY = 2
CANCEL = 3

from typing import Any

_UNSET: Any = object()


def annotate(id: int, t_estimate: Any = _UNSET, reason_pending: Any = _UNSET, **extra: Any) -> dict[str, Any]:
    """ANNOTATE: set (or with None, delete) `sched` keys of a pending job."""
    notes: dict[str, Any] = {}
    if t_estimate is not _UNSET:
        notes["t_estimate"] = t_estimate
    if reason_pending is not _UNSET:
        notes["reason_pending"] = reason_pending
    notes.update(extra)
    return {"id": id, "type": ANNOTATE, "annotations": {"sched": notes}}


def success(id: int, resource_summary: str | None = None, **extra: Any) -> dict[str, Any]:
    """SUCCESS: the job got its resources; pending-only notes are cleared."""
    notes: dict[str, Any] = {"t_estimate": None, "reason_pending": None, "jobs_ahead": None}
    if resource_summary is not None:
        notes["resource_summary"] = resource_summary
    notes.update(extra)
    return {"id": id, "type": SUCCESS, "annotations": {"sched": notes}}


def deny(id: int, note: str) -> dict[str, Any]:
    """DENY: the job can never run; `note` says why (kept as its exception)."""
    return {"id": id, "type": DENY, "note": note}


def cancel(id: int) -> dict[str, Any]:
    """CANCEL: the scheduler drops the request; the job stays pending."""
    return {"id": id, "type": CANCEL}
