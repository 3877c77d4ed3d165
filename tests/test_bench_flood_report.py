"""The flood benchmark and the §11 report (bench/bench_flood.py, bench/report.py).

What a reader of bench/REPORT.md relies on: the flood really is over the
limits and really comes from guests, and a row below its target is written
as missed (a met row is never claimed without the figure). Small sizes only:
the benchmark itself is run by `python bench/run.py --report`, not here.
"""

import json
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "bench"))

import bench_flood  # noqa: E402
import report  # noqa: E402


def _depth(v):
    if isinstance(v, dict):
        return 1 + max((_depth(x) for x in v.values()), default=0)
    if isinstance(v, list):
        return 1 + max((_depth(x) for x in v), default=0)
    return 0


@pytest.mark.parametrize("fallback", [False, True])
def test_flood_kinds_exceed_their_limits(fallback):
    own, other = 7, 8
    jobid, ann = bench_flood.guest_payload("payload", own, other, fallback)
    assert jobid == own
    assert len(json.dumps(ann, separators=(",", ":")).encode()) > 4096
    jobid, ann = bench_flood.guest_payload("deep", own, other, fallback)
    assert _depth(ann) > (64 if fallback else 8)
    jobid, ann = bench_flood.guest_payload("others", own, other, fallback)
    assert jobid == other and list(ann) == ["user"]
    jobid, ann = bench_flood.guest_payload("sched", own, other, fallback)
    assert list(ann) == ["sched"]
    with pytest.raises(ValueError):
        bench_flood.guest_payload("nice", own, other, fallback)


def test_small_flood_is_rejected_and_comes_from_guests():
    r = bench_flood.run(jobs=200, requests=2000, flooders=2, guest_window=128, ramp=0.05,
                        phase_timeout=60, rounds=2, guest_seconds=0.3, drain_seconds=60,
                        verbose=False)
    assert r["sched_error_replies"] == 0, r["sched_first_error"]
    assert not r["flooder_errors"]
    assert r["flooder_sent"] > 0 and r["flooder_replies"] == r["flooder_sent"]
    assert 0 not in r["flooder_errnums"], "a flood request was accepted"
    assert sum(r["rejected_all"].values()) >= r["flooder_replies"]
    if os.geteuid() == 0:
        assert r["guests_are_guests"] and r["guest_uids"] == [bench_flood.NOBODY]
    else:
        assert not r["guests_are_guests"]
    assert r["quiet1"]["rate"] > 0 and r["flood"]["rate"] > 0
    # alternating phases: every flooded one between two quiet ones, each compared
    assert len(r["quiet_phases"]) == 3 and len(r["flood_phases"]) == 2 and len(r["ratios"]) == 2
    assert r["guests_alone_rejected_per_s"] > 0


def _fake_measurements(good):
    f = 10.0 if good else 0.1
    core = {"njobs": 10000, "ncycles": 5, "ops": 62506, "wrong": [], "notes": [],
            "orjson": 100_000.0, "json": 50_000.0, "jansson": 40_000.0,
            "flux_percall": 100_000.0 * (10 if good else 1.5), "flux_bulk": 100_000.0 * f}
    mem = {"n": 10**6, "text_bytes": 96.0, "c_bytes": 150.0 if good else 300.0,
           "c_rss_bytes": 160.0 if good else 310.0, "py_bytes": 600.0}
    rpc = {"volatile": 60_000.0 if good else 10_000.0, "nonvolatile": 30_000.0 if good else 5_000.0,
           "rtt_us": 80.0 if good else 250.0, "rtt_p99_us": 300.0, "raw": "bench_rpc output"}
    phase = {"rate": 1.0, "wall": 1.0, "server_cpu": 0.9, "client_cpu": 0.1}
    flood = {
        "jobs": 10000, "requests": 100000, "window": 256, "store": "temp SQLite file",
        "guests_are_guests": True, "quiet1": phase, "flood": phase, "quiet2": phase,
        "quiet_rate": 50_000.0, "flood_rate": 45_000.0 if good else 10_000.0,
        "ratio": 0.9 if good else 0.2, "rss_before_kib": 30_000, "rss_peak_kib": 31_000,
        "rss_after_kib": 31_000 if good else 80_000, "rss_growth_mb": 1.0 if good else 50.0,
        "rss_peak_growth_mb": 1.0 if good else 50.0, "flood_wall": 2.0,
        "rejected": {"rate": 1000}, "rejected_per_s": {"rate": 500.0},
        "rejected_total_per_s": 500.0, "flooder_sent": 1000, "flooder_replies": 1000,
        "flooder_cpu": 0.1, "server_us_per_sched_request": 20.0,
        "server_us_per_guest_request": 10.0, "guest_share_of_server_cpu": 0.5,
    }
    enc = {"c_ms": 10.0 if good else 40.0, "orjson_ms": 30.0, "raw": "bench_events output"}
    load = {k: (1.0, 1.0) for k in ("core", "rpc", "flood", "enc")}
    return {"core": core, "mem": mem, "rpc": rpc, "flood": flood, "enc": enc, "load": load,
            "repeat": 3}


@pytest.mark.parametrize("good", [True, False])
def test_report_rows_state_met_or_missed(tmp_path, good):
    m = _fake_measurements(good)
    rows = report.build_rows(m)
    assert len(rows) == 10  # every §11 target: 3 core, memory, 3 RPC, 2 flood, encoding
    for r in rows:
        assert (" met |" in r) == good and ("**missed**" in r) != good, r
    info = report.machine()
    out = tmp_path / "REPORT.md"
    points = [dict(m["core"], njobs=n) for n in (10_000, 30_000)]
    report.write_report(out, info, m, rows, points, "matplotlib is not installed", 1.0, False)
    text = out.read_text()
    assert "No plot: matplotlib is not installed" in text
    assert f"{info['nproc']} CPUs" in text and info["python"] in text
    assert text.count("**missed**") == (0 if good else 10)
    assert "| 30,000 |" in text


def test_report_plot_draws_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    m = _fake_measurements(True)
    points = [dict(m["core"], njobs=n) for n in (10_000, 30_000, 100_000)]
    assert report.plot(points, tmp_path / "t.png") is None
    assert (tmp_path / "t.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
