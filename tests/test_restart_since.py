"""`since` across a restart of the service (docs/events.md, "Resuming").

A restart drops the volatile notes published before it (docs/durability.md),
and no batch tells a subscriber so. A subscriber resuming with a `since` from
before the restart would keep those notes forever: it gets EOVERFLOW "resync
needed" instead, unless the last close lost nothing volatile (then `since`
resumes as usual).
"""
import os
import signal
import subprocess
import sys

import pytest

from flux_annot import AnnotationService, AnnotError, Cred, sched

ME = os.getuid()
EOVERFLOW = 75


def _svc(path):
    return AnnotationService(owner_uid=ME, store=str(path))


def test_volatile_notes_dropped_by_a_restart_make_since_a_resync(tmp_path):
    db = tmp_path / "annot.db"
    svc = _svc(db)
    svc.submit(1, ME)
    svc.alloc_response(sched.annotate(1, t_estimate=1700000000.0, reason_pending="priority"))
    svc.flush()
    seq = svc.hub.last_seq
    svc.close()

    svc = _svc(db)
    try:
        owner = Cred.owner_of(svc)
        # The note a subscriber saw before the restart is gone ...
        assert svc.get(owner, 1)["annotations"] is None
        # ... so resuming from before the restart is refused, and changes nothing.
        for since in (seq, seq - 1):
            with pytest.raises(AnnotError) as ei:
                svc.subscribe(owner, since=since, delta=True)
            assert ei.value.errno == EOVERFLOW
            assert "restarted" in str(ei.value) and "list" in str(ei.value)
        # A snapshot is the way back, and later batches resume from it.
        sub = svc.subscribe(owner, snapshot=True, delta=True)
        snap = next(iter(sub))
        assert snap["snapshot"] and snap["jobs"][0]["annotations"] is None
        svc.memo(owner, 1, {"step": 1})
        svc.flush()
        later = svc.hub.last_seq
        assert [b["seq"] for b in sub] == [later]
        # A since after the restart's first batch is an ordinary resume.
        sub2 = svc.subscribe(owner, since=later)
        assert list(sub2) == []
        svc.memo(owner, 1, {"step": 2})
        svc.flush()
        assert [b["seq"] for b in sub2] == [later + 1]
    finally:
        svc.close()


def test_a_close_that_lost_nothing_keeps_since(tmp_path):
    db = tmp_path / "annot.db"
    svc = _svc(db)
    owner = Cred.owner_of(svc)
    svc.submit(1, ME)
    svc.memo(owner, 1, {"step": 1})  # durable
    svc.alloc_response(sched.annotate(1, t_estimate=1.0))
    svc.alloc_response(sched.success(1, resource_summary="rank0"))  # the alloc snapshot is durable
    svc.flush()
    seq = svc.hub.last_seq
    svc.close()

    svc = _svc(db)
    try:
        sub = svc.subscribe(owner, since=seq)
        assert list(sub) == []
        svc.memo(owner, 1, {"step": 2})
        svc.flush()
        (batch,) = list(sub)
        assert batch["seq"] == seq + 1
        assert batch["annotations"] == [[1, {"sched": {"resource_summary": "rank0"}, "user": {"step": 2}}]]
    finally:
        svc.close()


def test_the_clean_mark_speaks_for_one_start_only(tmp_path):
    """A clean close marks the store; a start consumes the mark, so a crash
    after that start (no close) makes the next start cautious again."""
    db = tmp_path / "annot.db"
    svc = _svc(db)
    svc.submit(1, ME)
    svc.flush()
    seq = svc.hub.last_seq
    svc.close()
    # A child process opens the store (consuming the mark) and is killed -9.
    code = (
        "import os, sys, signal\n"
        "from flux_annot import AnnotationService, sched\n"
        f"svc = AnnotationService(owner_uid={ME}, store={str(db)!r})\n"
        "sys.stdout.write('open\\n'); sys.stdout.flush()\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert p.stdout == "open\n" and p.returncode == -signal.SIGKILL
    svc = _svc(db)
    try:
        with pytest.raises(AnnotError) as ei:
            svc.subscribe(Cred.owner_of(svc), since=seq)
        assert ei.value.errno == EOVERFLOW
    finally:
        svc.close()
