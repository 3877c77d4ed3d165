"""Estimate accuracy (docs/accuracy.md): what it costs and what it shows.

    python bench/bench_accuracy.py [--prefix FLUX --fluxion FLUXION] [--jobs N]
                                   [--png PATH] [--json]

1. The scheduler's hot path: ANNOTATE alloc responses (RFC 27 type 1,
   volatile, each carrying a NEW `sched.t_estimate`, so every one is
   recorded: the worst case) over the socket, pipelined, to two servers
   run side by side: the shipped one, and the same with recording turned
   off (`AnnotationService._note_estimate` a no-op; this script serves it
   with `--serve-without-recording`). Rounds alternate between the two;
   best of each. Also in-process (`_alloc_annotate_text`, the server's
   entry point), which has no socket noise. Target: at most 5% lower.
2. Cost per job: 100k jobs with 5 distinct estimates each, started, then
   with 64 (the bound): the histories' memory (`Accuracy.memory_bytes`,
   and tracemalloc's count of what recording allocated) and the store's
   bytes for them (SQLite's dbstat pages of the `estimates` table).
3. With --prefix and --fluxion: a real Fluxion (queue-policy=conservative)
   in `flux start --test-size=1` declaring 32 cores (resource.toml), a few
   hundred jobs of mixed sizes (1-16 cores) and limits (20-90 s) that run
   10-60% of their limit, followed by `flux-annotate serve --flux` (with
   `[accuracy] horizons = [5, 15, 30]`, for a workload of minutes): the
   report (`flux-annotate accuracy`), each start checked against Flux's
   t_run, and a histogram of the first and last estimates' errors (PNG).

The last line with --json is one JSON object of the figures.
"""

import argparse
import json
import os
import random
import socket as _socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)


class _NoHistory:
    """In place of a service's C history: `JobTable.annotate_sched` then
    makes the same C call with no history (fa_table_annotate_sched with
    h = NULL: the table's annotate alone), i.e. the hot path without
    recording."""

    from flux_annot.core._core import ffi as _ffi

    _h = _ffi.NULL


def without_recording(svc):
    svc._hist = _NoHistory()
    svc._note_estimate = lambda id, at: None
    svc._note_estimate_tree = lambda id, tree, at: None
    return svc


def _disable_recording():
    from flux_annot.service import service

    init = service.AnnotationService.__init__

    def __init__(self, *a, **kw):
        init(self, *a, **kw)
        without_recording(self)

    service.AnnotationService.__init__ = __init__


# --- 1. the hot path -----------------------------------------------------------------


def start_server(tmp, name, record):
    path = os.path.join(tmp, name, "socket")
    if record:
        cmd = [sys.executable, "-m", "flux_annot.wire.server"]
    else:
        cmd = [sys.executable, os.path.abspath(__file__), "--serve-without-recording"]
    cmd += ["--socket", path, "--store", os.path.join(tmp, name + ".db")]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, cwd=tmp)
    line = proc.stdout.readline()
    if not line.startswith("ready"):
        proc.kill()
        raise SystemExit(f"server did not start: {line!r}")
    return proc, path


def estimate_frames(jobs, count, start_mt, t0, every=1):
    """ANNOTATE alloc responses, each job's note on each of its turns (its
    jobs_ahead changes every turn, so every request changes the job); its
    estimate moves by 1 s on every `every`-th turn (1: every request is a
    new estimate, the worst case)."""
    from flux_annot.wire import protocol

    frames = []
    for i in range(count):
        jid = 1 + i % jobs
        turn = i // jobs
        ann = {"sched": {"t_estimate": t0 + 3600.0 + turn // every, "jobs_ahead": turn % 50,
                         "reason_pending": "resources"}}
        frames.append(protocol.request("job-manager.alloc-response", start_mt + i,
                                       {"id": jid, "type": 1, "annotations": ann}))
    return frames


