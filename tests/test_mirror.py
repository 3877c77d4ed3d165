"""The Flux mirror without a broker: MirrorService fed by journals recorded
from a real Flux instance (tests/data/flux_journal_*.jsonl, see
tests/data/README.md) and by hand-made journal responses."""

import contextlib
import errno
import json
import os
import subprocess
import sys
import time

import pytest

from flux_annot import Cred
from flux_annot.errors import AnnotError
from flux_annot.views.listing import JobFormat
from flux_annot.flux.mirror import INVALIDATED, SENTINEL_ID, VANISHED, ListSource, MirrorService

DATA = os.path.join(os.path.dirname(__file__), "data")
LIVE = os.path.join(DATA, "flux_journal_live.jsonl")
HISTORY = os.path.join(DATA, "flux_journal_history.jsonl")
OWNER = Cred(os.getuid(), owner=True)

# The jobs of the recorded instance and what `flux jobs -a` showed at the
# end of the recording (id, state, annotations).
A, B, C, D, E = 26893877248, 29913776128, 32715571200, 35433480192, 38050725888
FLUX_VIEW = {
    A: ("SCHED", {"user": {"v": 1}}),  # held; memo note=held then note=null; volatile v=1
    B: ("INACTIVE", {"sched": {"resource_summary": "rank0/core0"}}),  # ran
    C: (
        "INACTIVE",
        {"sched": {"resource_summary": "rank0/core1"}, "user": {"x": 1}},
    ),  # canceled running
    D: ("INACTIVE", None),  # held, canceled
    E: (
        "RUN",
        {"sched": {"resource_summary": "rank0/core0"}, "user": {"run": True}},
    ),  # volatile memo
}


