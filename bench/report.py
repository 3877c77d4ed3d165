"""The performance report of SPEC §11: runs every measurement, writes bench/REPORT.md
and a plot bench/throughput.png (issue 6).

    python bench/run.py --report [--quick]      (or: python bench/report.py [--quick] [--out DIR])

What runs, in one process unless said otherwise (all on this machine, in one go,
so every ratio compares figures taken minutes apart under the same load):

- The standard workload (`bench/workload.py`) through flux-annot —
  per call (`JobTable.annotate(id, bytes)`) and bulk (`annotate_many`, one call)
  — and the anchors, with bench/run.py's and bench/anchors.py's runners
  (orjson in process, jansson compiled with gcc -O2, skipped if libjansson-dev
  is missing), plus the stdlib-json anchor `py_merge.py` as shipped. Every
  final state digest must equal the orjson anchor's, or the figure is marked
  wrong. 10k jobs x 5 cycles, best of 5 (round-robin): the §11 rows.
- The plot: 10k..1M jobs x 2 cycles (--quick: 1 cycle, up to 100k) through
  the same implementations with lighter loops (`sweep_point`: no digest
  above 100k jobs, where it would cost minutes).
- Memory per pending job, 1M jobs: bench/run.py's `memory()`
  (`JobTable.memory_bytes()` and RSS growth against Python dicts, RSS growth).
- Socket RPCs: `bench/bench_rpc.py` as a subprocess (it starts its own server);
  its printed figures are parsed.
- Guest flood: `bench_flood.run()`.
- Batch encoding, 100k entries: `bench_events.bench_encode()`.

Anchors that cannot be run here (Flux's job manager RPC rates and round trip)
are quoted from SPEC §11 and marked as quoted. A missed target is written as
missed, with the measured facts that explain it.
"""

import argparse
import datetime
import gc
import io
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import redirect_stdout

from flux_annot import JobTable

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
ANCHORS = os.path.join(ROOT, "bench")  # workload.py, py_merge.py, jansson_merge.c
sys.path.insert(0, HERE)

SWEEP = (10_000, 30_000, 100_000, 300_000, 1_000_000)
QUICK_SWEEP = (10_000, 30_000, 100_000)


def say(*a):
    print(*a, flush=True)


# --- machine -------------------------------------------------------------------------


def machine():
    model = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu": model,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "date": datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "load_start": os.getloadavg(),
    }


# --- the standard workload through flux-annot and the anchors -----------------------
# The runners are bench/run.py's and bench/anchors.py's (the core benchmark);
# only the stdlib-json anchor runs here as shipped (py_merge.py, a subprocess).


_ANCHOR_LINE = re.compile(r"ops_per_s=(\d+).*digest=([0-9a-f]+)")


def run_stdlib_anchor(path):
    """py_merge.py (stdlib json) on an ops file → (ops/s, digest)."""
    out = subprocess.run(
        [sys.executable, os.path.join(ANCHORS, "py_merge.py"), str(path)],
        capture_output=True, text=True, check=True,
    ).stdout
    m = _ANCHOR_LINE.search(out)
    if not m:
        raise RuntimeError(f"unexpected anchor output: {out!r}")
    return float(m.group(1)), m.group(2)


def jansson_point(path, n, repeat, res):
    """Run the jansson anchor on the ops file `path` of n updates (best of
    `repeat`); set res["jansson"] (updates/s) and return its digest, or note
    why it was skipped and return None."""
    import anchors

    gc.collect()
    jans = [anchors.run_jansson(path) for _ in range(repeat)]
    good = [j for j in jans if isinstance(j, tuple)]
    if not good:
        res["notes"].append(f"jansson anchor skipped: {jans[0]}")
        return None
    t, d = min(good)
    res["jansson"] = n / t
    return d


