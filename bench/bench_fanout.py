"""Fan-out: the scheduler's rate with many guest subscribers, and the bound
of a subscriber that stopped reading (docs/events.md; issue 18). Prints
numbers; asserts nothing.

Curve. A server subprocess (`bench_rpc.start_server`, temp SQLite store)
holds `--jobs` pending jobs owned by uids 20000.. round-robin over
`--owners` users, each with a private note (`user` namespace). One
scheduler connection (this process, the owner) sends RFC 27 ANNOTATE alloc
responses (`bench_flood.sched_frames`: every job's `t_estimate` moves each
cycle), pipelined `--window` in flight, `--requests` per phase. Phases
alternate: without subscribers, then with the next step of `--steps` (10,
50, 200) guest subscribers, then without again, ...; each step is compared
with the mean of the phases without on either side (the machine drifts),
`--rounds` times (median). A step's subscribers are forked processes, each
dropping to its own uid (20000 + i: guest i owns jobs, so the batches hold
its own jobs, whole, among the others' public views), subscribing with
`snapshot` + `delta` and reading everything (frames delimited and counted,
not decoded: a reader that decoded 200 copies of the stream would measure
itself); they are killed after the step. Per phase: scheduler requests/s,
the server's CPU (all its threads, /proc schedstat) per request and per
batch, the batches published (`stats`), the readers' CPU, bytes delivered
to them, dropped subscribers. The figures: each step's rate against the
phases without (target: 200 subscribers >= 50%), and its server CPU per
request against theirs (what a server with a core of its own would keep).

Without root the readers cannot take their own uids; they then run as
this uid (owner views, not guests), and the output says so.

Bound. A server with `[events] subscriber_queue_bytes` = `--bound-limit`
(64 KiB) and window 0; a subscriber subscribes, then stops reading; the
owner publishes `--bound-small` bytes of annotations in ~4 KB batches (less
than the transport's 1 MiB), or `--bound-big` in the second case; then the
subscriber reads everything: bytes received (frames, as counted at the
client) before its EOVERFLOW, against the limit + one batch.

    python bench/bench_fanout.py [--jobs 10000] [--requests 200000] [--steps 10,50,200]
                                 [--rounds 1] [--json] [--no-bound] [--no-curve]
                                 [--profile FILE]
"""

import argparse
import gc
import json
import multiprocessing
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_flood import proc_cpu, sched_frames  # noqa: E402
from bench_rpc import Pipe, self_cpu  # noqa: E402

from flux_annot import Client  # noqa: E402
from flux_annot.wire import protocol

UID0 = 20000
_HDR = struct.Struct(">I")


def start_server(tmp, config=None, profile=None):
    """The server on tmp/s/socket (0755 dir, socket 0666), a temp store;
    under cProfile (stats written to `profile` at exit) if given."""
    path = os.path.join(tmp, "s", "socket")
    prof = ["-m", "cProfile", "-o", os.path.abspath(profile)] if profile else []
    cmd = [sys.executable, *prof, "-m", "flux_annot.wire.server", "--socket", path,
           "--store", os.path.join(tmp, "bench.db")]
    if config:
        cfg = os.path.join(tmp, "config.toml")
        with open(cfg, "w") as f:
            f.write(config)
        cmd += ["--config", cfg]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, cwd=tmp)
    line = proc.stdout.readline()
    if not line.startswith("ready"):
        proc.kill()
        raise SystemExit(f"server did not start: {line!r}")
    return proc, path


def stop_server(proc):
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def frames_in(buf, off, counts):
    """Delimit the complete frames of buf from off; counts[0] += frames,
    counts[1] = errnum of a frame that ended the stream (0 if none).
    Returns the offset of the first incomplete frame."""
    n = len(buf)
    while n - off >= 4:
        (ln,) = _HDR.unpack_from(buf, off)
        end = off + 4 + ln
        if end > n:
            break
        counts[0] += 1
        if buf.find(b'"errnum":0,', off + 4, end) < 0:
            j = buf.find(b'"errnum":', off + 4, end)
            counts[1] = int(buf[j + 9:buf.find(b",", j, end)]) if j >= 0 else -1
        off = end
    return off


