"""What `serve --metrics` costs the scheduler (docs/performance.md, issue 20).

Two `flux-annotate serve` processes on SQLite stores in a temp dir, one
plain and one with `--metrics 127.0.0.1:0` and a Prometheus-like scraper
fetching /metrics every `--scrape-interval` s (default 1) for the whole
run. Each round sends the same pipelined scheduler ANNOTATE alloc
responses (RFC 27 type 1, the hot path: `--requests` over `--jobs` pending
jobs, `--window` in flight) to each server in turn, alternating which goes
first, so both see the same machine load. Reported per server: the best
rate and the median rate over `--rounds` rounds, and the server's CPU µs
per request (from /proc; steadier than the wall-clock rate on a shared
machine). The target: with metrics at most 3% slower (ratio >= 0.97).

    python bench/bench_metrics.py [--jobs 10000] [--requests 500000] [--rounds 7]
                                  [--window 256] [--scrape-interval 1] [--json]
"""

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

from bench_flood import sched_frames
from bench_rpc import Pipe, measure, proc_cpu, wait_idle

from flux_annot.wire import protocol


class Served:
    """`flux-annotate serve` on its own store and socket; its log in a file."""

    def __init__(self, tmp, name, extra=()):
        d = os.path.join(tmp, name)
        os.makedirs(d)
        self.socket = os.path.join(d, "socket")
        self.log = os.path.join(d, "serve.log")
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "flux_annot", "serve", "--socket", self.socket,
                 "--store", os.path.join(d, "annot.db"), *extra],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log, cwd=tmp)
        deadline = time.monotonic() + 60
        want = "metrics on" if extra else "serving on"
        while want not in self.text():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"serve did not start: {self.text()}")
            time.sleep(0.05)
        m = re.search(r"metrics on (\S+)", self.text())
        self.url = m.group(1) if m else None

    def text(self):
        with open(self.log, errors="replace") as f:
            return f.read()

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class Scraper:
    """Another process fetching a /metrics URL every `interval` s, as
    Prometheus does (a thread of this load generator would steal its GIL);
    it prints each scrape's duration and size."""

    CODE = (
        "import sys, time, urllib.request\n"
        "url, interval = sys.argv[1], float(sys.argv[2])\n"
        "while True:\n"
        "    time.sleep(interval)\n"
        "    t0 = time.perf_counter()\n"
        "    with urllib.request.urlopen(url, timeout=10) as r:\n"
        "        n = len(r.read())\n"
        "    print(time.perf_counter() - t0, n, flush=True)\n"
    )

    def __init__(self, url, interval):
        self.proc = subprocess.Popen([sys.executable, "-c", self.CODE, url, str(interval)],
                                     stdout=subprocess.PIPE, text=True)
        self.scrapes = 0
        self.bytes = 0
        self.seconds = []

    def stop(self):
        self.proc.terminate()
        out, _ = self.proc.communicate(30)
        for line in out.splitlines():
            secs, n = line.split()
            self.seconds.append(float(secs))
            self.bytes = int(n)
        self.scrapes = len(self.seconds)


def submit_jobs(path, njobs):
    pipe = Pipe(path)
    frames = [protocol.request("job-manager.submit", 1 + i, {"id": 1 + i, "userid": os.getuid()})
              for i in range(njobs)]
    pipe.run(frames, 4096)
    if pipe.errors:
        raise SystemExit(f"submit failed: {pipe.first_error!r}")
    return pipe