def hot_path(jobs, requests, rounds, every=1):
    from bench_rpc import Pipe, measure
    from flux_annot.wire import protocol

    tmp = tempfile.mkdtemp(prefix="bench-acc-")
    servers = {}
    try:
        for name, record in (("with", True), ("without", False)):
            proc, path = start_server(tmp, name, record)
            pipe = Pipe(path)
            subs = [protocol.request("job-manager.submit", 1 + i,
                                     {"id": 1 + i, "userid": os.getuid()}) for i in range(jobs)]
            pipe.run(subs, 256)
            servers[name] = [proc, pipe, jobs + 1]
        t0 = time.time()
        runs = {"with": [], "without": []}
        for r in range(rounds + 1):  # round 0 warms up
            for name in ("with", "without") if r % 2 == 0 else ("without", "with"):
                proc, pipe, mt = servers[name]
                frames = estimate_frames(jobs, requests, mt, t0 + r * requests, every)
                servers[name][2] = mt + len(frames)
                res = measure(pipe, frames, 256, proc.pid)
                if r:
                    runs[name].append(res)
        errors = sum(s[1].errors for s in servers.values())
        best = {k: max(v, key=lambda x: x["rate"]) for k, v in runs.items()}
        return {
            "jobs": jobs, "requests": requests, "rounds": rounds, "error_replies": errors,
            "every": every,
            "rate_with": best["with"]["rate"], "rate_without": best["without"]["rate"],
            "cpu_us_with": min(x["server_cpu"] for x in runs["with"]) / requests * 1e6,
            "cpu_us_without": min(x["server_cpu"] for x in runs["without"]) / requests * 1e6,
            "all_with": [x["rate"] for x in runs["with"]],
            "all_without": [x["rate"] for x in runs["without"]],
        }
    finally:
        for proc, pipe, _ in servers.values():
            pipe.close()
            proc.terminate()
            proc.wait()


