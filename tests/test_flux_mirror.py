"""`flux-annotate serve --flux` against a real Flux instance (docs/flux.md):
`flux start --test-size=1` with sched-simple, real `flux submit`,
`flux job memo`, `flux cancel`, compared with Flux's own `flux jobs`.

Needs $FLUX_ANNOT_TEST_FLUX_PREFIX (set by .ci/run; see tests/fluxinst.py).
"""

import errno
import json
import sys
import time

import pytest

from flux_annot.errors import AnnotError
from fluxinst import FluxInstance, Mirror, flux_prefix, flux_pythonpath, submit, wait_for
from serverproc import NOBODY, is_root, run_as


@pytest.fixture
def inst():
    i = FluxInstance(flux_prefix()).start()
    yield i
    i.cleanup()


@pytest.fixture
def mirror(inst, tmp_path):
    m = Mirror(inst, tmp_path / "mirror.db").start()
    m.wait_synced()
    yield m
    m.cleanup()


def flux_view(inst):
    """What Flux shows: {id: (userid, state, annotations, exception note)}."""
    out = {}
    for jobid, j in inst.jobs().items():
        exc = j.get("exception") or {}
        # `flux jobs --json` shows no annotations as {} (or leaves the key out)
        ann = j.get("annotations") or None
        out[jobid] = (j["userid"], j["state"], ann, exc.get("note") or None)
    return out


def mirror_view(m):
    with m.client() as c:
        jobs = c.list()
    return {j["id"]: (j["userid"], j["state"], j["annotations"], j.get("exception")) for j in jobs}


def test_every_job_as_flux_shows_it(inst, mirror):
    held = [submit(inst, "--urgency=0", "sleep", "300") for _ in range(2)]
    quick = [submit(inst, "sleep", "0.1") for _ in range(2)]
    running = submit(inst, "sleep", "300")
    cancel_running = submit(inst, "sleep", "300")
    cancel_pending = submit(inst, "--urgency=0", "sleep", "300")
    inst.flux("job", "memo", str(held[0]), "note=held", "n=1")
    inst.flux("job", "memo", "--volatile", str(held[1]), "v=1")
    inst.flux("job", "memo", "--volatile", str(running), "progress=0.5")
    inst.flux("job", "memo", str(running), 'deep={"a":{"b":[1,2]}}')
    inst.flux("job", "memo", str(held[0]), "n=null")
    wait_for("the jobs to start", lambda: inst.jobs()[cancel_running]["state"] == "RUN")
    inst.flux("cancel", "-m", "stopped by the test", str(cancel_running))
    inst.flux("cancel", str(cancel_pending))
    jobs = held + quick + [running, cancel_running, cancel_pending]

    def settled():
        f = flux_view(inst)
        done = all(f[j][1] == "INACTIVE" for j in quick + [cancel_running, cancel_pending])
        return done and f == mirror_view(mirror)

    wait_for("the mirror to show what `flux jobs -a` shows", settled)
    view = mirror_view(mirror)
    assert set(view) == set(jobs)
    assert view[held[0]][1:3] == ("SCHED", {"user": {"note": "held"}})
    assert view[running][2]["sched"]["resource_summary"].startswith("rank0/core")
    assert view[running][2]["user"] == {"progress": 0.5, "deep": {"a": {"b": [1, 2]}}}
    assert view[cancel_running][1:] == ("INACTIVE", view[cancel_running][2], "stopped by the test")
    # The CLI shows the same, job by job.
    for jobid in jobs:
        got = json.loads(mirror.cli("get", "--job", str(jobid)).stdout)
        assert (got["state"], got["annotations"]) == view[jobid][1:3]
    st = mirror.stats()
    assert st["flux"]["mirror"] and st["flux"]["uri"] == inst.uri
    assert st["flux"]["connected"] and st["flux"]["last_event"]["name"]
    assert st["flux"]["lag_ms"]["samples"] > 0
    assert st["jobs"]["SCHED"] == 2 and st["jobs"]["RUN"] == 1


