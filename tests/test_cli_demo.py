"""The demo's scheduler pieces, in-process: FCFS plan, idsets, a whole run."""

import io

from flux_annot.demo import Demo, SimJob, idset, plan_fcfs, run_demo


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
    # it ends with the accuracy table of its scheduler's estimates: FCFS
    # plans over full walltimes, jobs run 45-100% of them, so the first
    # estimates were pessimistic (negative bias)
    head = next(i for i, b in enumerate(blocks) if b.startswith("Estimate accuracy: "))
    rows = {line.split()[0]: line.split() for line in blocks[head + 1].splitlines()[1:]}
    assert int(rows["first"][1]) >= 1 and rows["first"][2].startswith("-")
    assert blocks[head + 2].splitlines()[1].split()[0] == "default"


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
