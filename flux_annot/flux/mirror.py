"""The service as a mirror of a Flux instance (docs/flux.md).

`MirrorService` is an `AnnotationService` fed by a *journal source*: the
stream of Flux's `job-manager.events-journal` (every job's events, first
the history, then live). It maps each event onto the service (job states
as Flux shows them, the scheduler's annotation trees, memos, exceptions),
keeping Flux's timestamps, and publishes the result as the usual batches.
Flux stays the authority: the only write the mirror takes is a `memo`
(the `user` namespace), checked by this service's policy and guest limits
and then handed to Flux; the reply waits until the memo is back through
the journal.

A journal source is any object with (see `ListSource`, and
`flux_annot.flux_source.FluxJournal` for the real one):

    uri                       where the events come from (shown in stats)
    start()                   begin (connect, ask for the journal)
    poll(timeout, limit=None) -> list
                              the items ready (at most `limit`), waiting up
                              to `timeout` seconds for the first one (0: do
                              not wait)
    send_memo(token, id, memo, volatile)
                              ask Flux for a memo; the outcome comes back
                              through poll as ("memo", token, errnum, errstr),
                              after the memo's own journal event
    set_wakeup(fn)            fn() is called (from any thread) when items
                              become ready (the server's loop then polls)
    close()

Items, in the order the source saw them:

    ("connected", uri)            a (new) connection; its history follows
    ("journal", jobid, [entry])   RFC 18 entries {timestamp, name, context}
    ("sentinel",)                 end of the history; live events follow
    ("memo", token, errnum, errstr)
    ("disconnected", reason)      lost Flux; reconnecting

Mapping (Flux's job manager, RFC 21): submit creates the job in NEW
(userid, t_submit = the event's timestamp); validate NEW→DEPEND; depend
DEPEND→PRIORITY; priority PRIORITY→SCHED; urgency, jobspec-update and
flux-restart SCHED→PRIORITY; alloc SCHED→RUN and the tree := its
`annotations` snapshot; a severity-0 exception →CLEANUP (the note of the
lowest severity, first of equals, is the job's exception note, as
`flux jobs` shows it); finish RUN→CLEANUP; clean CLEANUP→INACTIVE;
`annotations` tree := its context's tree (null clears); `memo` merges
`{"user": memo}`; invalidate ends the job INACTIVE with a note (Flux
forgets it). Other events change nothing.

Batches: one journal `annotations` event of a pending job is held back
until the job's next event (the alloc that Flux posts right after it),
or any live event of another job (then no alloc was coming), or, with
no event at all, `HOLD_IDLE` seconds (at least ten batch windows); so a
job's allocation annotations and its RUN transition always share a batch.

Resynchronisation (start, reconnect): the history is collected until the
sentinel, then applied job by job: a job the mirror knows takes only the
events newer than the last one it applied (Flux's timestamps; the history
holds only the committed events, so the volatile notes the mirror has are
kept, as Flux keeps them); after a `flux-restart` event (Flux itself was
restarted and rebuilt the job from its committed events) the job's tree
is rebuilt the same way. A job that is not INACTIVE and is missing from
the history has vanished from Flux: it becomes INACTIVE with an exception
note saying so. Inactive jobs Flux has purged are kept.
"""

import json
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from errno import EIO, ETIMEDOUT
from typing import Any

from flux_annot.errors import EINVAL, ENOENT, EPERM, AnnotError, error
from flux_annot.service.policy import Cred
from flux_annot.service.replay import permissive_limits
from flux_annot.service.service import (
    INACTIVE,
    STATES,
    AnnotationService,
    Job,
    _check_cred,
    _encode,
    _encode_json,
    _namespaces,
)

log = logging.getLogger("flux_annot.mirror")

NEW, DEPEND, PRIORITY, SCHED, RUN, CLEANUP = STATES[:6]

#: Seconds a held `annotations` tree waits for its alloc when no other
#: journal event comes (at least ten batch windows).
HOLD_IDLE = 0.1

