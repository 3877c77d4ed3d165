"""Events and durability benchmarks (docs/events.md, docs/durability.md, docs/performance.md). Prints numbers; asserts nothing.

1. Batch encoding for 100k entries: the C table's `batch_encode()` (the
   annotations array of one batch, from the stored canonical texts) against
   `orjson.dumps` of the same batch held as Python objects
   (`[[id, {"sched": {...}}], ...]`), the fastest a pure-Python service
   could do. Target: >= 2x.
2. Replay time for N jobs (default 1M): a store holding, per job, a
   `submit` entry and either an `alloc` snapshot or a `memo`; timed is
   `AnnotationService(store=path)` (open, replay, ready), wall and CPU
   seconds, twice (the second run reads a warm page cache). Writing the
   store (one 100k-job batch per transaction) is timed too.

    python bench/bench_events.py [--jobs N] [--entries N] [--keep DIR]
"""

import argparse
import os
import shutil
import tempfile
import time

import orjson

from flux_annot import AnnotationService
from flux_annot.core import JobTable
from flux_annot.service.store import Store
from timing import best_of


def sched_notes(i):
    """Typical pending-job notes (about 96 bytes as compact JSON)."""
    return {
        "sched": {
            "t_estimate": 1700000000.25 + i,
            "reason_pending": "insufficient resources",
            "jobs_ahead": i % 1000,
        }
    }


def bench_encode(n, repeat=7):
    table = JobTable()
    ids = list(range(1, n + 1))
    for i in ids:  # jobs exist with older notes
        table.annotate(i, {"sched": {"t_estimate": 1.0}})
    table.track(True)
    table.annotate_many(ids, [orjson.dumps(sched_notes(i)) for i in ids])
    objs = [[i, sched_notes(i)] for i in ids]
    c_out = table.batch_encode()
    o_out = orjson.dumps(objs)
    assert orjson.loads(c_out) == orjson.loads(o_out), "C and orjson disagree"
    t_c = best_of(table.batch_encode, repeat)
    t_d = best_of(lambda: table.batch_encode(delta=True), repeat)
    t_o = best_of(lambda: orjson.dumps(objs), repeat)
    print(f"batch encode, {n} entries, {len(c_out) / n:.0f} bytes/entry:")
    print(f"  C batch_encode          {t_c * 1e3:8.2f} ms  ({n / t_c / 1e6:.2f} M entries/s)")
    print(f"  C batch_encode(delta)   {t_d * 1e3:8.2f} ms")
    print(f"  orjson.dumps (objects)  {t_o * 1e3:8.2f} ms")
    print(f"  ratio orjson / C        {t_o / t_c:8.2f}x   (target >= 2x)")


def write_store(path, n, chunk=100_000):
    """n jobs: submit + an alloc snapshot (even ids, now RUN) or a memo (odd, SCHED)."""
    st = Store(path, synchronous="OFF")
    seq = 0
    for start in range(1, n + 1, chunk):
        entries, jobs = [], {}
        for i in range(start, min(start + chunk, n + 1)):
            uid = 1000 + i % 100
            entries.append((i, "submit", b'{"userid":%d}' % uid, 1700000000.0))
            if i % 2 == 0:
                snap = orjson.dumps({"annotations": {"sched": {"resource_summary": f"rank{i % 64}/core[0-3]"}}})
                entries.append((i, "alloc", snap, 1700000001.0))
                jobs[i] = (uid, "RUN", 1700000000.0)
            else:
                entries.append((i, "memo", b'{"note":"job %d"}' % i, 1700000001.0))
                jobs[i] = (uid, "SCHED", 1700000000.0)
        seq += 1
        st.write_batch(seq, entries, jobs)
    st.close()


def bench_replay(n, keep=None, repeat=2):
    """Write the store once (timed: wall and CPU), then time `repeat` restarts.

    CPU seconds are printed beside wall seconds: the machine is shared, and
    CPU time is what the replay itself costs.
    """
    tmp = keep or tempfile.mkdtemp(prefix="fa-bench-")
    path = os.path.join(tmp, "replay.db")
    try:
        if not os.path.exists(path):
            t, c = time.perf_counter(), time.process_time()
            write_store(path, n)
            print(f"store written: {n} jobs, {os.path.getsize(path) / 1e6:.0f} MB, "
                  f"{time.perf_counter() - t:.1f} s wall, {time.process_time() - c:.1f} s CPU")
        for _ in range(repeat):
            t, c = time.perf_counter(), time.process_time()
            svc = AnnotationService(owner_uid=os.getuid(), store=path)
            dt, dc = time.perf_counter() - t, time.process_time() - c
            assert len(svc.jobs) == n, len(svc.jobs)
            print(f"replay {n} jobs: {dt:.2f} s wall, {dc:.2f} s CPU "
                  f"({n / dt / 1e3:.0f}k jobs/s), "
                  f"table {svc.table.memory_bytes() / n:.0f} bytes/job")
            svc.close()
    finally:
        if keep is None:
            shutil.rmtree(tmp, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--entries", type=int, default=100_000)
    ap.add_argument("--jobs", type=int, default=1_000_000)
    ap.add_argument("--keep", help="directory to keep (and reuse) the replay store in")
    ap.add_argument("--replay-only", action="store_true", help="skip the encode benchmark")
    args = ap.parse_args()
    if not args.replay_only:
        bench_encode(args.entries)
    bench_replay(args.jobs, args.keep)


if __name__ == "__main__":
    main()
