"""Event batches and subscriptions (docs/events.md), in front of the store (docs/durability.md).

Data flow: the service applies a change to its `JobTable` (tracking on, so
the C table keeps each touched job's pre-image), then tells the hub about
state transitions (`record_transition`) and durable eventlog entries
(`record_entry`). `close_batch()` then:

1. writes the batch's entries and the touched jobs' metadata to the store
   in one transaction (commit first: a subscriber never sees what a crash
   could lose);
2. encodes the batch: `{"seq":N,"transitions":[...],"annotations":[...]}`,
   the annotations array produced by the C table from its trees (no
   Python dicts): at most four C encodings per batch (owner and public
   view, whole trees and deltas), every other view spliced from them
   (`fanout.BatchViews`: a guest's own jobs whole in the public view);
   the bytes shared by every subscription that reads the same view (all
   guests without a job of their own in the batch share one);
3. queues the bytes to the subscriptions, keeps the raw material in the
   backlog for `since`, forgets the pre-images, runs the after-commit
   callbacks (the server's deferred replies).

In-process, all three happen inside `close_batch()`. The server instead
starts a background writer (`start_writer`): `close_batch()` encodes the
batch and detaches it at once (the next batch opens), one writer thread
commits the batches strictly in seq order (a synchronous=FULL commit
blocks for a millisecond or more, which the event loop must not), and the
loop publishes each batch and runs its callbacks when its commit is done.
So nothing is published or acknowledged before it is durable, and
`last_seq` is always the last *published* batch. A snapshot subscription
first waits for the batches in flight (`sync`).

Backlog: per batch, the transitions and two C encodings of the owner view,
whole trees and deltas. A `since` subscriber with the owner view gets
those bytes as they are; any other view is derived from them in Python
(only on resume, never on the live path). The backlog is bounded by
`events.backlog` batches and by `BACKLOG_MAX_BYTES`, whichever comes first;
a `since` older than what is kept gets EOVERFLOW "resync needed".

Views (docs/DESIGN.md "Readable view"): the instance owner and the job's
own user see the whole tree; anyone else only the namespaces readable by
"all" (`Policy.view_namespaces` / `view_exclude`). The C encoder leaves
out a filtered entry whose view did not change, so an invisible change is
not published to that view. A batch with nothing for a subscription is not
queued to it (its seq still counts).
"""

import bisect
import collections
import concurrent.futures
import errno
import json
import logging
import time

from flux_annot.errors import EINVAL, EIO, EOVERFLOW, AnnotError, error
from flux_annot.service.fanout import OWNER as _FULL
from flux_annot.service.fanout import BatchViews
from flux_annot.service.policy import Policy
from flux_annot.service.replay import TREE_NAMES

_TREE_NAMES = frozenset(TREE_NAMES)

TOPICS = ("job-state", "job-annotations")

log = logging.getLogger("flux_annot.events")

# Bytes of encoded batches the backlog may hold, all batches together (the
# `events.backlog` count alone would let a scheduler re-annotating 100k jobs
# per cycle pin gigabytes).
BACKLOG_MAX_BYTES = 256 * 1024 * 1024

#: Upper bounds (seconds) of the commit-duration histogram's buckets
#: (`CommitTimes`; flux_annot_commit_duration_seconds, docs/operations.md):
#: a synchronous=FULL commit takes a millisecond or a few, a slow disk tens.
COMMIT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                  2.5, 5.0, 10.0)


class CommitTimes:
    """How long the store's successful commits took: a histogram kept as
    plain counters (one per bucket of COMMIT_BUCKETS, the last one above
    them all, not cumulative) and their sum. One `observe` per commit, on
    the thread that commits; the metrics read it on the loop, so the
    package needs no metrics library to keep it."""

    __slots__ = ("counts", "sum")

    def __init__(self):
        self.counts = [0] * (len(COMMIT_BUCKETS) + 1)
        self.sum = 0.0

    def observe(self, seconds):
        self.counts[bisect.bisect_left(COMMIT_BUCKETS, seconds)] += 1
        self.sum += seconds


def _dumps(obj):
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _section(config, name):
    return config[name] if config is not None else None


class _Backlogged:
    """What the backlog keeps of one published batch."""

    __slots__ = ("seq", "transitions", "full", "delta", "nbytes")

    def __init__(self, seq, transitions, full, delta):
        self.seq = seq
        self.transitions = transitions  # [[id, state, ts], ...]
        self.full = full  # owner view, whole trees: b"[[id,tree],...]"
        self.delta = delta  # owner view, merge patches
        self.nbytes = len(full) + len(delta) + 64 * len(transitions) + 128


class _Closed:
    """A closed batch on its way out: what to publish once it has committed."""

    __slots__ = ("item", "payloads", "callbacks", "future", "deadline", "entries", "published")

    def __init__(self, item, payloads, callbacks, published=0):
        self.item = item  # _Backlogged
        self.payloads = payloads  # {Subscription: bytes}, subscribers at close time
        # after-commit callbacks (deferred replies): [(fn, on_timeout or None)]
        self.callbacks = callbacks
        self.future = None  # the writer's commit (background mode; None: nothing to write)
        self.deadline = 0.0  # loop time after which its callbacks time out
        self.entries = 0  # eventlog entries it writes
        self.published = published  # transitions + annotation entries it publishes