#: Live events whose lag (Flux timestamp -> batch published) `stats` summarises.
LAG_SAMPLES = 100_000

#: The journal's sentinel job id (FLUX_JOBID_ANY).
SENTINEL_ID = (1 << 64) - 1

#: The events the mirror maps; a source may ask Flux for only these.
EVENTS = (
    "submit",
    "invalidate",
    "validate",
    "depend",
    "priority",
    "urgency",
    "jobspec-update",
    "flux-restart",
    "alloc",
    "exception",
    "finish",
    "clean",
    "annotations",
    "memo",
)

# name -> (required state, new state): the simple transitions.
_MOVES = {
    "validate": (NEW, DEPEND),
    "depend": (DEPEND, PRIORITY),
    "priority": (PRIORITY, SCHED),
    "urgency": (SCHED, PRIORITY),
    "jobspec-update": (SCHED, PRIORITY),
    "flux-restart": (SCHED, PRIORITY),
    "finish": (RUN, CLEANUP),
    "clean": (CLEANUP, INACTIVE),
}

OWNED = (
    "the Flux instance owns {what}: through this mirror only memos "
    "(the user namespace) can be written"
)
VANISHED = "the job is no longer known to the Flux instance"
INVALIDATED = "the Flux instance rejected the job (invalidate)"
_EMPTY = b"{}"
_NS_USER = b"user"


