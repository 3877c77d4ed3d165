"""The demo's scheduler pieces, in-process: FCFS plan, idsets, a whole run."""

import io

from flux_annot.views.demo import Demo, SimJob, idset, plan_fcfs, run_demo


def test_idset():
    assert idset([0]) == "0"
    assert idset([0, 1]) == "[0-1]"
    assert idset([3, 0, 1, 5, 6, 7]) == "[0-1,3,5-7]"


def sim(id, size, walltime, start=None):
    j = SimJob(id, 0, size, walltime, walltime, None)
    j.start = start
    return j


def test_plan_fcfs_is_strict_and_uses_walltimes():
    running = [sim(1, 2, 100, start=0), sim(2, 1, 50, start=0)]  # 1 of 4 cores free now
    queue = [sim(3, 2, 10), sim(4, 1, 10), sim(5, 4, 10), sim(6, 9, 10)]
    plan = plan_fcfs(0, 4, running, queue)
    assert plan[3] == 50  # needs 2 cores: job 2 frees its core at 50
    assert plan[4] == 60  # 1 core: none free beside jobs 1 and 3 until job 3 ends
    assert plan[5] == 100  # needs the whole machine: after job 1
    assert 6 not in plan  # can never run


def test_run_demo_plain_output_ends_and_notes_clear():
    out = io.StringIO()
    assert run_demo(jobs=8, cores=4, seconds=1, seed=3, out=out) == 0
    text = out.getvalue()
    assert "insufficient resources" in text and "rank0/core" in text
    assert "8 of 8 jobs finished" in text
    blocks = text.split("\n\n")
    final = next(b for b in blocks if "all jobs are inactive" in b).splitlines()
    assert final[1].split()[:3] == ["JOBID", "USER", "STATE"]
    assert len(final) == 2 + 8
    assert all(" INACTIVE " in line + " " for line in final[2:])
    # it ends with the accuracy table of its scheduler's estimates: every
    # job that waited had one (the jobs that started at once had none)
    head = next(i for i, b in enumerate(blocks) if b.startswith("Estimate accuracy: "))
    n = int(blocks[head].split()[2])
    assert 1 <= n < 8
    rows = {line.split()[0]: line.split() for line in blocks[head + 1].splitlines()[1:]}
    assert int(rows["first"][1]) == int(rows["last"][1]) == n
    assert blocks[head + 2].splitlines()[1].split()[:2] == ["default", str(n)]


def test_demo_accuracy_is_in_simulated_time():
    """The service runs on the demo's clock: each started job's start is
    the simulated time of its allocation, its estimates simulated times."""
    d = Demo(8, 2, seed=2, out=io.StringIO())
    d.submit_all()
    while not d.done():
        d.cycle(20.0)
    r = d.svc.accuracy(d.owner, jobs=True)
    by_id = {j.id: j for j in d.jobs}
    assert r["jobs"] and r["jobs_started"] == len(r["jobs"])
    for rec in r["jobs"]:
        assert rec["start"] == by_id[rec["id"]].start
        assert d.t0 < rec["first"]["at"] <= rec["last"]["at"] < rec["start"]
    d.svc.close()


def test_demo_cycle_annotates_pending_jobs_then_clears_at_allocation():
    d = Demo(6, 2, seed=1, out=io.StringIO())
    d.submit_all()
    d.cycle(1.0)
    jobs = {j["id"]: j for j in d.svc.list(d.owner)}
    pending = [j for j in jobs.values() if j["state"] == "SCHED"]
    running = [j for j in jobs.values() if j["state"] == "RUN"]
    assert pending and running
    for j in pending:
        s = j["annotations"]["sched"]
        assert s["reason_pending"] in ("insufficient resources", "jobs ahead in queue")
        assert isinstance(s["jobs_ahead"], int)
    for j in running:
        s = j["annotations"]["sched"]
        assert s["resource_summary"].startswith("rank0/core")
        assert "reason_pending" not in s and "t_estimate" not in s
    d.svc.close()
