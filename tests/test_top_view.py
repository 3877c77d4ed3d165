"""TopView, the part of `top` that decides which rows show and in what
order, fed by a LiveModel with snapshot and delta payloads as the service
sends them (the screen itself is tested in tmux, tests/test_top.py)."""

import os

from flux_annot.listing import JobFormat
from flux_annot.live import LiveModel
from flux_annot.top import TOP_FORMAT, TopView

ME = os.getuid()


def job(id, state="SCHED", ann=None, userid=ME):
    return {"id": id, "userid": userid, "state": state, "annotations": ann}


def sched(**kw):
    return {"sched": kw}


def view_of(jobs, **kw):
    m = LiveModel()
    m.apply_snapshot({"seq": 5, "snapshot": True, "jobs": jobs})
    v = TopView(m, JobFormat(TOP_FORMAT), **kw)
    v.update()
    return m, v


def test_queue_order_jobs_ahead_then_estimate_then_id_running_after():
    m, v = view_of([
        job(1, ann=sched(jobs_ahead=2)),
        job(2, ann=sched(jobs_ahead=0, t_estimate=300.0)),
        job(3, ann=sched(jobs_ahead=1, t_estimate=200.0)),
        job(4, ann=sched(jobs_ahead=1, t_estimate=100.0)),
        job(5),  # no estimate: after those with one
        job(6, state="RUN", ann=sched(resource_summary="rank0")),
        job(7, state="RUN"),
        job(8, state="INACTIVE"),  # not active: not shown by default
    ])
    assert v.order == [2, 4, 3, 1, 5, 7, 6]
    assert v.counts == {"SCHED": 5, "RUN": 2, "INACTIVE": 1}


def test_a_delta_moves_only_what_it_changes():
    m, v = view_of([job(1, ann=sched(jobs_ahead=0)), job(2, ann=sched(jobs_ahead=1)), job(3)])
    assert v.order == [1, 2, 3]
    v.take_rows_changed()
    m.apply_batch({"seq": 6, "annotations": [[3, sched(jobs_ahead=0)], [1, {"sched": {"jobs_ahead": 5}}]]})
    assert v.update()
    assert v.order == [3, 2, 1]
    assert v.take_rows_changed() == {1, 3}
    assert "5" in v.row(1).split()
    m.apply_batch({"seq": 7, "transitions": [[3, "RUN", 1.0]], "annotations": [[3, None]]})
    v.update()
    assert v.order == [2, 1, 3]
    assert v.counts == {"SCHED": 2, "RUN": 1}
    assert v.update() is False  # nothing new


def test_filter_user_and_text_and_states():
    m, v = view_of([
        job(1, ann={"user": {"note": "Mesh refine"}}),
        job(2, userid=4242, ann=sched(reason_pending="priority")),
        job(3, state="INACTIVE", ann={"user": {"note": "mesh done"}}),
    ], states=["SCHED", "INACTIVE"])
    assert v.order == [1, 2, 3]
    v.set_filter("MESH")
    v.update()
    assert v.order == [1, 3]
    v.set_filter("4242")
    v.update()
    assert v.order == [2]
    v.set_filter("")
    v.set_sort("id")
    v.update()
    assert v.order == [1, 2, 3]
    assert v.counts == {"SCHED": 2, "INACTIVE": 1}  # whatever the filter


def test_rows_use_the_listing_format_and_headings():
    m, v = view_of([job(9, ann={"sched": {"reason_pending": "x\x1b[2J"}, "user": {"a-b": 1}})])
    fmt = JobFormat(TOP_FORMAT)
    assert fmt.header().split() == ["JOBID", "USER", "ST", "AHEAD", "T_ESTIMATE", "REASON",
                                    "RESOURCES", "MEMO"]
    row = v.row(9)
    assert "\x1b" not in row and "\\x1b[2J" in row  # escaped, as list does
    assert row.endswith('{"a-b":1}')
