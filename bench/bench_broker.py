"""flux-annot through the Flux broker (SPEC §15, docs/flux.md; target in
docs/performance.md: the service `annot` adds at most 20% to Flux's own
round trip through the same broker).

    FLUX_ANNOT_TEST_FLUX_PREFIX=PREFIX python bench/bench_broker.py [--rtt N] [--pipeline N] [--json]

One run, one `flux start --test-size=4` instance (four broker processes
joined by Flux's overlay), one `flux-annotate serve --flux` mirroring it
(its Unix socket and its broker service `annot`, registered on rank 0),
one held job. From rank 0's broker and from a leaf rank's (3), with
Flux's own Python bindings (`flux.Flux(uri).rpc`), in the same run:

- round trip (median, p99 of N sequential RPCs) and pipelined rate (N
  RPCs sent, then every response read) of `annot.getattr` and
  `annot.memo` (volatile and not);
- beside Flux's own services through the same broker: `job-manager.getattr`
  (`attrs: []`, the job manager's cheapest read of one job) and
  `job-manager.memo` (volatile and not);
- beside the same calls on our Unix socket (`Client`, and raw pipelined
  frames).

Ratios printed: annot.getattr / job-manager.getattr, and annot.memo /
job-manager.memo. A memo through the mirror IS a job-manager.memo (the
mirror forwards it to Flux and answers once Flux's journal brought it
back and, non-volatile, once its own store committed it), so its ratio
is at least 2 by construction; the getattr ratio is what the broker
transport itself costs.

The machine is shared: the load average is printed with the figures.
"""

import argparse
import collections
import json
import os
import socket
import statistics
import subprocess
import sys
import time

RANKS = (0, 3)


def median_p99(samples):
    s = sorted(samples)
    return statistics.median(s), s[min(len(s) - 1, int(len(s) * 0.99))]


