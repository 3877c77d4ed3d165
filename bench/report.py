"""The performance report: runs every measurement of docs/performance.md and
writes bench/REPORT.md and the plot bench/throughput.png.

    python bench/report.py [--quick] [--out DIR] [--flux-prefix PREFIX]
    (or: python bench/run.py --report [--quick])

The Flux mirror rows need a Flux installation: `--flux-prefix PREFIX` or
$FLUX_ANNOT_TEST_FLUX_PREFIX (without one, those rows say they were not
run, and why). The dashboard rows need Chromium and chromedriver
(/usr/bin/chromium, /usr/bin/chromedriver) and selenium.

What runs, all on this machine in one go, so every ratio compares figures
taken minutes apart under the same load (the 1-minute load average is
sampled every 2 s and quoted beside every row):

- The standard workload (`bench/workload.py`) through flux-annot — per call
  (`JobTable.annotate(id, bytes)`) and bulk (`annotate_many`, one call) —
  and the anchors, with bench/run.py's and bench/anchors.py's runners
  (orjson in process, jansson compiled with gcc -O2, skipped if
  libjansson-dev is missing), plus the stdlib-json anchor `py_merge.py` as
  shipped. Every final state digest must equal the orjson anchor's, or the
  figure is marked wrong. 10k jobs x 5 cycles, best of 5 (round-robin).
- The plot: 10k..1M jobs x 2 cycles (--quick: 1 cycle, up to 100k).
- Memory per pending job, 1M jobs: bench/run.py's `memory()`.
- Batch encoding, 100k entries: `bench_events.bench_encode()`.
- Guest flood: `bench_flood.run()` (in this process; it forks its flooders).
- As subprocesses, each starting (and stopping) what it needs:
  `bench_rpc.py` (its printed lines are parsed), `bench_clients.py --json`,
  `bench_fanout.py --json` (the fan-out curve and the subscriber bound),
  `bench_flux.py --json`,
  `bench_top.py --json`, `bench_dashboard.py --json`, `bench_metrics.py
  --json` (serve with and without --metrics, alternating; one JSON object on
  their last line; the human output is kept in the report).

Flux's own RPC rates and round trip cannot run here: they are quoted (see
docs/performance.md) and marked as quoted. A missed target is written as
MISSED, with the measured facts that explain it.
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
import signal
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import redirect_stdout

from flux_annot import JobTable

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
ANCHORS = os.path.join(ROOT, "bench")  # workload.py, py_merge.py, jansson_merge.c
sys.path.insert(0, HERE)

SWEEP = (10_000, 30_000, 100_000, 300_000, 1_000_000)
QUICK_SWEEP = (10_000, 30_000, 100_000)

#: Sizes of every measurement: the full run, and --quick (a smoke test of a
#: few minutes: the figures of a quick run are not the targets' conditions).
SIZES = {
    "full": {
        "core_cycles": 5, "repeat": 5, "mem_jobs": 1_000_000,
        "rpc": ["--requests", "200000", "--rtt", "5000", "--repeat", "2"],
        "clients": ["--jobs", "10000", "--rtt", "3000", "--requests", "200000", "--repeat", "3"],
        "flood": {"jobs": 10_000, "requests": 100_000},
        "fanout": ["--requests", "200000", "--rounds", "2"],
        "flux": ["--jobs", "2000"],
        "broker": ["--rtt", "1000", "--pipeline", "2000"],
        "top": ["--jobs", "100000", "--rate", "10000", "--seconds", "20", "--refresh", "0.5"],
        "dashboard": ["--jobs", "10000", "--rate", "5000", "--seconds", "30", "--extra", "4"],
        "metrics": ["--requests", "500000", "--rounds", "7"],
        "accuracy": ["--jobs", "300", "--hot-requests", "100000", "--rounds", "3",
                     "--cost-jobs", "100000"],
    },
    "quick": {
        "core_cycles": 2, "repeat": 1, "mem_jobs": 100_000,
        "rpc": ["--requests", "20000", "--rtt", "500", "--repeat", "1"],
        "clients": ["--jobs", "2000", "--rtt", "500", "--requests", "20000", "--repeat", "1"],
        "flood": {"jobs": 5_000, "requests": 20_000},
        "fanout": ["--jobs", "2000", "--requests", "20000", "--steps", "10,50"],
        "flux": ["--jobs", "200"],
        "broker": ["--rtt", "200", "--pipeline", "500"],
        "top": ["--jobs", "20000", "--rate", "5000", "--seconds", "5", "--refresh", "0.5"],
        "dashboard": ["--jobs", "2000", "--rate", "1000", "--seconds", "5", "--extra", "2"],
        "metrics": ["--requests", "100000", "--rounds", "3"],
        "accuracy": ["--jobs", "90", "--hot-requests", "20000", "--rounds", "2",
                     "--cost-jobs", "20000"],
    },
}


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


class LoadSampler:
    """The 1-minute load average every `period` seconds, on a thread, so that
    each measurement can say what the machine was doing while it ran."""

    def __init__(self, period=2.0):
        self.period = period
        self.samples = []  # (time.monotonic(), load1)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self):
        self._thread.start()
        return self

    def _run(self):
        while True:
            self.samples.append((time.monotonic(), os.getloadavg()[0]))
            if self._stop.wait(self.period):
                return

    def stop(self):
        self._stop.set()
        self._thread.join(5)

    def peak(self, t0=float("-inf"), t1=float("inf")):
        vals = [v for t, v in self.samples if t0 <= t <= t1]
        return max(vals) if vals else None


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


# --- benches run as subprocesses ------------------------------------------------------------


def _text(b):
    if b is None:
        return ""
    return b.decode(errors="replace") if isinstance(b, bytes) else b


def run_bench(argv, timeout):
    """Run `bench/<argv[0]> argv[1:]` as a subprocess in an empty temp directory
    (so `python -m flux_annot` finds the installed package, not the source
    folder). Returns {"json": the JSON object of its last stdout line or None,
    "out": the rest of stdout, "err": stderr, "rc": exit status, "error": why
    there are no figures, or None}. On timeout the bench gets SIGINT (its
    `finally` blocks stop what it started), then its process group SIGKILL."""
    cmd = [sys.executable, os.path.join(HERE, argv[0]), *argv[1:]]
    shown = "python bench/" + " ".join(argv)
    cwd = tempfile.mkdtemp(prefix="fa-report-cwd-")
    res = {"json": None, "out": "", "err": "", "rc": None, "error": None, "cmd": shown}
    try:
        proc = subprocess.Popen(cmd, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, start_new_session=True)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGINT)
            try:
                out, err = proc.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                out, err = proc.communicate()
            res["error"] = f"`{shown}` did not finish in {timeout} s and was stopped"
        res["rc"] = proc.returncode
    finally:
        shutil.rmtree(cwd, ignore_errors=True)
    lines = _text(out).rstrip().splitlines()
    if lines and lines[-1].startswith("{"):
        try:
            res["json"] = json.loads(lines[-1])
            lines.pop()
        except ValueError:
            pass
    res["out"] = "\n".join(lines).strip()
    res["err"] = _text(err).strip()
    if res["error"] is None and res["rc"] != 0 and res["json"] is None:
        tail = (res["err"] or res["out"])[-500:]
        res["error"] = f"`{shown}` exited {res['rc']}: {tail}"
    return res


def parse_rpc(text):
    """The figures bench_rpc.py prints, by line: rates with the server's CPU µs
    per request and both sides' CPU share, the idle round trip (and, when the
    bench prints it, the server's CPU per round trip)."""
    res = {}
    for key, name in (("volatile", "volatile annotate"), ("nonvolatile", "non-volatile annotate")):
        m = re.search(rf"^{name}\s+([\d,]+) RPC/s(.*)$", text, re.M)
        if not m:
            continue
        res[key] = float(m.group(1).replace(",", ""))
        rest = m.group(2)
        c = re.search(r"server ([\d.]+) µs CPU/request", rest)
        if c:
            res[key + "_us"] = float(c.group(1))
        c = re.search(r"server CPU [\d.]+ s \((\d+)%\), client CPU [\d.]+ s \((\d+)%\)", rest)
        if c:
            res[key + "_cpu"] = (int(c.group(1)), int(c.group(2)))
    m = re.search(r"^idle round trip\s+median ([\d.]+) µs(.*)$", text, re.M)
    if m:
        res["rtt_us"] = float(m.group(1))
        rest = m.group(2)
        c = re.search(r"p99 ([\d.]+) µs", rest)
        if c:
            res["rtt_p99_us"] = float(c.group(1))
        c = re.search(r"server ([\d.]+) µs CPU, client ([\d.]+) µs CPU per round trip", rest)
        if c:
            res["rtt_server_us"], res["rtt_client_us"] = float(c.group(1)), float(c.group(2))
    m = re.search(r"^(\d+) error replies", text, re.M)
    if m:
        res["error_replies"] = int(m.group(1))
    return res


