"""Batches and subscriptions through the public service API (docs/events.md, docs/python-api.md)."""

import pytest

import flux_annot
from flux_annot import AnnotationService, Cred, sched
from flux_annot.errors import EINVAL, EOVERFLOW, AnnotError

OWNER = 1000
ALICE = 2001
BOB = 2002

LONG = 3600.0  # a window no test reaches: batches close only on flush()


def make(tmp_path=None, window=LONG, **config):
    store = str(tmp_path / "s.db") if tmp_path is not None else None
    return AnnotationService(owner_uid=OWNER, store=store, config=config or None,
                             batch_window=window)


@pytest.fixture
def svc():
    s = make()
    yield s
    s.close()


def owner(svc):
    return Cred.owner_of(svc)


def test_many_updates_of_one_job_coalesce_into_one_entry(svc):
    svc.submit(1, ALICE)
    svc.flush()
    sub = svc.subscribe(owner(svc))
    for i in range(50):
        svc.alloc_response(sched.annotate(1, t_estimate=float(i), jobs_ahead=i))
    svc.flush()
    batches = list(sub)
    assert len(batches) == 1
    b = batches[0]
    assert b["annotations"] == [[1, {"sched": {"t_estimate": 49.0, "jobs_ahead": 49}}]]
    assert "transitions" not in b  # nothing for that topic in this batch


def test_submit_transitions_and_seq_increase_without_gaps(svc):
    sub = svc.subscribe(owner(svc))
    svc.submit(1, ALICE)
    svc.flush()
    svc.submit(2, BOB)
    svc.flush()
    seqs = [b["seq"] for b in sub]
    assert len(seqs) == 2 and seqs[1] == seqs[0] + 1


def test_unchanged_update_publishes_nothing(svc):
    svc.submit(1, ALICE)
    svc.alloc_response(sched.annotate(1, t_estimate=5.0))
    svc.flush()
    sub = svc.subscribe(owner(svc))
    before = svc.hub.last_seq
    svc.alloc_response(sched.annotate(1, t_estimate=5.0))
    svc.flush()
    assert list(sub) == []
    assert svc.hub.last_seq == before


def test_success_annotations_and_run_in_the_same_batch():
    svc = make(window=0)
    try:
        sub = svc.subscribe(owner(svc))
        svc.submit(7, ALICE)
        svc.alloc_response(sched.annotate(7, t_estimate=100.0, reason_pending="busy"))
        svc.flush()
        svc.alloc_response(sched.success(7, resource_summary="rank0/core0"))
        svc.flush()
        batches = list(sub)
        run = [b for b in batches if any(t[1] == "RUN" for t in b.get("transitions", []))]
        assert len(run) == 1
        assert run[0]["annotations"] == [[7, {"sched": {"resource_summary": "rank0/core0"}}]]
        assert run[0]["transitions"][0][:2] == [7, "RUN"]
    finally:
        svc.close()


def test_topics_select_parts(svc):
    st = svc.subscribe(owner(svc), topics=["job-state"])
    an = svc.subscribe(owner(svc), topics=["job-annotations"])
    svc.submit(1, ALICE)
    svc.flush()
    svc.alloc_response(sched.annotate(1, t_estimate=1.0))
    svc.flush()
    sb = list(st)
    ab = list(an)
    assert len(sb) == 1 and "annotations" not in sb[0] and sb[0]["transitions"][0][:2] == [1, "SCHED"]
    assert len(ab) == 1 and "transitions" not in ab[0]
    assert ab[0]["annotations"] == [[1, {"sched": {"t_estimate": 1.0}}]]
    assert ab[0]["seq"] == sb[0]["seq"] + 1


def test_bad_subscribe_arguments_are_refused_and_add_nothing(svc):
    n = svc.hub.stats()["subscribers"]
    for kwargs, needle in [
        ({"topics": ["job-state", "bogus"]}, "unknown topic"),
        ({"topics": []}, "at least one"),
        ({"since": -1}, "since"),
        ({"since": "3"}, "since"),
        ({"since": 99}, "future"),
    ]:
        with pytest.raises(AnnotError) as ei:
            svc.subscribe(owner(svc), **kwargs)
        assert ei.value.errno == EINVAL, kwargs
        assert needle in str(ei.value)
    assert svc.hub.stats()["subscribers"] == n