def round_trips(call, n):
    out = []
    for i in range(n):
        t = time.perf_counter()
        call(i)
        out.append(time.perf_counter() - t)
    return median_p99(out[n // 10:] if n >= 20 else out)  # the first tenth warms up


def settle(pid, quiet=0.2, timeout=10.0):
    """Wait until process `pid` used no CPU for `quiet` s (the previous
    phase's commits and journal events are done), at most `timeout` s."""
    from fluxbench import cpu_seconds

    end = time.monotonic() + timeout
    last = cpu_seconds(pid)
    while time.monotonic() < end:
        time.sleep(quiet)
        now = cpu_seconds(pid)
        if now == last:
            return
        last = now


def flux_pipelined(h, topic, payload_fn, n):
    t = time.perf_counter()
    futs = collections.deque(h.rpc(topic, payload_fn(i)) for i in range(n))
    while futs:
        # dropped once read: a future that was waited on keeps a reactor (an
        # epoll fd) of its own; thousands of them exhaust the fd limit
        futs.popleft().get()
    return n / (time.perf_counter() - t)


def socket_pipelined(path, topic, payload_fn, n):
    from flux_annot.wire import protocol

    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    reader = protocol.FrameReader()
    t = time.perf_counter()
    s.sendall(b"".join(protocol.request(topic, i + 1, payload_fn(i)) for i in range(n)))
    got = 0
    while got < n:
        for body in reader.feed(s.recv(1 << 20)):
            if json.loads(body)["errnum"]:
                raise SystemExit(f"bench_broker: {topic} failed: {body[:200]!r}")
            got += 1
    rate = n / (time.perf_counter() - t)
    s.close()
    return rate


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--prefix", default=os.environ.get("FLUX_ANNOT_TEST_FLUX_PREFIX"),
                    help="Flux installation prefix (default $FLUX_ANNOT_TEST_FLUX_PREFIX)")
    ap.add_argument("--rtt", type=int, default=400, help="sequential RPCs per round-trip figure")
    ap.add_argument("--pipeline", type=int, default=2000, help="RPCs in flight per rate figure")
    ap.add_argument("--json", action="store_true",
                    help="also print the figures as one JSON object, on the last line")
    args = ap.parse_args(argv)
    if not args.prefix or not os.access(os.path.join(args.prefix, "bin", "flux"), os.X_OK):
        print("bench_broker: give the Flux prefix (--prefix or FLUX_ANNOT_TEST_FLUX_PREFIX)",
              file=sys.stderr)
        return 2
    from fluxbench import Instance, cpu_seconds, flux_pythonpath

    sys.path.insert(0, flux_pythonpath(args.prefix))
    import flux  # noqa: E402
    import flux.job  # noqa: E402

    from flux_annot.wire.client import Client

    load0 = os.getloadavg()
    inst = Instance(args.prefix, size=max(RANKS) + 1, tag="broker")
    res = {"rtt_n": args.rtt, "pipeline_n": args.pipeline, "ranks": {}}
    try:
        sock = inst.mirror()
        mirror = inst.mirror_proc
        r = subprocess.run([inst.flux, "submit", "--urgency=0", "sleep", "3600"], env=inst.env,
                           capture_output=True, text=True, check=True)
        jid = int(flux.job.JobID(r.stdout.strip()))
        deadline = time.monotonic() + 60
        with Client(sock) as c:
            while not c.list():  # the job in the mirror
                if time.monotonic() > deadline:
                    raise SystemExit("bench_broker: the job did not reach the mirror")
                time.sleep(0.05)

        def memo(volatile):
            def payload(i):
                p = {"id": jid, "memo": {"n": i}}
                if volatile:
                    p["volatile"] = True
                return p
            return payload

        cases = (  # name, topic, payload
            ("annot.getattr", "annot.getattr", lambda i: {"id": jid}),
            ("job-manager.getattr", "job-manager.getattr", lambda i: {"id": jid, "attrs": []}),
            ("annot.memo volatile", "annot.memo", memo(True)),
            ("job-manager.memo volatile", "job-manager.memo", memo(True)),
            ("annot.memo", "annot.memo", memo(False)),
            ("job-manager.memo", "job-manager.memo", memo(False)),
        )
        handles = {rank: flux.Flux(inst.rank_uri(rank)) for rank in RANKS}
        for rank in RANKS:
            res["ranks"][str(rank)] = {}
        # each case from every rank before the next case: the memos' journal
        # traffic and commits must not run under the reads' figures
        for name, topic, payload in cases:
            for rank in RANKS:
                h = handles[rank]
                settle(mirror.pid)
                c0 = cpu_seconds(mirror.pid)
                med, p99 = round_trips(lambda i: h.rpc(topic, payload(i)).get(), args.rtt)
                cpu = (cpu_seconds(mirror.pid) - c0) / args.rtt
                rate = flux_pipelined(h, topic, payload, args.pipeline)
                res["ranks"][str(rank)][name] = {
                    "median_us": med * 1e6, "p99_us": p99 * 1e6, "rate": rate,
                    "mirror_cpu_us": cpu * 1e6}
        del handles, h
        sockfig = res["socket"] = {}
        with Client(sock) as c:
            for name, call, topic, payload in (
                ("getattr", lambda i: c.get(jid), "job-manager.getattr", lambda i: {"id": jid}),
                ("memo volatile", lambda i: c.memo(jid, {"n": i}, volatile=True),
                 "job-manager.memo", memo(True)),
                ("memo", lambda i: c.memo(jid, {"n": i}), "job-manager.memo", memo(False)),
            ):
                settle(mirror.pid)
                med, p99 = round_trips(call, args.rtt)
                rate = socket_pipelined(sock, topic, payload, args.pipeline)
                sockfig[name] = {"median_us": med * 1e6, "p99_us": p99 * 1e6, "rate": rate}
        res["flux_version"] = subprocess.run([inst.flux, "version"], env=inst.env,
                                             capture_output=True, text=True
                                             ).stdout.split("\n")[0].split()[-1:]
    finally:
        inst.close()
    load1 = os.getloadavg()
    res["load"] = [round(load0[0], 2), round(load1[0], 2)]
    print(f"flux-annot through the Flux broker: flux start --test-size={max(RANKS) + 1}, "
          f"{args.rtt} round trips, {args.pipeline} pipelined per figure; "
          f"load average {load0[0]:.1f} -> {load1[0]:.1f}")
    for rank in RANKS:
        fig = res["ranks"][str(rank)]
        print(f"from rank {rank}{' (where the service and the job manager are)' if rank == 0 else ' (a leaf: through the overlay)'}:")
        for name in fig:
            f = fig[name]
            print(f"  {name:28} median {f['median_us']:7.0f} µs  p99 {f['p99_us']:7.0f} µs  "
                  f"pipelined {f['rate']:9,.0f}/s  (the mirror's CPU: {f['mirror_cpu_us']:5.0f} µs "
                  "per round trip)")
        ratios = {}
        for ours, theirs in (("annot.getattr", "job-manager.getattr"),
                             ("annot.memo volatile", "job-manager.memo volatile"),
                             ("annot.memo", "job-manager.memo")):
            rt = fig[ours]["median_us"] / fig[theirs]["median_us"]
            rr = fig[theirs]["rate"] / fig[ours]["rate"]
            ratios[ours] = {"round_trip": rt, "rate": rr}
            verdict = "ok" if rt <= 1.2 else f"MISSED (+{(rt - 1) * 100:.0f}%)"
            print(f"  ratio {ours} / {theirs}: round trip x{rt:.2f} (target <= 1.20: {verdict}), "
                  f"pipelined rate x{1 / rr:.2f}")
        fig["ratios"] = ratios
    print("our Unix socket (same service, same run):")
    for name, f in res["socket"].items():
        print(f"  {name:28} median {f['median_us']:7.0f} µs  p99 {f['p99_us']:7.0f} µs  "
              f"pipelined {f['rate']:9,.0f}/s")
    if args.json:
        print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