def rpc_rates(args):
    r = run_bench(["bench_rpc.py", *args], timeout=900)
    res = parse_rpc(r["out"])
    res["raw"], res["cmd"] = r["out"], r["cmd"]
    if r["error"] or not res.get("volatile"):
        res["error"] = r["error"] or "bench_rpc.py output not understood"
    elif res.get("error_replies"):
        res["error"] = f"{res['error_replies']} error replies (see its output below)"
    return res


def flux_mirror(prefix, args, script="bench_flux.py"):
    if not prefix:
        return {"error": "no Flux installation given (`--flux-prefix PREFIX` or "
                         "$FLUX_ANNOT_TEST_FLUX_PREFIX)"}
    if not os.access(os.path.join(prefix, "bin", "flux"), os.X_OK):
        return {"error": f"{prefix}/bin/flux is not an executable"}
    r = run_bench([script, "--prefix", prefix, *args, "--json"], timeout=900)
    return {"data": r["json"], "raw": r["out"], "cmd": r["cmd"], "error": r["error"]}


def json_bench(script, args, timeout=600):
    r = run_bench([script, *args, "--json"], timeout=timeout)
    err = r["error"]
    if r["json"] is None and not err:
        err = f"`{r['cmd']}` printed no figures: {(r['err'] or r['out'])[-500:]}"
    return {"data": r["json"], "raw": r["out"], "cmd": r["cmd"], "error": err}


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


def verdict(ok):
    return "met" if ok else "MISSED"


def row(measure, figure, anchor, ratio, target, met, why="", load=None):
    """One table row. met: True, False, None (not run: `why`) or "info" (a
    figure without a target)."""
    if met == "info":
        status = "— (no target)" + (f"; {why}" if why else "")
    elif met is None:
        status = "not run" + (f": {why}" if why else "")
    elif met:
        status = "met" + (f"; {why}" if why else "")
    else:
        status = "**MISSED**" + (f" — {why}" if why else "")
    cells = (measure, figure, anchor, ratio, target, status, load or "—")
    # one line per row, whatever a failed bench printed
    return "| " + " | ".join(" ".join(str(c).split()).replace("|", "\\|") for c in cells) + " |"


def load_note(load):
    """The 1-minute load average during one measurement: start → end (peak)."""
    if not load:
        return "—"
    l0, l1, peak = (tuple(load) + (max(load),))[:3]
    return f"{l0:.1f} → {l1:.1f} (peak {peak:.1f})"


def cpu_bound_note(c, commit):
    if not c:
        return ""
    waits = ("for the commit, or for a CPU the machine's other work holds" if commit else
             "for a CPU the machine's other work holds, or on the socket")
    return (" The single-threaded server is CPU-bound (server CPU "
            f"{c[0]}% of the wall time, client {c[1]}%)." if c[0] >= 80 else
            f" Neither side is CPU-bound (server {c[0]}%, client {c[1]}% of the wall time): "
            f"waiting ({waits}) limits it.")


def core_rows(m, rows):
    core, mem, enc = m.get("core"), m.get("mem"), m.get("enc")
    if core:
        ld = load_note(m["load"].get("core"))
        pc, bulk, orj, jan = (core.get(k) for k in ("flux_percall", "flux_bulk", "orjson", "jansson"))
        wrong = core["wrong"]
        wl = f"{core['njobs'] // 1000}k jobs × {core['ncycles']} cycles, {core['ops']:,} updates"
        r = pc / orj
        rows.append(row(f"C core applying the standard workload, one Python call per update, "
                        f"bytes in ({wl}, best of {m['repeat']})", fmt_rate(pc),
                        f"Python+orjson {fmt_rate(orj)}", f"{r:.2f}×", "≥ 3× orjson",
                        r >= 3 and "flux_percall" not in wrong,
                        "" if r >= 3 else
                        (f"bulk (the same C merge, one call) reaches {bulk / orj:.1f}×, so the "
                         "per-call overhead, not the merge, separates them" if bulk / orj >= 3 else
                         f"bulk (the same C merge, one call) reaches only {bulk / orj:.1f}×"), ld))
        if jan:
            r = pc / jan
            rows.append(row("the same, against Flux's jansson merge path", fmt_rate(pc),
                            f"jansson {fmt_rate(jan)}", f"{r:.2f}×", "≥ 8× jansson",
                            r >= 8 and "flux_percall" not in wrong,
                            "" if r >= 8 else f"bulk reaches {bulk / jan:.1f}×", ld))
        else:
            rows.append(row("the same, against Flux's jansson merge path", fmt_rate(pc),
                            "jansson not run", "—", "≥ 8× jansson", None, "; ".join(core["notes"]),
                            ld))
        r = bulk / orj
        rows.append(row("the same, bulk call (`annotate_many`, all updates in one call)",
                        fmt_rate(bulk), f"Python+orjson {fmt_rate(orj)}", f"{r:.2f}×",
                        "≥ 8× orjson", r >= 8 and "flux_bulk" not in wrong, "", ld))
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
                        f"{mem['c_bytes'] - mem['text_bytes']:.0f} B/job on top of the JSON text",
                        load_note(m["load"].get("mem"))))
    if enc and "c_ms" in enc and "orjson_ms" in enc:
        r = enc["orjson_ms"] / enc["c_ms"]
        rows.append(row("batch encoding, 100k entries", f"{enc['c_ms']:.2f} ms",
                        f"orjson.dumps of the same batch {enc['orjson_ms']:.2f} ms", f"{r:.2f}×",
                        "≥ 2× orjson", r >= 2, "", load_note(m["load"].get("enc"))))
    elif enc is not None:
        rows.append(row("batch encoding, 100k entries", "—", "—", "—", "≥ 2× orjson", None,
                        "bench_events output not understood", load_note(m["load"].get("enc"))))