def workload_point(tmp, njobs, ncycles, repeat=1):
    """ops/s (best of `repeat`) of every implementation on one workload, digests
    checked against the orjson anchor's (as bench/run.py does)."""
    import anchors
    import run as core_bench

    ops = anchors.workload(njobs, ncycles)
    n = len(ops)
    res = {"njobs": njobs, "ncycles": ncycles, "ops": n, "wrong": [], "notes": []}
    # round-robin, best of each (as bench/run.py): every contender sees the
    # same spread of the shared machine's background load
    runs = {"orjson": lambda: anchors.run_orjson(ops),
            "flux_percall": lambda: core_bench.run_per_call(ops),
            "flux_bulk": lambda: core_bench.run_bulk(ops)}
    best = {k: (float("inf"), None) for k in runs}
    for _ in range(repeat):
        for k, fn in runs.items():
            gc.collect()
            best[k] = min(best[k], fn(), key=lambda x: x[0])
    ref = best["orjson"][1]
    for k, (t, d) in best.items():
        res[k] = n / t
        if d != ref:
            res["wrong"].append(k)
    path = os.path.join(tmp, f"ops-{njobs}-{ncycles}.txt")
    anchors.write_ops(ops, path)
    del ops
    d = jansson_point(path, n, repeat, res)
    if d is not None and d != ref:
        res["wrong"].append("jansson")
    best_rate = 0.0
    for _ in range(repeat):
        rate, d = run_stdlib_anchor(path)
        best_rate = max(best_rate, rate)
    res["json"] = best_rate
    if d != ref:
        res["wrong"].append("json")
    os.unlink(path)
    return res


def sweep_point(tmp, njobs, ncycles, verify, repeat=1):
    """ops/s of every implementation for the plot.

    The state digest (a pure-Python byte loop) costs about a minute per
    implementation at 1M jobs, more than the runs themselves, so here the
    loops are timed without it (the anchors' merge function, orjson and the
    stdlib json, in this process) and digests are compared only when
    `verify` (the small sizes, which run the same code)."""
    import anchors
    import orjson

    ops = anchors.workload(njobs, ncycles)
    n = len(ops)
    texts = [(jid, p.decode()) for jid, p in ops]  # the anchors read str lines
    std = json.JSONEncoder(separators=(",", ":"))
    res = {"njobs": njobs, "ncycles": ncycles, "ops": n, "wrong": [], "notes": []}
    digests = {}

    apply = anchors._load("py_merge").apply

    def python_anchor(loads, dumps):
        return apply(texts, loads, dumps)[1]

    def percall():
        table = JobTable()
        ann = table.annotate
        for jid, p in ops:
            ann(jid, p)
        return table

    ids = [jid for jid, _ in ops]
    patches = [p for _, p in ops]

    def bulk():
        table = JobTable()
        table.annotate_many(ids, patches)
        return table

    def table_digest(table):
        return anchors.digest((j, json.loads(table.get(j))) for j in table.ids())

    runs = {
        "orjson": (lambda: python_anchor(orjson.loads, orjson.dumps),
                   lambda jobs: anchors.digest(jobs.items())),
        "json": (lambda: python_anchor(json.loads, std.encode),
                 lambda jobs: anchors.digest(jobs.items())),
        "flux_percall": (percall, table_digest),
        "flux_bulk": (bulk, table_digest),
    }
    # round-robin, best of each: every contender sees the same background load
    for r in range(repeat):
        for name, (fn, dig) in runs.items():
            gc.collect()
            t0 = time.perf_counter()
            state = fn()
            res[name] = max(res.get(name, 0.0), n / (time.perf_counter() - t0))
            if verify and r == 0:
                digests[name] = dig(state)
            del state
    del texts, ids, patches
    path = os.path.join(tmp, f"ops-{njobs}-{ncycles}.txt")
    anchors.write_ops(ops, path)
    del ops
    d = jansson_point(path, n, repeat, res)
    if d is not None:
        digests["jansson"] = d
    os.unlink(path)
    ref = digests.get("orjson")
    res["verified"] = verify
    res["wrong"] = [k for k, d in digests.items() if ref is not None and d != ref]
    return res


# --- memory per pending job (bench/run.py's measurement) --------------------------------


def memory_per_job(n):
    import run as core_bench

    avg, mem, rss, dict_rss = core_bench.memory(n)
    return {"n": n, "text_bytes": avg, "c_bytes": mem, "c_rss_bytes": rss, "py_bytes": dict_rss}


# --- socket RPCs (bench_rpc.py as a subprocess) ------------------------------------------