def hot_path_in_process(jobs, requests, rounds, every=1):
    """The server's entry point for a hot ANNOTATE frame, without a socket:
    the service's CPU per request with and without recording, alternating."""
    from flux_annot.service.service import AnnotationService

    def run(svc, base):
        text = svc._alloc_annotate_text
        keys = {"sched": None}
        data = [b'{"sched":{"t_estimate":%r,"jobs_ahead":%d,"reason_pending":"resources"}}'
                % (base + (i // jobs) // every, (i // jobs) % 50) for i in range(requests)]
        t = time.process_time()
        for i, d in enumerate(data):
            text(1 + i % jobs, d, keys)
        return (time.process_time() - t) / requests * 1e6

    out = {"with": [], "without": []}
    plain = AnnotationService(store=None)
    off = without_recording(AnnotationService(store=None))
    for svc in (plain, off):
        for j in range(jobs):
            svc.submit(1 + j, 0)
    t0 = time.time() + 3600
    for r in range(rounds + 1):
        for name, svc in (("with", plain), ("without", off)):
            us = run(svc, t0 + r * requests)
            svc.flush()
            if r:
                out[name].append(us)
    return {"every": every, "us_with": min(out["with"]), "us_without": min(out["without"]),
            "recorded_jobs": len(plain.estimates), "recorded_off": len(off.estimates)}


# --- 2. cost per job -----------------------------------------------------------------


def cost_per_job(njobs, values):
    from flux_annot.service.policy import Cred
    from flux_annot.service.service import AnnotationService

    tmp = tempfile.mkdtemp(prefix="bench-acc-cost-")
    clock = [1.7e9]
    svc = AnnotationService(store=os.path.join(tmp, "s.db"), clock=lambda: clock[0])
    for j in range(njobs):
        svc.submit(1 + j, 1000 + j % 7)
    svc.flush()
    text = svc._alloc_annotate_text
    keys = {"sched": None}
    for v in range(values):
        clock[0] += 10
        for j in range(njobs):
            text(1 + j, b'{"sched":{"t_estimate":%r}}' % (1.7e9 + 5000 - v), keys)
        svc.flush()
    clock[0] += 10
    for j in range(njobs):
        svc.alloc_response({"id": 1 + j, "type": 0})
    svc.flush()
    mem = svc.estimates.memory_bytes()
    t = time.perf_counter()
    rep = svc.accuracy(Cred(0, owner=True))
    report_s = time.perf_counter() - t
    log_b = svc.store.estimates_bytes()
    svc.close()
    # a restart compacts the log to one row of every record: the steady cost
    svc = AnnotationService(store=os.path.join(tmp, "s.db"))
    assert svc.accuracy(Cred(0, owner=True))["jobs_started"] == njobs
    store_b = svc.store.estimates_bytes()
    svc.close()
    return {"jobs": njobs, "values": values, "memory_per_job": mem / njobs,
            "store_per_job": store_b / njobs, "log_per_job": log_b / njobs,
            "report_seconds": report_s, "started": rep["jobs_started"]}


# --- 3. Fluxion ----------------------------------------------------------------------


def fluxion_workload(prefix, fluxion, njobs, cores, png, seed=7):
    tests = os.path.join(os.path.dirname(HERE), "tests")
    sys.path.insert(0, tests)
    import fluxinst  # noqa: E402  (the tests' Flux harness: instance, mirror)
    from flux_annot.service.accuracy import histogram, summarize

    class _Pytest:  # fluxinst reports failures through pytest; outside it, raise
        @staticmethod
        def fail(msg):
            raise SystemExit(msg)

        skip = fail

    fluxinst.pytest = _Pytest
    fluxinst.FLUXION = fluxion
    rng = random.Random(seed)
    inst = fluxinst.FluxInstance(prefix, config_files={"resource.toml": fluxinst.resource_toml(cores)})
    inst.start()
    mirror = None
    store = os.path.join(inst.base, "mirror.db")
    try:
        fluxinst.load_fluxion(inst, fluxion)
        # horizons that fit a workload of a few minutes (the default ones,
        # 60/600/3600 s, are for a site's queue)
        mirror = fluxinst.Mirror(inst, store, config="[accuracy]\nhorizons = [5, 15, 30]\n").start()
        mirror.wait_synced()
        # groups of jobs of one shape, submitted in a random order with --cc
        shapes = [(size, limit, frac) for size in (1, 2, 4, 8, 16) for limit in (20, 45, 90)
                  for frac in (0.1, 0.3, 0.6)]
        rng.shuffle(shapes)
        per = max(1, njobs // len(shapes))
        t_sub = time.monotonic()
        submitted = 0
        for size, limit, frac in shapes:
            run = max(0.5, round(limit * frac * rng.uniform(0.5, 1.0) / 4, 1))  # seconds
            inst.flux("submit", f"--cc=1-{per}", f"-n{size}", "-t", f"{limit}s", "sleep", str(run))
            submitted += per
        submit_s = time.monotonic() - t_sub

        def all_done():
            with mirror.client() as c:
                jobs = c.list()
            return len(jobs) == submitted and all(j["state"] == "INACTIVE" for j in jobs)

        fluxinst.wait_for("every job to end", all_done, 1800, step=1.0)
        r = json.loads(mirror.cli("accuracy", "--json", "--jobs").stdout)
        table = mirror.cli("accuracy").stdout
        stats = mirror.stats()
        flux_jobs = inst.jobs()
        started = [j for j in r["jobs"] if j["start"] is not None]
        mismatched = [j["id"] for j in started
                      if abs(j["start"] - flux_jobs[j["id"]]["t_run"]) > 1e-6]
        firsts = [j["start"] - j["first"]["t_estimate"] for j in started]
        lasts = [j["start"] - j["last"]["t_estimate"] for j in started]
        consistent = r["first"] == summarize(firsts) and r["last"] == summarize(lasts)
        moved = sum(1 for j in started if j["estimates"] > 1)
        mirror.stop()  # its store is read below, before the instance's folder goes
        from flux_annot.service.store import Store

        st = Store(store, lock=False)
        store_bytes = st.estimates_bytes()
        st.close()
    finally:
        if mirror is not None:
            mirror.cleanup()
        inst.cleanup()

    plot_note = _plot(firsts, lasts, png, cores) if png else None
    return {
        "jobs": submitted, "cores": cores, "submit_seconds": submit_s,
        "report": {k: v for k, v in r.items() if k != "jobs"}, "table": table,
        "with_estimates": len(started) + r["jobs_never_started"], "moved": moved,
        "start_equals_t_run": not mismatched, "mismatched": mismatched[:5],
        "summary_equals_records": consistent,
        "histogram_last": histogram(lasts), "png": png, "plot_note": plot_note,
        "stats_accuracy": stats.get("accuracy"),
        "store_per_job": store_bytes / max(1, len(started) + r["jobs_never_started"]),
    }


def _plot(firsts, lasts, path, cores):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        return f"no plot: {e}"
    fig, ax = plt.subplots(figsize=(8, 4.2), dpi=110)
    lo = min(firsts + lasts + [0])
    hi = max(firsts + lasts + [0])
    bins = [lo + (hi - lo) * i / 30 for i in range(31)] if hi > lo else 10
    ax.hist(firsts, bins=bins, alpha=0.55, label=f"first estimate ({len(firsts)} jobs)")
    ax.hist(lasts, bins=bins, alpha=0.75, label=f"last estimate ({len(lasts)} jobs)")
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_xlabel("error = start - estimate (s); negative: started earlier than estimated")
    ax.set_ylabel("jobs")
    ax.set_title(f"Fluxion, conservative backfilling, {cores} declared cores, through the mirror")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return None


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--serve-without-recording", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--prefix", default=os.environ.get("FLUX_ANNOT_TEST_FLUX_PREFIX"))
    ap.add_argument("--fluxion", default=os.environ.get("FLUX_ANNOT_TEST_FLUXION_PREFIX"))
    ap.add_argument("--jobs", type=int, default=300, help="Fluxion jobs (default 300)")
    ap.add_argument("--cores", type=int, default=32)
    ap.add_argument("--hot-jobs", type=int, default=10000)
    ap.add_argument("--hot-requests", type=int, default=100000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--cost-jobs", type=int, default=100000)
    ap.add_argument("--png", default=os.path.join(HERE, "accuracy.png"))
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--only-fluxion", action="store_true", help="skip the hot path and cost parts")
    args, rest = ap.parse_known_args()
    if args.serve_without_recording:
        _disable_recording()
        from flux_annot.wire import server

        return server.main(rest)
    out = {"load_start": os.getloadavg()[0]}
    print(f"estimate accuracy bench, load average {out['load_start']:.1f}")

    for every, what in () if args.only_fluxion else (
            (1, "every request a new estimate (worst case)"),
            (10, "a new estimate every 10th turn of a job")):
        hp = hot_path(args.hot_jobs, args.hot_requests, args.rounds, every)
        out[f"hot_socket_{every}"] = hp
        lower = 100 * (1 - hp["rate_with"] / hp["rate_without"])
        hp["lower_pct"] = lower
        print(f"ANNOTATE over the socket, {hp['requests']:,} requests x {hp['rounds']} rounds, "
              f"{what}: with recording {hp['rate_with']:,.0f}/s "
              f"({hp['cpu_us_with']:.2f} µs server CPU), without {hp['rate_without']:,.0f}/s "
              f"({hp['cpu_us_without']:.2f} µs): {lower:+.1f}% lower "
              f"({'ok' if lower <= 5 else 'MISSED'}: target <= 5%)")
        ip = hot_path_in_process(args.hot_jobs, args.hot_requests, args.rounds, every)
        ip["more_pct"] = 100 * (ip["us_with"] / ip["us_without"] - 1)
        out[f"hot_in_process_{every}"] = ip
        print(f"  in process (_alloc_annotate_text, no socket): {ip['us_with']:.2f} µs with "
              f"recording, {ip['us_without']:.2f} µs without: {ip['more_pct']:+.1f}% CPU "
              "per request")
    for values in () if args.only_fluxion else (5, 64):
        c = cost_per_job(args.cost_jobs, values)
        out[f"cost_{values}"] = c
        print(f"{c['jobs']:,} jobs x {values} estimates, started: history memory "
              f"{c['memory_per_job']:.0f} B/job, store {c['store_per_job']:.0f} B/job "
              f"(compacted; {c['log_per_job']:.0f} B/job of log before the restart compacted "
              f"it); the report over them {c['report_seconds'] * 1000:.0f} ms")
    if args.prefix and args.fluxion:
        fx = fluxion_workload(args.prefix, args.fluxion, args.jobs, args.cores, args.png)
        out["fluxion"] = fx
        print(f"\nFluxion: {fx['jobs']} jobs on {fx['cores']} declared cores "
              f"(submitted in {fx['submit_seconds']:.0f} s), through the mirror; "
              f"{fx['with_estimates']} had estimates, {fx['moved']} of the started ones more "
              f"than one; start = Flux's t_run for every started job: "
              f"{fx['start_equals_t_run']}; summary = per-job records: "
              f"{fx['summary_equals_records']}; store {fx['store_per_job']:.0f} B/job")
        print(fx["table"])
    else:
        out["fluxion"] = {"error": "not run: give --prefix (flux-core) and --fluxion (flux-sched)"}
        print(out["fluxion"]["error"])
    out["load_end"] = os.getloadavg()[0]
    if args.json:
        print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