def rpc_rows(m, rows):
    rpc = m.get("rpc")
    if not rpc:
        return
    ld = load_note(m["load"].get("rpc"))
    err = rpc.get("error")
    v, nv, rtt = rpc.get("volatile"), rpc.get("nonvolatile"), rpc.get("rtt_us")

    def figure(rate, key):
        if rate is None:
            return "—"
        us = rpc.get(key + "_us")
        return fmt_rate(rate) + (f"; server {us:.1f} µs CPU/request" if us else "")

    def why(rate, key, target):
        if err:
            return err
        if rate is None or rate >= target:
            return ""
        us = rpc.get(key + "_us")
        s = (f"the server's {us:.1f} µs of CPU per request allow at most {1e6 / us:,.0f}/s "
             "with a whole core to itself." if us else "")
        return s + cpu_bound_note(rpc.get(key + "_cpu"), key == "nonvolatile")

    def first(rate, target, text):
        if rate is None:
            return ""
        ok = rate <= target if text.startswith("≤") else rate >= target
        return f" (first round {text}: {verdict(ok)})"

    rows.append(row("annotate RPCs over the socket, pipelined, one client, volatile",
                    figure(v, "volatile"), "Flux job manager 20–24k/s (C client), 13–15k/s "
                    "(Python): quoted, not run here", f"{v / 22000:.1f}× Flux (C)" if v else "—",
                    "≥ 250k/s" + first(v, 50_000, "≥ 50k/s"),
                    None if v is None else v >= 250_000, why(v, "volatile", 250_000), ld))
    rows.append(row("the same, non-volatile (SQLite `synchronous=FULL`, reply after commit)",
                    figure(nv, "nonvolatile"),
                    "Flux 12–14k/s (C client), replying before its commit: quoted",
                    f"{nv / 13000:.1f}× Flux" if nv else "—",
                    "≥ 60k/s" + first(nv, 25_000, "≥ 25k/s"),
                    None if nv is None else nv >= 60_000, why(nv, "nonvolatile", 60_000), ld))
    fig = "—"
    if rtt is not None:
        fig = f"{rtt:.0f} µs median (p99 {rpc.get('rtt_p99_us', float('nan')):.0f} µs)"
        if rpc.get("rtt_server_us") is not None:
            fig += (f"; server {rpc['rtt_server_us']:.0f} µs, client {rpc['rtt_client_us']:.0f} µs "
                    "CPU per round trip")
        else:
            fig += "; server CPU per round trip not printed by this bench_rpc.py"
    rows.append(row("one round trip, idle service, median", fig, "Flux ~200 µs: quoted",
                    f"{200 / rtt:.2f}× (Flux's time / ours)" if rtt else "—",
                    "≤ 50 µs" + first(rtt, 100, "≤ 100 µs"),
                    None if rtt is None else rtt <= 50, err or "", ld))


def client_rows(m, rows):
    """The clients against their anchors (bench_clients.py, SPEC §11 third round)."""
    cl = m.get("clients")
    if cl is None:
        return
    from bench_clients import TARGETS

    def target(key):
        op, t = TARGETS[key]
        return f"{op} {t:.2f}×" if key.endswith("_rtt") else f"{op} {100 * t:.0f}%"

    ld = load_note(m["load"].get("clients"))
    d = cl.get("data")
    names = {"annotate_rtt": "`Client.annotate` (volatile) round trip, median",
             "get_rtt": "`Client.get` round trip, median",
             "pipelined": "`Client.annotate_pipelined` (volatile, dicts), window 256",
             "async": "`AsyncClient`, 1,000 `annotate` awaitables in flight (gather)"}
    if not d:
        for key, name in names.items():
            rows.append(row(name, "—", "—", "—", target(key), None, cl.get("error"), ld))
        return
    rt, pr, ra = d["rtt"], d["rates"], d["ratios"]

    def cpu(r):
        return f"client {r['client_us']:.1f} µs, server {r['server_us']:.1f} µs CPU/request"

    for key, mine, anchor, label in (
            ("annotate_rtt", rt["client_annotate"], rt["minimal_annotate"],
             "minimal client (docs/protocol.md: json.dumps, sendall, recv, json.loads)"),
            ("get_rtt", rt["client_get"], rt["minimal_getattr"], "the minimal client's `getattr`")):
        rows.append(row(names[key], f"{mine['median_us']:.1f} µs; {cpu(mine)}",
                        f"{label} {anchor['median_us']:.1f} µs; {cpu(anchor)}",
                        f"{ra[key]:.2f}×", target(key), ra[key] <= TARGETS[key][1], "", ld))
    pre = pr["prebuilt"]
    for key, mine in (("pipelined", pr["client_pipelined"]), ("async", pr["async_gather"])):
        t = TARGETS[key][1]
        why = ""
        if ra[key] < t:
            why = (f"the client spends {mine['client_us']:.1f} µs of CPU per request where the "
                   f"prebuilt frames cost {pre['client_us']:.1f} µs (the server "
                   f"{mine['server_us']:.1f} against {pre['server_us']:.1f} µs)")
        rows.append(row(names[key], f"{mine['rate']:,.0f}/s; {cpu(mine)}",
                        f"frames built beforehand, pipelined {pre['rate']:,.0f}/s; {cpu(pre)}",
                        f"{100 * ra[key]:.0f}%", target(key), ra[key] >= t, why, ld))


def flood_rows(m, rows):
    flood = m.get("flood")
    if not flood:
        if m.get("flood_error"):
            rows.append(row("scheduler ANNOTATE throughput under an 8-guest flood", "—", "—", "—",
                            "≥ 90%", None, m["flood_error"], load_note(m["load"].get("flood"))))
        return
    ld = load_note(m["load"].get("flood"))
    who = ("8 guest connections, each a child process running as uid nobody,"
           if flood["guests_are_guests"] else
           "FALLBACK: flooders as the owner uid (not root: guest-ness not shown),")
    q_us = flood["server_us_per_sched_request"]
    f = flood["flood"]
    f_us = 1e6 * f["server_cpu"] * f["wall"] / flood["requests"]
    ratio = flood["ratio"]
    rows.append(row(f"scheduler ANNOTATE throughput while {who} flood over-limit requests",
                    f"{flood['flood_rate']:,.0f}/s flooded; server {f_us:.1f} µs CPU per "
                    f"scheduler request (guests' share included)",
                    f"{flood['quiet_rate']:,.0f}/s without the flood (same run, mean of before "
                    f"and after); server {q_us:.1f} µs CPU/request",
                    f"{100 * ratio:.0f}%", f"≥ 90% (first round ≥ 80%: {verdict(ratio >= 0.8)})",
                    ratio >= 0.9, "" if ratio >= 0.9 else flood_why(flood), ld))
    beyond = max(flood["rss_growth_mb"], flood["rss_peak_growth_mb"]) - flood["rss_quiet_growth_mb"]
    rows.append(row("server RSS growth during that flood, beyond the quiet phase's",
                    f"{beyond:+.1f} MB (flood {flood['rss_growth_mb']:+.1f} MB, peak "
                    f"{flood['rss_peak_growth_mb']:+.1f} MB)",
                    f"the quiet phase before it (same scheduler requests, no flood) grew "
                    f"{flood['rss_quiet_growth_mb']:+.1f} MB; VmRSS "
                    f"{flood['rss_before_kib'] / 1024:.0f} MiB before the flood", "—",
                    "≤ 20 MB (the larger of growth and peak growth, minus the quiet growth)",
                    beyond <= 20, "", ld))


