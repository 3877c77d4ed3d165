"""What a user's program pays per request through flux-annot's own clients
(SPEC §11, third round; docs/performance.md "Clients").

One server subprocess (`python -m flux_annot.wire.server`, SQLite store in a temp
dir, as bench_rpc.py) and, in this process, each client against its anchor
in the same run, interleaved so that the machine's other work falls on all
of them alike:

- round trips, one request at a time (median µs): `Client.annotate`
  (volatile) against the minimal client of docs/protocol.md (json.dumps of
  the whole request, sendall, recv of the header and of the body,
  json.loads) sending the same request; `Client.get` against that client's
  `getattr`. Targets: ≤ 1.15× each.
- pipelined rates (volatile annotate, RPC/s): frames built beforehand and
  pipelined on a raw socket (bench_rpc.Pipe, `--window` in flight: the
  ceiling, no encoding, replies only counted), against
  `Client.annotate_pipelined(ids, patches)` with the same window and
  patches given as dicts (target ≥ 80%), and `AsyncClient` with
  `--inflight` (1,000) awaitables in flight: `asyncio.gather` over that
  many `annotate` calls at a time (target ≥ 60%). For information also
  `--inflight` coroutines each awaiting its own `annotate` calls one after
  the other (as many in flight all the time, no gather).

Beside each figure: the client's CPU per request (this process, getrusage)
and the server's (/proc/PID/task/*/schedstat, as bench_flood.py). Each
measure runs `--repeat` times, interleaved; the best of each is reported
(the lowest median, the highest rate), and each ratio is printed against
its target. `--json` adds one JSON object as the last line (bench/report.py).

    python bench/bench_clients.py [--jobs 10000] [--rtt 2000] [--requests 100000]
                                  [--window 256] [--inflight 1000] [--repeat 3] [--json]
"""

import argparse
import asyncio
import json
import os
import shutil
import socket
import statistics
import struct
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_flood import proc_cpu as server_cpu  # noqa: E402  (schedstat: all threads)
from bench_rpc import Pipe, annotate_frames, self_cpu, start_server, wait_idle  # noqa: E402

from flux_annot import AsyncClient, Client  # noqa: E402
from flux_annot.wire import protocol

_HDR = struct.Struct(">I")

TARGETS = {
    "annotate_rtt": ("≤", 1.15),
    "get_rtt": ("≤", 1.15),
    "pipelined": ("≥", 0.80),
    "async": ("≥", 0.60),
}


class Minimal:
    """The minimal client of docs/protocol.md, nothing but the standard library."""

    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect(path)
        self.mt = 0

    def call(self, topic, payload):
        self.mt += 1
        s = self.sock
        body = json.dumps({"topic": topic, "matchtag": self.mt, "payload": payload}).encode()
        s.sendall(struct.pack(">I", len(body)) + body)
        (n,) = struct.unpack(">I", s.recv(4, socket.MSG_WAITALL))
        return json.loads(s.recv(n, socket.MSG_WAITALL))

    def close(self):
        self.sock.close()


def note(i):
    """A scheduler's kind of note (about the 96 bytes of SPEC §11's typical one)."""
    return {"workflow": {"t_estimate": 1700000000.5 + i, "reason": "priority", "ahead": i % 97}}


def round_trips(path, pid, jobs, count, block=100):
    """Median µs and CPU µs per request of the four round-trip kinds,
    interleaved in blocks of `block` requests."""
    mini = Minimal(path)
    cl = Client(path)
    kinds = {
        "minimal_annotate": lambda i: mini.call(
            "job-manager.annotate", {"id": i, "annotations": note(i), "volatile": True}),
        "client_annotate": lambda i: cl.annotate(i, note(i), volatile=True),
        "minimal_getattr": lambda i: mini.call("job-manager.getattr", {"id": i}),
        "client_get": lambda i: cl.get(i),
    }
    # both clients must get what they asked for
    r = kinds["minimal_getattr"](1)
    assert r["errnum"] == 0 and r["payload"]["id"] == 1, r
    assert cl.get(1)["id"] == 1
    lat = {k: [] for k in kinds}
    ccpu = dict.fromkeys(kinds, 0.0)
    scpu = dict.fromkeys(kinds, 0.0)
    perf = time.perf_counter
    wait_idle(pid)
    done = 0
    while done < count:
        n = min(block, count - done)
        for k, fn in kinds.items():
            out = lat[k]
            c0, s0 = self_cpu(), server_cpu(pid)
            for j in range(done, done + n):
                i = 1 + j % jobs
                t0 = perf()
                fn(i)
                out.append(perf() - t0)
            ccpu[k] += self_cpu() - c0
            scpu[k] += server_cpu(pid) - s0
        done += n
    mini.close()
    cl.close()
    return {k: {"median_us": 1e6 * statistics.median(lat[k]),
                "p99_us": 1e6 * sorted(lat[k])[int(0.99 * len(lat[k]))],
                "client_us": 1e6 * ccpu[k] / count, "server_us": 1e6 * scpu[k] / count}
            for k in kinds}