class MirrorService(AnnotationService):
    """An `AnnotationService` that mirrors a Flux instance (module doc).

    source: a journal source (module doc), or None to feed it by hand with
    `apply_journal` / `apply_items`. Other arguments as `AnnotationService`.
    `memo_timeout`: seconds an in-process `memo` waits for Flux.
    """

    # Every stored job row is the live tree (Job.durable stays True): a
    # restart loses nothing published, so `since` stays good across it.
    volatile_survives_restart = True

    def __init__(
        self,
        source: Any = None,
        owner_uid: int | None = None,
        store: Any = None,
        config: Any = None,
        batch_window: float = 0.01,
        memo_timeout: float = 30.0,
    ):
        super().__init__(owner_uid=owner_uid, store=store, config=config, batch_window=batch_window)
        for s in STATES:
            self._counts.setdefault(s, 0)
        self.source = source
        self.uri = getattr(source, "uri", None)
        self.memo_timeout = memo_timeout
        self.flux_limits = permissive_limits()  # Flux's data: never refused
        # A held tree waits for its alloc: until any other journal event comes
        # (Flux posts the alloc right behind it), or this long with none.
        self._hold_for = max(10 * self._window, HOLD_IDLE)
        self._last_ts = {}  # jobid -> Flux timestamp of the last event applied
        self._severity = {}  # jobid -> severity of the note shown
        self._held = {}  # jobid -> (annotations context, ts, self.clock() when held)
        self.clock = time.monotonic  # how long annotations are held (tests may replace it)
        self._history = None  # {jobid: [entries]} while a history arrives
        self._waiters = {}  # memo token -> fn(errnum, errstr)
        self._volatile_memos = set()  # tokens of volatile memos: no commit to wait for
        self._token = 0
        self._lock = threading.Lock()
        self.connected = False
        self.synced = False
        self._flux = {
            "events": 0,
            "events_ignored": 0,
            "events_unmapped": 0,
            "connects": 0,
            "disconnects": 0,
            "resyncs": 0,
            "vanished": 0,
            "memos_sent": 0,
            "memos_refused_by_flux": 0,
        }
        self._last_event = None  # (jobid, name, timestamp)
        # Lag of live events: Flux's timestamp -> their batch published.
        self._lag_open = []  # timestamps of the live events in the open batch
        self._lags = deque(maxlen=LAG_SAMPLES)  # seconds, most recent last
        self._since = None  # when connected/disconnected
        self._reason = "not connected yet"
        if self.store is not None:
            self._restore_marks()

    # -- start-up -------------------------------------------------------------

    def _restore_marks(self):
        """Last Flux timestamp and exception severity per job, from the store."""
        last = self._last_ts
        for jobid, name, ctx, ts in self.store.entries():
            if ts > last.get(jobid, 0.0):
                last[jobid] = ts
            if name == "exception":
                try:
                    sev = json.loads(ctx).get("severity", 0)
                except (ValueError, AttributeError):
                    continue
                old = self._severity.get(jobid)
                if old is None or sev < old:
                    self._severity[jobid] = sev

    # -- feeding --------------------------------------------------------------

    def pump(self, timeout: float = 0.0, limit: int | None = None) -> int:
        """Apply what the source has ready (waiting up to `timeout` for it),
        at most `limit` items; returns the number of items applied."""
        items = self.source.poll(timeout) if limit is None else self.source.poll(timeout, limit)
        if items:
            self.apply_items(items)
        elif self._t0 is not None or self._held:
            self._tick_mirror()
        return len(items)

    def apply_items(self, items: Iterable[tuple]) -> None:
        """Apply source items (module doc) in order."""
        for item in items:
            kind = item[0]
            if kind == "journal":
                self.apply_journal(item[1], item[2])
            elif kind == "memo":
                self._memo_done(item[1], item[2], item[3])
            elif kind == "sentinel":
                self._end_history()
            elif kind == "connected":
                self._connected(item[1])
            elif kind == "disconnected":
                self._disconnected(item[1])
        self._tick_mirror()

    def apply_journal(self, jobid: int, entries: list[dict]) -> None:
        """One journal response: the entries of job `jobid`, in order."""
        if jobid == SENTINEL_ID or jobid == -1:
            self._end_history()
            return
        if self._history is not None:
            self._history.setdefault(jobid, []).extend(entries)
            return
        for e in entries:
            self._event(jobid, e, True)

    def _connected(self, uri):
        self.connected = True
        self.synced = False
        if uri:
            self.uri = uri
        if self._flux["disconnects"]:
            log.warning("connected to the Flux instance at %s again after %.1f s",
                        self.uri, time.time() - (self._since or time.time()))
        else:
            log.info("connected to the Flux instance at %s", self.uri)
        self._since = time.time()
        self._reason = None
        self._flux["connects"] += 1
        self._history = {}

    def _disconnected(self, reason):
        if self.connected:
            self._flux["disconnects"] += 1
            log.warning("lost the Flux instance at %s: %s", self.uri, reason)
        self.connected = False
        self.synced = False
        self._since = time.time()
        self._reason = reason
        self._history = None
        self._release_held(all_=True)
        # Memos sent and not answered: Flux's answer is lost with the connection.
        waiters, self._waiters = self._waiters, {}
        self._volatile_memos.clear()
        for done in waiters.values():
            done(
                EIO,
                f"the connection to the Flux instance at {self.uri} was lost before it "
                "answered; the memo may or may not have been applied",
            )

    def _end_history(self):
        """Apply the collected history (module doc: resynchronisation)."""
        history, self._history = self._history or {}, None
        self._flux["resyncs"] += 1
        self._release_held(all_=True)
        max_entries = self._max_entries
        for jobid, entries in history.items():
            last = self._last_ts.get(jobid)
            job = self.jobs.get(jobid)
            if job is None or last is None:
                new = entries
            else:
                new = [e for e in entries if _ts(e) > last]
            for e in new:
                self._event(jobid, e, False)
            if any(e.get("name") == "flux-restart" for e in new) and jobid in self.jobs:
                self._rebuild(jobid, entries)
            if self._n_open >= max_entries:
                self.flush()
        now = time.time()
        for jobid, job in list(self.jobs.items()):
            if job.state != INACTIVE and jobid not in history:
                self._vanish(jobid, job, now)
        self.synced = True
        self.flush()

    def _rebuild(self, jobid, entries):
        """Flux restarted: the job's tree is what its committed events make."""
        scratch = _Scratch()
        for e in entries:
            name = e.get("name")
            ctx = e.get("context")
            if type(ctx) is not dict:
                continue
            if name == "alloc" and type(ctx.get("annotations")) is dict:
                scratch.tree = ctx["annotations"]
            elif name == "memo" and type(ctx) is dict:
                scratch.memo(ctx)
        job = self.jobs[jobid]
        self._set_tree(jobid, job, scratch.tree)
        ts = self._last_ts.get(jobid, time.time())
        self.hub.record_entry(jobid, "annotations", {"annotations": scratch.tree}, ts)
        self._touched()

    def _vanish(self, jobid, job, now):
        self._flux["vanished"] += 1
        if job.state == SCHED:
            self._discard_sched(jobid, job)
        self._end(jobid, job, VANISHED, now)

    def _end(self, jobid, job, note, ts):
        """The job ends INACTIVE here with `note` (an exception of
        flux-annot's own, severity 0), the job's note unless Flux gave it
        one of severity 0 already."""
        ctx = {"type": "flux-annot", "severity": 0, "note": note}
        self.hub.record_entry(jobid, "exception", ctx, ts)
        old = self._severity.get(jobid)
        if old is None or old > 0:
            self.notes[jobid] = note
            self._severity[jobid] = 0
        self._set_state(jobid, job, INACTIVE, ts)

    # -- one event ---------------------------------------------------------------

    def _event(self, jobid, e, live):
        """Map one journal entry of job `jobid` onto the service."""
        try:
            name = e["name"]
            ts = float(e["timestamp"])
        except (KeyError, TypeError, ValueError):
            self._flux["events_unmapped"] += 1
            return
        ctx = e.get("context")
        if ctx is None:
            ctx = {}
        self._flux["events"] += 1
        self._last_event = (jobid, name, ts)
        if live:
            self._lag_open.append(ts)
        job = self.jobs.get(jobid)
        if name == "submit":
            if job is None and type(ctx) is dict:
                self._submit(jobid, ctx, ts)
            return
        if job is None:
            self._flux["events_ignored"] += 1
            return
        if self._held and live:
            self._release_others(jobid)
        held = self._held.pop(jobid, None) if self._held else None
        if held is not None:
            if name == "annotations":
                held = None  # this newer tree replaces the held one
            else:
                self._apply_annotations(jobid, job, held[0], held[1])
        if ts > self._last_ts.get(jobid, 0.0):
            self._last_ts[jobid] = ts
        try:
            self._map(jobid, job, name, ctx, ts, live)
        except AnnotError as exc:
            # A context Flux accepted but that is not an object where one is
            # expected: nothing to mirror.
            self._flux["events_unmapped"] += 1
            log.warning("journal event %s of job %d not mirrored: %s", name, jobid, exc)

    def _submit(self, jobid, ctx, ts):
        userid = ctx.get("userid")
        if type(userid) is not int or not 0 <= userid < 1 << 32:
            self._flux["events_unmapped"] += 1
            return
        self.jobs[jobid] = Job(userid, NEW, ts)
        self._counts[NEW] += 1
        self._last_ts[jobid] = ts
        hub = self.hub
        hub.record_entry(jobid, "submit", ctx, ts)
        hub.record_transition(jobid, NEW, ts)
        self._touched(2)

    def _map(self, jobid, job, name, ctx, ts, live):
        move = _MOVES.get(name)
        if move is not None:
            if job.state == move[0]:
                self.hub.record_entry(jobid, name, ctx, ts)
                self._set_state(jobid, job, move[1], ts)
            return
        if name == "annotations":
            if job.state == SCHED and type(ctx) is dict:
                # the estimate took effect at Flux's timestamp (docs/accuracy.md),
                # recorded now even when the tree itself is held back
                self._note_estimate_tree(jobid, ctx.get("annotations"), ts)
            if live and job.state == SCHED:
                self._held[jobid] = (ctx, ts, self.clock())
                return
            self._apply_annotations(jobid, job, ctx, ts)
        elif name == "memo":
            if type(ctx) is not dict:
                raise error(EINVAL, "memo context is not an object")
            info = self.table.apply(
                jobid,
                b'{"user":' + _encode_json(ctx).encode() + b"}",
                self.flux_limits,
                _NS_USER,
            )
            self._changed(job, info)
            self.hub.record_entry(jobid, "memo", ctx, ts)
            self._touched()
        elif name == "alloc":
            ann = ctx.get("annotations", _NOTHING) if type(ctx) is dict else _NOTHING
            if ann is not _NOTHING:
                self._set_tree(jobid, job, ann)
            tree = self.table.get(jobid)
            snap = b'{"annotations":' + (tree if tree is not None else b"null") + b"}"
            self.hub.record_entry(jobid, "alloc", snap, ts)
            if job.state == SCHED:
                self._set_state(jobid, job, RUN, ts)
            else:
                self._touched()
        elif name == "exception":
            if type(ctx) is not dict:
                raise error(EINVAL, "exception context is not an object")
            sev = ctx.get("severity", 0)
            note = ctx.get("note")
            old = self._severity.get(jobid)
            if old is None or (type(sev) is int and sev < old):
                self._severity[jobid] = sev
                if note:
                    self.notes[jobid] = note
                else:
                    self.notes.pop(jobid, None)
            self.hub.record_entry(jobid, "exception", ctx, ts)
            if sev == 0 and job.state not in (NEW, INACTIVE):
                self._set_state(jobid, job, CLEANUP, ts)
            else:
                self._touched()
        elif name == "invalidate":
            if job.state == NEW:
                self._invalidate(jobid, job, ts)
        else:
            self._flux["events_ignored"] += 1

    def _apply_annotations(self, jobid, job, ctx, ts):
        ann = ctx.get("annotations") if type(ctx) is dict else None
        self._set_tree(jobid, job, ann)
        self.hub.record_entry(jobid, "annotations", {"annotations": ann}, ts)
        self._touched()

    def _set_tree(self, jobid, job, tree):
        """The job's whole tree := `tree` (a dict, or None for none)."""
        if tree is not None and type(tree) is not dict:
            raise error(EINVAL, "annotations are not an object")
        data = _encode_json(tree).encode() if tree else _EMPTY
        info = self.table.apply(jobid, data, self.flux_limits, _NS_USER, replace=True)
        self._changed(job, info)

    def _changed(self, job, info):
        if info.new_ns_len != info.old_ns_len:
            self._account(job, info)
        if info.changed:
            self._touched()

    def _invalidate(self, jobid, job, ts):
        """invalidate: Flux rejected a job that never left NEW and forgets
        it. Here it ends INACTIVE with a note, as a job that vanished: its
        submit may have been published already (the event stream cannot
        take a job back), and a job shown or not by chance of timing would
        be worse than one kept as history."""
        self._end(jobid, job, INVALIDATED, ts)

    # -- batches --------------------------------------------------------------------

    def _release_held(self, all_=False):
        """Apply held annotations (all, or those held one window or more)."""
        if not self._held:
            return
        now = self.clock()
        for jobid, (ctx, ts, since) in list(self._held.items()):
            if all_ or now - since >= self._hold_for:
                del self._held[jobid]
                job = self.jobs.get(jobid)
                if job is not None:
                    self._apply_annotations(jobid, job, ctx, ts)

    def _release_others(self, jobid):
        """A live event of another job came: Flux sent no alloc right behind
        the held trees of other jobs, so they were the scheduler's notes."""
        for other in [j for j in self._held if j != jobid]:
            ctx, ts, _since = self._held.pop(other)
            job = self.jobs.get(other)
            if job is not None:
                self._apply_annotations(other, job, ctx, ts)

    def _tick(self):
        """The service's batch check, closing with `flush_live`: a batch that
        closes because its window passed keeps what is held for the next."""
        t0 = self._t0
        if t0 is not None and (
            time.monotonic() - t0 >= self._window or self._n_open >= self._max_entries
        ):
            self.flush_live()

    def _tick_mirror(self):
        if self._held:
            self._release_held()
        if self._t0 is not None:
            self._tick()

    def flush(self) -> int | None:
        """Close the open batch (in-process: held annotations included)."""
        if self._held:
            self._release_held(all_=True)
        self._lag_mark()
        return super().flush()

    def flush_live(self) -> int | None:
        """The server's timer: release what has been held long enough, then close."""
        self._release_held()
        self._lag_mark()
        return AnnotationService.flush(self)

    def _lag_mark(self):
        """When the open batch is published, note how late its live events are."""
        if self._lag_open:
            stamps, self._lag_open = self._lag_open, []
            lags = self._lags

            def published():
                now = time.time()
                lags.extend(now - ts for ts in stamps)

            self.hub.after_commit(published)

    def holding(self) -> bool:
        """Whether held annotations wait for release (the server arms its timer)."""
        return bool(self._held)

    # -- writes -------------------------------------------------------------------------

    def submit(self, id, userid, t_submit=None):
        raise self._reject("flux_owned", error(EPERM, OWNED.format(what="job submission")))

    def state(self, id, state, note=None):
        raise self._reject("flux_owned", error(EPERM, OWNED.format(what="job states")))

    def alloc_response(self, payload):
        raise self._reject(
            "flux_owned", error(EPERM, OWNED.format(what="allocations (the scheduler's responses)"))
        )

    def annotate(self, cred, id, annotations, volatile=False):
        """Only `{"user": memo}` (and nulls) pass: a memo to Flux."""
        self._n_annotate += 1
        _check_cred(cred)
        if type(annotations) is not dict:
            try:
                _encode(annotations, "annotations")
                annotations = json.loads(annotations)
            except AnnotError as exc:
                raise self._reject("invalid", exc) from None
            except ValueError as exc:
                raise self._reject(
                    "invalid", error(EINVAL, f"annotations are not valid JSON: {exc}")
                ) from None
            if type(annotations) is not dict:
                raise self._reject("invalid", error(EINVAL, "annotations must be a JSON object"))
        try:
            keys = list(_namespaces(annotations))
        except AnnotError as exc:
            raise self._reject("invalid", exc) from None
        other = [k for k in keys if k != "user"]
        if other:
            raise self._reject(
                "flux_owned",
                error(EPERM, OWNED.format(what=f"the {other[0]!r} namespace")),
            )
        return self.memo(cred, id, annotations.get("user") or {}, volatile=volatile)

    def check_memo(self, cred: Cred, id: int, memo: Any, volatile: bool = False) -> dict:
        """Every check of a memo (policy, guest limits) with nothing changed.

        Returns the memo as a dict, to be sent to Flux. Raises as `memo`.
        """
        if self._t0 is not None:
            self._tick()
        _check_cred(cred)
        if type(volatile) is not bool:
            raise self._reject(
                "invalid", error(EINVAL, f"volatile must be true or false, not {volatile!r}")
            )
        guest = not cred.owner
        self._guest_rate(cred)
        try:
            data, tree = _encode(memo, "memo")
        except AnnotError as exc:
            raise self._reject("invalid", exc) from None
        full = b'{"user":' + data + b"}"
        job = self._writable_job(id, full, guest)
        wrapped = {"user": tree} if tree is not None else None
        if guest:
            self._guest_trial(cred, id, job, full, wrapped, True)
        else:
            try:
                self.table.apply(id, full, self.owner_limits, _NS_USER, dryrun=True)
                self.policy.check_owner(["user"], job.userid == cred.userid)
            except AnnotError as exc:
                raise self._reject("permission" if exc.errno == EPERM else "invalid", exc) from None
            if tree is None:
                try:
                    wrapped = json.loads(full)
                    _namespaces(wrapped, True)
                except AnnotError as exc:
                    raise self._reject("invalid", exc) from None
        if wrapped is None:
            wrapped = json.loads(full)
        if type(wrapped["user"]) is not dict:
            raise self._reject("invalid", error(EINVAL, "memo must be a JSON object"))
        return wrapped["user"]

    def send_memo(
        self, id: int, memo: dict, volatile: bool, done: Callable[[int, str | None], None]
    ) -> None:
        """Hand a checked memo to Flux; `done(errnum, errstr)` once it is back
        through the journal and (unless volatile) committed here (errnum 0),
        or refused."""
        if not self.connected or self.source is None:
            done(EIO, f"the Flux instance at {self.uri} is not reachable; the memo was not sent")
            return
        with self._lock:
            self._token += 1
            token = self._token
        self._waiters[token] = done
        if volatile:
            self._volatile_memos.add(token)
        self._flux["memos_sent"] += 1
        self.source.send_memo(token, id, memo, volatile)

    def _memo_done(self, token, errnum, errstr):
        done = self._waiters.pop(token, None)
        volatile = token in self._volatile_memos
        self._volatile_memos.discard(token)
        if done is None:
            return
        if errnum:
            self._flux["memos_refused_by_flux"] += 1
            done(errnum, errstr or "the Flux instance refused the memo")
        else:
            # The memo's journal event came before this reply (same
            # connection, in order): it is applied; answer once committed
            # (§7), or at once when volatile (nothing to commit, as a
            # volatile annotate is answered on the socket).
            if volatile:
                done(0, None)
            else:
                self.hub.after_commit(lambda: done(0, None))

    def memo(self, cred: Cred, id: int, memo: Any, volatile: bool = False) -> None:
        """In-process: check, send to Flux, wait until it is back (module doc)."""
        self._n_memo += 1
        body = self.check_memo(cred, id, memo, volatile)
        result = []
        self.send_memo(id, body, volatile, lambda e, s: result.append((e, s)))
        deadline = time.monotonic() + self.memo_timeout
        while not result:
            left = deadline - time.monotonic()
            if left <= 0:
                raise error(ETIMEDOUT, f"no answer from the Flux instance at {self.uri}")
            self.pump(min(left, 0.1))
            if not result and self._waiters.get(self._token) is None:
                self.flush()  # the memo is back: commit, which answers
        errnum, errstr = result[0]
        if errnum:
            raise error(errnum, errstr)

    # -- reading ---------------------------------------------------------------------------

    def flux_metrics(self) -> dict:
        """What the metrics show of Flux (flux_annot.metrics; cheap, no sort):
        connected, synced, the lag in seconds (the latest live event's from
        Flux's timestamp to its batch published, or the age of the oldest
        live event not yet closed into a batch if that is longer; None
        before any live event) and the `flux` counters of `stats`."""
        lag = self._lags[-1] if self._lags else None
        if self._lag_open:
            waiting = time.time() - self._lag_open[0]
            if lag is None or waiting > lag:
                lag = waiting
        return {"connected": self.connected, "synced": self.synced, "lag": lag, **self._flux}

    def stats(self) -> dict:
        out = super().stats()
        last = self._last_event
        lags = sorted(self._lags)
        out["flux"] = {
            "mirror": True,
            "uri": self.uri,
            "connected": self.connected,
            "synced": self.synced,
            "since": self._since,
            "reason": self._reason,
            "last_event": (
                None if last is None else {"id": last[0], "name": last[1], "timestamp": last[2]}
            ),
            "lag_ms": {
                "samples": len(lags),
                "median": round(1e3 * lags[len(lags) // 2], 3) if lags else None,
                "p99": round(1e3 * lags[min(len(lags) - 1, len(lags) * 99 // 100)], 3)
                if lags
                else None,
            },
            **self._flux,
        }
        return out


_NOTHING = object()


def _ts(e):
    try:
        return float(e["timestamp"])
    except (KeyError, TypeError, ValueError):
        return 0.0


class _Scratch:
    """A tree rebuilt as Flux's job manager rebuilds it at its restart."""

    def __init__(self):
        self.tree = None

    def memo(self, memo):
        from flux_annot.core import merge

        try:
            self.tree = merge(self.tree, {"user": memo})
        except AnnotError:
            pass


# -- journal sources ------------------------------------------------------------------


class ItemQueue:
    """The item queue of a journal source: `_push` from any thread, `poll`
    and `set_wakeup` of the source interface (module doc)."""

    def __init__(self):
        self._items = deque()
        self._cond = threading.Condition()
        self._wakeup = None

    def _push(self, item):
        with self._cond:
            was_empty = not self._items
            self._items.append(item)
            self._cond.notify_all()
        if was_empty and self._wakeup is not None:
            self._wakeup()

    def set_wakeup(self, fn: Callable[[], None] | None) -> None:
        self._wakeup = fn

    def poll(self, timeout: float = 0.0, limit: int | None = None) -> list[tuple]:
        with self._cond:
            if not self._items and timeout:
                self._cond.wait(timeout)
            q = self._items
            if limit is None or len(q) <= limit:
                items = list(q)
                q.clear()
            else:
                items = [q.popleft() for _ in range(limit)]
        return items


class ListSource(ItemQueue):
    """A journal source that replays recorded journal responses (dicts as
    Flux sends them: `{"id", "events"}`, the sentinel's id `SENTINEL_ID`)
    and answers memos as Flux's job manager does (`unknown job id`,
    `job is inactive`, else the memo event, then the reply). `push` adds
    responses later (live events); `sent` lists the memos that reached it.
    """

    uri = "recorded://journal"

    def __init__(self, responses=(), uri=None):
        super().__init__()
        if uri is not None:
            self.uri = uri
        self._items.append(("connected", self.uri))
        self._inactive = set()
        self._known = set()
        self.sent = []
        for r in responses:
            self._items.append(self._add(r))

    @classmethod
    def from_file(cls, path: str | os.PathLike, **kw: Any) -> "ListSource":
        """Responses from a JSON-lines file (one journal response a line)."""
        with open(path, encoding="utf-8") as f:
            return cls([json.loads(line) for line in f if line.strip()], **kw)

    def _add(self, resp):
        jobid = resp["id"]
        if jobid == SENTINEL_ID or jobid == -1:
            return ("sentinel",)
        for e in resp.get("events", ()):
            if e.get("name") == "submit":
                self._known.add(jobid)
            elif e.get("name") == "clean":
                self._inactive.add(jobid)
        return ("journal", jobid, list(resp.get("events", ())))

    def push(self, resp: dict) -> None:
        """One more journal response (a live event)."""
        self._push(self._add(resp))

    def disconnect(self, reason: str = "connection lost") -> None:
        """As if Flux went away (then `reconnect` with its new history)."""
        self._push(("disconnected", reason))

    def reconnect(self, responses: Iterable[dict]) -> None:
        self._push(("connected", self.uri))
        self._known.clear()
        self._inactive.clear()
        for r in responses:
            self.push(r)

    def start(self):
        pass

    def send_memo(self, token: int, jobid: int, memo: dict, volatile: bool) -> None:
        if jobid not in self._known:
            self._push(("memo", token, ENOENT, "unknown job id"))
        elif jobid in self._inactive:
            self._push(("memo", token, ENOENT, "job is inactive"))
        else:
            self.sent.append((jobid, memo, volatile))
            event = {"timestamp": time.time(), "name": "memo", "context": memo}
            self.push({"id": jobid, "events": [event]})
            self._push(("memo", token, 0, None))

    def close(self):
        pass
