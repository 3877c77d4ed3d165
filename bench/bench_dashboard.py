"""Bench: the dashboard under load (docs/dashboard.md).

A service with JOBS pending jobs (default 10,000) receives RATE scheduler
updates per second (default 5,000: ANNOTATE alloc responses with a new
`t_estimate`, `reason_pending`, `jobs_ahead`) for SECONDS (default 30),
while `flux-annotate dashboard` serves the page to a real headless
Chromium (Debian's chromium + chromedriver, offline).

Printed:
- the page's lag behind the stream, measured in the browser: for every
  batch `seq`, the time the page applied it (and the time of the first
  redraw showing it) minus the time the service published it (a
  subscriber of the bench's own records when each `seq` arrives; same
  machine, same clock), median and p99;
- whether the page kept up (it shows the last seq soon after the load);
- the dashboard's CPU (utime+stime from /proc) per second of load, with
  the browser page alone and with EXTRA more pages (raw event-stream
  readers), hence the CPU per connected page; and the service's CPU,
  which does not depend on the number of pages (one subscription).

Run: python bench/bench_dashboard.py [--jobs N] [--rate R] [--seconds S] [--extra K] [--json]
(--json: the figures also as one JSON object on the last line)
"""

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import re
import select
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start(cmd, pattern, timeout=60):
    """Start cmd; wait for a stdout line matching pattern; (proc, match)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + timeout
    line = b""
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([proc.stdout], [], [], left)[0]:
            proc.kill()
            raise RuntimeError(f"{cmd[2:4]} did not start")
        ch = os.read(proc.stdout.fileno(), 1)
        if not ch:
            raise RuntimeError(f"{cmd} exited: {proc.stderr.read().decode(errors='replace')}")
        line += ch
        if ch == b"\n":
            m = re.search(pattern, line.decode(errors="replace"))
            if m:
                return proc, m
            line = b""


def stop(proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# --- load: a scheduler re-annotating pending jobs at a fixed rate -------------


def load_process(path, ids, rate, seconds, ready, go):
    from flux_annot import AsyncClient, sched

    async def main():
        c = await AsyncClient.connect(path)
        ready.set()
        while not go.is_set():
            await asyncio.sleep(0.01)
        tick = 0.02
        per_tick = max(1, round(rate * tick))
        n = len(ids)
        k = 0
        t0 = time.monotonic()
        end = t0 + seconds
        sent = 0
        while time.monotonic() < end:
            futs = []
            now = time.time()
            for _ in range(per_tick):
                jid = ids[k % n]
                futs.append(c.send("job-manager.alloc-response", sched.annotate(
                    jid, t_estimate=round(now + 60 + (k % n) * 0.5 + (k // n), 3),
                    reason_pending="jobs ahead in queue" if k % n else "insufficient resources",
                    jobs_ahead=k % n)))
                k += 1
            await asyncio.gather(*futs)
            sent += len(futs)
            t_next = t0 + (sent / rate)
            pause = t_next - time.monotonic()
            if pause > 0:
                await asyncio.sleep(pause)
        await c.close()

    asyncio.run(main())


class SeqClock:
    """A subscriber of the bench's own: when did each seq arrive."""

    def __init__(self, path, since):
        from flux_annot import Client

        self.times = {}
        self.stream = Client(path).events(since=since, topics=["job-state", "job-annotations"])
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        try:
            for b in self.stream:
                self.times[b["seq"]] = time.time()
        except Exception:
            pass

    def close(self):
        self.stream.close()


class Reader:
    """One more page: reads the event stream and throws it away."""

    def __init__(self, host, port, token):
        self.sock = socket.create_connection((host, port))
        self.sock.sendall(f"GET /events?token={token} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        self.bytes = 0
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        try:
            while True:
                b = self.sock.recv(1 << 20)
                if not b:
                    return
                self.bytes += len(b)
        except OSError:
            pass

    def close(self):
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


def pct(values, p):
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def browser():
    os.environ["SE_OFFLINE"] = "true"
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1400,1000", "--disable-background-networking",
                "--disable-component-update", "--disable-renderer-backgrounding",
                "--disable-background-timer-throttling"):
        opts.add_argument(arg)
    return webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)