def reader(path, uid, slot, received, ready):
    """A subscriber in a forked child: its own uid, snapshot + delta, reads
    until the stream ends or it is killed; received[slot] = bytes so far
    (negative once the stream ended: -(bytes) - 1)."""
    ok = False
    try:
        if uid is not None:
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(path)
        sock.sendall(protocol.request("job-manager.events", 1, {"snapshot": True, "delta": True}))
        counts = [0, 0]
        total = 0
        buf = b""
        while True:
            data = sock.recv(1 << 20)
            if not data:
                break
            total += len(data)
            received[slot] = total
            buf = buf + data if buf else data
            off = frames_in(buf, 0, counts)
            buf = buf[off:]
            if counts[0] and not ok:
                ok = True
                ready.release()  # the snapshot is here: live from now on
            if counts[1]:
                break
        received[slot] = -total - 1
    finally:
        if not ok:
            ready.release()
        os._exit(0)


def read_until_end(sock, quiet=5.0):
    """Read a stream until a frame with errnum != 0 (or `quiet` s of
    silence, or EOF): (bytes of the frames before it, those frames, errnum
    or None, the biggest of those frames)."""
    buf = b""
    off = total = frames = biggest = 0
    while True:
        try:
            data = sock.recv(1 << 20)
        except socket.timeout:
            return total, frames, None, biggest
        if not data:
            return total, frames, None, biggest
        buf = buf[off:] + data
        off = 0
        while len(buf) - off >= 4:
            (ln,) = _HDR.unpack_from(buf, off)
            end = off + 4 + ln
            if end > len(buf):
                break
            if buf.find(b'"errnum":0,', off + 4, end) < 0:
                return total, frames, json.loads(buf[off + 4:end])["errnum"], biggest
            total += 4 + ln
            biggest = max(biggest, 4 + ln)
            frames += 1
            off = end


def setup_frames(jobs, owners, mt):
    """Submits (job j owned by UID0 + j % owners) and a private note on each."""
    frames = []
    for j in range(1, jobs + 1):
        frames.append(protocol.request("job-manager.submit", mt, {"id": j, "userid": UID0 + j % owners}))
        mt += 1
    for j in range(1, jobs + 1):
        frames.append(protocol.request("job-manager.annotate", mt, {
            "id": j, "annotations": {"user": {"note": f"private to {UID0 + j % owners}"}}}))
        mt += 1
    return frames, mt


