"""`flux-annotate top` under a busy scheduler (issue 11). Prints numbers and
whether each target is met; asserts nothing.

Setup: a server subprocess (`bench_rpc.start_server`: temp socket, temp
SQLite store); `--jobs` pending jobs submitted (pipelined, owner); then a
scheduler child process re-annotates `--rate` jobs per second (RFC 27
ANNOTATE responses: `jobs_ahead`, `t_estimate`, `reason_pending`, all
changing), in slices of 1/20 s, pipelined, round-robin over the jobs.

`top` is this process: the same objects `flux-annotate top` runs
(`LiveModel` fed by `LiveThread`, `TopView`, `TopScreen`) with an 80x24
stand-in for the curses window (so no terminal is needed; what is not
measured is curses writing the changed cells, a few lines a refresh).
Every `--refresh` seconds it does what top's loop does: `view.update()` and
`screen.draw()`.

Measured, over `--seconds` of the scheduler running:
- CPU per refresh of the UI thread (update + draw; `time.thread_time`):
  mean, p95, max (target: <= 50 ms);
- CPU of the whole process per refresh period (the model's thread applying
  the stream included) and as a share of one core;
- whether top falls behind the stream (target: never): the service's last
  seq minus the model's at each refresh (max and at the end), time for the
  model to reach the service's last seq once the scheduler stops, resyncs
  (EOVERFLOW drops) seen;
- RSS of this process (VmRSS at the end, VmHWM) with `--jobs` in the model.

    python bench/bench_top.py [--jobs 100000] [--rate 10000] [--seconds 20]
                              [--refresh 0.5]
"""

import argparse
import json
import multiprocessing
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_rpc import Pipe, start_server  # noqa: E402

from flux_annot import Client  # noqa: E402
from flux_annot.views.listing import JobFormat  # noqa: E402
from flux_annot.views.live import LiveModel, LiveThread  # noqa: E402
from flux_annot.wire.protocol import request  # noqa: E402
from flux_annot.views.top import TOP_FORMAT, Terminal, TopScreen, TopView  # noqa: E402

BASE = 1 << 20  # first job id
REASONS = ("priority", "resources", "dependency", "held")


class FakeWindow:
    """The calls TopScreen makes on a curses window, doing nothing."""

    def __init__(self, lines=24, cols=80):
        self.size = (lines, cols)
        self.cells = 0

    def getmaxyx(self):
        return self.size

    def move(self, y, x):
        pass

    def clrtoeol(self):
        pass

    def addstr(self, y, x, text, attr=0):
        self.cells += len(text)

    def erase(self):
        pass

    def noutrefresh(self):
        pass


def submit_all(path, n, uid):
    frames = [request("job-manager.submit", i + 1, {"id": BASE + i, "userid": uid})
              for i in range(n)]
    pipe = Pipe(path)
    pipe.run(frames, 512)
    if pipe.errors:
        raise SystemExit(f"submit failed: {pipe.first_error}")


def scheduler(path, n, rate, stop, sent):
    """Child process: `rate` ANNOTATE responses per second until stop."""
    pipe = Pipe(path)
    slice_s = 0.05
    per_slice = max(1, int(rate * slice_s))
    cursor = 0
    cycle = 0
    mt = 0
    t_next = time.monotonic()
    while not stop.is_set():
        now = time.time()
        frames = []
        for _ in range(per_slice):
            i = cursor % n
            cursor += 1
            if i == 0:
                cycle += 1
            mt += 1
            notes = {"jobs_ahead": (i + cycle) % n, "t_estimate": now + 60 + i + cycle,
                     "reason_pending": REASONS[(i + cycle) % len(REASONS)]}
            frames.append(request("job-manager.alloc-response", mt,
                                  {"id": BASE + i, "type": 1, "annotations": {"sched": notes}}))
        pipe.run(frames, 256)
        with sent.get_lock():
            sent.value += len(frames)
        t_next += slice_s
        delay = t_next - time.monotonic()
        if delay > 0:
            time.sleep(delay)