def flood_why(f):
    """Measured facts that explain the flood figure."""
    reasons = ", ".join(
        f"{k} {v:,.0f}/s" for k, v in sorted(f["rejected_per_s"].items(), key=lambda kv: -kv[1])
    )
    s = f"the server answered {f['rejected_total_per_s']:,.0f} guest requests/s ({reasons})"
    if f.get("guest_share_of_server_cpu") is not None:
        s += (f"; guests took {100 * f['guest_share_of_server_cpu']:.0f}% of its CPU while "
              f"flooded (flooders themselves: {100 * f['flooder_cpu']:.0f}% of a CPU)")
    return s + "; see the flood section"


def _measured(m, key):
    """(entry, its figures or None, load note) of a subprocess bench, or None if not run."""
    entry = m.get(key)
    if entry is None:
        return None
    return entry, entry.get("data"), load_note(m["load"].get(key))


def broker_rows(m, rows):
    """§15: the service `annot` against Flux's own services, same broker, same run."""
    bx = m.get("broker")
    if bx is None:
        return
    ld = load_note(m["load"].get("broker"))
    d = bx.get("data")
    target = "≤ 1.2× Flux's own round trip"
    if not d:
        rows.append(row("through the Flux broker: `annot.getattr` round trip", "—", "—", "—",
                        target, None, bx.get("error") or "no figures", ld))
        return
    for rank, fig in sorted(d["ranks"].items()):
        where = "rank 0 (the service's and the job manager's broker)" if rank == "0" else (
            f"leaf rank {rank} (through the overlay)")
        for ours, theirs, why in (
            ("annot.getattr", "job-manager.getattr",
             "an external service costs two more socket hops through the broker than a broker "
             "module (the job manager), plus the mirror's Python per request"),
            ("annot.memo volatile", "job-manager.memo volatile",
             "a memo through the mirror is a `job-manager.memo` plus its journal event back "
             "before the reply: at least two of Flux's round trips by construction"),
            ("annot.memo", "job-manager.memo",
             "as above, and the reply waits for the mirror's batch window and commit (§7)"),
        ):
            a, b = fig[ours], fig[theirs]
            ratio = a["median_us"] / b["median_us"]
            rows.append(row(
                f"through the Flux broker from {where}: `{ours}` round trip (median of "
                f"{d['rtt_n']}); pipelined {a['rate']:,.0f}/s vs {b['rate']:,.0f}/s",
                f"{a['median_us']:,.0f} µs", f"`{theirs}` {b['median_us']:,.0f} µs",
                f"{ratio:.2f}×", target, ratio <= 1.2, "" if ratio <= 1.2 else why, ld))


def flux_rows(m, rows):
    got = _measured(m, "flux")
    if got is None:
        return
    fx, d, ld = got
    if not d:
        why = fx.get("error") or "no figures"
        for name, target in (("Flux mirror: CPU of `serve --flux`", "≤ 25% of one core"),
                             ("Flux mirror: lag, journal event → published batch", "p99 ≤ 100 ms")):
            rows.append(row(name, "—", "—", "—", target, None, why, ld))
        return
    cond = (f"{d['jobs']:,} jobs through a `flux start --test-size=1` instance (sched-simple), "
            f"a memo on each")
    rows.append(row(f"Flux mirror: CPU of `serve --flux`, {cond}; Flux's journal "
                    f"{d['journal_rate']:,.0f} events/s, the mirror applied "
                    f"{d['mirror_events_per_s']:,.0f} events/s",
                    f"{d['mirror_cpu_pct']:.1f}% of one core ({d['mirror_us_per_event']:.0f} µs "
                    f"CPU per event)", "—", "—", "≤ 25% of one core", d["mirror_cpu_pct"] <= 25,
                    "", ld))
    lp, ls, la = d["lag_published_ms"], d["lag_subscriber_ms"], d["lag_added_ms"]
    why = ""
    if lp["p99"] > 100:
        why = (f"a plain journal consumer in the bench got the same events with p99 "
               f"{d['lag_plain_consumer_ms']['p99']:.0f} ms (Flux's and the machine's share); "
               f"what the mirror adds (that consumer → batch at a subscriber): median "
               f"{la['median']:.1f} ms, p99 {la['p99']:.1f} ms")
    rows.append(row("Flux mirror: lag, journal event → published batch (the mirror's `stats` "
                    "lag_ms)",
                    f"median {lp['median']:.1f} ms, p99 {lp['p99']:.1f} ms ({lp['n']:,} events); "
                    f"at a subscriber: median {ls['median']:.1f} ms, p99 {ls['p99']:.1f} ms",
                    "—", "—", "p99 ≤ 100 ms", lp["p99"] <= 100, why, ld))
    fj, fl = d.get("flux_jobs_ms"), d.get("list_ms")
    rows.append(row(f"listing every job ({d['jobs']:,}): `flux-annotate list -a -A` wall time, "
                    "best of 3",
                    f"{fl:.0f} ms" if fl else f"failed: {d.get('list_lines')}",
                    f"`flux jobs -a --count=0` {fj:.0f} ms" if fj else
                    f"`flux jobs` failed: {d.get('flux_jobs_lines')}",
                    f"{fj / fl:.1f}× faster" if fj and fl else "—", "—", "info", "", ld))


def fanout_rows(m, rows):
    fo = m.get("fanout")
    if fo is None:
        return
    ld = load_note(m["load"].get("fanout"))
    d = fo.get("data")
    if not d:
        for name, target in (("scheduler ANNOTATE throughput with 200 guest subscribers", "≥ 50%"),
                             ("bytes a stopped subscriber receives before its EOVERFLOW",
                              "≤ subscriber_queue_bytes + one batch")):
            rows.append(row(name, "—", "—", "—", target, None, fo.get("error"), ld))
        return
    c = d.get("curve")
    if c:
        who = ("guest subscribers (each its own process and uid, snapshot+delta, reading)"
               if c["guests_are_guests"] else
               "subscribers (FALLBACK: not root, they ran as the owner uid: not guests)")
        steps = {int(k): v for k, v in c["steps"].items()}
        for n in sorted(steps):
            st = steps[n]
            figure = (f"{st['rate']:,.0f}/s; server {st['server_us_per_request']:.1f} µs CPU per "
                      f"request, {st['server_us_per_batch']:,.0f} µs per batch")
            anchor = (f"{c['quiet_rate']:,.0f}/s without subscribers (phases before and after, "
                      f"same run); {c['quiet_server_us_per_request']:.1f} µs per request, "
                      f"{c['quiet_server_us_per_batch']:,.0f} per batch")
            ratio = f"{100 * st['ratio']:.0f}% (server CPU per request: {100 * st['cpu_ratio']:.0f}%)"
            if n == 200:
                rows.append(row(f"scheduler ANNOTATE throughput with {n} {who}", figure, anchor,
                                ratio, "≥ 50%", st["ratio"] >= 0.5,
                                "" if st["ratio"] >= 0.5 else
                                "see the fan-out section (readers' CPU, server CPU per batch)", ld))
            else:
                rows.append(row(f"scheduler ANNOTATE throughput with {n} guest subscribers",
                                figure, anchor, ratio, "—", "info", "", ld))
    for b in d.get("bound") or []:
        ok = b["end_errnum"] == 75 and b["received"] <= b["bound"]
        rows.append(row(f"bytes a subscriber that stopped reading receives before its EOVERFLOW "
                        f"({b['published']:,} bytes published in {b['batches']} batches)",
                        f"{b['received']:,} bytes, then "
                        + ("EOVERFLOW" if b["end_errnum"] == 75 else
                           f"errnum {b['end_errnum']}" if b["end_errnum"] else "nothing"),
                        f"subscriber_queue_bytes {b['limit']:,} + one batch "
                        f"({b['batch_bytes']:,}) = {b['bound']:,}", "—",
                        "≤ subscriber_queue_bytes + one batch, then EOVERFLOW", ok, "", ld))


