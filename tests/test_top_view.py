"""TopView, the part of `top` that decides which rows show and in what
order, fed by a LiveModel with snapshot and delta payloads as the service
sends them (the screen itself is tested in tmux, tests/test_top.py)."""

import os

from flux_annot.views.listing import JobFormat
from flux_annot.views.live import LiveModel
from flux_annot.views.top import TOP_FORMAT, TopView, _source, fit_header

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


def test_jobs_not_yet_in_the_schedulers_queue_come_after_it():
    """A Flux job goes NEW → DEPEND → PRIORITY → SCHED: only SCHED jobs are
    in the scheduler's queue, so an older job still in DEPEND waits behind
    them; the states before SCHED are counted like any other."""
    m, v = view_of([
        job(1, state="NEW"),
        job(2, state="DEPEND"),
        job(3, state="PRIORITY"),
        job(4, state="DEPEND"),
        job(5),
        job(6, ann=sched(jobs_ahead=0)),
        job(7, state="RUN"),
    ])
    assert v.order == [6, 5, 3, 2, 4, 1, 7]
    assert v.counts == {"NEW": 1, "DEPEND": 2, "PRIORITY": 1, "SCHED": 2, "RUN": 1}
    # Flux moves the DEPEND job on: it joins the scheduler's queue by id
    m.apply_batch({"seq": 6, "transitions": [[2, "PRIORITY", 1.0]]})
    v.update()
    assert v.order == [6, 5, 2, 3, 4, 1, 7]
    m.apply_batch({"seq": 7, "transitions": [[2, "SCHED", 2.0]]})
    v.update()
    assert v.order == [6, 2, 5, 3, 4, 1, 7]
    assert v.counts == {"NEW": 1, "DEPEND": 1, "PRIORITY": 1, "SCHED": 3, "RUN": 1}


def test_header_keeps_the_flux_instance_and_seq_on_a_narrow_screen():
    sock = "/tmp/fa-msock-kxnj1tdb/run/socket"
    uri = "local:///tmp/fa-flux-ugp_v071/run/local-0"
    right = "seq 42  3 ev/s  12:00:00"
    mirror = _source(sock, {"flux": {"mirror": True, "uri": uri}})
    assert _source(sock, {"jobs": {}}) == (sock,)
    wide = fit_header(mirror, right, 200)
    assert wide == f"flux-annot top  {sock} (Flux {uri})  {right}"
    # narrower: the socket gives way to the Flux instance, then the title
    assert fit_header(mirror, right, 90) == f"flux-annot top  Flux {uri}  {right}"
    assert fit_header(mirror, right, 80) == f"Flux {uri}  {right}"
    # then the URI keeps its end
    narrow = fit_header(mirror, right, 50)
    assert len(narrow) == 50 and narrow.endswith(f"local-0  {right}")
    # without a mirror the socket alone, cut the same way
    assert fit_header((sock,), right, 80) == f"flux-annot top  {sock}  {right}"
    assert fit_header((sock,), right, 40).endswith(f"socket  {right}")


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
