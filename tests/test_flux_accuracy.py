"""Estimate accuracy against a real scheduler that makes estimates
(docs/accuracy.md): Fluxion with queue-policy=conservative in a real
`flux start` instance declaring 4 cores, jobs whose -t limits are far
longer than they run (so the estimates move earlier as jobs end), seen
through the mirror. Needs FLUX_ANNOT_TEST_FLUX_PREFIX and
FLUX_ANNOT_TEST_FLUXION_PREFIX (.ci/run builds both)."""

import json
import sys

import pytest

from flux_annot.service.accuracy import summarize
from fluxinst import (
    FluxInstance,
    Mirror,
    flux_prefix,
    flux_pythonpath,
    fluxion_prefix,
    load_fluxion,
    resource_toml,
    submit,
    wait_for,
)


@pytest.fixture
def inst():
    fluxion = fluxion_prefix()
    i = FluxInstance(flux_prefix(), config_files={"resource.toml": resource_toml(4)}).start()
    try:
        load_fluxion(i, fluxion)
        yield i
    finally:
        i.cleanup()


@pytest.fixture
def mirror(inst, tmp_path):
    m = Mirror(inst, tmp_path / "mirror.db").start()
    m.wait_synced()
    yield m
    m.cleanup()


def test_fluxion_estimates_through_the_mirror(inst, mirror):
    # 8 one-core jobs of 2 s with 60 s limits on 4 cores: the second four
    # get reservations 60 s out and start ~2 s later; a 4-core job behind
    # them; one more cancelled while pending (it never starts).
    ids = inst.flux("submit", "--cc=1-8", "-n1", "-t", "60s", "sleep", "2").stdout.split()
    wide = submit(inst, "-n4", "-t", "40s", "sleep", "1")
    doomed = submit(inst, "-n4", "-t", "30s", "sleep", "1")

    def has_estimate():
        with mirror.client() as c:
            ann = c.get(doomed)["annotations"] or {}
        return "t_estimate" in ann.get("sched", {})

    wait_for("Fluxion's estimate of the last job", has_estimate, 60)
    inst.flux("cancel", str(doomed))
    inst.flux("job", "wait-event", "-t", "60", str(wide), "clean")

    def all_inactive():
        with mirror.client() as c:
            return all(j["state"] == "INACTIVE" for j in c.list())

    wait_for("the mirror to see every job end", all_inactive, 60)
    flux_jobs = inst.jobs()
    assert len(flux_jobs) == len(ids) + 2

    r = json.loads(mirror.cli("accuracy", "--json", "--jobs").stdout)
    records = {j["id"]: j for j in r["jobs"]}
    started = [j for j in records.values() if j["start"] is not None]
    # the jobs that waited had estimates: at least the second wave and the wide one
    assert len(started) >= 5, records
    assert r["jobs_started"] == len(started)
    assert r["jobs_never_started"] == 1 and records[doomed]["start"] is None
    # each started job's start is Flux's own t_run
    for j in started:
        assert j["start"] == pytest.approx(flux_jobs[j["id"]]["t_run"], abs=1e-6), j
    # the summary is what the per-job records give
    firsts = [j["start"] - j["first"]["t_estimate"] for j in started]
    lasts = [j["start"] - j["last"]["t_estimate"] for j in started]
    assert r["first"] == summarize(firsts)
    assert r["last"] == summarize(lasts)
    assert r["by_queue"]["default"]["jobs_started"] == len(started)
    # the first estimates were pessimistic: the jobs ahead ended long before
    # their limits, so every job started earlier than first estimated
    assert all(e < 0 for e in firsts), firsts
    assert r["first"]["bias"] < -5
    # and the estimates moved: some job had more than one
    assert any(j["estimates"] > 1 for j in started) or r["last"]["bias"] > r["first"]["bias"]
    # the table reads the same numbers
    text = mirror.cli("accuracy").stdout
    assert f"{r['jobs_started']} jobs started" in text
    st = mirror.stats()["accuracy"]
    assert st["jobs_started"] == r["jobs_started"] and st["last"] == r["last"]
    # the same object through the Flux broker: the service `annot` (SPEC §15)
    pp = flux_pythonpath(inst.prefix)
    if pp not in sys.path:
        sys.path.insert(0, pp)
    import flux

    h = flux.Flux(inst.uri)
    try:
        assert h.rpc("annot.accuracy", {"jobs": True}).get() == r
        with pytest.raises(OSError) as ei:
            h.rpc("annot.accuracy", {"by": "host"}).get()
        assert ei.value.errno == 22
    finally:
        del h