def rss_kib(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--jobs", type=int, default=100_000)
    ap.add_argument("--rate", type=int, default=10_000)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--refresh", type=float, default=0.5)
    ap.add_argument("--json", action="store_true", help="also print the figures as one JSON line")
    args = ap.parse_args(argv)

    tmp = tempfile.mkdtemp(prefix="fa-bench-top-")
    os.chmod(tmp, 0o755)
    proc, path = start_server(tmp)
    stop = multiprocessing.Event()
    child = None
    thread = None
    try:
        t0 = time.monotonic()
        submit_all(path, args.jobs, os.getuid())
        print(f"submitted {args.jobs} jobs in {time.monotonic() - t0:.1f} s")

        model = LiveModel()
        statuses = []
        model.add_listener(lambda kind, p: kind == "status" and statuses.append(p["status"]))
        thread = LiveThread(model, path, retry=0.2).start()
        deadline = time.monotonic() + 120
        while model.status != "live" and time.monotonic() < deadline:
            time.sleep(0.05)
        if model.status != "live":
            raise SystemExit(f"the model did not go live: {model.status} {model.error}")
        view = TopView(model, JobFormat(TOP_FORMAT))
        win = FakeWindow()
        screen = TopScreen(win, view, Terminal("utf-8", colour=False), path)
        t1 = time.thread_time()
        view.update()
        screen.draw()
        first = time.thread_time() - t1
        print(f"model live with {len(model.jobs)} jobs; first full view {first * 1000:.0f} ms CPU")

        sent = multiprocessing.Value("q", 0)
        child = multiprocessing.Process(target=scheduler, args=(path, args.jobs, args.rate, stop, sent),
                                        daemon=True)
        child.start()
        stats = Client(path)
        ui = []
        lags = []
        proc_cpu0 = time.process_time()
        wall0 = time.monotonic()
        sent0 = 0
        next_t = time.monotonic()
        end = wall0 + args.seconds
        while time.monotonic() < end:
            next_t += args.refresh
            c0 = time.thread_time()
            view.update()
            screen.draw()
            ui.append(time.thread_time() - c0)
            lags.append(stats.stats()["seq"] - model.seq)
            delay = next_t - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        proc_cpu = time.process_time() - proc_cpu0
        wall = time.monotonic() - wall0
        stop.set()
        child.join(30)
        sent_total = sent.value - sent0
        final_seq = stats.stats()["seq"]
        t_stop = time.monotonic()
        while model.seq < final_seq and time.monotonic() - t_stop < 60:
            time.sleep(0.01)
        catch_up = time.monotonic() - t_stop
        caught = model.seq >= final_seq
        st = stats.stats()
        stats.close()
    finally:
        stop.set()
        if child is not None and child.is_alive():
            child.terminate()
        if thread is not None:
            thread.stop()
        proc.terminate()
        try:
            proc.wait(30)
        except Exception:
            proc.kill()

    refreshes = len(ui)
    ui_ms = [u * 1000 for u in ui]
    mean_ui = statistics.mean(ui_ms)
    p95_ui = sorted(ui_ms)[int(0.95 * (refreshes - 1))]
    max_ui = max(ui_ms)
    proc_per_refresh = proc_cpu * 1000 / refreshes
    resyncs = statuses.count("resync")
    behind = (not caught) or resyncs > 0 or st.get("dropped_subscribers", 0) > 0
    load = os.getloadavg()
    print(f"scheduler: {sent_total} ANNOTATE responses in {wall:.1f} s "
          f"= {sent_total / wall:.0f}/s (asked {args.rate}/s); load average {load[0]:.2f} {load[1]:.2f}")
    try:
        import orjson  # noqa: F401
        decoder = "orjson"
    except ImportError:
        decoder = "json (stdlib)"
    print(f"refreshes: {refreshes} every {args.refresh} s, 80x24; tree decoder {decoder}")
    ok = max_ui <= 50
    print(f"top UI CPU per refresh (update + draw): mean {mean_ui:.1f} ms, p95 {p95_ui:.1f} ms, "
          f"max {max_ui:.1f} ms; target <= 50 ms: {'met' if ok else 'MISSED'}")
    print(f"top process CPU per refresh period (stream applied included): {proc_per_refresh:.1f} ms "
          f"= {proc_cpu / wall * 100:.0f}% of one core")
    print(f"lag behind the service (batches): max {max(lags)}, at the end {lags[-1]}; "
          f"caught up {catch_up:.2f} s after the scheduler stopped; resyncs {resyncs}, "
          f"dropped by the service {st.get('dropped_subscribers', 0)}; "
          f"falls behind: {'yes' if behind else 'never'}; target never: {'MISSED' if behind else 'met'}")
    print(f"top RSS with {args.jobs} jobs: {rss_kib('VmRSS') / 1024:.0f} MiB (peak {rss_kib('VmHWM') / 1024:.0f} MiB)")
    if args.json:
        print(json.dumps({
            "jobs": args.jobs, "rate_asked": args.rate, "rate_sent": sent_total / wall,
            "refresh_s": args.refresh, "refreshes": refreshes,
            "ui_cpu_ms": {"mean": mean_ui, "p95": p95_ui, "max": max_ui},
            "process_cpu_ms_per_refresh": proc_per_refresh,
            "lag_max": max(lags), "catch_up_s": catch_up, "resyncs": resyncs,
            "falls_behind": behind, "rss_mib": rss_kib("VmRSS") / 1024,
            "rss_peak_mib": rss_kib("VmHWM") / 1024, "loadavg": load,
        }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
