"""The clients benchmark and its rows in the performance report
(bench/bench_clients.py, bench/report.py `client_rows`).

What a reader of bench/REPORT.md relies on: every client and anchor really
ran against a server and got the answers it asked for, each ratio is the
client's figure over its anchor's, and a row below its target says MISSED.
Small sizes only: the benchmark itself runs in `python bench/report.py`.
"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "bench"))

import bench_clients  # noqa: E402
import report  # noqa: E402


def test_bench_clients_runs_every_client_and_reports_each_target():
    res = bench_clients.run(jobs=50, rtt=200, requests=3000, window=64, inflight=100, repeat=1)
    rt, pr, ra = res["rtt"], res["rates"], res["ratios"]
    assert set(rt) == {"minimal_annotate", "client_annotate", "minimal_getattr", "client_get"}
    assert set(pr) == {"prebuilt", "client_pipelined", "async_gather", "async_workers"}
    for r in rt.values():
        assert 0 < r["median_us"] <= r["p99_us"] and r["client_us"] > 0 and r["server_us"] > 0
    for r in pr.values():
        assert r["rate"] > 0 and r["client_us"] > 0 and r["server_us"] > 0
    assert ra["annotate_rtt"] == rt["client_annotate"]["median_us"] / rt["minimal_annotate"][
        "median_us"]
    assert ra["async"] == pr["async_gather"]["rate"] / pr["prebuilt"]["rate"]

    m = {"clients": {"data": res}, "load": {"clients": (0.5, 0.7, 0.9)}}
    rows = []
    report.client_rows(m, rows)
    assert len(rows) == 4
    for line, key in zip(rows, ("annotate_rtt", "get_rtt", "pipelined", "async")):
        op, t = bench_clients.TARGETS[key]
        met = ra[key] <= t if op == "≤" else ra[key] >= t
        assert ("| met" in line) == met and ("**MISSED**" in line) == (not met), line

    # a ratio below its target is written as missed, with what the CPU shows
    res["ratios"]["pipelined"] = 0.5
    rows = []
    report.client_rows(m, rows)
    assert "**MISSED**" in rows[2] and "µs of CPU per request" in rows[2]
    rows = []
    report.client_rows({"clients": {"data": None, "error": "it broke"}, "load": {}}, rows)
    assert len(rows) == 4 and all("not run: it broke" in r for r in rows)