def test_a_memo_key_a_b_breaks_flux_jobs_not_the_mirror(inst, mirror):
    jobid = submit(inst, "--urgency=0", "sleep", "300")
    inst.flux("job", "memo", str(jobid), "a-b=1")
    broken = inst.flux("jobs", "-a", check=False)
    assert broken.returncode != 0 and "a-b" in broken.stderr
    wait_for(
        "the memo in the mirror",
        lambda: (mirror_view(mirror).get(jobid) or (0, 0, None))[2] == {"user": {"a-b": 1}},
    )
    out = mirror.cli("list", "-a", "-o", "{id.dec} {state} {user.a-b}").stdout.split("\n")
    assert f"{jobid} SCHED 1" in out


def test_memo_through_the_mirror_reaches_flux(inst, mirror):
    jobid = submit(inst, "--urgency=0", "sleep", "300")
    mirror.wait_synced()
    wait_for("the job in the mirror", lambda: jobid in mirror_view(mirror))
    mirror.cli("memo", str(jobid), "via=mirror", "n=2")
    # Visible at once: the reply came after the journal brought it back.
    got = json.loads(mirror.cli("get", str(jobid)).stdout)
    assert got == {"user": {"via": "mirror", "n": 2}}
    assert inst.jobs()[jobid]["annotations"] == {"user": {"via": "mirror", "n": 2}}
    # What Flux owns is refused, with the reason.
    r = mirror.cli("set", str(jobid), "sched.x=1", check=False)
    assert r.returncode == 1 and "Flux instance owns" in r.stderr
    r = mirror.cli("submit", "123", check=False)
    assert r.returncode == 1 and "Flux instance owns job submission" in r.stderr
    assert inst.jobs()[jobid]["annotations"] == {"user": {"via": "mirror", "n": 2}}


@pytest.mark.skipif(not is_root(), reason="dropping to another uid (nobody) needs root")
def test_guest_memos_refused_never_reach_flux(inst, mirror):
    jobid = submit(inst, "--urgency=0", "sleep", "300")
    wait_for("the job in the mirror", lambda: jobid in mirror_view(mirror))
    sent = mirror.stats()["flux"]["memos_sent"]
    path = mirror.socket

    def guest():
        from flux_annot.wire.client import Client

        out = {}
        with Client(path) as g:
            for name, memo in (("other", {"x": 1}), ("big", {"x": "y" * 5000})):
                try:
                    g.memo(jobid, memo)
                    out[name] = "ok"
                except AnnotError as e:
                    out[name] = [e.errno, str(e)]
            out["view"] = g.get(jobid)["annotations"]
        return out

    r = run_as(NOBODY, guest)
    assert "value" in r, r
    v = r["value"]
    assert v["other"][0] == errno.EPERM and "own jobs" in v["other"][1]
    assert v["big"][0] == errno.E2BIG
    assert v["view"] is None
    assert mirror.stats()["flux"]["memos_sent"] == sent
    events = inst.flux("job", "eventlog", str(jobid)).stdout
    assert "memo" not in events
    assert not inst.jobs()[jobid].get("annotations")


def test_since_across_a_restart_of_the_mirror(inst, tmp_path):
    store = tmp_path / "m.db"
    m = Mirror(inst, store).start()
    try:
        m.wait_synced()
        first = submit(inst, "--urgency=0", "sleep", "300")
        wait_for("the job in the mirror", lambda: first in mirror_view(m))
        last = m.stats()["seq"]
        assert m.stop() == 0
        # Flux goes on while the mirror is away.
        second = submit(inst, "--urgency=0", "sleep", "300")
        inst.flux("job", "memo", str(first), "when=away")
        m.start()
        m.wait_synced()
        with m.client() as c:
            with pytest.raises(AnnotError) as exc:
                next(iter(c.events(since=last - 1)))
            assert exc.value.errno == errno.EOVERFLOW
        with m.client() as c:
            seen = {}
            seqs = []
            for batch in c.events(since=last):
                seqs.append(batch["seq"])
                for jobid, tree in batch.get("annotations", ()):
                    seen[jobid] = tree
                for jobid, state, _ts in batch.get("transitions", ()):
                    seen.setdefault(("state", jobid), state)
                if first in seen and ("state", second) in seen:
                    break
        assert seqs[0] == last + 1  # no number reused, none skipped
        assert seen[first] == {"user": {"when": "away"}}
        assert seen[("state", second)] == "NEW"
        assert mirror_view(m) == flux_view(inst)
    finally:
        m.cleanup()