def timed(pid, n, fn):
    """Run fn(); its rate and both sides' CPU per request."""
    c0, s0, t0 = self_cpu(), server_cpu(pid), time.perf_counter()
    fn()
    t1, c1, s1 = time.perf_counter(), self_cpu(), server_cpu(pid)
    return {"rate": n / (t1 - t0), "wall": t1 - t0,
            "client_us": 1e6 * (c1 - c0) / n, "server_us": 1e6 * (s1 - s0) / n}


async def _gather_run(c, ids, patches, inflight):
    n = len(ids)
    ann = c.annotate
    for s in range(0, n, inflight):
        e = min(n, s + inflight)
        await asyncio.gather(*[ann(ids[i], patches[i], volatile=True) for i in range(s, e)])


async def _workers_run(c, ids, patches, inflight):
    n = len(ids)
    ann = c.annotate

    async def worker(k):
        for i in range(k, n, inflight):
            await ann(ids[i], patches[i], volatile=True)

    await asyncio.gather(*[worker(k) for k in range(inflight)])


def async_rate(path, pid, ids, patches, inflight, how):
    async def main():
        async with AsyncClient(path) as c:
            await c.stats()  # connected and answered
            run = _gather_run if how == "gather" else _workers_run
            return await _timed_async(pid, len(ids), run(c, ids, patches, inflight))

    return asyncio.run(main())


async def _timed_async(pid, n, coro):
    c0, s0, t0 = self_cpu(), server_cpu(pid), time.perf_counter()
    await coro
    t1, c1, s1 = time.perf_counter(), self_cpu(), server_cpu(pid)
    return {"rate": n / (t1 - t0), "wall": t1 - t0,
            "client_us": 1e6 * (c1 - c0) / n, "server_us": 1e6 * (s1 - s0) / n}


def pipelined(path, pid, jobs, count, window, inflight, repeat):
    """Rates of the ceiling and the clients, `repeat` interleaved runs each."""
    pipe = Pipe(path)
    cl = Client(path)
    runs = {"prebuilt": [], "client_pipelined": [], "async_gather": [], "async_workers": []}
    ids = [1 + i % jobs for i in range(count)]
    mt = 1 << 40  # the raw pipe's matchtags, apart from nothing (own connection)
    for rep in range(repeat):
        tag = f"p{rep}"
        frames = annotate_frames(jobs, count, True, mt, tag)
        mt += count
        patches = [{"workflow": {tag: i}} for i in range(count)]
        runs["prebuilt"].append(timed(pid, count, lambda: pipe.run(frames, window)))
        runs["client_pipelined"].append(timed(
            pid, count, lambda: cl.annotate_pipelined(ids, patches, volatile=True, window=window)))
        runs["async_gather"].append(async_rate(path, pid, ids, patches, inflight, "gather"))
        runs["async_workers"].append(async_rate(path, pid, ids, patches, inflight, "workers"))
    if pipe.errors:
        raise SystemExit(f"{pipe.errors} error replies to prebuilt frames: {pipe.first_error!r}")
    pipe.close()
    cl.close()
    return runs


def best_rtt(reps):
    """Per kind, the repeat with the lowest median (and the other medians)."""
    out = {}
    for k in reps[0]:
        rs = [r[k] for r in reps]
        b = dict(min(rs, key=lambda x: x["median_us"]))
        b["medians_us"] = [r["median_us"] for r in rs]
        out[k] = b
    return out


def best_rate(runs):
    b = dict(max(runs, key=lambda x: x["rate"]))
    b["rates"] = [r["rate"] for r in runs]
    return b


def verdict(key, ratio):
    op, t = TARGETS[key]
    ok = ratio <= t if op == "≤" else ratio >= t
    if ok:
        return f"target {op} {t:.2f}×: met" if op == "≤" else f"target {op} {t:.0%}: met"
    if op == "≤":
        return f"target {op} {t:.2f}×: MISSED by {100 * (ratio / t - 1):.0f}%"
    return f"target {op} {t:.0%}: MISSED by {100 * (t - ratio):.0f} points"


