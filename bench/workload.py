#!/usr/bin/env python3
"""The standard annotation workload of the benchmarks (deterministic).

Every contender of bench/run.py (flux-annot's JobTable, the orjson and
stdlib-json anchors of bench/py_merge.py, the jansson anchor of
bench/jansson_merge.c) applies the same operations, in order:

- scheduler cycles: each cycle the scheduler re-annotates every pending job
  with `sched.t_estimate`, `sched.reason_pending` and `sched.jobs_ahead`
  (as sched-simple and fluxion do every scheduling loop);
- user notes: about one job in twenty per cycle gets a small nested `user`
  note, and every other cycle deletes its `note` key with null;
- allocation: every job is allocated at the end: its pending keys are
  deleted with null and `sched.resource_summary` is added.

Each operation is one line `<jobid> <compact patch JSON>`; 10,000 jobs and 5
cycles (the default) give 62,506 lines.

    python bench/workload.py [NJOBS [NCYCLES]] > ops.txt
"""

import json
import random
import sys

FIRST_ID = 1000
T0 = 1_700_000_000.0
REASONS = ("insufficient resources", "requested GPUs are unavailable",
           "job is held", "priority")


def ops(njobs=10_000, ncycles=5, seed=7):
    """Yield (jobid, patch dict) in workload order."""
    rng = random.Random(seed)
    for cycle in range(ncycles):
        for i in range(njobs):
            jobid = FIRST_ID + i
            yield jobid, {"sched": {"t_estimate": T0 + cycle * 60 + i * 0.5,
                                    "reason_pending": REASONS[(i + cycle) % len(REASONS)],
                                    "jobs_ahead": i}}
            if rng.random() < 0.05:
                note = None if cycle % 2 else "x"
                yield jobid, {"user": {"step": {"n": cycle, "label": f"s{i}"}, "note": note}}
    for i in range(njobs):
        yield FIRST_ID + i, {"sched": {"t_estimate": None, "reason_pending": None,
                                       "jobs_ahead": None,
                                       "resource_summary": f"rank{i % 64}/core[0-{i % 32}]"}}


def lines(njobs=10_000, ncycles=5):
    """The workload as (jobid, compact patch bytes), exactly as written to a file."""
    return [(jobid, json.dumps(patch, separators=(",", ":")).encode())
            for jobid, patch in ops(njobs, ncycles)]


def digest(items):
    """The state digest every contender must print: items are (jobid, tree)
    in any order; jobs without annotations are skipped; each job is the text
    "<jobid>:" + sorted-key compact JSON, in id order, hashed with 64-bit
    djb2 (h = h*33 + byte, from 5381). Returned as lower-case hex."""
    h = 5381
    for jobid, tree in sorted(items):
        if not tree:
            continue
        text = f"{jobid}:" + json.dumps(tree, separators=(",", ":"), sort_keys=True)
        for byte in text.encode():
            h = (h * 33 + byte) & 0xFFFFFFFFFFFFFFFF
    return f"{h:x}"


def main(argv):
    njobs = int(argv[1]) if len(argv) > 1 else 10_000
    ncycles = int(argv[2]) if len(argv) > 2 else 5
    out = sys.stdout.buffer
    for jobid, patch in lines(njobs, ncycles):
        out.write(b"%d %s\n" % (jobid, patch))


if __name__ == "__main__":
    main(sys.argv)