def curve(jobs=10000, requests=200000, window=256, owners=250, steps=(10, 50, 200),
          rounds=1, profile=None, verbose=True):
    say = print if verbose else (lambda *a, **k: None)
    root = os.geteuid() == 0
    tmp = tempfile.mkdtemp(prefix="bench-fanout-")
    os.chmod(tmp, 0o755)
    proc, path = start_server(tmp, profile=profile)
    pid = proc.pid
    ctx = multiprocessing.get_context("fork")
    received = ctx.Array("q", max(steps, default=0) or 1, lock=False)
    ready = ctx.Semaphore(0)
    children = []
    phases = []
    load0 = os.getloadavg()[0]
    try:
        pipe = Pipe(path)
        pipe.sock.settimeout(300)
        frames, mt = setup_frames(jobs, owners, 1)
        pipe.run(frames, window)
        cycle = 0
        warm = sched_frames(jobs, jobs, cycle, mt)
        mt += len(warm)
        cycle += 1
        pipe.run(warm, window)
        admin = Client(path, timeout=120)
        cycles = -(-requests // jobs)

        def phase(nsubs):
            nonlocal mt, cycle
            frames = sched_frames(jobs, requests, cycle, mt)
            mt += len(frames)
            cycle += cycles
            st0 = admin.stats()
            got0 = sum(abs(x) for x in received[:len(children)])
            rcpu0 = sum(proc_cpu(p.pid) for p in children if p.is_alive())
            c0, s0, t0 = self_cpu(), proc_cpu(pid), time.perf_counter()
            pipe.run(frames, window)
            t1, c1, s1 = time.perf_counter(), self_cpu(), proc_cpu(pid)
            time.sleep(0.2)  # the last batches reach the readers
            rcpu1 = sum(proc_cpu(p.pid) for p in children if p.is_alive())
            st1 = admin.stats()
            got1 = sum(abs(x) for x in received[:len(children)])
            wall = t1 - t0
            batches = st1["batches"] - st0["batches"]
            return {
                "subscribers": nsubs,
                "rate": requests / wall,
                "wall": wall,
                "server_cpu": (s1 - s0) / wall,
                "client_cpu": (c1 - c0) / wall,
                "readers_cpu": (rcpu1 - rcpu0) / wall,
                "batches": batches,
                "server_us_per_batch": 1e6 * (s1 - s0) / batches if batches else None,
                "server_us_per_request": 1e6 * (s1 - s0) / requests,
                "delivered_mb_per_s": (got1 - got0) / wall / 1e6,
                "dropped": st1["dropped_subscribers"] - st0["dropped_subscribers"],
                "subscribers_seen": st1["subscribers"],
            }

        def show(m):
            say(f"{m['subscribers']:>4} subscribers: {m['rate']:>9,.0f} req/s, server "
                f"{100 * m['server_cpu']:.0f}% CPU, {m['server_us_per_request']:.1f} µs CPU per "
                f"request, {m['server_us_per_batch'] or 0:,.0f} per batch ({m['batches']} "
                f"batches), readers {100 * m['readers_cpu']:.0f}% CPU, "
                f"{m['delivered_mb_per_s']:.1f} MB/s delivered, dropped {m['dropped']}")

        def start_readers(n):
            gc.freeze()  # the children must not copy our pages through refcounts
            for i in range(n):
                received[i] = 0
                p = ctx.Process(target=reader,
                                args=(path, UID0 + i if root else None, i, received, ready),
                                daemon=True)
                p.start()
                children.append(p)
                if not ready.acquire(timeout=120):
                    raise SystemExit(f"subscriber {i} got no snapshot")
            gc.unfreeze()

        def stop_readers():
            ended = sum(1 for x in received[:len(children)] if x < 0)
            for p in children:
                p.kill()
            for p in children:
                p.join(10)
            children.clear()
            t_end = time.monotonic() + 30
            while admin.stats()["subscribers"] and time.monotonic() < t_end:
                time.sleep(0.1)
            return ended

        # quiet, N, quiet, N', quiet, ...: each step against the quiet
        # phases on either side of it (the machine drifts)
        ended = 0
        steps = [n for n in steps if n > 0]
        quiet = [phase(0)]
        show(quiet[-1])
        for _ in range(rounds):
            for n in steps:
                start_readers(n)
                m = phase(n)
                ended += stop_readers()
                phases.append(m)
                show(m)
                quiet.append(phase(0))
                show(quiet[-1])
                q0, q1 = quiet[-2], quiet[-1]
                m["ratio"] = m["rate"] / ((q0["rate"] + q1["rate"]) / 2)
                m["cpu_ratio"] = ((q0["server_us_per_request"] + q1["server_us_per_request"]) / 2
                                  / m["server_us_per_request"])
                say(f"      ratio to the quiet phases around it: rate {100 * m['ratio']:.0f}%, "
                    f"server CPU per request {100 * m['cpu_ratio']:.0f}%")
        admin.close()
        errors, first_error = pipe.errors, pipe.first_error
        pipe.close()
    finally:
        for p in children:
            if p.is_alive():
                p.kill()
                p.join(5)
        stop_server(proc)
        shutil.rmtree(tmp, ignore_errors=True)
    by_step = {}
    for m in phases:
        by_step.setdefault(m["subscribers"], []).append(m)
    summary = {n: {"ratio": _median([m["ratio"] for m in ms]),
                   "cpu_ratio": _median([m["cpu_ratio"] for m in ms]),
                   "rate": _median([m["rate"] for m in ms]),
                   "server_us_per_batch": _median([m["server_us_per_batch"] for m in ms]),
                   "server_us_per_request": _median([m["server_us_per_request"] for m in ms])}
               for n, ms in by_step.items()}
    return {
        "jobs": jobs, "requests": requests, "window": window, "owners": owners, "rounds": rounds,
        "guests_are_guests": root, "phases": phases, "quiet_phases": quiet,
        "quiet_rate": _median([q["rate"] for q in quiet]),
        "quiet_server_us_per_batch": _median([q["server_us_per_batch"] for q in quiet]),
        "quiet_server_us_per_request": _median([q["server_us_per_request"] for q in quiet]),
        "steps": summary,
        "streams_ended_early": ended, "sched_errors": errors, "sched_first_error": first_error,
        "load_average_before": load0, "load_average": os.getloadavg()[0],
    }


def _median(xs):
    xs = sorted(x for x in xs if x is not None)
    if not xs:
        return None
    k = len(xs) // 2
    return xs[k] if len(xs) % 2 else (xs[k - 1] + xs[k]) / 2


def bound(limit=65536, published=300_000, pad=4000, verbose=True):
    """Bytes a subscriber that stopped reading receives before its EOVERFLOW."""
    tmp = tempfile.mkdtemp(prefix="bench-bound-")
    os.chmod(tmp, 0o755)
    proc, path = start_server(
        tmp, f"[events]\nsubscriber_queue_bytes = {limit}\n[batch]\nwindow = 0\n")
    try:
        sub = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sub.connect(path)
        sub.sendall(protocol.request("job-manager.events", 1, {"topics": ["job-annotations"]}))
        n = max(1, published // (pad + 40))
        with Client(path, timeout=120) as c:
            c.stats()  # the subscription is in place (requests are served in order)
            for j in range(1, n + 1):
                c.submit(j, os.getuid())
            for j in range(1, n + 1):  # one batch each: each answered before the next
                c.annotate(j, {"workflow": {"pad": "p" * pad}})
            stats = c.stats()
        sub.settimeout(5)
        total, frames, end, batch = read_until_end(sub)
        sub.close()
    finally:
        stop_server(proc)
        shutil.rmtree(tmp, ignore_errors=True)
    r = {"limit": limit, "published": n * (pad + 40), "batches": n, "batch_bytes": batch,
         "quiet_s": 5.0,
         "received": total, "frames": frames, "end_errnum": end,
         "dropped": stats["dropped_subscribers"], "bound": limit + batch}
    if verbose:
        print(f"bound: {r['published']:,} bytes published in {n} batches of ~{batch:,} bytes, "
              f"subscriber_queue_bytes {limit:,}: the stopped subscriber received "
              f"{total:,} bytes, then "
              + (f"errnum {end}" if end else "NOTHING (no EOVERFLOW within 5 s)")
              + f" (bound {limit + batch:,})")
    return r


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=10000)
    ap.add_argument("--requests", type=int, default=200000, help="scheduler requests per phase")
    ap.add_argument("--window", type=int, default=256)
    ap.add_argument("--owners", type=int, default=250, help="uids owning the jobs (20000..)")
    ap.add_argument("--steps", default="10,50,200",
                    help="guest subscribers per measured phase (each between phases without)")
    ap.add_argument("--rounds", type=int, default=1, help="times the steps are measured")
    ap.add_argument("--bound-limit", type=int, default=65536)
    ap.add_argument("--bound-small", type=int, default=300_000)
    ap.add_argument("--bound-big", type=int, default=4_000_000)
    ap.add_argument("--no-curve", action="store_true")
    ap.add_argument("--no-bound", action="store_true")
    ap.add_argument("--json", action="store_true",
                    help="print the results as one JSON object on the last line (bench/report.py)")
    ap.add_argument("--profile", help="run the curve's server under cProfile, stats to this file")
    a = ap.parse_args(argv)
    out = {}
    if not a.no_curve:
        steps = tuple(int(x) for x in a.steps.split(","))
        out["curve"] = curve(a.jobs, a.requests, a.window, a.owners, steps, a.rounds, a.profile)
    if not a.no_bound:
        out["bound"] = [bound(a.bound_limit, a.bound_small), bound(a.bound_limit, a.bound_big)]
    print(f"load average {os.getloadavg()[0]:.2f}")
    if a.json:
        print(json.dumps(out))


if __name__ == "__main__":
    main()