def top_rows(m, rows):
    tp = m.get("top")
    if tp is None:
        return
    ld = load_note(m["load"].get("top"))
    d = tp.get("data")
    if not d:
        for name, target in (("`top`: CPU per screen refresh", "≤ 50 ms"),
                             ("`top`: falls behind the stream", "never")):
            rows.append(row(name, "—", "—", "—", target, None, tp.get("error"), ld))
        return
    ui = d["ui_cpu_ms"]
    cond = (f"{d['jobs']:,} pending jobs, {d['rate_sent']:,.0f} updates/s "
            f"(asked {d['rate_asked']:,}), a refresh every {d['refresh_s']:g} s, 80×24")
    rows.append(row(f"`top` with {cond}: CPU per screen refresh (update + draw)",
                    f"max {ui['max']:.1f} ms (mean {ui['mean']:.1f}, p95 {ui['p95']:.1f}; "
                    f"{d['refreshes']} refreshes)",
                    "—", "—", "≤ 50 ms", ui["max"] <= 50,
                    f"the whole process (stream applied included): "
                    f"{d['process_cpu_ms_per_refresh']:.0f} ms CPU per refresh period", ld))
    rows.append(row("`top`: falls behind the stream",
                    ("yes" if d["falls_behind"] else "never")
                    + f" (at most {d['lag_max']} batch{'' if d['lag_max'] == 1 else 'es'} "
                    "behind at a refresh, caught up "
                    f"{d['catch_up_s']:.2f} s after the load stopped, {d['resyncs']} resyncs)",
                    "—", "—", "never", not d["falls_behind"], "", ld))
    rows.append(row(f"`top` RSS with {d['jobs']:,} jobs", f"{d['rss_mib']:.0f} MiB "
                    f"(peak {d['rss_peak_mib']:.0f} MiB)", "—", "—", "—", "info", "", ld))


def dashboard_rows(m, rows):
    db = m.get("dashboard")
    if db is None:
        return
    ld = load_note(m["load"].get("dashboard"))
    d = db.get("data")
    if not d:
        rows.append(row("dashboard: the page keeps up with the stream", "—", "—", "—",
                        "keeps up", None, db.get("error"), ld))
        return
    one, more = d["one"], d["more"]
    cond = f"{d['rate']:,} updates/s over {d['jobs']:,} pending jobs"
    rows.append(row(f"dashboard: the page (headless Chromium) keeps up with {cond}",
                    "yes" if d["kept_up"] else "no",
                    "—", "—", "keeps up", d["kept_up"],
                    f"last seq shown {one['catch_up_s']:.2f} s (1 page) and "
                    f"{more['catch_up_s']:.2f} s ({more['pages']} pages) after the load ended",
                    ld))

    def lag(p):
        s = f"median {p['lag_p50']:.1f} ms, p99 {p['lag_p99']:.1f} ms"
        if p.get("show_p50") is not None:
            s += f" (on screen: median {p['show_p50']:.1f}, p99 {p['show_p99']:.1f} ms)"
        return s

    rows.append(row("dashboard: page lag, batch published by the service → applied in the browser",
                    f"{lag(one)} with 1 page; {lag(more)} with {more['pages']} pages",
                    "—", "—", "—", "info", "", ld))
    per = d.get("cpu_per_extra_page")
    rows.append(row("dashboard: its CPU per connected page",
                    (f"{100 * per:.2f}% of one core per additional page" if per is not None
                     else "—")
                    + f" (1 page: {100 * one['cpu']:.1f}%, {more['pages']} pages: "
                    f"{100 * more['cpu']:.1f}%; {one['dashboard_us_per_update']:.0f} µs CPU "
                    f"per update with 1 page)",
                    "—", "—", "—", "info",
                    f"the service: {100 * one['service_cpu']:.1f}% of one core, the same with "
                    "any number of pages (one subscription)", ld))


def metrics_rows(m, rows):
    mt = m.get("metrics")
    if mt is None:
        return
    ld = load_note(m["load"].get("metrics"))
    d = mt.get("data")
    name = "`serve --metrics` (scraped every second): scheduler ANNOTATE rate against plain `serve`"
    if not d:
        rows.append(row(name, "—", "—", "—", "≥ 0.97×", None, mt.get("error"), ld))
        return
    p, q = d["plain"], d["metrics"]
    rows.append(row(
        f"{name}, {d['requests']:,} pipelined alloc responses per round over {d['jobs']:,} "
        f"jobs, {d['rounds']} rounds alternating",
        f"median {q['median']:,.0f}/s (best {q['best']:,.0f}/s); server "
        f"{q['cpu_us_median']:.2f} µs CPU/request",
        f"plain: median {p['median']:,.0f}/s (best {p['best']:,.0f}/s); "
        f"{p['cpu_us_median']:.2f} µs CPU/request",
        f"{d['ratio_median']:.3f}× (best {d['ratio_best']:.3f}×, CPU/request "
        f"{d['cpu_ratio']:.3f}×)", "≥ 0.97×", d["ratio_median"] >= 0.97,
        f"{d['scrapes']} scrapes by another process, median {d['scrape_ms_median'] or 0:.1f} ms "
        f"each", ld))


def accuracy_rows(m, rows):
    got = _measured(m, "accuracy")
    if got is None:
        return
    acc, d, ld = got
    if not d:
        rows.append(row("estimate accuracy: recording on the scheduler's ANNOTATE path", "—", "—",
                        "—", "≤ 5% lower", None, acc.get("error"), ld))
        return
    for every, what in ((1, "every request a new estimate"), (10, "a new estimate every 10th")):
        hp, ip = d.get(f"hot_socket_{every}"), d.get(f"hot_in_process_{every}")
        if not hp:
            continue
        rows.append(row(f"estimate accuracy: ANNOTATE alloc responses over the socket with "
                        f"recording, {what} ({hp['jobs']:,} jobs)",
                        f"{hp['rate_with']:,.0f}/s ({hp['cpu_us_with']:.2f} µs server CPU)",
                        f"without recording {hp['rate_without']:,.0f}/s "
                        f"({hp['cpu_us_without']:.2f} µs)",
                        f"{hp['lower_pct']:+.1f}% lower", "≤ 5% lower", hp["lower_pct"] <= 5,
                        f"in process (no socket): {ip['us_with']:.2f} vs {ip['us_without']:.2f} "
                        f"µs CPU per request, {ip['more_pct']:+.1f}%" if ip else "", ld))
    for values in (5, 64):
        c = d.get(f"cost_{values}")
        if c:
            rows.append(row(f"estimate history per job ({c['jobs']:,} jobs, {values} estimates "
                            "each)", f"{c['memory_per_job']:.0f} B memory, "
                            f"{c['store_per_job']:.0f} B store",
                            "—", "—", "—", "info",
                            f"the report over them {c['report_seconds'] * 1000:.0f} ms", ld))