def test_guest_never_sees_other_users_user_namespace(svc):
    svc.submit(1, ALICE)
    svc.submit(2, BOB)
    svc.flush()
    alice = svc.subscribe(Cred(ALICE))
    mine = svc.subscribe(Cred(ALICE), userid=ALICE) if _has_userid(svc) else None
    svc.memo(Cred(BOB), 2, {"secret": "bob's"})
    svc.memo(Cred(ALICE), 1, {"note": "alice's"})
    svc.alloc_response(sched.annotate(2, t_estimate=3.0))
    svc.flush()
    # Only bob's user namespace changes: alice's view of job 2 does not change.
    svc.memo(Cred(BOB), 2, {"secret": "changed"})
    svc.flush()
    got = list(alice)
    anns = [e for b in got for e in b.get("annotations", [])]
    assert [1, {"user": {"note": "alice's"}}] in anns
    assert [2, {"sched": {"t_estimate": 3.0}}] in anns
    assert "secret" not in repr(got) and "bob's" not in repr(got)
    assert len(anns) == 2  # the second memo of bob is invisible to alice
    if mine is not None:
        mine_anns = [e for b in mine for e in b.get("annotations", [])]
        assert mine_anns == [[1, {"user": {"note": "alice's"}}]]


def _has_userid(svc):
    import inspect

    return "userid" in inspect.signature(svc.subscribe).parameters or any(
        p.kind == p.VAR_KEYWORD for p in inspect.signature(svc.subscribe).parameters.values()
    )


def test_owner_filter_by_userid(svc):
    sub = svc.hub.subscribe(owner(svc), userid=BOB)
    svc.submit(1, ALICE)
    svc.submit(2, BOB)
    svc.alloc_response(sched.annotate(1, t_estimate=1.0))
    svc.alloc_response(sched.annotate(2, t_estimate=2.0))
    svc.flush()
    (b,) = list(sub)
    assert [t[0] for t in b["transitions"]] == [2]
    assert b["annotations"] == [[2, {"sched": {"t_estimate": 2.0}}]]


def test_since_replays_backlog_and_too_old_is_resync_needed():
    svc = make(events={"backlog": 3})
    try:
        svc.submit(1, ALICE)
        for i in range(5):
            svc.alloc_response(sched.annotate(1, t_estimate=float(i)))
            svc.flush()
        last = svc.hub.last_seq
        assert last == 5
        sub = svc.subscribe(owner(svc), since=last - 3)
        got = list(sub)
        assert [b["seq"] for b in got] == [last - 2, last - 1, last]
        assert got[-1]["annotations"] == [[1, {"sched": {"t_estimate": 4.0}}]]
        with pytest.raises(AnnotError) as ei:
            svc.subscribe(owner(svc), since=last - 4)
        assert ei.value.errno == EOVERFLOW and "resync needed" in str(ei.value)
        # since == last: nothing to replay, live from last + 1
        live = svc.subscribe(owner(svc), since=last)
        assert list(live) == []
        svc.alloc_response(sched.annotate(1, t_estimate=9.0))
        svc.flush()
        assert [b["seq"] for b in live] == [last + 1]
        # a guest resuming gets the derived guest view
        guest = svc.hub.subscribe(Cred(BOB), since=last - 1, delta=True)
        assert [b["seq"] for b in guest] == [last, last + 1]
    finally:
        svc.close()


def test_slow_subscriber_is_dropped_alone():
    svc = make(events={"subscriber_queue_bytes": 4096})
    try:
        slow = svc.subscribe(owner(svc))
        fast = svc.subscribe(owner(svc))
        svc.submit(1, ALICE)
        svc.flush()
        seen = [b["seq"] for b in fast]
        for i in range(200):
            svc.alloc_response(sched.annotate(1, t_estimate=float(i), reason_pending="x" * 50))
            svc.flush()
            seen.extend(b["seq"] for b in fast)
        assert seen == list(range(seen[0], seen[0] + len(seen))) and len(seen) == 201
        assert slow.closed and slow.error is not None and slow.error.errno == EOVERFLOW
        assert slow.queued_bytes == 0
        with pytest.raises(AnnotError) as ei:
            list(slow)
        assert ei.value.errno == EOVERFLOW
        assert list(slow) == []  # raised once; then just closed
        assert svc.hub.stats()["subscribers"] == 1
        assert svc.hub.stats()["dropped_subscribers"] == 1
    finally:
        svc.close()


