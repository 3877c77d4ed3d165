"""Estimate accuracy (docs/accuracy.md) in-process and through the server,
with estimates and allocations at times the test sets (the service's clock
is replaced): errors exact to the arrival times, repeats counted once,
denied jobs never started, queues, restarts, visibility, bad input."""

import json
import os
import sqlite3
import subprocess
import sys

import pytest

from flux_annot.service.accuracy import MAX_VALUES, summarize
from flux_annot.wire.client import Client
from flux_annot.errors import AnnotError
from flux_annot.service.policy import Cred
from flux_annot.service.service import AnnotationService

OWNER = Cred(0, owner=True)
ALICE, BOB = 1001, 1002
CONFIG = {"accuracy": {"horizons": [5, 20]}}


class Clock:
    def __init__(self, t=1000.0):
        self.t = t

    def __call__(self):
        return self.t


@pytest.fixture
def clock():
    return Clock()


def Service(clock, **kw):
    """The service on the test's clock (AnnotationService(clock=...))."""
    kw.setdefault("config", CONFIG)
    return AnnotationService(clock=clock, **kw)


def annotate(svc, jobid, sched):
    svc.alloc_response({"id": jobid, "type": 1, "annotations": {"sched": sched}})


def scenario(svc, clock):
    """Job 1 (alice, queue batch): estimates 1100 @1000, again 1100 @1010
    (a repeat), 1050 @1020, started @1040. Job 2 (bob): 1030 @1020, denied
    @1040. Job 3 (bob, queue batch): 1045 @1030 through the frame-free text
    path, started @1044. Job 4 (alice): no estimate, started."""
    for j, uid in ((1, ALICE), (2, BOB), (3, BOB), (4, ALICE)):
        svc.submit(j, uid, 990.0)
    clock.t = 1000.0
    annotate(svc, 1, {"t_estimate": 1100.0, "queue": "batch", "jobs_ahead": 3})
    clock.t = 1010.0
    annotate(svc, 1, {"t_estimate": 1100.0, "jobs_ahead": 2})  # same estimate
    clock.t = 1020.0
    annotate(svc, 1, {"t_estimate": 1050})
    annotate(svc, 2, {"t_estimate": 1030.0})
    clock.t = 1030.0
    # the server's hot path: the annotations' text, never parsed in Python
    svc._alloc_annotate_text(3, b'{"sched":{"queue":"batch","t_estimate":1045.5}}',
                             {"sched": None})
    clock.t = 1040.0
    svc.alloc_response({"id": 1, "type": 0})
    svc.alloc_response({"id": 2, "type": 2, "note": "no resources"})
    svc.alloc_response({"id": 4, "type": 0})
    clock.t = 1044.0
    svc.alloc_response({"id": 3, "type": 0})


def test_errors_exact_to_the_arrival_times(clock):
    svc = Service(clock)
    scenario(svc, clock)
    r = svc.accuracy(OWNER, jobs=True)
    assert r["jobs_started"] == 2 and r["jobs_never_started"] == 1
    # job 1: first 1100 -> -60, last 1050 -> -10; job 3: -1.5 both
    assert r["first"] == summarize([-60.0, -1.5])
    assert r["first"] == {"count": 2, "bias": -30.75, "median_abs": 30.75, "p90_abs": 60.0}
    assert r["last"] == {"count": 2, "bias": -5.75, "median_abs": 5.75, "p90_abs": 10.0}
    # 5 s before: job 1 at 1035 -> 1050 (-10); job 3 at 1039 -> 1045.5 (-1.5)
    assert r["horizons"]["5"] == summarize([-10.0, -1.5])
    # 20 s before: job 1 at 1020 -> 1050 (set at 1020: in force); job 3 at 1024: none yet
    assert r["horizons"]["20"] == {"count": 1, "bias": -10.0, "median_abs": 10.0, "p90_abs": 10.0}
    assert list(r["horizons"]) == ["5", "20"]
    jobs = {j["id"]: j for j in r["jobs"]}
    assert set(jobs) == {1, 2, 3}  # job 4 never had an estimate
    assert jobs[1] == {
        "id": 1, "userid": ALICE, "queue": "batch", "start": 1040.0, "estimates": 2,
        "first": {"t_estimate": 1100.0, "at": 1000.0},
        "last": {"t_estimate": 1050.0, "at": 1020.0},
    }
    assert jobs[2]["start"] is None and jobs[2]["queue"] == "default"
    assert jobs[3]["queue"] == "batch" and jobs[3]["first"] == {"t_estimate": 1045.5, "at": 1030.0}
    # by queue: batch has both started jobs, default the denied one
    assert r["by_queue"]["batch"]["jobs_started"] == 2
    assert r["by_queue"]["default"] == {
        "jobs_started": 0, "jobs_never_started": 1,
        "first": summarize([]), "last": summarize([]),
        "horizons": {"5": summarize([]), "20": summarize([])},
    }
    assert "jobs" not in svc.accuracy(OWNER)
    # stats carries the summary
    st = svc.stats()["accuracy"]
    assert st["jobs_started"] == 2 and st["jobs_never_started"] == 1
    assert st["last"] == r["last"] and st["bad_estimates"] == 0
    assert st["jobs_with_estimates"] == 3