def rpc_rates(requests, rtt, repeat=2):
    script = os.path.join(HERE, "bench_rpc.py")
    cmd = [sys.executable, script, "--requests", str(requests), "--rtt", str(rtt)]
    helptext = subprocess.run([sys.executable, script, "--help"], capture_output=True,
                              text=True, timeout=60).stdout
    if "--repeat" in helptext:  # best of N, interleaved (newer bench_rpc.py)
        cmd += ["--repeat", str(repeat)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    text = out.stdout + out.stderr
    res = {"raw": out.stdout.strip()}

    def grab(pattern, key, conv=lambda s: float(s.replace(",", ""))):
        m = re.search(pattern, text)
        if m:
            res[key] = conv(m.group(1))
            return m
        return None

    m = grab(r"volatile annotate\s+([\d,]+) RPC/s", "volatile")
    if m:
        c = re.search(r"server ([\d.]+) µs CPU/request", text[m.end():].split("\n", 1)[0])
        if c:
            res["volatile_us"] = float(c.group(1))
        c = re.search(r"server CPU [\d.]+ s \((\d+)%\), client CPU [\d.]+ s \((\d+)%\)",
                      text[m.end():].split("\n", 1)[0])
        if c:
            res["volatile_cpu"] = (int(c.group(1)), int(c.group(2)))
    m = grab(r"non-volatile annotate\s+([\d,]+) RPC/s", "nonvolatile")
    if m:
        c = re.search(r"server ([\d.]+) µs CPU/request", text[m.end():].split("\n", 1)[0])
        if c:
            res["nonvolatile_us"] = float(c.group(1))
        c = re.search(r"server CPU [\d.]+ s \((\d+)%\), client CPU [\d.]+ s \((\d+)%\)",
                      text[m.end():].split("\n", 1)[0])
        if c:
            res["nonvolatile_cpu"] = (int(c.group(1)), int(c.group(2)))
    grab(r"idle round trip\s+median ([\d.]+) µs", "rtt_us")
    grab(r"p99 ([\d.]+) µs", "rtt_p99_us")
    if out.returncode != 0:
        res["error"] = f"bench_rpc.py exited {out.returncode}: {text.strip()[-300:]}"
    return res


# --- batch encoding ------------------------------------------------------------------------


def batch_encoding(n):
    from bench_events import bench_encode

    buf = io.StringIO()
    with redirect_stdout(buf):
        r = bench_encode(n)
    text = buf.getvalue()
    if isinstance(r, dict):
        return r
    res = {"raw": text.strip()}
    m = re.search(r"C batch_encode\s+([\d.]+) ms", text)
    if m:
        res["c_ms"] = float(m.group(1))
    m = re.search(r"orjson.dumps \(objects\)\s+([\d.]+) ms", text)
    if m:
        res["orjson_ms"] = float(m.group(1))
    return res


# --- the plot ------------------------------------------------------------------------------


SERIES = (
    ("flux_bulk", "flux-annot, bulk (annotate_many)", "o-"),
    ("flux_percall", "flux-annot, one call per update", "s-"),
    ("orjson", "anchor: Python + orjson", "^--"),
    ("jansson", "anchor: jansson (Flux's merge path)", "v--"),
    ("json", "anchor: Python + stdlib json", "d--"),
)


def plot(points, path, caption=None):
    """throughput.png; returns None, or why there is no plot."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install -e '.[bench]'), so no plot was drawn"
    fig, ax = plt.subplots(figsize=(10, 5), dpi=110)
    xs = [p["njobs"] for p in points]
    for key, label, style in SERIES:
        ys = [p.get(key) for p in points]
        if any(y is None for y in ys):
            continue
        ax.plot(xs, ys, style, label=label)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("pending jobs (standard workload, NJOBS)")
    ax.set_ylabel("updates per second")
    ax.set_title("Standard annotation workload: throughput against the number of jobs"
                 + (f"\n{caption}" if caption else ""), fontsize=10)
    ax.set_xticks(xs)
    ax.set_xticklabels([f"{x // 1000}k" if x < 10**6 else f"{x // 10**6}M" for x in xs])
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside, not over, the lines
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return None


# --- the report ------------------------------------------------------------------------------


def fmt_rate(x):
    return "—" if x is None else f"{x:,.0f}/s"


def row(measure, figure, anchor, ratio, target, met, why=""):
    if met is None:
        status = "not measured" + (f": {why}" if why else "")
    elif met:
        status = "met"
    else:
        status = "**missed**" + (f" — {why}" if why else "")
    return f"| {measure} | {figure} | {anchor} | {ratio} | {target} | {status} |"


def load_note(load):
    """What the machine was doing during one measurement (1-min load averages)."""
    return f"load average {load[0]:.1f}→{load[1]:.1f} on {os.cpu_count()} CPUs during it"


def build_rows(m):
    """One row per §11 target, from the measurements dict of `main`."""
    rows = []
    core, mem, rpc, flood, enc = (m.get(k) for k in ("core", "mem", "rpc", "flood", "enc"))
    if core:
        ld = load_note(m["load"]["core"])
        pc, bulk, orj, jan = (core.get(k) for k in ("flux_percall", "flux_bulk", "orjson", "jansson"))
        wrong = core["wrong"]
        wl = f"{core['njobs'] // 1000}k jobs × {core['ncycles']} cycles, {core['ops']:,} updates"
        r = pc / orj
        rows.append(row(f"C core applying the standard workload, one Python call per update, "
                        f"bytes in ({wl}, best of {m['repeat']})", fmt_rate(pc),
                        f"Python+orjson {fmt_rate(orj)}", f"{r:.2f}×", "≥ 3× orjson",
                        r >= 3 and "flux_percall" not in wrong,
                        (f"bulk (the same C merge, one call) reaches {bulk / orj:.1f}×, so the "
                         "per-call overhead, not the merge, separates them" if bulk / orj >= 3 else
                         f"bulk (the same C merge, one call) reaches only {bulk / orj:.1f}×")
                        + f"; {ld}"))
        if jan:
            r = pc / jan
            rows.append(row("the same, against Flux's jansson merge path", fmt_rate(pc),
                            f"jansson {fmt_rate(jan)}", f"{r:.2f}×", "≥ 8× jansson",
                            r >= 8 and "flux_percall" not in wrong,
                            f"bulk reaches {bulk / jan:.1f}×; {ld}"))
        else:
            rows.append(row("the same, against Flux's jansson merge path", fmt_rate(pc),
                            "jansson not run", "—", "≥ 8× jansson", None, "; ".join(core["notes"])))
        r = bulk / orj
        rows.append(row("the same, bulk call (`annotate_many`, all updates in one call)",
                        fmt_rate(bulk), f"Python+orjson {fmt_rate(orj)}", f"{r:.2f}×",
                        "≥ 8× orjson", r >= 8 and "flux_bulk" not in wrong, ld))
    if mem:
        r = mem["py_bytes"] / max(mem["c_bytes"], mem["c_rss_bytes"])
        n = mem["n"]
        rows.append(row(f"memory per pending job with typical `sched` notes "
                        f"({mem['text_bytes']:.0f} B compact JSON), {n:,} jobs",
                        f"{mem['c_bytes']:.0f} B/job (`memory_bytes`), "
                        f"{mem['c_rss_bytes']:.0f} B/job RSS growth",
                        f"Python dicts {mem['py_bytes']:.0f} B/job (RSS growth)",
                        f"{r:.2f}× smaller", "≤ 175 B/job and ≤ 1/3 of dicts",
                        max(mem["c_bytes"], mem["c_rss_bytes"]) <= 175 and r >= 3,
                        f"{mem['c_bytes'] - mem['text_bytes']:.0f} B/job on top of the JSON text"))
    if rpc:
        ld = load_note(m["load"]["rpc"])
        err = rpc.get("error", "")
        v, nv, rtt = rpc.get("volatile"), rpc.get("nonvolatile"), rpc.get("rtt_us")

        def cpu(key):
            c = rpc.get(key)
            if not c:
                return ""
            us = rpc.get(key.replace("_cpu", "_us"))
            per = (f"server {us:.1f} µs of CPU per request, i.e. at most "
                   f"{1e6 / us:,.0f}/s with a whole core to itself; ") if us else ""
            bound = (" — the single-threaded Python server is CPU-bound" if c[0] >= 80 else
                     " — neither side CPU-bound: waiting (the machine's other load, or the "
                     "commit) limits it")
            return f"{per}server CPU {c[0]}% of the wall time, client {c[1]}%{bound}; "

        rows.append(row("annotate RPCs over the socket, pipelined, one client, volatile",
                        fmt_rate(v), "Flux job manager 20–24k/s (C client), 13–15k/s (Python): "
                        "quoted from SPEC §11, not run here",
                        f"{v / 22000:.1f}× Flux (C)" if v else "—", "≥ 50k/s",
                        None if v is None else v >= 50000,
                        err or f"{cpu('volatile_cpu')}{ld}"))
        rows.append(row("the same, non-volatile (reply after commit)", fmt_rate(nv),
                        "Flux 12–14k/s (C client), replying before its commit: quoted",
                        f"{nv / 13000:.1f}× Flux" if nv else "—", "≥ 25k/s",
                        None if nv is None else nv >= 25000,
                        err or f"{cpu('nonvolatile_cpu')}{ld}"))
        rows.append(row("one round trip, idle service, median",
                        "—" if rtt is None else f"{rtt:.0f} µs (p99 {rpc.get('rtt_p99_us', 0):.0f} µs)",
                        "Flux ~200 µs: quoted", f"{200 / rtt:.2f}× (Flux's time / ours)" if rtt else "—",
                        "≤ 100 µs", None if rtt is None else rtt <= 100, err or ld))
    if flood:
        ld = load_note(m["load"]["flood"])
        who = ("8 guest connections, each a child process running as uid nobody"
               if flood["guests_are_guests"] else
               "FALLBACK: flooders as the owner uid (not root: guest-ness not shown)")
        rows.append(row(f"scheduler ANNOTATE throughput while {who} flood over-limit requests",
                        f"{flood['flood_rate']:,.0f}/s flooded",
                        f"{flood['quiet_rate']:,.0f}/s without the flood (same run; ratio: median "
                        f"over {flood.get('rounds', 1)} flooded phases, each against the quiet "
                        "phases before and after it)", f"{100 * flood['ratio']:.0f}%", "≥ 80%",
                        flood["ratio"] >= 0.8, flood_why(flood) + f"; {ld}"))
        rows.append(row("server RSS growth during that flood",
                        f"{flood['rss_growth_mb']:+.1f} MB (peak {flood['rss_peak_growth_mb']:+.1f} MB)",
                        f"VmRSS {flood['rss_before_kib'] / 1024:.0f} MiB before; control: the quiet "
                        f"phase before it (same scheduler requests, no flood) grew "
                        f"{flood.get('rss_quiet_growth_mb', float('nan')):+.1f} MB", "—", "≤ 20 MB",
                        flood["rss_growth_mb"] <= 20 and flood["rss_peak_growth_mb"] <= 20, ld))
    if enc and "c_ms" in enc and "orjson_ms" in enc:
        r = enc["orjson_ms"] / enc["c_ms"]
        rows.append(row("batch encoding, 100k entries", f"{enc['c_ms']:.2f} ms",
                        f"orjson.dumps of the same batch {enc['orjson_ms']:.2f} ms", f"{r:.2f}×",
                        "≥ 2× orjson", r >= 2, load_note(m["load"]["enc"])))
    elif enc is not None:
        rows.append(row("batch encoding, 100k entries", "—", "—", "—", "≥ 2× orjson", None,
                        "bench_events output not understood"))
    return rows


def flood_why(f):
    """Measured facts that explain the flood figure."""
    reasons = ", ".join(
        f"{k} {v:,.0f}/s" for k, v in sorted(f["rejected_per_s"].items(), key=lambda kv: -kv[1])
    )
    s = (f"the server answered {f['rejected_total_per_s']:,.0f} guest requests/s ({reasons})")
    if f.get("guest_share_of_server_cpu") is not None:
        s += (f"; a rejected guest request cost the server {f['server_us_per_guest_request']:.0f} µs "
              f"of CPU against {f['server_us_per_sched_request']:.0f} µs for a scheduler request, "
              f"and guests took {100 * f['guest_share_of_server_cpu']:.0f}% of its CPU while "
              f"flooded (flooders themselves: {100 * f['flooder_cpu']:.0f}% of a CPU)")
    return s + "; see the flood section"


#: What the flood costs the server and what is left, from `bench_flood.py`
#: runs. Written by hand: the figures in it are from the runs named, not from
#: this report's run.
FLOOD_NOTES = """\
**What the flood costs the server.** A guest over its rate is refused
(EAGAIN) together with the frames decoded with it, and its connection is
then left unread; the connections of one uid over the rate take turns, one
served every 50 ms with the tokens earned meanwhile (docs/limits.md). So
8 flooding connections of one uid cost the server at most 20 wake-ups a
second, each a few hundred µs of CPU (cache-cold after the pause; the
send that wakes the flooder is a good part of it). Measured with
`bench_flood.py` (7 rounds, guests-alone phase, server CPU from
schedstat) on 2026-12-06, load average 1.7-2.7, before → after this
design: the guests alone took 12-14% of a core for 1,530-1,570
rejections/s (one wake per connection per 5 ms token interval) → 1.1%
for ~235/s; while flooded, guests took 29-38% of the server's CPU → 3%.

**What is left.** On the shared two-core machine the scheduler's rate
varies ±30-50% from one phase to the next without any flood (the control
line of the bench: each quiet phase against its quiet neighbours), so the
median flood ratio over 7 rounds lands anywhere from about 86% to 101%,
before the change as after it: at these costs the flood's effect is below
the machine's noise, and only a quiet machine can tell 90% from 100%. The
server CPU per scheduler request is 10-20% higher in flooded phases even
though the guests' own work is ~1% of a core (not the cyclic GC: ~50 ms
over a whole run); the likely cause is the 8 flooder processes sharing
the two cores and caches with the server and the scheduler.