def report(res):
    rt, pr = res["rtt"], res["rates"]
    print(f"flux-annot clients: {res['jobs']} jobs, load average {res['load'][0]:.1f} → "
          f"{res['load'][1]:.1f}, best of {res['repeat']} interleaved runs")
    print("round trips, one request at a time (median; CPU per request: client / server):")
    for k in ("minimal_annotate", "client_annotate", "minimal_getattr", "client_get"):
        r = rt[k]
        print(f"  {k:<18} {r['median_us']:6.1f} µs (p99 {r['p99_us']:.0f}; runs "
              + ", ".join(f"{m:.1f}" for m in r["medians_us"])
              + f")  client {r['client_us']:5.1f} µs, server {r['server_us']:5.1f} µs CPU")
    for key, a, b in (("annotate_rtt", "client_annotate", "minimal_annotate"),
                      ("get_rtt", "client_get", "minimal_getattr")):
        ratio = res["ratios"][key]
        print(f"  {a} / {b}: {ratio:.2f}×  ({verdict(key, ratio)})")
    print(f"pipelined volatile annotate, {res['requests']:,} requests per run "
          f"(window {res['window']}, async {res['inflight']} in flight):")
    for k in ("prebuilt", "client_pipelined", "async_gather", "async_workers"):
        r = pr[k]
        print(f"  {k:<18} {r['rate']:>9,.0f} RPC/s (runs "
              + ", ".join(f"{x / 1000:.0f}k" for x in r["rates"])
              + f")  client {r['client_us']:5.2f} µs, server {r['server_us']:5.2f} µs CPU/request")
    for key, k in (("pipelined", "client_pipelined"), ("async", "async_gather")):
        ratio = res["ratios"][key]
        print(f"  {k} / prebuilt: {ratio:.0%}  ({verdict(key, ratio)})")
    print(f"  async_workers / prebuilt: {res['ratios']['async_workers']:.0%} (no target)")


def run(jobs=10000, rtt=2000, requests=100000, window=256, inflight=1000, repeat=3):
    tmp = tempfile.mkdtemp(prefix="bench-clients-")
    proc, path = start_server(tmp)
    pid = proc.pid
    l0 = os.getloadavg()[0]
    try:
        # the jobs (submits pipelined: each reply waits for its commit), with
        # a note each: getattr returns a tree, as a scheduler's jobs have
        pipe = Pipe(path)
        pipe.run([protocol.request("job-manager.submit", i, {"id": i, "userid": os.getuid()})
                  for i in range(1, jobs + 1)], 4096)
        pipe.close()
        with Client(path) as c:
            c.annotate_pipelined(list(range(1, jobs + 1)),
                                 [note(i) for i in range(1, jobs + 1)], volatile=True)
        # warm-up of every path
        pipelined(path, pid, jobs, min(requests, 20000), window, inflight, 1)
        reps = [round_trips(path, pid, jobs, rtt) for _ in range(repeat)]
        runs = pipelined(path, pid, jobs, requests, window, inflight, repeat)
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)
    rt = best_rtt(reps)
    pr = {k: best_rate(v) for k, v in runs.items()}
    res = {
        "jobs": jobs, "requests": requests, "window": window, "inflight": inflight,
        "repeat": repeat, "load": (l0, os.getloadavg()[0]), "rtt": rt, "rates": pr,
        "ratios": {
            "annotate_rtt": rt["client_annotate"]["median_us"] / rt["minimal_annotate"]["median_us"],
            "get_rtt": rt["client_get"]["median_us"] / rt["minimal_getattr"]["median_us"],
            "pipelined": pr["client_pipelined"]["rate"] / pr["prebuilt"]["rate"],
            "async": pr["async_gather"]["rate"] / pr["prebuilt"]["rate"],
            "async_workers": pr["async_workers"]["rate"] / pr["prebuilt"]["rate"],
        },
    }
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=10000)
    ap.add_argument("--rtt", type=int, default=2000, help="round trips per kind and run")
    ap.add_argument("--requests", type=int, default=100000, help="requests per pipelined run")
    ap.add_argument("--window", type=int, default=256)
    ap.add_argument("--inflight", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", action="store_true", help="a JSON object as the last line")
    a = ap.parse_args(argv)
    res = run(a.jobs, a.rtt, a.requests, a.window, a.inflight, a.repeat)
    report(res)
    if a.json:
        print(json.dumps(res))


if __name__ == "__main__":
    main()