def test_filters_since_queue_and_by_user(clock):
    svc = Service(clock)
    scenario(svc, clock)
    r = svc.accuracy(OWNER, since=1042.0)
    assert r["jobs_started"] == 1 and r["jobs_never_started"] == 0  # only job 3 (1044)
    r = svc.accuracy(OWNER, queue="default")
    assert (r["jobs_started"], r["jobs_never_started"]) == (0, 1)
    assert list(r["by_queue"]) == ["default"]
    r = svc.accuracy(OWNER, by="user")
    assert set(r["by_user"]) == {str(ALICE), str(BOB)}
    assert r["by_user"][str(BOB)]["jobs_never_started"] == 1
    assert r["by_user"][str(ALICE)]["last"]["bias"] == -10.0


def test_repeats_counted_once_and_the_bound(clock):
    svc = Service(clock, config={"accuracy": {"horizons": [5, 950, 1500, 1000]}})
    svc.submit(1, ALICE, 0.0)
    for i in range(200):
        clock.t = 1000.0 + i
        annotate(svc, 1, {"t_estimate": 5000.0 + i // 2})  # each value twice
    clock.t = 2000.0
    svc.alloc_response({"id": 1, "type": 0})
    (job,) = svc.accuracy(OWNER, jobs=True)["jobs"]
    assert job["estimates"] == 100
    assert job["first"] == {"t_estimate": 5000.0, "at": 1000.0}
    assert job["last"] == {"t_estimate": 5099.0, "at": 1198.0}
    h = svc.estimates.get(1)
    assert len(h.values) == 2 * MAX_VALUES  # bounded: the first two and the latest 62
    # kept: 5000 @1000, 5001 @1002, then 5038 @1076 ... 5099 @1198
    r = svc.accuracy(OWNER)
    assert r["horizons"]["5"] == summarize([2000.0 - 5099.0])  # @1995: the last value
    assert r["horizons"]["1000"] == summarize([2000.0 - 5000.0])  # @1000: the first
    assert r["horizons"]["950"]["count"] == 0  # @1050: a dropped value was in force
    assert h.in_force(1001.0) == 5000.0  # the second value's time ends the first's stretch
    assert h.in_force(1003.0) is None  # when the dropped third took over is not known
    assert h.in_force(1076.0) == 5038.0
    assert r["horizons"]["1500"]["count"] == 0  # @500: no estimate yet


def test_bad_estimates_left_out_and_counted(clock):
    svc = Service(clock)
    svc.submit(1, ALICE, 0.0)
    for bad in ("soon", True, {"a": 1}, [1]):
        annotate(svc, 1, {"t_estimate": bad})
    svc._alloc_annotate_text(1, b'{"sched":{"t_estimate":"x"}}', {"sched": None})
    assert svc.stats()["accuracy"]["bad_estimates"] == 5
    annotate(svc, 1, {"t_estimate": None})  # a removal is no estimate and not bad
    assert svc.stats()["accuracy"]["bad_estimates"] == 5
    clock.t = 1001.0
    annotate(svc, 1, {"t_estimate": 1010})
    clock.t = 1002.0
    svc.alloc_response({"id": 1, "type": 0})
    r = svc.accuracy(OWNER, jobs=True)
    assert r["jobs"][0]["estimates"] == 1 and r["last"]["bias"] == -8.0


def test_bad_arguments_change_nothing(clock):
    svc = Service(clock)
    scenario(svc, clock)
    before = svc.accuracy(OWNER, jobs=True)
    for kw, word in (({"since": "yesterday"}, "since"), ({"since": float("nan")}, "since"),
                     ({"queue": ""}, "queue"), ({"queue": 5}, "queue"),
                     ({"by": "host"}, "by"), ({"jobs": 1}, "jobs")):
        with pytest.raises(AnnotError) as ei:
            svc.accuracy(OWNER, **kw)
        assert ei.value.errno == 22 and word in ei.value.message
    assert svc.accuracy(OWNER, jobs=True) == before
    with pytest.raises(AnnotError) as ei:
        AnnotationService(config={"accuracy": {"horizons": [60, -1]}})
    assert "accuracy.horizons" in ei.value.message


def test_visibility_follows_the_sched_read_rule(clock):
    # default: sched is read by all, so a guest sees every job's record
    svc = Service(clock)
    scenario(svc, clock)
    assert svc.accuracy(Cred(BOB), jobs=True) == svc.accuracy(OWNER, jobs=True)
    # sched readable by owners and job owners only: bob sees his jobs alone
    cfg = dict(CONFIG, namespace={"sched": {"read": ["owner", "job-owner"]}})
    svc = Service(clock, config=cfg)
    scenario(svc, clock)
    r = svc.accuracy(Cred(BOB), jobs=True)
    assert {j["id"] for j in r["jobs"]} == {2, 3}
    assert (r["jobs_started"], r["jobs_never_started"]) == (1, 1)
    assert r["last"] == summarize([-1.5])
    assert svc.accuracy(Cred(4242))["jobs_started"] == 0
    assert svc.accuracy(OWNER)["jobs_started"] == 2


def test_restart_keeps_the_history(clock, tmp_path):
    path = tmp_path / "s.db"
    svc = Service(clock, store=path)
    scenario(svc, clock)
    svc.submit(9, ALICE, 990.0)
    annotate(svc, 9, {"t_estimate": 1200.0, "queue": "long"})  # still pending
    svc.flush()
    before = svc.accuracy(OWNER, jobs=True, by="user")
    svc.close()
    svc = Service(clock, store=path)
    assert svc.accuracy(OWNER, jobs=True, by="user") == before
    # the pending job goes on where it was
    clock.t = 1100.0
    annotate(svc, 9, {"t_estimate": 1150.0})
    clock.t = 1160.0
    svc.alloc_response({"id": 9, "type": 0})
    svc.flush()
    svc.close()
    svc = Service(clock, store=path)
    rec = {j["id"]: j for j in svc.accuracy(OWNER, jobs=True)["jobs"]}[9]
    assert rec["estimates"] == 2 and rec["start"] == 1160.0 and rec["queue"] == "long"
    assert rec["first"] == {"t_estimate": 1200.0, "at": 1044.0}
    svc.close()


def test_schema_3_store_gets_the_histories_table(clock, tmp_path):
    path = str(tmp_path / "old.db")
    svc = Service(clock, store=path)
    svc.submit(1, ALICE, 990.0)
    svc.close()
    db = sqlite3.connect(path)
    db.execute("DROP TABLE estimate_log")
    db.execute("DROP TABLE estimate_queue")
    db.execute("PRAGMA user_version=3")
    db.commit()
    db.close()
    svc = Service(clock, store=path)
    annotate(svc, 1, {"t_estimate": 1010.0})
    clock.t = 1005.0
    svc.alloc_response({"id": 1, "type": 0})
    svc.close()
    svc = Service(clock, store=path)
    assert svc.accuracy(OWNER)["last"]["bias"] == -5.0
    svc.close()


def test_server_topic_client_and_cli(tmp_path):
    """Through the socket: the hot frame path records, the protocol and the
    CLI carry the report, bad --since / --queue are usage errors."""
    from serverproc import ServerProc

    srv = ServerProc().start()
    try:
        _through_the_server(srv.path)
    finally:
        srv.cleanup()


def _through_the_server(sock):
    import time

    if True:
        with Client(sock) as c:
            uid = os.getuid()
            c.submit(5, uid)
            c.submit(6, uid)
            t = time.time()
            c.alloc_response({"id": 5, "type": 1,
                              "annotations": {"sched": {"t_estimate": t + 100, "queue": "q1"}}})
            c.alloc_response({"id": 5, "type": 1, "annotations": {"sched": {"t_estimate": t + 50}}})
            c.alloc_response({"id": 6, "type": 1, "annotations": {"sched": {"t_estimate": t}}})
            c.alloc_response({"id": 5, "type": 0})
            c.state(6, "INACTIVE", note="cancelled")
            r = c.accuracy(jobs=True, histogram=True)
            assert (r["jobs_started"], r["jobs_never_started"]) == (1, 1)
            job5 = [j for j in r["jobs"] if j["id"] == 5][0]
            assert job5["estimates"] == 2 and job5["queue"] == "q1"
            assert job5["last"]["t_estimate"] == t + 50
            assert r["last"]["bias"] == pytest.approx(job5["start"] - (t + 50))
            assert sum(r["histogram"]["counts"]) == 1
            assert c.stats()["accuracy"]["jobs_started"] == 1
            with pytest.raises(AnnotError) as ei:
                c.rpc("job-manager.accuracy", {"since": "x"})
            assert ei.value.errno == 22 and "since" in ei.value.message
        cli = [sys.executable, "-m", "flux_annot", "--socket", sock, "accuracy"]
        out = subprocess.run(cli + ["--json"], capture_output=True, text=True, check=True)
        assert json.loads(out.stdout) == {k: v for k, v in r.items()
                                          if k not in ("jobs", "histogram")}
        out = subprocess.run(cli + ["--jobs"], capture_output=True, text=True, check=True)
        lines = out.stdout.splitlines()
        assert lines[0].startswith("Estimate accuracy: 1 job started")
        assert any(line.startswith("last ") and " 1 " in line for line in lines)
        assert any("never started" in line for line in lines)
        for args, word in ((["--since", "yesterday"], "--since"), (["--queue", "nope"], "--queue"),
                           (["--queue", ""], "--queue")):
            bad = subprocess.run(cli + args, capture_output=True, text=True)
            assert bad.returncode == 2 and word in bad.stderr, bad.stderr
        out = subprocess.run(cli + ["--queue", "q1", "--since", "1h", "--json"],
                             capture_output=True, text=True, check=True)
        assert json.loads(out.stdout)["jobs_started"] == 1