def test_closed_subscription_gets_nothing(svc):
    sub = svc.subscribe(owner(svc))
    sub.close()
    svc.submit(1, ALICE)
    svc.flush()
    assert list(sub) == [] and sub.closed
    assert svc.hub.stats()["subscribers"] == 0


def test_notify_is_called_per_queued_batch(svc):
    calls = []
    svc.hub.subscribe(owner(svc), notify=lambda: calls.append(1))
    svc.submit(1, ALICE)
    svc.flush()
    svc.flush()  # nothing open: no batch, no call
    assert calls == [1]


def test_pop_raw_is_the_shared_encoding(svc):
    a = svc.subscribe(owner(svc))
    b = svc.subscribe(owner(svc))
    svc.submit(1, ALICE)
    svc.flush()
    ra, rb = a.pop_raw(), b.pop_raw()
    assert ra is rb and ra.startswith(b'{"seq":')
    assert a.pop_raw() is None


def test_snapshot_then_live_from_next_seq(svc):
    svc.submit(1, ALICE)
    svc.alloc_response(sched.annotate(1, t_estimate=1.0))
    svc.annotate(owner(svc), 1, {"site": {"rack": 4}}, volatile=True)
    svc.flush()
    svc.submit(2, BOB)
    svc.memo(Cred(BOB), 2, {"x": 1})  # open batch: the snapshot must include it
    guest = svc.subscribe(Cred(ALICE), snapshot=True)
    snap = next(iter(guest))
    assert snap["snapshot"] is True and snap["seq"] == svc.hub.last_seq
    jobs = {j["id"]: j for j in snap["jobs"]}
    assert jobs[1] == {"id": 1, "userid": ALICE, "state": "SCHED",
                       "annotations": {"sched": {"t_estimate": 1.0}, "site": {"rack": 4}}}
    assert jobs[2]["annotations"] is None  # bob's user namespace is not alice's to read
    svc.alloc_response(sched.annotate(2, t_estimate=2.0))
    svc.flush()
    (live,) = list(guest)
    assert live["seq"] == snap["seq"] + 1
    assert live["annotations"] == [[2, {"sched": {"t_estimate": 2.0}}]]


def test_since_resume_gives_what_a_live_subscriber_got(svc):
    """The Python-derived views of the backlog match the C-encoded live ones."""
    own = owner(svc)
    start = svc.hub.last_seq
    views = [
        dict(cred=Cred(ALICE)),
        dict(cred=Cred(ALICE), delta=True),
        dict(cred=Cred(ALICE), userid=BOB),
        dict(cred=Cred(ALICE), userid=ALICE, delta=True),
        dict(cred=own, userid=BOB),
        dict(cred=own, delta=True),
    ]
    live = [svc.hub.subscribe(v["cred"], **{k: x for k, x in v.items() if k != "cred"})
            for v in views]
    svc.submit(1, ALICE)
    svc.submit(2, BOB)
    svc.flush()
    svc.alloc_response(sched.annotate(1, t_estimate=1.0))
    svc.memo(Cred(BOB), 2, {"x": 1})
    svc.annotate(own, 2, {"site": {"r": 1}})
    svc.flush()
    svc.memo(Cred(BOB), 2, {"x": 2})
    svc.alloc_response(sched.annotate(2, t_estimate=5.0))
    svc.flush()
    svc.alloc_response(sched.success(1, resource_summary="r0"))
    svc.memo(Cred(ALICE), 1, {"y": [1, 2]})
    svc.flush()
    svc.state(1, "INACTIVE")
    svc.flush()
    for v, sub in zip(views, live):
        resumed = svc.hub.subscribe(v["cred"], since=start,
                                    **{k: x for k, x in v.items() if k != "cred"})
        assert list(resumed) == list(sub), v