"""


def write_report(path, info, m, rows, points, plot_note, elapsed, quick):
    core, mem, rpc, flood, enc = (m.get(k) for k in ("core", "mem", "rpc", "flood", "enc"))
    L = []
    L.append("# flux-annot performance report (SPEC §11)")
    L.append("")
    L.append(f"Generated by `python bench/run.py --report{' --quick' if quick else ''}` on "
             f"{info['date']}, in {elapsed / 60:.1f} minutes"
             + (" (**--quick smoke run: smaller sizes, not the §11 conditions**)" if quick else "")
             + ".")
    L.append("")
    ls = info["load_start"]
    L.append(f"Machine: {info['nproc']} CPUs ({info['cpu']}), Python {info['python']}, "
             f"{info['platform']}. Load average at the start {ls[0]:.1f} / {ls[1]:.1f} / "
             f"{ls[2]:.1f} (1/5/15 min), at the end {os.getloadavg()[0]:.1f}. This machine is "
             "shared with other work: each row says the load during its measurement; a busy "
             "machine lowers every figure, the anchors' too, but socket and flood figures "
             "(two or more processes on 2 CPUs) suffer most.")
    L.append("")
    L.append("Every anchor was measured in this same run, except Flux's own RPC rates and round "
             "trip, which cannot run here and are quoted from SPEC §11.")
    L.append("")
    L.append("| measure | flux-annot | anchor | ratio | target | result |")
    L.append("|---|---|---|---|---|---|")
    L.extend(rows)
    L.append("")
    if core and core["wrong"]:
        L.append(f"**Digest mismatch** (final state differs from the orjson anchor's): {core['wrong']}")
        L.append("")
    L.append("## Throughput against the number of pending jobs")
    L.append("")
    if plot_note:
        L.append(f"No plot: {plot_note}.")
    else:
        L.append("![throughput against the number of pending jobs](throughput.png)")
    L.append("")
    names = {k: label for k, label, _ in SERIES}
    cols = [k for k, _, _ in SERIES if all(p.get(k) is not None for p in points)]
    L.append("| jobs | cycles | updates | " + " | ".join(names[k] for k in cols) + " |")
    L.append("|---|---|---|" + "---|" * len(cols))
    for p in points:
        L.append(f"| {p['njobs']:,} | {p['ncycles']} | {p['ops']:,} | "
                 + " | ".join(f"{p[k]:,.0f}" for k in cols) + " |")
    bad = [(p["njobs"], p["wrong"]) for p in points if p["wrong"]]
    L.append("")
    L.append("Updates per second, the standard workload with NJOBS varied, all in this process "
             "except jansson (the anchors' own merge function with orjson and with the stdlib "
             "`json`; `JobTable.annotate` per update and `annotate_many` for all); best of 3 "
             "(round-robin) up "
             "to 100k jobs, once above. Final state digests were compared with the orjson "
             "anchor's up to 100k jobs (the pure-Python digest would take minutes at 1M) and "
             + (f"differ for {bad}." if bad else "all agree."))
    L.append("")
    if flood:
        L.append("## Guest flood (bench/bench_flood.py)")
        L.append("")
        L.append(f"Server subprocess on a Unix socket in a temp dir (0755), store: {flood['store']}. "
                 f"One scheduler connection (owner) sends ANNOTATE alloc responses for "
                 f"{flood['jobs']:,} pending jobs, each cycle moving every `t_estimate`, "
                 f"{flood['window']} in flight, {flood['requests']:,} per phase: quiet and "
                 "flooded phases alternating, quiet first and last, then the guests alone. "
                 + ("Each of the 8 flooders is a child process that dropped to uid/gid 65534 "
                    "(nobody) before connecting, so the server sees guests through SO_PEERCRED; "
                    "two each send payloads over 4 KiB, nesting 12 deep, annotations of other "
                    "users' jobs, and the `sched` namespace, pipelined (512 in flight), counting "
                    "replies without decoding them."
                    if flood["guests_are_guests"] else
                    "**Not run as root: guest-ness could not be shown; the flood ran as the "
                    "owner uid, with only requests refused to owners too.**"))
        L.append("")
        L.append("| phase | scheduler RPC/s | server CPU | scheduler client CPU |")
        L.append("|---|---|---|---|")
        for k in ("quiet1", "flood", "quiet2"):
            p = flood[k]
            L.append(f"| {k} | {p['rate']:,.0f} | {100 * p['server_cpu']:.0f}% | "
                     f"{100 * p['client_cpu']:.0f}% |")
        L.append("")
        if flood.get("ratios"):
            qr = flood.get("quiet_ratios") or [float("nan")]
            L.append(f"The round shown is the median of {flood['rounds']}; every round's ratio: "
                     + ", ".join(f"{100 * x:.0f}%" for x in flood["ratios"])
                     + f". Control, each inner quiet phase against its quiet neighbours: "
                     f"{100 * min(qr):.0f}% to {100 * max(qr):.0f}% (this machine's noise). "
                     f"Server CPU per scheduler request, the guests' included: "
                     f"{flood['server_us_per_sched_request']:.2f} µs quiet, "
                     f"{flood['server_us_per_sched_request_flooded_all']:.2f} µs flooded "
                     f"(CPU ratio {100 * flood['cpu_ratio']:.0f}%); the guests alone cost "
                     f"{100 * flood['guests_alone']['server_cpu']:.1f}% of a core for "
                     f"{flood['guests_alone_rejected_per_s']:,.0f} rejections/s.")
            L.append("")
        L.append(f"Server VmRSS: {flood['rss_before_kib'] / 1024:.1f} MiB before the flood, "
                 f"{flood['rss_peak_kib'] / 1024:.1f} MiB at its peak (sampled every 50 ms), "
                 f"{flood['rss_after_kib'] / 1024:.1f} MiB after. For comparison the quiet phase "
                 f"before it (the same scheduler requests, no flood) grew the server by "
                 f"{flood.get('rss_quiet_growth_mb', float('nan')):+.1f} MB: the event backlog "
                 "kept for `since` (4096 batches, up to 256 MiB) fills with the scheduler's "
                 "batches, flood or not.")
        L.append("")
        L.append(f"Guest requests rejected: {flood['rejected_total_per_s']:,.0f}/s over the "
                 f"{flood['flood_wall']:.1f} s of the flooded phases (`job-manager.stats` `rejected` "
                 f"after − before); the flooders sent {flood['flooder_sent']:,} requests, got "
                 f"{flood['flooder_replies']:,} replies, and used "
                 f"{100 * flood.get('flooder_cpu', 0):.0f}% of a CPU together.")
        L.append("")
        L.append("| limit (stats reason) | rejected/s | count |")
        L.append("|---|---|---|")
        for k, v in sorted(flood["rejected_per_s"].items(), key=lambda kv: -kv[1]):
            L.append(f"| {k} | {v:,.0f} | {flood['rejected'][k]:,} |")
        L.append("")
        L.append("All 8 flooders share one uid, so one token bucket (200/s, burst 400): "
                 "`rate` (EAGAIN) refuses what comes over it before any other check, and "
                 "the uid's connections are then left unread, served in turn; the requests "
                 "that get a token (the burst at each phase's start, then the rate) are "
                 "refused by the limit their kind targets (`payload_size` E2BIG, `invalid` "
                 "EINVAL for the depth, `permission` EPERM for other users' jobs and `sched`).")
        L.append("")
        L.append(FLOOD_NOTES)
    if rpc and rpc.get("raw"):
        L.append("## Socket RPCs (bench/bench_rpc.py, run as a subprocess)")
        L.append("")
        L.append("```")
        L.append(rpc["raw"])
        L.append("```")
        L.append("")
    if enc and enc.get("raw"):
        L.append("## Batch encoding (bench/bench_events.py `bench_encode`)")
        L.append("")
        L.append("```")
        L.append(enc["raw"])
        L.append("```")
        L.append("")
    if mem:
        L.append(f"Memory: bench/run.py's `memory({mem['n']:,})`: the table's `memory_bytes()` "
                 "(everything the C core holds) and the process RSS growth while it is built, "
                 "against the RSS growth of the same notes parsed into Python dicts.")
        L.append("")
    with open(path, "w") as f:
        f.write("\n".join(L))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: small sizes, ~2 minutes")
    ap.add_argument("--out", default=HERE, help="directory for REPORT.md and throughput.png")
    args = ap.parse_args(argv)
    quick = args.quick
    t0 = time.perf_counter()
    info = machine()
    say(f"machine: {info['nproc']} CPUs, {info['cpu']}, Python {info['python']}, "
        f"load {info['load_start'][0]:.1f}")
    m = {"repeat": 1 if quick else 5, "load": {}}

    def measure(key, label, fn):
        say(f"{label} ...")
        l0 = os.getloadavg()[0]
        m[key] = fn()
        m["load"][key] = (l0, os.getloadavg()[0])

    tmp = tempfile.mkdtemp(prefix="fa-report-")
    points = []
    try:
        ncyc = 2 if quick else 5
        measure("core", f"standard workload, 10k jobs x {ncyc} cycles, best of {m['repeat']}",
                lambda: workload_point(tmp, 10_000, ncyc, repeat=m["repeat"]))
        measure("mem", "memory per job",
                lambda: memory_per_job(100_000 if quick else 1_000_000))
        measure("rpc", "socket RPCs (bench_rpc.py)",
                lambda: rpc_rates(20_000 if quick else 200_000, 500 if quick else 5000))
        import bench_flood

        measure("flood", "guest flood (bench_flood.py)",
                lambda: bench_flood.run(jobs=5_000 if quick else 10_000,
                                        requests=20_000 if quick else 100_000, verbose=False))
        bench_flood.report(m["flood"])
        measure("enc", "batch encoding, 100k entries", lambda: batch_encoding(100_000))
        for n in QUICK_SWEEP if quick else SWEEP:
            say(f"throughput sweep: {n:,} jobs ...")
            # best of 3 where it is cheap: single runs on a shared machine are noisy
            small = n <= 100_000
            points.append(sweep_point(tmp, n, 1 if quick else 2, verify=small,
                                      repeat=3 if small and not quick else 1))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for k in ("core", "mem", "rpc", "enc"):
        say(f"  {k}: { {a: b for a, b in (m.get(k) or {}).items() if a != 'raw'} }")
    png = os.path.join(args.out, "throughput.png")
    plot_note = plot(points, png, caption=f"{info['nproc']} CPUs ({info['cpu']}), Python "
                     f"{info['python']}, {info['date']}, load average {info['load_start'][0]:.1f}")
    rows = build_rows(m)
    out = os.path.join(args.out, "REPORT.md")
    write_report(out, info, m, rows, points, plot_note, time.perf_counter() - t0, quick)
    say(f"wrote {out}" + ("" if plot_note else f" and {png}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