def build_rows(m):
    """One row per target of docs/performance.md (and a few figures without
    a target), from the measurements dict of `main`."""
    rows = []
    core_rows(m, rows)
    rpc_rows(m, rows)
    client_rows(m, rows)
    flood_rows(m, rows)
    fanout_rows(m, rows)
    flux_rows(m, rows)
    broker_rows(m, rows)
    top_rows(m, rows)
    dashboard_rows(m, rows)
    metrics_rows(m, rows)
    accuracy_rows(m, rows)
    return rows


def code_block(L, title, text, cmd=None):
    L.append(f"## {title}")
    L.append("")
    if cmd:
        L.append(f"`{cmd}`:")
        L.append("")
    L.append("```")
    L.append(text)
    L.append("```")
    L.append("")


def write_report(path, info, m, rows, points, plot_note, elapsed, quick, peak):
    core, rpc, flood, enc = (m.get(k) for k in ("core", "rpc", "flood", "enc"))
    L = []
    L.append("# flux-annot performance report")
    L.append("")
    L.append("The targets are those of [docs/performance.md](../docs/performance.md) (second "
             "round where there are two; the first round's verdict is in parentheses).")
    L.append("")
    cmd = info.get("command", "python bench/report.py")
    L.append(f"Generated by `{cmd}` on {info['date']}, in {elapsed / 60:.1f} minutes"
             + (" (**--quick smoke run: smaller sizes, not the targets' conditions; not a "
                "report**)" if quick else "")
             + ".")
    L.append("")
    ls = info["load_start"]
    L.append(f"Machine: {info['nproc']} CPUs ({info['cpu']}), Python {info['python']}, "
             f"{info['platform']}. Load average at the start {ls[0]:.1f} / {ls[1]:.1f} / "
             f"{ls[2]:.1f} (1/5/15 min), at the end {os.getloadavg()[0]:.1f}, highest 1-minute "
             f"figure seen during the run (sampled every 2 s) {peak:.1f}. The last column of "
             "the table gives the 1-minute load average during each measurement (start → end, "
             "and its peak).")
    L.append("")
    L.append("The load average counts this run's own processes too: up to about 2 while a "
             "server and its client run, up to 3 or 4 while the Flux bench runs (Flux's broker, "
             "the mirror, the bench, its subscriber) or the dashboard's (the browser). The load "
             "at the start, and a peak above that, are what other work added.")
    L.append("")
    if ls[0] >= 1.0 or peak > 4.0:
        L.append(f"**The machine was not quiet during this run** (load average {ls[0]:.1f} at "
                 f"the start, up to {peak:.1f} on {info['nproc']} CPUs): other work took CPU "
                 "time from these measurements. Wall-clock rates and lags are lowered by it, the "
                 "socket, flood, Flux, top and dashboard figures (two or more processes on the "
                 "CPUs) most; the CPU-per-request figures beside them are what it distorts "
                 "least.")
        L.append("")
    L.append("Every anchor was measured in this same run, except Flux's own RPC rates and round "
             "trip, which cannot run here and are quoted in docs/performance.md.")
    L.append("")
    L.append("| measure | flux-annot | anchor | ratio | target | result | load average |")
    L.append("|---|---|---|---|---|---|---|")
    L.extend(rows)
    L.append("")
    if core and core["wrong"]:
        L.append(f"**Digest mismatch** (final state differs from the orjson anchor's): {core['wrong']}")
        L.append("")
    L.append("## What ran")
    L.append("")
    for key, label in info.get("runs", ()):
        secs = m.get("secs", {}).get(key)
        L.append(f"- {label}" + (f" — {secs:.0f} s" if secs is not None else ""))
    L.append("")
    L.append("## Throughput against the number of pending jobs")
    L.append("")
    if plot_note:
        L.append(f"No plot: {plot_note}.")
    else:
        L.append("![throughput against the number of pending jobs](throughput.png)")
    L.append("")
    names = {k: label for k, label, _ in SERIES}
    cols = [k for k, _, _ in SERIES if points and all(p.get(k) is not None for p in points)]
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
             "(round-robin) up to 100k jobs, once above"
             + (" (--quick: once)" if quick else "")
             + ". Final state digests were compared with the orjson anchor's up to 100k jobs "
             "(the pure-Python digest would take minutes at 1M) and "
             + (f"differ for {bad}." if bad else "all agree."))
    L.append("")
    if rpc and rpc.get("raw"):
        code_block(L, "Socket RPCs (bench/bench_rpc.py)", rpc["raw"], rpc.get("cmd"))
    if flood:
        flood_section(L, flood)
    fx = m.get("flux")
    if fx is not None:
        L.append("## Flux mirror (bench/bench_flux.py)")
        L.append("")
        if fx.get("data"):
            d = fx["data"]
            L.append(f"`{fx['cmd']}` (flux-core {d.get('flux_version') or '?'}). The queue is "
                     "stopped, the jobs submitted (`flux submit --cc`), a memo set on each "
                     "(`job-manager.memo`, pipelined), the queue started; sched-simple runs "
                     "them, as fast as Flux goes, while `flux-annotate serve --flux` mirrors "
                     "the journal and a subscriber follows its batches. The lag that the target "
                     "is about is the mirror's own (`stats` lag_ms: Flux's event timestamp → "
                     "the batch published); the subscriber's adds the delivery to a client, and "
                     "a plain journal consumer in the bench shows what Flux and the machine "
                     "alone take.")
            L.append("")
        else:
            L.append(f"Not run: {fx.get('error')}.")
            L.append("")
        if fx.get("raw"):
            _fenced(L, fx["raw"])
    bx = m.get("broker")
    if bx is not None:
        L.append("## Through the Flux broker (bench/bench_broker.py)")
        L.append("")
        L.append(f"`{bx.get('cmd')}`: the service `annot` of `flux-annotate serve --flux` "
                 "called with Flux's own bindings from rank 0 and from a leaf rank of a "
                 "four-broker instance, beside Flux's own `job-manager.getattr` and "
                 "`job-manager.memo` through the same broker and beside the mirror's Unix "
                 "socket, in the same run." if bx.get("raw") else f"Not run: {bx.get('error')}.")
        L.append("")
        if bx.get("raw"):
            _fenced(L, bx["raw"])
    for key, title, text in (
        ("clients", "Clients (bench/bench_clients.py)",
         "flux-annot's own clients against a minimal Python client and against frames built "
         "beforehand, one server, interleaved runs, the best of each (docs/performance.md, "
         "Clients); CPU per request beside each figure (server: /proc/PID/task/*/schedstat)."),
        ("fanout", "Fan-out and the subscriber bound (bench/bench_fanout.py)",
         "A server subprocess (temp SQLite store) with 10k pending jobs owned by 250 uids, each "
         "job with a private note; the scheduler (this process, owner) pipelines ANNOTATE alloc "
         "responses moving every job's estimate. Phases alternate without subscribers and with "
         "10, 50, 200 guest subscribers, each a forked process that dropped to its own uid "
         "(owning jobs in every batch), subscribed with snapshot+delta and reading everything; "
         "each step is compared with the phases without on either side. Then the bound: a "
         "subscriber with `subscriber_queue_bytes` = 64 KiB stops reading while ~4 kB batches "
         "are published (less than 1 MiB in all, then 4 MB), then reads what it gets."),
        ("top", "`top` (bench/bench_top.py)",
         "The objects `flux-annotate top` runs (the live model fed by its thread, the view, "
         "the screen) with an 80×24 stand-in for the curses window, under a scheduler child "
         "process re-annotating pending jobs at the given rate; the UI thread's CPU "
         "(`time.thread_time`) per refresh is the figure for the target."),
        ("dashboard", "Dashboard (bench/bench_dashboard.py)",
         "`flux-annotate dashboard` serving its page to a real headless Chromium, under a "
         "scheduler re-annotating pending jobs at the given rate: a first phase with the "
         "browser page alone, a second with more pages (raw event-stream readers). The lag is "
         "measured in the browser: for each batch, the time the page applied it (and first "
         "drew it) minus the time the service published it, both on this machine's clock."),
        ("metrics", "`serve --metrics` (bench/bench_metrics.py)",
         "Two `flux-annotate serve` processes on their own stores, one plain, one with "
         "`--metrics` scraped every second by another process (as Prometheus would), the same "
         "pipelined scheduler ANNOTATE alloc responses sent to each in turn, round after round, "
         "alternating which goes first. The figure for the target is the median rate's ratio; "
         "the server CPU per request (from /proc) is steadier on a shared machine."),
    ):
        b = m.get(key)
        if b is None:
            continue
        L.append(f"## {title}")
        L.append("")
        L.append(f"`{b.get('cmd')}`. {text}" if b.get("data") else f"Not run: {b.get('error')}.")
        L.append("")
        if b.get("raw"):
            L.append("```")
            L.append(b["raw"])
            L.append("```")
            L.append("")
    acc = m.get("accuracy")
    if acc is not None:
        accuracy_section(L, acc)
    if enc and enc.get("raw"):
        code_block(L, "Batch encoding (bench/bench_events.py `bench_encode`)", enc["raw"])
    mem = m.get("mem")
    if mem:
        L.append(f"Memory: bench/run.py's `memory({mem['n']:,})`: the table's `memory_bytes()` "
                 "(everything the C core holds) and the process RSS growth while it is built, "
                 "against the RSS growth of the same notes parsed into Python dicts.")
        L.append("")
    with open(path, "w") as f:
        f.write("\n".join(L))