def test_mirror_across_a_restart_of_flux(inst, tmp_path):
    m = Mirror(inst, tmp_path / "m.db").start()
    try:
        m.wait_synced()
        held = submit(inst, "--urgency=0", "sleep", "300")
        inst.flux("job", "memo", str(held), "keep=1")
        running = submit(inst, "sleep", "300")
        wait_for(
            "the jobs in the mirror",
            lambda: (
                (mirror_view(m).get(running) or (0, ""))[1] == "RUN"
                and (mirror_view(m).get(held) or (0, 0, None))[2] == {"user": {"keep": 1}}
            ),
        )
        inst.kill()  # gone at once: Flux cancels nothing
        st = wait_for(
            "the mirror to notice",
            lambda: (lambda s: s if not s["connected"] else None)(m.stats()["flux"]),
        )
        assert st["reason"]
        # It keeps serving what it has.
        assert mirror_view(m)[held][1:3] == ("SCHED", {"user": {"keep": 1}})
        # The instance comes back (same URI, none of the old jobs).
        inst.start()
        m.wait_synced()
        new = submit(inst, "sleep", "0.1")
        wait_for(
            "the new job in the mirror",
            lambda: (mirror_view(m).get(new) or (0, ""))[1] == "INACTIVE",
        )
        view = mirror_view(m)
        for jobid in (held, running):
            assert view[jobid][1] == "INACTIVE"
            assert "no longer known to the Flux instance" in view[jobid][3]
        assert m.stats()["flux"]["vanished"] == 2
        # And again: every loss is seen, every return resynchronises.
        inst.kill()
        wait_for("the mirror to notice again", lambda: not m.stats()["flux"]["connected"])
        inst.start()
        m.wait_synced()
        assert m.stats()["flux"]["disconnects"] == 2
        assert mirror_view(m)[new][1] == "INACTIVE"
    finally:
        m.cleanup()


@pytest.mark.skipif(not is_root(), reason="dropping to another uid (nobody) needs root")
def test_the_mirror_must_run_as_the_instance_owner():
    """`serve --flux` by another uid that Flux lets connect stops at start
    with a sentence (Flux would refuse it the journal)."""
    inst = FluxInstance(flux_prefix(), access_guests=True).start()
    try:
        # Import Flux's bindings here: the child, as nobody, may not be able
        # to read this Python's own files.
        sys.path.insert(0, flux_pythonpath(inst.prefix))
        try:
            from flux_annot.flux.flux_source import FluxJournal, load_flux

            load_flux()
            source = FluxJournal(inst.uri)
        finally:
            sys.path.pop(0)

        def as_guest():
            source.check_owner()
            return "started"

        r = run_as(NOBODY, as_guest)
        assert "exception" in r, r
        err, msg, _cls = r["exception"]
        assert err == errno.EPERM, r
        assert "must run as the owner of the Flux instance" in msg
        assert f"not as uid {NOBODY}" in msg
        assert source.check_owner() is None  # the owner passes
        source.close()
    finally:
        inst.cleanup()


def test_run_comes_with_its_allocation_annotations(inst, mirror):
    """Every RUN transition a subscriber sees is in the batch that carries
    the job's sched.resource_summary (Flux sends them as two messages)."""
    import threading

    batches = []
    stream_open = threading.Event()

    def follow():
        with mirror.client() as c:
            events = c.events()
            stream_open.set()
            try:
                for batch in events:
                    batches.append(batch)
            except AnnotError:
                pass  # the mirror stopped: ENODATA

    t = threading.Thread(target=follow, daemon=True)
    t.start()
    assert stream_open.wait(30)
    time.sleep(0.2)  # the subscription is registered before the first job
    jobs = [submit(inst, "sleep", "0") for _ in range(6)]

    def all_ran():
        runs = [tr[0] for b in list(batches) for tr in b.get("transitions", ()) if tr[1] == "RUN"]
        return set(jobs) <= set(runs)

    wait_for("every job's RUN in the stream", all_ran)
    for b in list(batches):
        anns = dict(b.get("annotations", ()))
        for jobid, state, _ts in b.get("transitions", ()):
            if state == "RUN" and jobid in jobs:
                assert anns[jobid]["sched"]["resource_summary"].startswith("rank0/core"), b
    mirror.stop()
    t.join(30)