class Pieces:
    """A payload kept as the pieces it is joined from (a guest's spliced
    view, `fanout.BatchViews.pieces`): joined once, into the subscriber's
    frame (`Subscription.pop_payload`), not into a payload first."""

    __slots__ = ("parts", "nbytes")

    def __init__(self, parts, nbytes):
        self.parts = parts
        self.nbytes = nbytes  # len(self.join()), known by whoever cut the parts

    def __len__(self):
        return self.nbytes

    def join(self):
        return b"".join(self.parts)


class Subscription:
    """One subscriber's queue of encoded batches (bytes).

    Iterating yields the pending batches as dicts and stops when none is
    pending (it never blocks). `pop_raw()` gives the next one as the JSON
    bytes the hub encoded, for the server to send as they are.

    The bound (`limit`, `[events] subscriber_queue_bytes`) counts what the
    service holds for the subscriber: this queue and, through `outside`,
    what its transport holds (docs/events.md "Slow subscribers"); the
    snapshot is not counted. A batch published while more than `limit` is
    held drops the subscription instead of being queued (so at most `limit`
    plus one batch is ever held): the queue is freed at once, `error` holds
    the EOVERFLOW, and the next `pop_raw()` or iteration raises it (once;
    after that the subscription is just closed).
    """

    def __init__(self, hub, key, userid, notify, limit):
        self._hub = hub
        self.key = key  # (topics, view, delta)
        self.userid = userid
        self.notify = notify
        self.limit = limit
        self.from_seq = hub.last_seq  # batches after this one are for it
        self._queue = collections.deque()
        self.queued_bytes = 0
        self._exempt = 0  # bytes of a pending snapshot, not counted against the bound
        # outside(budget) -> bytes the transport holds for this subscriber
        # (written, not yet read by it; its snapshot not counted); exact when
        # that could exceed `budget`, else it may return less. Set by the
        # server; None in process (nothing is held outside the queue).
        self.outside = None
        self.closed = False
        self.error = None
        self._raised = False

    def _push(self, payload, exempt=False):
        """Queue one payload; returns False (nothing queued) when more than
        the bound is held already.

        exempt: the snapshot, queued whatever its size (it is the start of
        the stream, not a sign of a slow reader) and not counted against the
        bound.
        """
        if exempt:
            self._exempt += len(payload)
        else:
            held = self.queued_bytes - self._exempt
            if self.outside is not None:
                held += self.outside(self.limit - held)
            if held > self.limit:
                return False
        self._queue.append(payload)
        self.queued_bytes += len(payload)
        return True

    def _drop(self, err):
        self._queue.clear()
        self.queued_bytes = self._exempt = 0
        self.closed = True
        self.error = err

    def pending(self):
        """Number of payloads waiting."""
        return len(self._queue)

    def pop_raw(self):
        """The next pending payload as JSON bytes, or None when none is pending."""
        payload = self.pop_payload()
        return payload.join() if type(payload) is Pieces else payload

    def head_is_snapshot(self):
        """Whether the next payload is the snapshot (not counted against the
        bound: the transport keeps not counting it while it holds it)."""
        return self._exempt > 0 and bool(self._queue)

    def pop_payload(self):
        """The next pending payload as queued: JSON bytes, or `Pieces` whose
        join is the JSON (the server writes the pieces), or None."""
        if self._queue:
            payload = self._queue.popleft()
            self.queued_bytes -= len(payload)
            self._exempt = max(0, self._exempt - len(payload))
            return payload
        if self.error is not None and not self._raised:
            self._raised = True
            raise self.error
        return None

    def __iter__(self):
        while True:
            payload = self.pop_raw()
            if payload is None:
                return
            yield json.loads(payload)

    def close(self):
        """End the subscription; pending payloads are discarded."""
        if not self.closed:
            self.closed = True
            self._queue.clear()
            self.queued_bytes = 0
        self._hub._forget(self)