def _fenced(L, text):
    L.extend(["```", text, "```", ""])


def accuracy_section(L, acc):
    L.append("## Estimate accuracy (bench/bench_accuracy.py)")
    L.append("")
    d = acc.get("data")
    if not d:
        L.append(f"Not run: {acc.get('error')}.")
        L.append("")
        return
    L.append(f"`{acc['cmd']}`. The scheduler's hot path: ANNOTATE alloc responses pipelined to "
             "two servers side by side, the shipped one and the same with recording off "
             "(`JobTable.annotate_sched` with no history: the same C call, the table's merge "
             "alone), rounds alternating, best of each. Cost per job: jobs given 5 (then 64) "
             "estimates and started; memory is what the C histories hold, the store is the "
             "pages of its estimate tables after a restart compacted the log.")
    L.append("")
    fx = d.get("fluxion") or {}
    if fx.get("table"):
        L.append(f"Fluxion (queue-policy=conservative) on {fx['cores']} declared cores "
                 f"(resource.toml), {fx['jobs']} jobs of 1-16 cores with -t limits of 20-90 s "
                 f"that run 10-60% of them, through `flux-annotate serve --flux`: "
                 f"{fx['with_estimates']} jobs had estimates, {fx['moved']} of those that "
                 f"started had more than one; every start equals Flux's t_run: "
                 f"{'yes' if fx['start_equals_t_run'] else 'NO ' + str(fx['mismatched'])}; the "
                 f"summary equals what the per-job records give: "
                 f"{'yes' if fx['summary_equals_records'] else 'NO'}; store "
                 f"{fx['store_per_job']:.0f} B per job with a history.")
        L.append("")
        _fenced(L, fx["table"].rstrip())
        if fx.get("png") and not fx.get("plot_note"):
            L.append(f"![first and last estimate's error, Fluxion]({os.path.basename(fx['png'])})")
            L.append("")
    elif fx.get("error"):
        L.append(f"Fluxion workload not run: {fx['error']}.")
        L.append("")
    if acc.get("raw"):
        _fenced(L, acc["raw"])