def run(jobs=10_000, requests=500_000, rounds=7, window=256, interval=1.0, control=False):
    """control: the second server without --metrics and no scraper (two plain
    servers: the ratio is the machine's noise)."""
    tmp = tempfile.mkdtemp(prefix="fa-bench-metrics-")
    servers = []
    scraper = None
    try:
        plain = Served(tmp, "plain")
        servers.append(plain)
        metered = Served(tmp, "metrics", [] if control else ["--metrics", "127.0.0.1:0"])
        servers.append(metered)
        pipes = {id(s): submit_jobs(s.socket, jobs) for s in servers}
        if not control:
            scraper = Scraper(metered.url, interval)
        res = {id(s): [] for s in servers}
        for r in range(rounds):
            frames = sched_frames(jobs, requests, 2 * r, 1)
            order = servers if r % 2 == 0 else servers[::-1]
            for s in order:
                wait_idle(s.proc.pid)
                pipe = pipes[id(s)]
                m = measure(pipe, frames, window, s.proc.pid)
                if pipe.errors:
                    raise SystemExit(f"errors: {pipe.first_error!r}")
                res[id(s)].append(m)
        counted = None
        if scraper is not None:
            scraper.stop()
            with urllib.request.urlopen(metered.url, timeout=10) as r:
                text = r.read().decode()
            m = re.search(
                r'flux_annot_requests_total\{topic="job-manager.alloc-response"\} (\S+)', text)
            counted = float(m.group(1)) if m else None
    finally:
        if scraper is not None and scraper.proc.poll() is None:
            scraper.proc.kill()
            scraper.proc.wait()
        for s in servers:
            s.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    def summary(runs):
        rates = [x["rate"] for x in runs]
        us = [1e6 * x["server_cpu"] / requests for x in runs]
        return {"best": max(rates), "median": statistics.median(rates),
                "cpu_us_min": min(us), "cpu_us_median": statistics.median(us)}

    a, b = summary(res[id(plain)]), summary(res[id(metered)])
    return {
        "jobs": jobs, "requests": requests, "rounds": rounds, "window": window,
        "control": control, "scrape_interval": interval,
        "scrapes": scraper.scrapes if scraper else 0,
        "scrape_ms_median": (1e3 * statistics.median(scraper.seconds)
                             if scraper and scraper.seconds else None),
        "exposition_bytes": scraper.bytes if scraper else 0,
        "plain": a, "metrics": b,
        "ratio_best": b["best"] / a["best"], "ratio_median": b["median"] / a["median"],
        "cpu_ratio": b["cpu_us_median"] / a["cpu_us_median"],
        "counted": counted, "sent": rounds * requests,
        "load": os.getloadavg(),
    }


def report(d):
    p, m = d["plain"], d["metrics"]
    ok = d["ratio_median"] >= 0.97
    print(f"scheduler ANNOTATE alloc responses, {d['requests']:,} per round over "
          f"{d['jobs']:,} jobs, window {d['window']}, {d['rounds']} rounds alternating:")
    print(f"  plain serve        best {p['best']:10,.0f}/s  median {p['median']:10,.0f}/s  "
          f"server {p['cpu_us_median']:.2f} µs CPU/request")
    scraped = ("(control: a second plain serve, not scraped)" if d["control"] else
               f"({d['scrapes']} scrapes every {d['scrape_interval']:g} s, median "
               f"{d['scrape_ms_median'] or 0:.1f} ms, {d['exposition_bytes']:,} bytes)")
    print(f"  {'plain serve (2nd)' if d['control'] else 'serve --metrics':<18} best "
          f"{m['best']:10,.0f}/s  median {m['median']:10,.0f}/s  "
          f"server {m['cpu_us_median']:.2f} µs CPU/request  {scraped}")
    print(f"  ratio (metrics / plain): median rate {d['ratio_median']:.3f}, best rate "
          f"{d['ratio_best']:.3f}, CPU per request {d['cpu_ratio']:.3f} "
          f"(target: rate >= 0.97: {'met' if ok else 'NOT met'}); load "
          f"{d['load'][0]:.1f}")
    if d['counted'] is not None:
        print(f"  counted by the metrics: {d['counted']:,.0f} of {d['sent']:,} sent")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=10_000)
    ap.add_argument("--requests", type=int, default=500_000)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--window", type=int, default=256)
    ap.add_argument("--scrape-interval", type=float, default=1.0)
    ap.add_argument("--control", action="store_true",
                    help="the second server without --metrics (the noise of the comparison)")
    ap.add_argument("--json", action="store_true", help="also print the figures as one JSON line")
    args = ap.parse_args()
    d = run(args.jobs, args.requests, args.rounds, args.window, args.scrape_interval,
            args.control)
    report(d)
    if args.json:
        print(json.dumps(d))
    return 0


if __name__ == "__main__":
    sys.exit(main())