@contextlib.contextmanager
def service_dashboard_browser(prepare=None, window=(1400, 1000)):
    """A service on a fresh socket (in memory), `prepare(path)` run against
    it, `flux-annotate dashboard` on it and headless Chromium; yields
    (path, service process, dashboard process, page URL, driver); all of
    them are stopped afterwards."""
    tmp = tempfile.mkdtemp(prefix="fa-dash-bench-")
    path = os.path.join(tmp, "socket")
    srv, _ = start([sys.executable, "-m", "flux_annot.wire.server", "--socket", path, "--store", ":memory:"],
                   r"^ready ")
    dash = driver = None
    try:
        if prepare is not None:
            prepare(path)
        dash, m = start([sys.executable, "-m", "flux_annot", "dashboard", "--socket", path],
                        r"(http://\S+)")
        driver = browser()
        driver.set_window_size(*window)
        yield path, srv, dash, m.group(1), driver
    finally:
        if driver is not None:
            driver.quit()
        if dash is not None:
            stop(dash)
        stop(srv)


def phase(name, args, srv, dash, driver, path, ids, n_pages):
    from flux_annot import Client

    with Client(path) as c:
        seq0 = c.stats()["seq"]
    clock = SeqClock(path, seq0)
    driver.execute_script("fluxDash.state.applyLog.length = 0; fluxDash.state.renderLog.length = 0;")
    ready, go = multiprocessing.Event(), multiprocessing.Event()
    load = multiprocessing.Process(target=load_process,
                                   args=(path, ids, args.rate, args.seconds, ready, go))
    load.start()
    ready.wait(30)
    cpu_d0, cpu_s0, t0 = cpu_seconds(dash.pid), cpu_seconds(srv.pid), time.monotonic()
    go.set()
    load.join(args.seconds + 120)
    elapsed = time.monotonic() - t0
    cpu_d, cpu_s = cpu_seconds(dash.pid) - cpu_d0, cpu_seconds(srv.pid) - cpu_s0
    with Client(path) as c:
        last = c.stats()["seq"]
    t_end = time.monotonic()
    kept_up = False
    while time.monotonic() - t_end < 60:
        if driver.execute_script("return fluxDash.state.seq;") >= last:
            kept_up = True
            break
        time.sleep(0.1)
    catch_up = time.monotonic() - t_end
    applied = driver.execute_script("return fluxDash.state.applyLog;")
    renders = driver.execute_script("return fluxDash.state.renderLog;")
    time.sleep(0.5)
    clock.close()
    pub = clock.times
    apply_lag = [(t - pub[s]) * 1000 for s, t in applied if s in pub]
    show_lag = []
    ri = 0
    for s in sorted(pub):
        while ri < len(renders) and renders[ri][0] < s:
            ri += 1
        if ri < len(renders):
            show_lag.append((renders[ri][1] - pub[s]) * 1000)
    updates = int(args.rate * args.seconds)
    print(f"\n[{name}] {n_pages} page(s); {updates:,} updates in {elapsed:.1f} s; "
          f"{len(pub):,} batches (seq {seq0 + 1}..{last}); load average {os.getloadavg()[0]:.2f}")
    print(f"  page lag, batch applied:  median {statistics.median(apply_lag):.1f} ms, "
          f"p99 {pct(apply_lag, 99):.1f} ms  ({len(apply_lag)} batches)")
    if show_lag:
        print(f"  page lag, batch on screen: median {statistics.median(show_lag):.1f} ms, "
              f"p99 {pct(show_lag, 99):.1f} ms")
    print(f"  page kept up with the stream: {'yes' if kept_up else 'NO'} "
          f"(last seq shown {catch_up:.2f} s after the load ended)")
    print(f"  dashboard CPU: {100 * cpu_d / elapsed:.1f}% of one core "
          f"({1e6 * cpu_d / updates:.1f} us per update; {100 * cpu_d / elapsed / n_pages:.1f}% per page)")
    print(f"  service CPU:   {100 * cpu_s / elapsed:.1f}% of one core")
    return {"cpu": cpu_d / elapsed, "pages": n_pages, "lag_p50": statistics.median(apply_lag),
            "lag_p99": pct(apply_lag, 99), "kept_up": kept_up, "batches": len(pub),
            "lag_batches": len(apply_lag),
            "show_p50": statistics.median(show_lag) if show_lag else None,
            "show_p99": pct(show_lag, 99) if show_lag else None, "catch_up_s": catch_up,
            "updates": updates, "elapsed_s": elapsed,
            "dashboard_us_per_update": 1e6 * cpu_d / updates,
            "service_cpu": cpu_s / elapsed, "loadavg": os.getloadavg()}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--jobs", type=int, default=10000)
    ap.add_argument("--rate", type=int, default=5000, help="updates per second")
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--extra", type=int, default=4, help="more pages in the second phase")
    ap.add_argument("--json", action="store_true",
                    help="also print the figures as one JSON object, on the last line")
    args = ap.parse_args(argv)

    from flux_annot import AsyncClient, sched

    ids = list(range(1, args.jobs + 1))

    def fill(path):
        async def main():
            c = await AsyncClient.connect(path)
            for i in range(0, len(ids), 1000):
                await asyncio.gather(*[c.send("job-manager.submit", {"id": j, "userid": os.getuid()})
                                       for j in ids[i:i + 1000]])
            now = time.time()
            for i in range(0, len(ids), 1000):
                await asyncio.gather(*[c.send("job-manager.alloc-response", sched.annotate(
                    j, t_estimate=now + 60 + k * 0.5, reason_pending="jobs ahead in queue",
                    jobs_ahead=k)) for k, j in enumerate(ids[i:i + 1000], i)])
            await c.close()

        asyncio.run(main())

    with service_dashboard_browser(fill) as (path, srv, dash, url, driver):
        parts = urllib.parse.urlsplit(url)
        token = urllib.parse.parse_qs(parts.query)["token"][0]
        driver.get(url)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if driver.execute_script("return window.fluxDash ? fluxDash.state.jobs.size : 0;") >= args.jobs:
                break
            time.sleep(0.2)
        else:
            raise RuntimeError("the page never showed every job")
        print(f"bench_dashboard: {args.jobs:,} pending jobs, {args.rate:,} updates/s for "
              f"{args.seconds:g} s per phase; Chromium {driver.capabilities.get('browserVersion')}")
        one = phase("browser page alone", args, srv, dash, driver, path, ids, 1)
        readers = [Reader(parts.hostname, parts.port, token) for _ in range(args.extra)]
        try:
            more = phase(f"browser + {args.extra} more pages", args, srv, dash, driver, path, ids,
                         1 + args.extra)
        finally:
            for r in readers:
                r.close()
        if args.extra:
            per = (more["cpu"] - one["cpu"]) / args.extra
            print(f"\ndashboard CPU per additional connected page: {100 * per:.2f}% of one core "
                  f"(one page: {100 * one['cpu']:.1f}%, {1 + args.extra} pages: {100 * more['cpu']:.1f}%)")
        ok = one["kept_up"] and more["kept_up"]
        print(f"target: the page keeps up with {args.rate:,} updates/s over {args.jobs:,} jobs: "
              f"{'met' if ok else 'MISSED'}")
        if args.json:
            print(json.dumps({
                "jobs": args.jobs, "rate": args.rate, "seconds": args.seconds, "extra": args.extra,
                "chromium": driver.capabilities.get("browserVersion"), "one": one, "more": more,
                "cpu_per_extra_page": ((more["cpu"] - one["cpu"]) / args.extra
                                       if args.extra else None),
                "kept_up": ok,
            }))
        return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