def flood_section(L, flood):
    L.append("## Guest flood (bench/bench_flood.py)")
    L.append("")
    L.append(f"Server subprocess on a Unix socket in a temp dir (0755), store: {flood['store']}. "
             f"One scheduler connection (owner) sends ANNOTATE alloc responses for "
             f"{flood['jobs']:,} pending jobs, each cycle moving every `t_estimate`, "
             f"{flood['window']} in flight, {flood['requests']:,} per phase: quiet, flooded, "
             "quiet. "
             + ("Each of the 8 flooders is a child process that dropped to uid/gid 65534 "
                "(nobody) before connecting, so the server sees guests through SO_PEERCRED; "
                "two each send payloads over 4 KiB, nesting 12 deep, annotations of other "
                "users' jobs, and the `sched` namespace, pipelined (512 in flight), counting "
                "replies without decoding them."
                if flood["guests_are_guests"] else
                "**Not run as root: guest-ness could not be shown; the flood ran as the "
                "owner uid, with only requests refused to owners too.**"))
    L.append("")
    L.append("| phase | scheduler RPC/s | server CPU (share of wall) | server µs CPU/request "
             "| scheduler client CPU |")
    L.append("|---|---|---|---|---|")
    for k in ("quiet1", "flood", "quiet2"):
        p = flood[k]
        us = 1e6 * p["server_cpu"] * p["wall"] / flood["requests"]
        L.append(f"| {k} | {p['rate']:,.0f} | {100 * p['server_cpu']:.0f}% | {us:.1f} | "
                 f"{100 * p['client_cpu']:.0f}% |")
    L.append("")
    L.append(f"Server VmRSS: {flood['rss_before_kib'] / 1024:.1f} MiB before the flood, "
             f"{flood['rss_peak_kib'] / 1024:.1f} MiB at its peak (sampled every 50 ms), "
             f"{flood['rss_after_kib'] / 1024:.1f} MiB after. For comparison the quiet phase "
             f"before it (the same scheduler requests, no flood) grew the server by "
             f"{flood.get('rss_quiet_growth_mb', float('nan')):+.1f} MB: the event backlog "
             "kept for `since` fills with the scheduler's batches, flood or not.")
    L.append("")
    L.append(f"Guest requests rejected: {flood['rejected_total_per_s']:,.0f}/s over the "
             f"{flood['flood_wall']:.1f} s of the flood (`job-manager.stats` `rejected` "
             f"after − before); the flooders sent {flood['flooder_sent']:,} requests, got "
             f"{flood['flooder_replies']:,} replies, and used "
             f"{100 * flood.get('flooder_cpu', 0):.0f}% of a CPU together.")
    if flood.get("guest_share_of_server_cpu") is not None:
        L.append(f"Guests took {100 * flood['guest_share_of_server_cpu']:.0f}% of the server's "
                 f"CPU while flooded (about {flood['server_us_per_guest_request']:.0f} µs per "
                 "rejected request: the flooded phase's server CPU minus the scheduler's "
                 "requests at their quiet cost).")
    L.append("")
    L.append("| limit (stats reason) | rejected/s | count |")
    L.append("|---|---|---|")
    for k, v in sorted(flood["rejected_per_s"].items(), key=lambda kv: -kv[1]):
        L.append(f"| {k} | {v:,.0f} | {flood['rejected'][k]:,} |")
    L.append("")
    L.append("All 8 flooders share one uid, so one token bucket: `rate` (EAGAIN) refuses most "
             "requests before any other check, and the server then pauses reading that "
             "connection until the bucket has earned a token (`Connection.throttle` in "
             "flux_annot/wire/server.py), so a flooder "
             "costs about one request per token, not everything it sends; the requests that "
             "get a token are refused by the limit their kind targets (`payload_size` E2BIG, "
             "`invalid` EINVAL for the depth, `permission` EPERM for other users' jobs and "
             "`sched`).")
    L.append("")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: small sizes, a few minutes; writes to "
                         "/tmp/flux-annot-report-quick unless --out is given")
    ap.add_argument("--out", help="directory for REPORT.md and throughput.png (default: bench/)")
    ap.add_argument("--fluxion-prefix", default=os.environ.get("FLUX_ANNOT_TEST_FLUXION_PREFIX"),
                    help="Fluxion (flux-sched) installation for the estimate accuracy workload "
                         "(default $FLUX_ANNOT_TEST_FLUXION_PREFIX)")
    ap.add_argument("--flux-prefix", default=os.environ.get("FLUX_ANNOT_TEST_FLUX_PREFIX"),
                    help="Flux installation for the mirror rows (default "
                         "$FLUX_ANNOT_TEST_FLUX_PREFIX; without one they are not run)")
    args = ap.parse_args(argv)
    quick = args.quick
    out_dir = args.out or ("/tmp/flux-annot-report-quick" if quick else HERE)
    os.makedirs(out_dir, exist_ok=True)
    sz = SIZES["quick" if quick else "full"]
    t0 = time.perf_counter()
    info = machine()
    info["command"] = ("python bench/report.py" + (" --quick" if quick else "")
                       + (f" --flux-prefix {args.flux_prefix}" if args.flux_prefix else ""))
    say(f"machine: {info['nproc']} CPUs, {info['cpu']}, Python {info['python']}, "
        f"load {info['load_start'][0]:.1f}")
    m = {"repeat": sz["repeat"], "load": {}, "secs": {}}
    info["runs"] = []
    sampler = LoadSampler().start()

    def measure(key, label, fn):
        say(f"{label} ...")
        info["runs"].append((key, label))
        l0, s0 = os.getloadavg()[0], time.monotonic()
        try:
            m[key] = fn()
        finally:
            s1, l1 = time.monotonic(), os.getloadavg()[0]
            m["secs"][key] = s1 - s0
            peak = sampler.peak(s0, s1)
            m["load"][key] = (l0, l1, max(l0, l1, peak if peak is not None else l0))

    tmp = tempfile.mkdtemp(prefix="fa-report-")
    points = []
    try:
        ncyc = sz["core_cycles"]
        measure("core", f"standard workload, 10k jobs x {ncyc} cycles, best of {m['repeat']}",
                lambda: workload_point(tmp, 10_000, ncyc, repeat=m["repeat"]))
        measure("mem", f"memory per job, {sz['mem_jobs']:,} jobs",
                lambda: memory_per_job(sz["mem_jobs"]))
        measure("enc", "batch encoding, 100k entries", lambda: batch_encoding(100_000))
        measure("rpc", "socket RPCs: `python bench/bench_rpc.py " + " ".join(sz["rpc"]) + "`",
                lambda: rpc_rates(sz["rpc"]))
        measure("clients", "clients: `python bench/bench_clients.py " + " ".join(sz["clients"])
                + " --json`", lambda: json_bench("bench_clients.py", sz["clients"], timeout=900))
        import bench_flood

        fl = sz["flood"]

        def flood():
            try:
                return bench_flood.run(jobs=fl["jobs"], requests=fl["requests"], verbose=False)
            except (Exception, SystemExit) as e:  # a failed bench is a row that says so
                m["flood_error"] = f"bench_flood.run failed: {e!r}"
                return None

        measure("flood", f"guest flood: `bench_flood.run(jobs={fl['jobs']}, "
                f"requests={fl['requests']})`", flood)
        if m.get("flood"):
            bench_flood.report(m["flood"])
        measure("fanout", "fan-out: `python bench/bench_fanout.py " + " ".join(sz["fanout"])
                + " --json`", lambda: json_bench("bench_fanout.py", sz["fanout"], timeout=1800))
        measure("flux", "Flux mirror: `python bench/bench_flux.py " + " ".join(sz["flux"])
                + " --json`" + ("" if args.flux_prefix else " (not run: no Flux prefix)"),
                lambda: flux_mirror(args.flux_prefix, sz["flux"]))
        measure("broker", "through the Flux broker: `python bench/bench_broker.py "
                + " ".join(sz["broker"]) + " --json`"
                + ("" if args.flux_prefix else " (not run: no Flux prefix)"),
                lambda: flux_mirror(args.flux_prefix, sz["broker"], "bench_broker.py"))
        measure("top", "`top`: `python bench/bench_top.py " + " ".join(sz["top"]) + " --json`",
                lambda: json_bench("bench_top.py", sz["top"]))
        acc_args = list(sz["accuracy"])
        if args.flux_prefix and args.fluxion_prefix:
            acc_args += ["--prefix", args.flux_prefix, "--fluxion", args.fluxion_prefix]
        acc_args += ["--png", os.path.join(out_dir, "accuracy.png")]
        measure("accuracy", "estimate accuracy: `python bench/bench_accuracy.py "
                + " ".join(acc_args) + " --json`",
                lambda: json_bench("bench_accuracy.py", acc_args, timeout=2400))
        measure("dashboard", "dashboard: `python bench/bench_dashboard.py "
                + " ".join(sz["dashboard"]) + " --json`",
                lambda: json_bench("bench_dashboard.py", sz["dashboard"]))

        measure("metrics", "serve --metrics: `python bench/bench_metrics.py "
                + " ".join(sz["metrics"]) + " --json`",
                lambda: json_bench("bench_metrics.py", sz["metrics"], timeout=900))

        def sweep():
            for n in QUICK_SWEEP if quick else SWEEP:
                say(f"throughput sweep: {n:,} jobs ...")
                # best of 3 where it is cheap: single runs on a shared machine are noisy
                small = n <= 100_000
                points.append(sweep_point(tmp, n, 1 if quick else 2, verify=small,
                                          repeat=3 if small and not quick else 1))

        measure("sweep", "throughput sweep for the plot: "
                + ", ".join(f"{n // 1000}k" for n in (QUICK_SWEEP if quick else SWEEP))
                + f" jobs x {1 if quick else 2} cycles", sweep)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        sampler.stop()
    for k in ("core", "mem", "rpc", "enc"):
        say(f"  {k}: { {a: b for a, b in (m.get(k) or {}).items() if a != 'raw'} }")
    png = os.path.join(out_dir, "throughput.png")
    plot_note = plot(points, png, caption=f"{info['nproc']} CPUs ({info['cpu']}), Python "
                     f"{info['python']}, {info['date']}, load average {info['load_start'][0]:.1f}")
    rows = build_rows(m)
    out = os.path.join(out_dir, "REPORT.md")
    peak = max([info["load_start"][0], os.getloadavg()[0]] + [v for _, v in sampler.samples])
    write_report(out, info, m, rows, points, plot_note, time.perf_counter() - t0, quick, peak)
    say(f"wrote {out}" + ("" if plot_note else f" and {png}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