def lines(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def view(svc):
    return {j["id"]: (j["state"], j["annotations"]) for j in svc.list(OWNER)}


def fed(path=LIVE, **kw):
    svc = MirrorService(ListSource.from_file(path), **kw)
    svc.pump(0)
    svc.flush()
    return svc


def test_live_journal_gives_what_flux_jobs_showed():
    svc = fed()
    assert view(svc) == FLUX_VIEW
    st = svc.stats()
    assert st["jobs"]["SCHED"] == 1 and st["jobs"]["RUN"] == 1 and st["jobs"]["INACTIVE"] == 3
    assert st["flux"]["mirror"] is True and st["flux"]["connected"] is True
    assert st["flux"]["last_event"]["name"] == "clean"
    assert st["flux"]["uri"] == "recorded://journal"


def test_every_rfc21_state_with_flux_timestamps():
    src = ListSource.from_file(LIVE)
    svc = MirrorService(src)
    sub = svc.subscribe(OWNER, topics=["job-state"])
    svc.pump(0)
    svc.flush()
    seen = [t for b in sub for t in b["transitions"] if t[0] == B]
    assert [t[1] for t in seen] == [
        "NEW",
        "DEPEND",
        "PRIORITY",
        "SCHED",
        "RUN",
        "CLEANUP",
        "INACTIVE",
    ]
    stamps = {
        (resp["id"], e["name"]): e["timestamp"] for resp in lines(LIVE) for e in resp["events"]
    }
    names = ["submit", "validate", "depend", "priority", "alloc", "finish", "clean"]
    assert [t[2] for t in seen] == [stamps[(B, n)] for n in names]


def test_allocation_annotations_and_run_share_a_batch_whatever_the_timing():
    """Each journal response arrives alone and the server's timer closes the
    batch after each one: the annotations that came with the alloc are
    still published in the batch of the RUN transition."""
    src = ListSource([])
    svc = MirrorService(src, batch_window=0.001)
    clock = [0.0]
    svc.clock = lambda: clock[0]  # held annotations age only when we say
    sub = svc.subscribe(OWNER)
    for resp in lines(LIVE):
        src.push(resp)
        svc.pump(0)
        svc.flush_live()
    assert svc.holding() is False  # every alloc came right behind its annotations
    batches = list(sub)
    ran = 0
    for b in batches:
        anns = dict(b.get("annotations", ()))
        for jobid, state, _ts in b.get("transitions", ()):
            if state == "RUN":
                ran += 1
                assert "resource_summary" in anns[jobid]["sched"], b
    assert ran == 3
    assert view(svc) == FLUX_VIEW


def test_annotations_without_an_alloc_are_released_when_the_journal_moves_on():
    """A scheduler's note on a pending job (no alloc behind it) is published
    with the next event of another job, or after HOLD_IDLE without any."""
    src = ListSource(lines(LIVE))
    svc = MirrorService(src)
    clock = [0.0]
    svc.clock = lambda: clock[0]
    svc.pump(0)
    svc.flush()
    sub = svc.subscribe(OWNER, topics=["job-annotations"])
    note = {"annotations": {"sched": {"t_estimate": 5.0}, "user": {"v": 1}}}
    src.push({"id": A, "events": [{"timestamp": 3e9, "name": "annotations", "context": note}]})
    svc.pump(0)
    svc.flush_live()
    assert svc.holding() and list(sub) == []
    clock[0] += 0.05  # five windows: still waiting for an alloc
    svc.pump(0)
    svc.flush_live()
    assert svc.holding() and list(sub) == []
    clock[0] += 1.0
    svc.pump(0)
    svc.flush_live()
    assert not svc.holding()
    assert [b["annotations"] for b in sub] == [[[A, note["annotations"]]]]
    # Another job's event releases it at once.
    note2 = {"annotations": {"sched": {"t_estimate": 6.0}, "user": {"v": 1}}}
    src.push({"id": A, "events": [{"timestamp": 3e9 + 1, "name": "annotations", "context": note2}]})
    src.push({"id": E, "events": [{"timestamp": 3e9 + 2, "name": "memo", "context": {"z": 1}}]})
    svc.pump(0)
    assert not svc.holding()
    svc.flush_live()
    assert dict(next(iter(sub))["annotations"])[A] == note2["annotations"]


def test_history_replay_gives_what_flux_holds():
    """A mirror started after the fact reads Flux's history, which is Flux's
    in-memory eventlog. Its job manager shares objects between that log and
    the live annotations: an `alloc` entry's snapshot IS the job's tree
    (E's volatile memo shows in it), and the first memo's object IS the
    `user` namespace (A's {"note":"held"} entry now reads {"v":1}). So the
    history gives today's trees, volatile notes included: the mirror only
    follows what the journal says."""
    svc = fed(HISTORY)
    assert view(svc) == FLUX_VIEW
    memos = [
        e["context"]
        for r in lines(HISTORY)
        if r["id"] == A
        for e in r["events"]
        if e["name"] == "memo"
    ]
    assert memos == [{"v": 1}, {"note": None}]


def test_unchanged_tree_is_not_published():
    src = ListSource([{"id": SENTINEL_ID, "events": []}] + lines(LIVE)[1:])
    svc = MirrorService(src)
    svc.pump(0)
    svc.flush()
    sub = svc.subscribe(OWNER, topics=["job-annotations"])
    same = {"timestamp": time.time(), "name": "memo", "context": {"run": True}}
    src.push({"id": E, "events": [same]})
    svc.pump(0)
    assert svc.flush() is not None  # the eventlog entry is a batch...
    assert list(sub) == []  # ...with nothing for annotation subscribers


def test_restart_of_the_mirror_keeps_seq_and_since(tmp_path):
    store = tmp_path / "m.db"
    live = lines(LIVE)
    cut = 22  # before the cancellations and the last memos
    src = ListSource(live[:10])
    svc = MirrorService(src, store=store)
    svc.pump(0)
    svc.flush()
    for resp in live[10:cut]:
        src.push(resp)
    svc.pump(0)
    svc.flush()
    before = view(svc)
    last = svc.hub.last_seq
    assert last > 1
    svc.close()

    # Flux went on without the mirror; the new mirror reads the whole history.
    svc2 = MirrorService(ListSource(lines(HISTORY)), store=store)
    assert view(svc2) == before  # what it has, before Flux answers
    with pytest.raises(AnnotError) as exc:
        svc2.subscribe(OWNER, since=last - 1)
    assert exc.value.errno == errno.EOVERFLOW
    sub = svc2.subscribe(OWNER, since=last, delta=True)
    svc2.pump(0)
    svc2.flush()
    # Volatile notes it had stay (Flux keeps them too); the rest is Flux's.
    expect = dict(FLUX_VIEW)
    assert view(svc2) == expect
    # Applying the deltas received since `last` to the old state gives the new.
    from flux_annot import merge

    state = {j: dict(s=st, a=ann) for j, (st, ann) in before.items()}
    seqs = []
    for b in sub:
        seqs.append(b["seq"])
        for jobid, st, _ts in b.get("transitions", ()):
            state.setdefault(jobid, {"a": None})["s"] = st
        for jobid, patch in b.get("annotations", ()):
            cur = state.setdefault(jobid, {"a": None, "s": None})
            cur["a"] = merge(cur["a"], patch) if patch is not None else None
    assert seqs and seqs[0] == last + 1
    assert {j: (v["s"], v["a"]) for j, v in state.items()} == expect
    svc2.close()
    # The eventlog (Flux's events under their names) replays to the same trees.
    from flux_annot.core import JobTable
    from flux_annot.service.replay import permissive_limits, restore_from_eventlog
    from flux_annot.service.store import Store

    st = Store(store)
    table = JobTable(permissive_limits())
    restore_from_eventlog(st, table)
    st.close()
    replayed = {j: json.loads(table.get(j)) if table.get(j) else None for j in expect}
    assert replayed == {j: ann for j, (_s, ann) in expect.items()}


def test_flux_restart_vanished_jobs_become_inactive():
    src = ListSource.from_file(LIVE)
    svc = MirrorService(src)
    svc.pump(0)
    svc.flush()
    src.disconnect("broker gone")
    svc.pump(0)
    st = svc.stats()["flux"]
    assert st["connected"] is False and st["reason"] == "broker gone"
    assert view(svc) == FLUX_VIEW  # keeps serving what it has
    # A new instance: none of the old jobs, one new job.
    new = 99 << 24
    src.reconnect(
        [
            {
                "id": new,
                "events": [
                    {"timestamp": 1.0, "name": "submit", "context": {"userid": 0}},
                    {"timestamp": 2.0, "name": "validate"},
                ],
            },
            {"id": -1, "events": []},
        ]
    )
    svc.pump(0)
    svc.flush()
    got = view(svc)
    assert got[new] == ("DEPEND", None)
    for jobid in (A, E):  # active when Flux went away: no longer stale
        assert got[jobid][0] == "INACTIVE"
        assert svc.get(OWNER, jobid)["exception"] == VANISHED
    assert got[E][1] == FLUX_VIEW[E][1]  # a running job keeps its allocation's notes
    for jobid in (B, C, D):
        assert got[jobid] == FLUX_VIEW[jobid]
    assert svc.stats()["flux"]["vanished"] == 2


def _submitted(jobid, ts):
    return {"id": jobid, "events": [{"timestamp": ts, "name": "submit", "context": {"userid": 0}}]}


def _invalidated(jobid, ts):
    return {"id": jobid, "events": [{"timestamp": ts, "name": "invalidate", "context": {}}]}


@pytest.mark.parametrize("published_first", [False, True])
def test_a_job_flux_invalidates_ends_inactive_and_the_stream_goes_on(tmp_path, published_first):
    """Flux posts `invalidate` right behind the `submit` of a job a plugin
    rejects, in the same batch here or not (timing). Either way the job
    ends INACTIVE with a note, so a subscriber's picture equals `list`, and
    batches still close (a forgotten job in the open batch used to stop
    every later batch from being stored or published: KeyError)."""
    src = ListSource([{"id": SENTINEL_ID, "events": []}])
    svc = MirrorService(src, store=tmp_path / "m.db")
    svc.pump(0)
    svc.flush()
    sub = svc.subscribe(OWNER, delta=True)
    src.push(_submitted(77, 1.0))
    if published_first:
        svc.pump(0)
        svc.flush()
    src.push(_invalidated(77, 1.1))
    src.push(_submitted(78, 2.0))
    svc.pump(0)
    svc.flush()
    states = {}
    for batch in sub:
        for jobid, state, _ts in batch.get("transitions", ()):
            states[jobid] = state
    listed = {j["id"]: j["state"] for j in svc.list(OWNER)}
    assert states == listed == {77: "INACTIVE", 78: "NEW"}
    assert svc.get(OWNER, 77)["exception"] == INVALIDATED
    assert svc.stats()["jobs"]["NEW"] == 1 and svc.stats()["jobs"]["INACTIVE"] == 1
    svc.close()
    # what was stored is what was published
    again = MirrorService(ListSource([]), store=tmp_path / "m.db")
    assert {j["id"]: j["state"] for j in again.list(OWNER)} == listed
    again.close()


def test_flux_restart_event_rebuilds_from_committed_events():
    src = ListSource.from_file(LIVE)
    svc = MirrorService(src)
    svc.pump(0)
    svc.flush()
    history = lines(HISTORY)
    for resp in history:
        if resp["id"] == A:
            # After its restart Flux reads the eventlog from its KVS, where
            # the memos are as they were committed.
            memos = iter([{"note": "held"}, {"note": None}])
            for e in resp["events"]:
                if e["name"] == "memo":
                    e["context"] = next(memos)
            resp["events"].append({"timestamp": 2e9, "name": "flux-restart"})
    src.disconnect()
    src.reconnect(history)
    svc.pump(0)
    svc.flush()
    # Flux rebuilt A from its committed memos (note=held, note=null): nothing;
    # the volatile v=1 is gone from Flux, and so from the mirror.
    assert view(svc)[A] == ("PRIORITY", None)


# -- writes ----------------------------------------------------------------------

GUEST = 1000


def guest_journal():
    """Two jobs: 1 of the owner, 2 of the guest, both pending."""
    out = []
    for jobid, uid in ((1 << 24, os.getuid()), (2 << 24, GUEST)):
        out.append(
            {
                "id": jobid,
                "events": [
                    {"timestamp": 10.0 + jobid, "name": "submit", "context": {"userid": uid}},
                    {"timestamp": 11.0 + jobid, "name": "validate"},
                ],
            }
        )
    out.append({"id": -1, "events": []})
    return out


def test_memo_goes_to_flux_and_is_there_when_the_call_returns():
    src = ListSource(guest_journal())
    svc = MirrorService(src)
    svc.pump(0)
    svc.memo(OWNER, 1 << 24, {"k": "v"})
    assert src.sent == [(1 << 24, {"k": "v"}, False)]
    assert svc.get(OWNER, 1 << 24)["annotations"] == {"user": {"k": "v"}}
    svc.annotate(OWNER, 1 << 24, {"user": {"k": None, "j": 1}}, volatile=True)
    assert src.sent[-1] == (1 << 24, {"k": None, "j": 1}, True)
    assert svc.get(OWNER, 1 << 24)["annotations"] == {"user": {"j": 1}}


def test_guest_memo_of_own_job_passes_limits_then_flux():
    src = ListSource(guest_journal())
    svc = MirrorService(src)
    svc.pump(0)
    guest = Cred(GUEST)
    svc.memo(guest, 2 << 24, {"mine": 1})
    assert svc.get(guest, 2 << 24)["annotations"] == {"user": {"mine": 1}}
    assert src.sent == [(2 << 24, {"mine": 1}, False)]


@pytest.mark.parametrize(
    "jobid, memo, err, words",
    [
        (2 << 24, {"big": "x" * 5000}, errno.E2BIG, "4096 bytes"),
        (1 << 24, {"x": 1}, errno.EPERM, "own jobs"),
        (2 << 24, {"a.b": 1}, errno.EINVAL, "."),
        (3 << 24, {"x": 1}, errno.ENOENT, "unknown job"),
    ],
)
def test_refused_guest_memo_never_reaches_flux(jobid, memo, err, words):
    src = ListSource(guest_journal())
    svc = MirrorService(src)
    svc.pump(0)
    before = view(svc)
    with pytest.raises(AnnotError) as exc:
        svc.memo(Cred(GUEST), jobid, memo)
    assert exc.value.errno == err and words in str(exc.value)
    assert src.sent == []
    assert view(svc) == before


def test_guest_quota_counts_what_flux_holds():
    src = ListSource(guest_journal())
    svc = MirrorService(src, config={"limits": {"guest_user_total_bytes": 100}})
    svc.pump(0)
    svc.memo(Cred(GUEST), 2 << 24, {"a": "x" * 60})
    with pytest.raises(AnnotError) as exc:
        svc.memo(Cred(GUEST), 2 << 24, {"b": "y" * 60})
    assert exc.value.errno == errno.EDQUOT
    assert len(src.sent) == 1


@pytest.mark.parametrize(
    "call, words",
    [
        (lambda s: s.submit(5, 0), "job submission"),
        (lambda s: s.state(1 << 24, "INACTIVE"), "job states"),
        (lambda s: s.alloc_response({"id": 1 << 24, "type": 0}), "allocations"),
        (lambda s: s.annotate(OWNER, 1 << 24, {"sched": {"x": 1}}), "'sched' namespace"),
        (lambda s: s.annotate(OWNER, 1 << 24, {"workflow": {"x": 1}}), "'workflow' namespace"),
    ],
)
def test_what_flux_owns_is_eperm(call, words):
    src = ListSource(guest_journal())
    svc = MirrorService(src)
    svc.pump(0)
    with pytest.raises(AnnotError) as exc:
        call(svc)
    assert exc.value.errno == errno.EPERM
    assert "Flux instance owns" in str(exc.value) and words in str(exc.value)
    assert src.sent == []
    assert view(svc) == {1 << 24: ("DEPEND", None), 2 << 24: ("DEPEND", None)}


def test_flux_refusal_comes_back_as_is():
    src = ListSource(lines(LIVE))
    svc = MirrorService(src)
    svc.pump(0)
    src._inactive.add(A)  # Flux thinks so (a race the mirror cannot see yet)
    with pytest.raises(AnnotError) as exc:
        svc.memo(OWNER, A, {"x": 1})
    assert exc.value.errno == errno.ENOENT and "inactive" in str(exc.value)
    assert svc.stats()["flux"]["memos_refused_by_flux"] == 1


def test_odd_keys_from_flux_are_held_and_listed():
    """Flux takes any key; `flux jobs` breaks on `a-b`; the mirror lists it."""
    src = ListSource(lines(LIVE))
    svc = MirrorService(src)
    svc.pump(0)
    src.push(
        {
            "id": A,
            "events": [
                {"timestamp": 3e9, "name": "memo", "context": {"a-b": 1, "a.b": 2, "": 3}},
            ],
        }
    )
    svc.pump(0)
    svc.flush()
    assert svc.get(OWNER, A)["annotations"]["user"] == {"v": 1, "a-b": 1, "a.b": 2, "": 3}
    fmt = JobFormat("{id.dec} {state} {user.a-b}")
    out = [fmt.format(j) for j in svc.list(OWNER)]
    assert f"{A} SCHED 1" in out and len(out) == 5


def test_serve_flux_without_the_bindings_says_what_is_missing(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "flux_annot",
            "serve",
            "--flux-uri",
            "local:///nowhere",
            "--socket",
            str(tmp_path / "s"),
            "--store",
            ":memory:",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert "Flux's Python bindings" in lines[0] and "PYTHONPATH" in lines[0]
    assert "flux python" in lines[0]
    assert not (tmp_path / "s").exists()


@contextlib.contextmanager
def mirror_server(tmp_path, svc):
    """A MirrorServer of `svc` on a socket in tmp_path, on its own thread
    and loop; yields the socket path."""
    import asyncio
    import threading

    from flux_annot.flux.mirror_server import MirrorServer
    from flux_annot.wire.server import serve

    path = str(tmp_path / "s")
    started = threading.Event()
    holder = {}

    def run():
        async def main():
            holder["loop"] = asyncio.get_running_loop()
            holder["stop"] = asyncio.Event()
            await serve(
                path,
                service=svc,
                server_class=MirrorServer,
                ready=started,
                stop=holder["stop"],
                handle_signals=False,
            )

        asyncio.run(main())

    t = threading.Thread(target=run, daemon=True)
    t.start()
    assert started.wait(30)
    try:
        yield path
    finally:
        holder["loop"].call_soon_threadsafe(holder["stop"].set)
        t.join(30)


def test_the_socket_server_of_a_mirror(tmp_path):
    """MirrorServer with a recorded journal: the source wakes the loop, a
    memo is answered once back, what Flux owns is EPERM on the wire."""
    from flux_annot.wire.client import Client

    src = ListSource(guest_journal())
    svc = MirrorService(src)
    with mirror_server(tmp_path, svc) as path, Client(path) as c:
        deadline = time.monotonic() + 30
        while not c.stats()["flux"]["synced"] and time.monotonic() < deadline:
            time.sleep(0.01)
        c.memo(1 << 24, {"k": 1})
        assert c.get(1 << 24)["annotations"] == {"user": {"k": 1}}
        c.annotate(1 << 24, {"user": {"k": None, "n": 2}})
        assert c.get(1 << 24)["annotations"] == {"user": {"n": 2}}
        for call in (
            lambda: c.submit(7, 0),
            lambda: c.state(1 << 24, "INACTIVE"),
            lambda: c.annotate(1 << 24, {"sched": {"x": 1}}),
        ):
            with pytest.raises(AnnotError) as exc:
                call()
            assert exc.value.errno == errno.EPERM and "Flux instance owns" in str(exc.value)
        with pytest.raises(AnnotError) as exc:
            c.memo(3 << 24, {"x": 1})
        assert exc.value.errno == errno.ENOENT
        # A live event pushed by the source reaches a subscriber.
        events = c.events(topics=["job-state"])
        src.push({"id": 2 << 24, "events": [{"timestamp": 99.0, "name": "depend"}]})
        batch = next(iter(events))
        assert batch["transitions"] == [[2 << 24, "PRIORITY", 99.0]]
    assert len(src.sent) == 2


def test_a_burst_of_journal_events_is_published_in_slices_in_order(tmp_path):
    """A burst the source queued all at once: the server applies it a
    slice at a time (PUMP_ITEMS journal responses), each slice's batch
    published before the next is applied, every job in journal order."""
    from flux_annot.wire.client import Client
    from flux_annot.flux.mirror_server import PUMP_ITEMS

    src = ListSource(guest_journal())
    svc = MirrorService(src, batch_window=0)
    n = 2 * PUMP_ITEMS + 5
    with mirror_server(tmp_path, svc) as path, Client(path) as c:
        deadline = time.monotonic() + 30
        while not c.stats()["flux"]["synced"] and time.monotonic() < deadline:
            time.sleep(0.01)
        events = iter(c.events(topics=["job-state"], snapshot=True))
        assert next(events)["snapshot"] is True  # subscribed
        with src._cond:  # the loop's poll waits until all n are queued
            for i in range(n):
                src.push({"id": (10 + i) << 24, "events": [
                    {"timestamp": 100.0 + i, "name": "submit", "context": {"userid": 0}}]})
        seen, sizes = [], []
        for batch in events:
            sizes.append(len(batch["transitions"]))
            seen.extend(jobid for jobid, _state, _ts in batch["transitions"])
            if len(seen) >= n:
                break
    assert seen == [(10 + i) << 24 for i in range(n)]
    assert max(sizes) <= PUMP_ITEMS and len(sizes) >= 3


def test_a_memo_in_flight_when_flux_goes_away_is_answered():
    src = ListSource(guest_journal())
    svc = MirrorService(src)
    svc.pump(0)
    answers = []
    src.send_memo = lambda *a: None  # sent; Flux never answers
    svc.send_memo(1 << 24, {"x": 1}, False, lambda e, s: answers.append((e, s)))
    assert answers == []
    src.disconnect("broker gone")
    svc.pump(0)
    assert answers and answers[0][0] == errno.EIO and "may or may not" in answers[0][1]
    with pytest.raises(AnnotError) as exc:  # and while it is away
        svc.memo(OWNER, 1 << 24, {"x": 1})
    assert exc.value.errno == errno.EIO and "not reachable" in str(exc.value)


def test_replay_of_annotations_entries():
    """The store's fold of a batch (replay.durable_trees) treats a mirror's
    `annotations` entry as the whole tree, and not as an allocation."""
    from flux_annot.service.replay import durable_trees

    out = durable_trees(
        {7: (b'{"user":{"old":1}}', False)},
        {
            7: [
                ("annotations", '{"annotations":{"sched":{"t":1},"user":{"k":2}}}'),
                ("memo", '{"m":3}'),
                ("exception", '{"type":"cancel","severity":0,"note":""}'),
            ],
            8: [("annotations", '{"annotations":null}')],
        },
    )
    tree, user_bytes, allocated = out[7]
    # not allocated: the exception then discards `sched`, as for a pending job
    assert json.loads(tree) == {"user": {"k": 2, "m": 3}}
    assert user_bytes == len('{"k":2,"m":3}') and allocated is False
    assert out[8] == (None, 0, False)
