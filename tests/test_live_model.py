"""The live model (flux_annot.views.live) against the service, in-process.

The service runs on a thread of its own (its own event loop, a real Unix
socket); the model follows it with `LiveThread`, as `flux-annotate top`
does. After any sequence of changes the model must hold exactly what
`list` returns; across a restart it resumes with `since` (no second
snapshot); when the service cannot resume it (EOVERFLOW: `since` older
than the backlog, or the model too slow) it re-reads and is right again.
"""

import asyncio
import errno
import os
import shutil
import tempfile
import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flux_annot import AnnotError, Client
from flux_annot.wire import server
from flux_annot.views.live import LiveModel, LiveThread

ME = os.getuid()
SENTINEL = 1  # a job every test annotates last, to know the model caught up


class ThreadServer:
    """`server.serve` on a background thread; stop() and start() again on
    the same store are a restart."""

    def __init__(self, store=":memory:", config=None):
        self.dir = tempfile.mkdtemp(prefix="fa-live-", dir="/tmp")
        self.path = os.path.join(self.dir, "socket")
        self.store = str(store)
        self.config = config
        self.thread = None

    def start(self):
        ready = threading.Event()
        box = {}

        def run():
            async def main():
                box["loop"] = asyncio.get_running_loop()
                box["stop"] = asyncio.Event()
                await server.serve(self.path, self.store, self.config, ready=ready,
                                   stop=box["stop"], handle_signals=False)

            try:
                asyncio.run(main())
            except BaseException as e:  # shown by start() if it never got ready
                box["error"] = e
                ready.set()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        assert ready.wait(30), "server did not start"
        assert "error" not in box, box.get("error")
        self.box = box
        return self

    def stop(self):
        if self.thread is None:
            return
        self.box["loop"].call_soon_threadsafe(self.box["stop"].set)
        self.thread.join(30)
        assert not self.thread.is_alive()
        self.thread = None

    def cleanup(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def wait_until(cond, what, timeout=30.0):
    """Poll cond() (a bound on the wait, not a timing assertion)."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.01)


def listed(c):
    return sorted(
        (j["id"], j["userid"], j["state"], j["annotations"]) for j in c.list()
    )


def modelled(model):
    with model.lock:
        return sorted((j.id, j.userid, j.state, j.annotations) for j in model.jobs.values())


_marks = iter(range(1, 1 << 30))


def sched(c, jid, ann):
    """The scheduler's volatile notes (an RFC 27 ANNOTATE response)."""
    c.alloc_response({"id": jid, "type": 1, "annotations": {"sched": ann}})


def catch_up(c, model):
    """Make one last change and wait until the model shows it."""
    n = next(_marks)
    c.annotate(SENTINEL, {"test": {"mark": n}}, volatile=True)

    def seen():
        with model.lock:
            job = model.jobs.get(SENTINEL)
            ann = job.annotations if job is not None else None
        return bool(ann) and ann.get("test", {}).get("mark") == n

    wait_until(seen, f"the model to see mark {n}")
    # a job first seen in a batch has userid None until the driver's getattr
    # comes back (it may share the mark's batch)
    wait_until(lambda: not model.unknown_userids(), "the owners of new jobs")


class Recorder:
    """Listener keeping the kinds and statuses the model reported."""

    def __init__(self, model):
        self.kinds = []
        self.statuses = []
        model.add_listener(self)

    def __call__(self, kind, payload):
        self.kinds.append(kind)
        if kind == "status":
            self.statuses.append(payload["status"])


@pytest.fixture(scope="module")
def srv():
    s = ThreadServer().start()
    with Client(s.path) as c:
        c.submit(SENTINEL, ME)
    yield s
    s.cleanup()


@pytest.fixture
def store_srv(tmp_path):
    s = ThreadServer(store=tmp_path / "annot.db", config={"events": {"backlog": 3}}).start()
    with Client(s.path) as c:
        c.submit(SENTINEL, ME)
    yield s
    s.cleanup()


def follow(model, path):
    return LiveThread(model, path, retry=0.05).start()


# --- any sequence of changes --------------------------------------------------

keys = st.sampled_from(["a", "b", "c", "t_estimate", "reason_pending"])
leaves = st.one_of(st.none(), st.integers(-5, 5), st.text("xy", max_size=3),
                   st.lists(st.integers(0, 3), max_size=2), st.booleans())
patches = st.recursive(leaves, lambda inner: st.dictionaries(keys, inner, max_size=3), max_leaves=6)
namespaces = st.sampled_from(["user", "tool", "sched"])  # sched: refused to annotate
ns_patch = st.dictionaries(namespaces, patches, min_size=1, max_size=2)

_ids = iter(range(1000, 1 << 40, 16))

op = st.one_of(
    st.tuples(st.just("submit"), st.integers(4, 5), st.integers(1000, 1003)),
    st.tuples(st.just("annotate"), st.integers(0, 5), ns_patch, st.booleans()),
    st.tuples(st.just("memo"), st.integers(0, 5), st.dictionaries(keys, leaves, min_size=1, max_size=2)),
    st.tuples(st.just("alloc"), st.integers(0, 5), st.sampled_from([0, 1, 2, 3]),
              st.one_of(st.none(), st.dictionaries(keys, leaves, max_size=2))),
    st.tuples(st.just("state"), st.integers(0, 5), st.sampled_from(["CLEANUP", "INACTIVE"])),
)


def run_op(c, base, o):
    kind, k = o[0], base + o[1]
    try:
        if kind == "submit":
            c.submit(k, o[2])
        elif kind == "annotate":
            c.annotate(k, o[2], volatile=o[3])
        elif kind == "memo":
            c.memo(k, o[2])
        elif kind == "alloc":
            p = {"id": k, "type": o[2]}
            if o[3] is not None:
                p["annotations"] = {"sched": o[3]}
            c.alloc_response(p)
        else:
            c.state(k, o[2])
    except AnnotError:
        pass  # refused changes change nothing; the model must agree


@settings(max_examples=100)
@given(owners=st.lists(st.integers(1000, 1003), min_size=4, max_size=4),
       before=st.lists(op, max_size=8), after=st.lists(op, max_size=25))
def test_model_equals_list_after_any_changes(srv, owners, before, after):
    base = next(_ids)
    with Client(srv.path) as c:
        for k, uid in enumerate(owners):  # jobs 0-3 exist; 4 and 5 may be submitted
            c.submit(base + k, uid)
        for o in before:  # seen through the snapshot
            run_op(c, base, o)
        model = LiveModel()
        t = follow(model, srv.path)
        try:
            for o in after:  # seen through deltas
                run_op(c, base, o)
            catch_up(c, model)
            assert model.status == "live"
            assert modelled(model) == listed(c)
            assert model.seq == c.stats()["seq"]
        finally:
            t.stop()


def test_changed_names_only_the_jobs_that_changed(srv):
    with Client(srv.path) as c:
        base = next(_ids)
        for k in range(3):
            c.submit(base + k, ME)
        model = LiveModel()
        t = follow(model, srv.path)
        try:
            wait_until(lambda: model.status == "live", "the snapshot")
            model.changed()
            sched(c, base + 1, {"reason_pending": "priority"})
            sched(c, base + 1, {"reason_pending": "priority"})  # the same again: no event
            catch_up(c, model)
            assert model.changed() == {base + 1, SENTINEL}
            assert model.changed() == set()
            assert model.jobs[base + 1].annotations == {"sched": {"reason_pending": "priority"}}
        finally:
            t.stop()


def test_a_job_first_seen_in_a_batch_gets_its_owner(srv):
    with Client(srv.path) as c:
        model = LiveModel()
        t = follow(model, srv.path)
        try:
            wait_until(lambda: model.status == "live", "the snapshot")
            jid = next(_ids)
            c.submit(jid, 4321)
            catch_up(c, model)
            wait_until(lambda: model.jobs[jid].userid == 4321, "the owner of a new job")
            assert model.jobs[jid].state == "SCHED"
            assert model.jobs[jid].t_state is not None
        finally:
            t.stop()


def test_user_filter_follows_only_that_users_jobs(srv):
    with Client(srv.path) as c:
        mine, theirs = next(_ids), next(_ids)
        c.submit(mine, 777)
        c.submit(theirs, 778)
        model = LiveModel()
        t = LiveThread(model, srv.path, retry=0.05, userid=777).start()
        try:
            wait_until(lambda: model.status == "live", "the snapshot")
            c.annotate(theirs, {"user": {"x": 1}})
            c.annotate(mine, {"user": {"x": 2}})
            wait_until(lambda: mine in model.jobs and model.jobs[mine].annotations, "job update")
            assert theirs not in model.jobs
            assert modelled(model) == sorted(
                (j["id"], j["userid"], j["state"], j["annotations"]) for j in c.list(userid=777)
            )
        finally:
            t.stop()


# --- restart and EOVERFLOW ---------------------------------------------------------


def test_restart_resumes_with_since_without_a_second_snapshot(tmp_path):
    s = ThreadServer(store=tmp_path / "annot.db").start()
    try:
        with Client(s.path) as c:
            c.submit(SENTINEL, ME)
            for k in range(2, 6):
                c.submit(k, ME)
                c.memo(k, {"step": "before"})
        model = LiveModel()
        rec = Recorder(model)
        t = follow(model, s.path)
        try:
            wait_until(lambda: model.status == "live", "the snapshot")
            s.stop()
            wait_until(lambda: model.status == "disconnected", "the model to notice")
            s.start()
            with Client(s.path) as c:
                c.memo(3, {"step": "after"})
                c.alloc_response({"id": 4, "type": 0, "annotations": {"sched": {"resource_summary": "rank0"}}})
                c.state(5, "INACTIVE")
                catch_up(c, model)
                assert modelled(model) == listed(c)
                assert model.jobs[3].annotations == {"user": {"step": "after"}}
                assert model.jobs[4].state == "RUN"
        finally:
            t.stop()
        assert rec.kinds.count("snapshot") == 1  # resumed, not re-read
        assert "resync" not in rec.statuses
        assert rec.statuses[-2:] == ["disconnected", "live"]
    finally:
        s.cleanup()


def test_restart_that_drops_volatile_notes_resyncs_to_what_list_shows(tmp_path):
    """The scheduler's volatile estimate is gone after a restart: the model
    does not keep it (the service refuses the old since, the model re-reads)."""
    s = ThreadServer(store=tmp_path / "annot.db").start()
    try:
        with Client(s.path) as c:
            c.submit(SENTINEL, ME)
            c.submit(2, ME)
            sched(c, 2, {"t_estimate": 1700000000.5, "reason_pending": "priority"})
        model = LiveModel()
        rec = Recorder(model)
        t = follow(model, s.path)
        try:
            wait_until(lambda: model.status == "live" and 2 in model.jobs
                       and model.jobs[2].annotations is not None, "the snapshot")
            s.stop()
            wait_until(lambda: model.status == "disconnected", "the model to notice")
            s.start()
            with Client(s.path) as c:
                c.memo(2, {"step": "after"})
                catch_up(c, model)
                assert modelled(model) == listed(c)
                assert model.jobs[2].annotations == {"user": {"step": "after"}}
        finally:
            t.stop()
        assert "resync" in rec.statuses
        assert rec.kinds.count("snapshot") == 2
    finally:
        s.cleanup()


def test_since_older_than_the_backlog_resyncs(store_srv):
    with Client(store_srv.path) as c:
        for k in range(2, 5):
            c.submit(k, ME)
        model = LiveModel()
        rec = Recorder(model)
        t = follow(model, store_srv.path)
        wait_until(lambda: model.status == "live", "the snapshot")
        t.stop()
        # Five batches while the model is away (a durable memo's reply waits
        # for its batch's commit, so each is a batch): the backlog keeps three.
        sched(c, 3, {"jobs_ahead": 1})
        for k in range(2, 5):
            c.memo(k, {"step": k})
        c.state(2, "INACTIVE")
        c.memo(3, {"step": None})
        t = follow(model, store_srv.path)  # resumes from model.seq
        try:
            catch_up(c, model)
            assert modelled(model) == listed(c)
        finally:
            t.stop()
    assert "resync" in rec.statuses
    assert rec.kinds.count("snapshot") == 2
    assert rec.statuses[-1] == "live"


def test_since_within_the_backlog_resumes(store_srv):
    with Client(store_srv.path) as c:
        c.submit(2, ME)
        model = LiveModel()
        rec = Recorder(model)
        t = follow(model, store_srv.path)
        wait_until(lambda: model.status == "live", "the snapshot")
        t.stop()
        sched(c, 2, {"jobs_ahead": 7})
        t = follow(model, store_srv.path)
        try:
            catch_up(c, model)
            assert model.jobs[2].annotations == {"sched": {"jobs_ahead": 7}}
            assert modelled(model) == listed(c)
        finally:
            t.stop()
    assert "resync" not in rec.statuses
    assert rec.kinds.count("snapshot") == 1


def test_a_model_too_slow_is_dropped_and_resyncs(tmp_path):
    s = ThreadServer(config={"batch": {"window": 0}, "events": {"subscriber_queue_bytes": 65536}}).start()
    try:
        with Client(s.path) as c:
            c.submit(SENTINEL, ME)
            for k in range(2, 12):
                c.submit(k, ME)
            model = LiveModel()
            rec = Recorder(model)
            hold = threading.Event()
            release = threading.Event()

            def stall(kind, payload):  # blocks the model's thread once
                if kind == "batch" and not release.is_set():
                    hold.set()
                    release.wait(30)

            model.add_listener(stall)
            t = follow(model, s.path)
            try:
                wait_until(lambda: model.status == "live", "the snapshot")
                c.memo(2, {"go": 1})
                assert hold.wait(30)  # the model's thread is stuck in a listener
                # ~3 MB of batches of ~40 kB: more than the socket, the
                # server's write buffer and the 64 kB queue bound hold.
                blob = "x" * 4000
                for r in range(80):
                    c.annotate_pipelined(list(range(2, 12)),
                                         [{"tool": {"blob": f"{r}{blob}"}}] * 10, volatile=True)
                wait_until(lambda: c.stats()["dropped_subscribers"] >= 1, "the service to drop the model")
                release.set()
                wait_until(lambda: "resync" in rec.statuses, "the resync")
                catch_up(c, model)
                assert modelled(model) == listed(c)
                assert model.status == "live"
            finally:
                release.set()
                t.stop()
    finally:
        s.cleanup()


def test_bad_socket_reports_disconnected_then_gives_up(tmp_path):
    model = LiveModel()
    rec = Recorder(model)
    t = LiveThread(model, str(tmp_path / "nothing"), retry=0.01, give_up=0.05).start()
    assert t.done.wait(30)
    assert isinstance(t.error, AnnotError)
    assert t.error.errno in (errno.ENOENT, errno.ECONNREFUSED)
    assert "cannot connect" in str(t.error)
    assert rec.statuses[0] == "disconnected"
    assert model.jobs == {}