class EventHub:
    """The open batch, its close (store, then publish) and the subscriptions."""

    def __init__(self, service):
        self.service = service
        self.table = service.table
        self.jobs = service.jobs
        self.store = service.store
        self._accuracy = getattr(service, "estimates", None)  # estimate histories (their rows)
        config = service.config
        policy = getattr(service, "policy", None)
        if policy is None:
            policy = Policy(config)
        self._view_ns = tuple(policy.view_namespaces)
        self._view_exclude = bool(policy.view_exclude)
        events = _section(config, "events")
        self.backlog_max = events["backlog"] if events is not None else 4096
        self.queue_limit = events["subscriber_queue_bytes"] if events is not None else 16 << 20
        self.last_seq = self.store.last_seq() if self.store is not None else 0
        self._closed_seq = self.last_seq  # last closed batch (committed or not)
        # A restart drops the volatile notes published before it without a
        # batch saying so: a `since` at or before the start-up seq would
        # resume from a state that is gone, unless the last close found no
        # volatile change (Store.mark_clean) or the service's stored trees
        # are its live trees (the Flux mirror).
        clean = self.store is None or self.store.opened_clean or getattr(
            service, "volatile_survives_restart", False)
        self.restart_seq = 0 if clean else self.last_seq
        self._pending = collections.deque()  # closed batches not yet published, in seq order
        self._uncommitted = collections.deque()  # closed batches whose commit is not done, in order
        store = _section(config, "store")
        self.commit_timeout = store["commit_timeout"] if store is not None else 5.0
        # The store cannot commit: None, or (AnnotError, wall time it started).
        # Set and cleared on the loop (`_store_failed` / `_store_recovered`);
        # `_fault_raw` is the writer thread's own view (sync() reads it).
        self.fault = None
        self._fault_raw = None
        self._submitted = self.last_seq  # last seq handed to the writer
        self._deadline_timer = None
        self._given_up = False  # stopping on a failing store: later commits fail at once
        self._lost = []  # (seq, entries) of batches given up at shutdown
        self._executor = None  # the background writer (start_writer)
        self._loop = None
        self._after = None
        self._writer_stopping = False
        self._close_wanted = False  # a close waits for the commit in flight
        batch = _section(config, "batch")
        self._max_entries = batch["max_entries"] if batch is not None else 10000
        self._transitions = []
        self._entries = []
        self._callbacks = []
        self._subs = []
        self._backlog = collections.deque()
        self._backlog_bytes = 0
        self.commit_times = CommitTimes()
        self._stats = {
            "batches": 0,
            "entries": 0,  # transitions + annotation entries published
            "dropped_subscribers": 0,
            "resync_refused": 0,
            "store_errors": 0,
        }

    # -- recording -------------------------------------------------------

    def record_transition(self, jobid, state, timestamp):
        self._transitions.append([jobid, state, timestamp])

    def record_entry(self, jobid, name, context, timestamp):
        """A durable RFC 18 entry, written with the batch (context: dict or JSON text)."""
        self._entries.append((jobid, name, context, timestamp))

    def open(self):
        """Whether anything waits in the open batch."""
        return bool(
            self._transitions or self._entries or self._callbacks or self.table.batch_count()
        )

    def close_waits(self):
        """Whether the open batch closes by itself when the commit in flight
        is done (group commit), so the server arms no timer for it (at
        window 0 it would spin the loop): it is due and waits only for that
        commit, or replies wait on it (`_commit_closes`)."""
        return self._close_wanted or self._commit_closes()

    def _commit_closes(self):
        """Whether the open batch closes as soon as the commit in flight is
        done, without waiting out the batch window: replies wait on it (a
        non-volatile request's). Its window would only add latency to them:
        the writer is busy until then, and once it is free one commit of
        everything that arrived meanwhile is what group commit wants. A
        client pipelining durable requests is then paced by the commits,
        not by the window (docs/events.md)."""
        return bool(self._callbacks) and bool(self._uncommitted) and self._executor is not None

    def open_seq(self):
        """The seq the open batch will have (changes when a batch closes)."""
        return self._closed_seq + 1

    def size(self):
        """Entries in the open batch (jobs touched + transitions + eventlog entries)."""
        return self.table.batch_count() + len(self._transitions) + len(self._entries)

    def after_commit(self, fn, on_timeout=None):
        """Run fn() once the open batch has committed; with nothing open, once
        the last batch closed so far has (at once if none is in flight).

        on_timeout(err): called instead, with an ETIMEDOUT `AnnotError`, if
        the commit is not done `commit_timeout` seconds after the batch
        closed (background writer only; the change stays applied and is
        written when the store recovers), or with EIO if the service stops
        before it could be written. Without it fn() just waits.
        """
        if self.open():
            self._callbacks.append((fn, on_timeout))
        elif self._uncommitted:
            self._uncommitted[-1].callbacks.append((fn, on_timeout))
        else:
            fn()

    # -- closing ---------------------------------------------------------

    def close_batch(self, force=False):
        """Close the open batch: commit, publish, after-commit callbacks.

        Returns its seq, or None if it was empty (or not closed yet, below).
        Without a background writer (the in-process default) all of it is
        done before returning; a store error then raises (ENOSPC or EIO),
        leaves the batch open so the next close retries it, and sets
        `fault` until a commit succeeds again. With one (`start_writer`,
        the server) the batch is encoded and detached here and the commit
        runs on the writer thread; publishing and the callbacks follow on
        the event loop once it has committed, batches strictly in seq order
        (see `_complete`).

        Group commit: while the writer is still committing an earlier batch,
        the open batch is not closed but keeps growing, and closes as soon as
        that commit is done (unless `force`, or it holds `max_entries`, or
        the store is failing). Closing it earlier would publish nothing
        sooner (publishing follows the commits, in order); one commit of
        everything that arrived meanwhile costs far fewer fsyncs and page
        writes than several.

        While the store is failing (`fault`) batches are published when they
        close, before their commit (the service already refuses new durable
        changes; reads show these ones anyway), and a batch without eventlog
        entries is not handed to the writer at all: the next write covers its
        seq (`Store.write_batch(first_seq=)`).
        """
        if (
            self._uncommitted
            and not force
            and self._executor is not None
            and self.fault is None
            and self.size() < self._max_entries
        ):
            self._close_wanted = True
            return None
        self._close_wanted = False
        table = self.table
        ids = table.batch_ids()
        if not ids and not self._transitions and not self._entries:
            table.batch_clear()  # touched-but-unchanged pre-images
            callbacks, self._callbacks = self._callbacks, []
            if self._uncommitted:  # replies still follow the commits before them
                self._uncommitted[-1].callbacks.extend(callbacks)
            else:
                for fn, _ in callbacks:
                    fn()
            return None
        seq = self._closed_seq + 1
        background = self.store is not None and self._executor is not None
        if self.store is not None and not background:
            meta, known, est = self._meta()
            try:
                t0 = time.perf_counter()
                self.store.write_batch(seq, self._entries, meta, known, estimates=est)
                self.commit_times.observe(time.perf_counter() - t0)
            except AnnotError as exc:
                if est:  # not written: the next write takes them again
                    self._accuracy.redirty(est)
                self._stats["store_errors"] += 1
                if self.fault is None:
                    self.fault = (exc, time.time())
                    log.warning("%s; durable changes are refused until a commit succeeds", exc)
                raise
            if self.fault is not None:
                self._recovered_log()
                self.fault = None
        transitions = self._transitions
        n = len(ids)
        full = table.batch_encode_cuts(n)
        delta = table.batch_encode_cuts(n, delta=True)
        batch = _Closed(
            _Backlogged(seq, transitions, full[0], delta[0]),
            self._payloads(seq, ids, transitions, {False: full, True: delta}),
            self._callbacks,
            len(transitions) + len(ids),
        )
        if background:
            batch.entries = len(self._entries)
            if self._entries or self.fault is None:
                first = self._submitted + 1
                batch.future = self._executor.submit(
                    self._write_bg, seq, self._entries, *self._meta(), first
                )
                self._submitted = seq
        table.batch_clear()
        self._transitions = []
        self._entries = []
        self._callbacks = []
        self._closed_seq = seq
        if background:
            self._pending.append(batch)
            if batch.future is not None:
                batch.deadline = self._loop.time() + self.commit_timeout
                self._uncommitted.append(batch)
                batch.future.add_done_callback(self._wake)
                if batch.callbacks:
                    self._arm_deadline()
            elif batch.callbacks:  # nothing of its own to write
                if self._uncommitted:
                    self._uncommitted[-1].callbacks.extend(batch.callbacks)
                else:
                    for fn, _ in batch.callbacks:
                        fn()
                batch.callbacks = []
            if self.fault is not None:
                self._publish_all()
        else:
            self._finish(batch)
        return seq

    def _meta(self):
        """(meta, known, estimates) for `Store.write_batch`, read now, on the loop.

        estimates: the rows of the estimate histories changed since the last
        write (`Accuracy.rows`, docs/accuracy.md): they go with this batch.

        meta: {jobid: (userid, state, t_submit)} of the jobs the open batch's
        entries and transitions name (state as of now). known: {jobid: (tree,
        user_bytes)} of those with a tree entry whose live tree is their
        durable tree (`Job.durable`: no volatile change since their last
        durable state), so the store takes it as is instead of reading the
        previous row and merging the batch's entries into it.
        """
        meta = {}
        known = {}
        jobs = self.jobs
        get = self.table.get
        tree_names = _TREE_NAMES
        for jobid, name, _ctx, _ts in self._entries:
            if jobid not in meta:
                job = jobs[jobid]
                meta[jobid] = (job.userid, job.state, job.t_submit)
                if job.durable and name in tree_names:
                    known[jobid] = (get(jobid), job.user_bytes)
            elif name in tree_names and jobid not in known and jobs[jobid].durable:
                known[jobid] = (get(jobid), jobs[jobid].user_bytes)
        for jobid, _state, _ts in self._transitions:
            if jobid not in meta:
                job = jobs[jobid]
                meta[jobid] = (job.userid, job.state, job.t_submit)
        acc = self._accuracy
        return meta, known, (acc.rows() if acc is not None and acc.dirty else None)

    def _finish(self, batch):
        """A batch has committed: publish it, keep it, run its callbacks."""
        self._publish(batch)
        for fn, _ in batch.callbacks:
            fn()

    def _publish(self, batch):
        """Queue a batch to the subscriptions and keep it in the backlog."""
        item = batch.item
        self.last_seq = item.seq
        payloads = batch.payloads
        batch.payloads = None
        for sub in list(self._subs):
            payload = payloads.get(sub)
            if payload is None:
                if sub.from_seq >= item.seq:
                    continue
                # Subscribed while the batch was being committed: derive its
                # view from the kept encodings (the resume path).
                payload = self._replay_payload(item, sub.key)
            if payload:
                self._queue(sub, payload)
        self._keep(item)
        self._stats["batches"] += 1
        self._stats["entries"] += batch.published

    def _publish_all(self, upto=None):
        """Publish the unpublished batches now, in order (up to seq `upto`),
        without waiting for their commits (the store is failing, or their
        replies timed out). Their callbacks still wait for the commit."""
        pending = self._pending
        while pending and (upto is None or pending[0].item.seq <= upto):
            self._publish(pending.popleft())

    # -- the background writer (server) -----------------------------------

    def start_writer(self, loop, after=None):
        """Commit batches on one writer thread from now on (see close_batch).

        loop: the asyncio loop the publishing and callbacks run on; after():
        called on the loop once committed batches have been published (the
        server writes out the replies and events they released). No-op
        without a store.
        """
        if self.store is None or self._executor is not None:
            return
        self._loop = loop
        self._after = after
        self._writer_stopping = False
        self._given_up = False
        self._submitted = self._closed_seq  # batches closed in-process are written
        self._executor = concurrent.futures.ThreadPoolExecutor(
            1, thread_name_prefix="flux-annot-store"
        )

    @property
    def background(self):
        """Whether commits run on the writer thread (the server)."""
        return self._executor is not None

    def stop_writer(self):
        """Wait for the batches in flight, then commit synchronously again.

        On a failing store a batch is given up after a few tries (and every
        later one with it: the seqs must stay in order), so a broken store
        cannot hang the shutdown; `lost()` then says what was not written.
        """
        if self._executor is None:
            return
        self._writer_stopping = True
        try:
            self.sync()
        finally:
            if self._deadline_timer is not None:
                self._deadline_timer.cancel()
                self._deadline_timer = None
            self._executor.shutdown(wait=True)
            self._executor = None
            self._loop = None
        if self._lost:
            first, last = self._lost[0][0], self._lost[-1][0]
            n = sum(e for _, e in self._lost)
            exc = self.fault[0] if self.fault is not None else self._fault_raw
            cause = exc.message if exc is not None else "the store failed"
            what = f"batch {first}" if first == last else f"batches {first}..{last}"
            log.error(
                "stopping while the store cannot commit (%s): %s with %d eventlog %s "
                "not written; those changes are lost",
                cause, what, n, "entry was" if n == 1 else "entries were",
            )

    def lost(self):
        """[(seq, eventlog entries)] of the batches given up at shutdown."""
        return list(self._lost)

    def sync(self):
        """Block until every closed batch has committed and been published.

        While the store is failing (and the service is not stopping) it does
        not wait for commits that may never come: it publishes what is
        pending and returns.
        """
        while self._uncommitted:
            head = self._uncommitted[0].future
            try:
                head.result(timeout=0.05)
            except concurrent.futures.TimeoutError:
                if self._fault_raw is not None and not self._writer_stopping:
                    break
                continue
            except Exception:  # given up (only when stopping): _complete says so
                pass
            self._complete()
        self._publish_all()

    def _write_bg(self, seq, entries, meta, known, est, first):
        """Writer thread: commit one batch, retrying a failed commit (the
        later batches and the replies waiting for it stay queued behind).

        The first failure is reported to the loop (`_store_failed`: one log
        line, durable requests refused), the first success after it too
        (`_store_recovered`); the retries in between are silent."""
        delay = 0.05
        tries = 0
        loop = self._loop
        while True:
            if self._given_up:
                raise error(EIO, f"batch {seq} not written: an earlier batch was given up")
            try:
                t0 = time.perf_counter()
                if first != seq:
                    self.store.write_batch(seq, entries, meta, known, first_seq=first,
                                           estimates=est)
                else:
                    self.store.write_batch(seq, entries, meta, known, estimates=est)
                self.commit_times.observe(time.perf_counter() - t0)
            except Exception as exc:
                self._stats["store_errors"] += 1
                tries += 1
                if not isinstance(exc, AnnotError):
                    log.exception("committing batch %d failed", seq)
                    exc = error(EIO, f"{self.store.path}: store write failed ({exc})")
                if self._fault_raw is None:
                    self._fault_raw = exc
                    self._call_loop(loop, self._store_failed, exc, time.time())
                if self._writer_stopping and tries >= 5:
                    self._given_up = True
                    raise exc
                time.sleep(delay)
                delay = min(delay * 2, 1.0)
                continue
            if self._fault_raw is not None:
                self._fault_raw = None
                self._call_loop(loop, self._store_recovered)
            return

    @staticmethod
    def _call_loop(loop, fn, *args):
        if loop is not None:
            try:
                loop.call_soon_threadsafe(fn, *args)
            except RuntimeError:  # the loop is closed (shutdown)
                pass

    def _store_failed(self, exc, since):
        """Loop: the writer's first failed commit. One log line; from now on
        durable requests are refused and batches published as they close."""
        if self.fault is None and self._fault_raw is not None:
            self.fault = (exc, since)
            log.warning(
                "%s; durable changes are refused until it recovers (retrying in the background)",
                exc,
            )
            self._publish_all()
            if self._close_wanted or self._callbacks:
                self.close_batch()  # it waited for a commit that does not come
            if self._after is not None:
                self._after()

    def _store_recovered(self):
        """Loop: a commit succeeded again after failures."""
        if self.fault is not None:
            self._recovered_log()
            self.fault = None
            if self._submitted < self._closed_seq and self._executor is not None:
                # seqs of entry-less batches published while failing: write them
                first, seq = self._submitted + 1, self._closed_seq
                self._submitted = seq
                tail = _Closed(None, None, [])
                tail.future = self._executor.submit(self._write_bg, seq, [], {}, None, None, first)
                tail.deadline = self._loop.time() + self.commit_timeout
                self._uncommitted.append(tail)
                tail.future.add_done_callback(self._wake)

    def _recovered_log(self):
        exc, since = self.fault
        log.warning(
            "store %s recovered after %.1f s: commits succeed again, durable changes accepted",
            self.store.path, time.time() - since,
        )

    def fault_error(self):
        """The AnnotError a durable request gets while the store is failing."""
        exc = self.fault[0]
        return error(
            exc.errno,
            f"the store cannot commit, durable changes are refused until it recovers: "
            f"{exc.message}",
        )

    def _arm_deadline(self):
        """Loop: a timer at the first deadline of a batch with callbacks waiting."""
        if self._deadline_timer is not None or self._loop is None:
            return
        for batch in self._uncommitted:
            if any(t is not None for _, t in batch.callbacks):
                self._deadline_timer = self._loop.call_at(batch.deadline, self._on_deadline)
                return

    def _on_deadline(self):
        """Loop: answer the callbacks whose commit is overdue with ETIMEDOUT
        (their batch is published first, so a reply never precedes it)."""
        self._deadline_timer = None
        now = self._loop.time()
        fired = False
        for batch in self._uncommitted:
            if batch.deadline > now:
                break
            waiting = [c for c in batch.callbacks if c[1] is not None]
            if not waiting:
                continue
            if batch.item is not None:
                self._publish_all(upto=batch.item.seq)
            batch.callbacks = [c for c in batch.callbacks if c[1] is None]
            err = self._timeout_error()
            for _, on_timeout in waiting:
                on_timeout(err)
            fired = True
        self._arm_deadline()
        if fired and self._after is not None:
            self._after()

    def _timeout_error(self):
        cause = self.fault[0].message if self.fault is not None else "the commit is still running"
        return error(
            errno.ETIMEDOUT,
            f"the store did not commit within {self.commit_timeout:g} s ({cause}); the change "
            f"is applied in memory and will be written when the store recovers, or lost if "
            f"the service stops first",
        )

    def _wake(self, _future):
        """Writer thread: a commit finished; let the loop publish it."""
        self._call_loop(self._loop, self._complete)

    def _complete(self, run_after=True):
        """Publish the committed batches at the head of the queue, in order,
        and run the callbacks of every batch whose commit is done."""
        unc = self._uncommitted
        done = False
        while unc and unc[0].future.done():
            batch = unc.popleft()
            exc = batch.future.exception()
            if exc is not None:
                # Only when the writer was stopped on a failing store.
                if batch.item is not None:
                    self._lost.append((batch.item.seq, batch.entries))
                    pending = self._pending
                    while pending and pending[0].item.seq <= batch.item.seq:
                        pending.popleft()  # not published (unless it was while failing)
                err = exc if isinstance(exc, AnnotError) else error(EIO, str(exc))
                lost = error(
                    err.errno,
                    f"not written: the service stopped while the store could not commit "
                    f"({err.message}); the change is lost",
                )
                for _, on_timeout in batch.callbacks:
                    if on_timeout is not None:
                        on_timeout(lost)
                done = True
                continue
            if batch.item is not None:
                self._publish_all(upto=batch.item.seq)
            for fn, _ in batch.callbacks:
                try:
                    fn()
                except Exception:  # one broken callback must not wedge the queue
                    log.exception("after-commit callback of batch %s failed",
                                  batch.item.seq if batch.item is not None else "(tail)")
            done = True
        if self.fault is not None:
            self._publish_all()
        if not unc and (self._close_wanted or self._callbacks):
            self.close_batch()  # group commit: what waited for that commit
        if done and run_after and self._after is not None:
            self._after()

    # -- publishing ------------------------------------------------------

    def _payloads(self, seq, ids, transitions, owner):
        """{subscription: payload bytes (b"" = nothing for it)} of one batch,
        encoded now (the C table still holds its pre-images), queued when
        it has committed (`_finish`). owner: {delta: (bytes, cuts)}, the
        owner view's encodings. Every view is read from at most four C
        encodings (`fanout.BatchViews`), and subscriptions that read the
        same thing share one payload object: all guests without a job of
        their own in the batch, whatever their uid."""
        out = {}
        if not self._subs:
            return out
        views = BatchViews(self.table, self.jobs, ids, owner, self._view_ns, self._view_exclude)
        trans_cache = {}
        payloads = {}
        for sub in self._subs:
            topics, view, is_delta = sub.key
            view = views.shared(view)
            pkey = (topics, view, is_delta)
            payload = payloads.get(pkey)
            if payload is None:
                parts = [b'{"seq":%d' % seq]
                size = len(parts[0]) + 1
                if "job-state" in topics:
                    who = self._view_user(view)  # every guest reads all transitions
                    trans = trans_cache.get(who)
                    if trans is None:
                        trans = trans_cache[who] = self._transitions_bytes(transitions, view)
                    if trans != b"[]":
                        parts += (b',"transitions":', trans)
                        size += 15 + len(trans)
                if "job-annotations" in topics:
                    ann, n = views.pieces(view, is_delta)
                    if ann[0] != b"[]":
                        parts.append(b',"annotations":')
                        parts += ann
                        size += 15 + n
                if len(parts) == 1:
                    payload = b""
                elif view[0] == "guest":  # its own: joined once, into its frame
                    parts.append(b"}")
                    payload = Pieces(parts, size)
                else:
                    parts.append(b"}")
                    payload = b"".join(parts)
                payloads[pkey] = payload
            out[sub] = payload
        return out

    def _queue(self, sub, payload):
        if sub.closed:
            return
        if sub._push(payload):
            if sub.notify is not None:
                sub.notify()
            return
        self._stats["dropped_subscribers"] += 1
        sub._drop(
            error(
                EOVERFLOW,
                f"subscriber too slow: more than {sub.limit} bytes of events queued",
            )
        )
        self._forget(sub)
        if sub.notify is not None:
            sub.notify()

    def _transitions_bytes(self, transitions, view):
        """The transitions a view shows: all, or one user's jobs."""
        selected = self._view_user(view)
        if selected is not None:
            jobs = self.jobs
            transitions = [t for t in transitions if jobs[t[0]].userid == selected]
        return _dumps(transitions)

    @staticmethod
    def _view_user(view):
        """The userid a view is restricted to, or None for all jobs."""
        if view[0] in ("user", "public-of"):
            return view[1]
        return None

    # -- backlog ---------------------------------------------------------

    def _keep(self, item):
        if self.backlog_max <= 0:
            return
        self._backlog.append(item)
        self._backlog_bytes += item.nbytes
        while self._backlog and (
            len(self._backlog) > self.backlog_max or self._backlog_bytes > BACKLOG_MAX_BYTES
        ):
            self._backlog_bytes -= self._backlog.popleft().nbytes

    def _replay_payload(self, item, key):
        """A backlog batch encoded for one subscription key (b"" if empty)."""
        topics, view, is_delta = key
        parts = []
        if "job-state" in topics:
            trans = self._transitions_bytes(item.transitions, view)
            if trans != b"[]":
                parts.append(b'"transitions":' + trans)
        if "job-annotations" in topics:
            ann = item.delta if is_delta else item.full
            if view != _FULL:
                ann = self._derive_view(item, view, is_delta)
            if ann != b"[]":
                parts.append(b'"annotations":' + ann)
        if not parts:
            return b""
        return b'{"seq":%d,' % item.seq + b",".join(parts) + b"}"

    def _derive_view(self, item, view, is_delta):
        """Filter the owner-view encodings of a kept batch for another view.

        A filtered job is shown only when its filtered delta is not empty,
        which is what the C encoder does on the live path. (One difference:
        a job whose whole tree went away shows `null` even when the view had
        nothing before; applying it changes nothing.)
        """
        jobs = self.jobs
        kind = view[0]
        selected = self._view_user(view)
        deltas = json.loads(item.delta)
        fulls = dict(json.loads(item.full)) if not is_delta else None
        out = []
        for jobid, patch in deltas:
            userid = jobs[jobid].userid
            if selected is not None and userid != selected:
                continue
            whole = kind in ("user", "guest") and userid == view[1]
            if not whole:
                patch = self._filter(patch)
                if patch == {}:
                    continue
            if is_delta:
                out.append([jobid, patch])
            else:
                tree = fulls[jobid]
                out.append([jobid, tree if whole or tree is None else self._filter(tree) or None])
        return _dumps(out)

    def _filter(self, tree):
        """The part of a tree (or patch) readable by "all"; None stays None."""
        if tree is None:
            return None
        names = self._view_ns
        if self._view_exclude:
            return {k: v for k, v in tree.items() if k not in names}
        return {k: v for k, v in tree.items() if k in names}

    # -- subscriptions ---------------------------------------------------

    def _view_for(self, cred, userid):
        if cred.owner:
            return _FULL if userid is None else ("user", userid)
        if userid is None:
            return ("guest", cred.userid)
        if userid == cred.userid:
            return ("user", userid)
        return ("public-of", userid)

    def subscribe(self, cred, topics=None, userid=None, since=None, snapshot=False,
                  delta=False, notify=None):
        """A new `Subscription` (docs/events.md); bad arguments raise and change nothing."""
        if topics is None:
            topics = TOPICS
        if isinstance(topics, str) or not all(isinstance(t, str) for t in topics):
            raise error(EINVAL, "topics must be a list of topic names")
        unknown = [t for t in topics if t not in TOPICS]
        if unknown:
            raise error(
                EINVAL, f"unknown topic {unknown[0]!r} (topics: job-state, job-annotations)"
            )
        if not topics:
            raise error(EINVAL, "topics must name at least one topic")
        if userid is not None and (
            isinstance(userid, bool) or not isinstance(userid, int) or not 0 <= userid < 1 << 32
        ):
            raise error(EINVAL, f"userid must be an unsigned 32-bit integer, not {userid!r}")
        if since is not None:
            if isinstance(since, bool) or not isinstance(since, int) or since < 0:
                raise error(EINVAL, f"since must be a batch seq (integer >= 0), not {since!r}")
            if snapshot:
                raise error(EINVAL, "since and snapshot cannot be combined")
        self._check_since(since)
        key = (frozenset(topics), self._view_for(cred, userid), bool(delta))
        sub = Subscription(self, key, userid, notify, self.queue_limit)
        if snapshot:
            # Publish what is open first: the snapshot then is exactly the
            # state at last_seq, and live deltas start from it.
            self.close_batch(force=True)
            self.sync()  # the snapshot shows only committed batches
            sub.from_seq = self.last_seq
            sub._push(self._snapshot(cred, userid), exempt=True)
        elif since is not None:
            for item in self._backlog:
                if item.seq > since:
                    payload = self._replay_payload(item, key)
                    if payload and not sub._push(payload):
                        self._stats["dropped_subscribers"] += 1
                        raise error(
                            EOVERFLOW,
                            f"resync needed: the batches since {since} exceed "
                            f"{sub.limit} bytes",
                        )
        self._subs.append(sub)
        return sub

    def _check_since(self, since):
        if since is None:
            return
        if since > self.last_seq:
            raise error(EINVAL, f"since {since} is in the future (last seq is {self.last_seq})")
        if self.restart_seq and since <= self.restart_seq:
            self._stats["resync_refused"] += 1
            raise error(
                EOVERFLOW,
                f"resync needed: the service restarted after seq {self.restart_seq} "
                "and dropped the volatile notes published before; re-read with list",
            )
        oldest = self._backlog[0].seq if self._backlog else self.last_seq + 1
        if since < oldest - 1:
            self._stats["resync_refused"] += 1
            raise error(
                EOVERFLOW,
                f"resync needed: seq {since} is older than the backlog "
                f"(oldest kept: {oldest}); re-read with list",
            )

    def _snapshot(self, cred, userid):
        """`{"seq", "snapshot": true, "jobs": [...]}` of every job cred may see."""
        jobs = self.jobs
        ids = [i for i, j in jobs.items() if userid is None or j.userid == userid]
        if cred.owner:
            flags = None
        else:
            flags = bytes([1 if jobs[i].userid == cred.userid else 0 for i in ids])
        trees = json.loads(self.table.encode(ids, flags, self._view_ns, self._view_exclude))
        out = []
        for jobid, tree in trees:
            job = jobs[jobid]
            out.append(
                {"id": jobid, "userid": job.userid, "state": job.state, "annotations": tree}
            )
        return _dumps({"seq": self.last_seq, "snapshot": True, "jobs": out})

    def _forget(self, sub):
        try:
            self._subs.remove(sub)
        except ValueError:
            pass

    def subscribers(self):
        return len(self._subs)

    def close(self):
        """The service is closing: commit what is in flight, end every
        subscription (pending batches stay readable)."""
        self.stop_writer()
        for sub in self._subs:
            sub.closed = True
        self._subs = []

    def stats(self):
        return {
            "store_bytes": self.store.size_bytes() if self.store is not None else 0,
            "seq": self.last_seq,
            "batches": self._stats["batches"],
            "entries_published": self._stats["entries"],
            "subscribers": len(self._subs),
            "dropped_subscribers": self._stats["dropped_subscribers"],
            "resync_refused": self._stats["resync_refused"],
            "store_errors": self._stats["store_errors"],
            "backlog_batches": len(self._backlog),
            "backlog_bytes": self._backlog_bytes,
            "store_state": "ok" if self.fault is None else "failing",
            "store_fault": self._fault_stats(),
        }

    def _fault_stats(self):
        """None, or what `stats` says of a failing store: errno, its name,
        SQLite's sentence and since when (wall time), commits waiting."""
        if self.fault is None:
            return None
        exc, since = self.fault
        return {
            "errno": exc.errno,
            "error": errno.errorcode.get(exc.errno, str(exc.errno)),
            "cause": exc.message,
            "since": since,
            "batches_waiting": len(self._uncommitted),
        }
