"""The annotation service in-process (docs/policy.md, docs/limits.md, docs/lifecycle.md, docs/python-api.md): `AnnotationService`.

Data flow of a mutating call: check (cheapest first, nothing changed yet) →
apply to the C table (`self.table`, tracking on: it records each job's
pre-image for the open batch) → tell the event hub what must be published
or made durable (`hub.record_transition`, `hub.record_entry`). The hub
closes batches when asked: the service asks when a call finds the batch
window has passed or the batch full, on `flush()` and on `close()`.

Paths and what they cost:

- Scheduler (`alloc_response` ANNOTATE): type checks, one `json` encode of
  the annotations dict, one C apply. No policy work unless the config
  restricts the namespaces an alloc response may write (then a set lookup
  per top-level key).
- Guest (`annotate`/`memo` with a non-owner `Cred`), in this order, all
  before any change: rate (token bucket, EAGAIN) → encoded length (E2BIG,
  before any parse) → job lookup (ENOENT) → C parse + trial merge with the
  guest limits (`apply(..., dryrun=True)`: depth/keys/syntax, EINVAL) →
  policy (EPERM: own job, namespaces) → size of `user` after the trial
  merge (E2BIG) → per-user total (EDQUOT) → `commit()`. The only Python
  parse is of a `str`/`bytes` payload, for its top-level keys and their
  value types, done after the C parse has accepted it (so it is valid and
  at most `guest_payload_bytes` long); a dict payload needs no parse.
- Owner (`annotate` with an owner `Cred`): job lookup, namespace policy
  from the dict's keys, one C apply with the owner limits (a `str`/`bytes`
  payload is dry-run first so its keys can be checked before the change).

Choices where the documented rules are silent (see also docs/DESIGN.md):

- `batch_window`: the constructor argument applies unless the config has
  `[batch] window`, which wins; `self.config.batch.window` holds the value
  in force. Every call (reads included) first closes the open batch if the
  window has passed, so in-process window 0 means "the next call closes it".
- A `note` given with `state(..., "CLEANUP"|"INACTIVE")` (and a DENY note)
  is kept as the job's exception note: an `exception` eventlog entry, and
  `"exception": note` in `get`/`list` output of that job (key absent when
  there is none).
- A guest may always shrink its `user` namespace, even if an owner made it
  larger than `guest_namespace_bytes`; only growth past the limit is E2BIG.
- The per-user total (EDQUOT) counts the `user` namespace of the user's
  active jobs, whoever wrote it; inactive jobs no longer count.
"""

import collections
import copy
import gc
import json
import math
import os
import time
from collections.abc import Callable, Iterable, KeysView
from typing import Any

from flux_annot.service import replay
from flux_annot.service.accuracy import Accuracy
from flux_annot.service.accuracy import histogram as _histogram
from flux_annot.service.config import Config
from flux_annot.core import (
    BAD_ESTIMATE,
    SCHED_QUEUE,
    SCHED_SLOW,
    ApplyInfo,
    JobTable,
    Limits,
    SchedScanner,
    sched_fields,
)
from flux_annot.errors import E2BIG, EAGAIN, EEXIST, EINVAL, ENOENT, EPERM, EPROTO, AnnotError, error
from flux_annot.service.events import EventHub, Subscription
from flux_annot.service.limits import RateLimiter, UserBytes
from flux_annot.service.policy import Cred, Policy
from flux_annot.service.store import Store

NEW, DEPEND, PRIORITY = "NEW", "DEPEND", "PRIORITY"
SCHED, RUN, CLEANUP, INACTIVE = "SCHED", "RUN", "CLEANUP", "INACTIVE"
STATES = (NEW, DEPEND, PRIORITY, SCHED, RUN, CLEANUP, INACTIVE)
_STATE_NAMES = {s: s for s in STATES}
_STATE_NAMES.update({s[0]: s for s in STATES})

# docs/lifecycle.md: the only transitions `state()` makes (RUN comes from SUCCESS).
_TRANSITIONS = {(RUN, CLEANUP), (CLEANUP, INACTIVE), (RUN, INACTIVE), (SCHED, INACTIVE)}

# RFC 27 alloc response types.
A_SUCCESS, A_ANNOTATE, A_DENY, A_CANCEL = 0, 1, 2, 3

_U64 = 1 << 64
_U32 = 1 << 32
_MISSING = object()
_DISCARD_SCHED = b'{"sched":null}'
_NS_USER = b"user"

# One prebuilt encoder: json.dumps(obj, **kw) would build a new one per call.
_encode_json = json.JSONEncoder(
    separators=(",", ":"), ensure_ascii=False, allow_nan=False, check_circular=False
).encode


def _unserializable(obj: object) -> Any:
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


try:  # Hot path: the C encoder object itself, built once (JSONEncoder.encode
    # builds one per call, about half of the cost for a small dict). Same
    # output and errors as `_encode_json` above.
    from json.encoder import c_make_encoder as _c_make_encoder, encode_basestring as _enc_str  # type: ignore[attr-defined]

    _c_iterencode = _c_make_encoder(
        None, _unserializable, _enc_str, None, ":", ",", False, False, False
    )

    def _encode_json(obj: Any, _join: Callable[[Any], str] = "".join, _it: Any = _c_iterencode) -> str:  # type: ignore[misc]  # noqa: F811
        return _join(_it(obj, 0))

except ImportError:  # a Python without the _json accelerator
    pass

_monotonic = time.monotonic
_now = time.time


class Job:
    """What the service knows of a job besides its annotations."""

    __slots__ = ("userid", "state", "t_submit", "user_bytes", "durable")

    def __init__(self, userid: int, state: str, t_submit: float, user_bytes: int = 0) -> None:
        self.userid = userid
        self.state = state
        self.t_submit = t_submit
        self.user_bytes = user_bytes  # size of its `user` namespace (compact JSON)
        # True while the live tree IS the durable tree (no volatile change
        # since the last durable state): the batch's snapshot row is then
        # just `table.get` (events.EventHub._meta). Cleared by any volatile
        # change, set again by SUCCESS (its alloc snapshot is the live tree).
        # A new or restored job starts with its durable tree.
        self.durable = True

    def __repr__(self) -> str:
        return f"Job(userid={self.userid}, state={self.state}, user_bytes={self.user_bytes})"


def _encode(obj: object, what: str) -> tuple[bytes, dict[str, Any] | None]:
    """Annotations as JSON bytes, and the dict itself when it is one (else None)."""
    if type(obj) is dict:
        try:
            return _encode_json(obj).encode("utf-8"), obj
        except RecursionError:
            raise error(EINVAL, f"{what} are nested too deeply") from None
        except (TypeError, ValueError) as exc:  # incl. UnicodeEncodeError (lone surrogate)
            raise error(EINVAL, f"{what} are not valid JSON: {exc}") from None
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return bytes(obj), None
    if isinstance(obj, str):
        try:
            return obj.encode("utf-8"), None
        except UnicodeEncodeError:
            raise error(EINVAL, f"{what} contain invalid UTF-8 (a lone surrogate)") from None
    if isinstance(obj, dict):  # a dict subclass: encode it like a dict
        return _encode(dict(obj), what)
    raise error(EINVAL, f"{what} must be a JSON object, not {type(obj).__name__}")


def _namespaces(tree: dict[str, Any], is_memo: bool = False) -> KeysView[str]:
    """The top-level keys of `tree`; EINVAL unless every value is an object
    or null (docs/data-model.md: a namespace's value is an object)."""
    for ns, v in tree.items():
        if v is not None and type(v) is not dict:
            if is_memo:
                raise error(EINVAL, "memo must be a JSON object")
            raise error(EINVAL, f"the value of namespace {ns!r} must be an object or null")
    return tree.keys()


def _check_id(id: object) -> None:
    if type(id) is not int or not 0 <= id < _U64:
        raise error(EINVAL, f"job id must be an unsigned 64-bit integer, not {id!r}")


def _check_cred(cred: object) -> None:
    if not isinstance(cred, Cred):
        raise error(EINVAL, f"cred must be a flux_annot.Cred, not {type(cred).__name__}")


def _state_name(state: object) -> str:
    name = _STATE_NAMES.get(state.upper()) if isinstance(state, str) else None
    if name is None:
        raise error(EINVAL, f"unknown job state {state!r} (expected one of {' '.join(STATES)})")
    return name


class AnnotationService:
    """The whole service in-process (docs/python-api.md); see the module docstring."""

    def __init__(self, owner_uid: int | None = None, store: str | os.PathLike[str] | Store | None = None, config: dict[str, Any] | Config | None = None, batch_window: float = 0.01, clock: Callable[[], float] | None = None) -> None:
        if owner_uid is None:
            owner_uid = os.getuid()
        if isinstance(owner_uid, bool) or not isinstance(owner_uid, int) or not 0 <= owner_uid < _U32:
            raise error(EINVAL, f"owner_uid must be an unsigned 32-bit integer, not {owner_uid!r}")
        self.owner_uid = owner_uid
        # wall time this service started: `stats` shows it, so a client can
        # tell a restarted service from the one it subscribed to
        self.started = time.time()
        # The time of transitions, eventlog entries and estimates (seconds
        # since the epoch): the wall clock, or a simulation's (the demo).
        if clock is not None and not callable(clock):
            raise error(EINVAL, f"clock must be a function returning seconds, not {clock!r}")
        self._now: Callable[[], float] = clock if clock is not None else _now
        self.config = cfg = Config(config)
        if "batch.window" not in cfg.given:
            if (
                isinstance(batch_window, bool)
                or not isinstance(batch_window, (int, float))
                or not math.isfinite(batch_window)
                or batch_window < 0
            ):
                raise error(EINVAL, f"batch_window must be a number >= 0, not {batch_window!r}")
            cfg.batch.window = float(batch_window)
        self._window = cfg.batch.window
        self._max_entries = cfg.batch.max_entries
        self.policy = Policy(cfg)
        self._sched_writes_user = self.policy.writable("sched", "user")
        # Namespaces an alloc response may write without a closer look (None:
        # all); others go through policy.check_sched (EPERM, or allowed as an
        # unnamed namespace when the `default` table lets the scheduler write).
        self._sched_ok = (
            None
            if self.policy.sched_writes_all
            else frozenset(n for n in cfg.namespace if self.policy.writable("sched", n))
        )
        lim = cfg.limits
        self.owner_limits = Limits(
            depth=lim.depth_owner, key_bytes=lim.key_bytes, object_keys=lim.object_keys
        )
        self.guest_limits = Limits(
            depth=lim.depth_guest, key_bytes=lim.key_bytes, object_keys=lim.object_keys
        )
        self._payload_max = lim.guest_payload_bytes
        self._owner_writes: dict[str, bool] = {}  # namespace -> the owner may write it on any job (_annotate_text)
        self._ns_max = lim.guest_namespace_bytes
        self.table = JobTable(self.owner_limits)
        self.jobs: dict[int, Job] = {}
        self.notes: dict[int, str] = {}  # jobid -> exception note (few jobs have one)
        self.rate = RateLimiter(lim.guest_rate, lim.guest_burst)
        self._rate_message = self.rate.message()
        self.user_bytes = UserBytes(lim.guest_user_total_bytes)
        self._counts = {s: 0 for s in (SCHED, RUN, CLEANUP, INACTIVE)}
        self._requests: dict[str, int] = {}
        self._n_alloc = 0  # hot paths count in attributes, not dict items
        self._n_annotate = 0
        self._n_memo = 0
        # ... those of the server's frame decoder apart (the dispatch counts
        # every other request by topic itself: Dispatch.topic_counts)
        self._n_alloc_text = 0
        self._n_annotate_text = 0
        self._n_memo_text = 0
        self._n_ignored = 0
        self._rejected: dict[str, int] = {}
        self._t0: float | None = None  # monotonic time of the first change of the open batch
        self._n_open = 0  # upper bound of the open batch's size (see _tick)
        self._closed = False
        # docs/accuracy.md: every job's estimate history (rows go with the batches)
        self.estimates = Accuracy(cfg.accuracy.horizons)
        self._scan_sched = SchedScanner().scan
        self._hist = self.estimates.hist  # the C records (JobTable.annotate_sched fills them)
        self._wall_clock = clock is None  # the C side reads the wall clock itself
        self._acc_cache: tuple[float, int, dict[str, Any]] | None = None  # stats() summary
        self._acc_answers: dict[tuple[Any, ...], tuple[float, int, dict[str, Any]]] = {}  # accuracy()
        self.store = None
        if store is not None:
            self.store = store if isinstance(store, Store) else Store(store)
            self._restore()
        self.table.track(True)
        self.hub = EventHub(self)

    # -- start-up ---------------------------------------------------------

    def _restore(self) -> None:
        """Rebuild jobs, table, per-user totals and notes from the store.

        One bulk load of the stored snapshots (`replay.restore`); the job
        records are built from its columns with C-level map/zip (no Python
        statement per job); `user` sizes, totals and notes come with it.
        """
        self.table.track(False)
        # Millions of new tuples and Job objects, none in a cycle: the cyclic
        # GC would rescan them all again and again (measured: the fetch and
        # the column split cost 2-3x more with it on).
        gc_was_on = gc.isenabled()
        gc.disable()
        try:
            r = replay.restore(self.store, self.table)
            names = _STATE_NAMES
            states: list[Any] = list(map(names.get, r.states, r.states))
            self.jobs.update(zip(r.ids, map(Job, r.userids, states, r.t_submits, r.user_bytes)))
        finally:
            if gc_was_on:
                gc.enable()
        counts = self._counts
        for state, n in collections.Counter(states).items():
            counts[state] = counts.get(state, 0) + n
        add: Callable[[int, int], None] = self.user_bytes.add
        for userid, n in r.totals.items():
            add(userid, n)
        self.notes.update(r.notes)
        store = self.store
        assert store is not None
        dumps = store.estimate_dumps()
        self.estimates.load(dumps, store.estimate_queues())
        if len(dumps) > 1:  # compact the log: one row of every record
            full = self.estimates.hist.dump(all=True)
            store.compact_estimates(full)
            self.estimates.logged = len(full)

    # -- batches -------------------------------------------------------------

    def _tick(self) -> None:
        """Close the open batch if its window has passed or it is full.

        `_n_open` is an upper bound of the batch's size (every change and
        entry counted, repeats included), so the exact `hub.size()` is asked
        only when the bound reaches `max_entries`, then the bound is reset
        to the exact size.
        """
        t0 = self._t0
        if t0 is None:
            return
        if self.hub.fault is not None and not self.hub.background:
            return  # in-process, a failing commit is retried by flush() only
        if _monotonic() - t0 >= self._window:
            self.flush()
        elif self._n_open >= self._max_entries:
            size = self.hub.size()
            if size >= self._max_entries:
                self.flush()
            else:
                self._n_open = size

    def _close_if_full(self) -> None:
        """At the end of a change: close the batch the moment it holds
        `max_entries` entries (not at the next call or the window).

        Only between calls: a call's change and its eventlog entry always
        go into the same batch. `_n_open` is an upper bound; the exact size
        is asked here and the bound reset to it."""
        hub = self.hub
        if hub.fault is not None and not hub.background:
            return  # in-process, a failing commit is retried by flush() only
        size = hub.size()
        if size >= self._max_entries:
            self.flush()
        else:
            self._n_open = size

    def _touched(self, n: int = 1) -> None:
        """Note `n` (at most) new entries in the open batch."""
        self._n_open += n
        if self._t0 is None:
            self._t0 = _monotonic()

    def flush(self) -> int | None:
        """Close the open batch: store commit, publish. Returns its seq or None.

        In-process, a commit that fails raises AnnotError (ENOSPC for a full
        disk, EIO otherwise) and keeps the batch open; until a later flush()
        commits it, durable changes are refused with the same errno
        (docs/durability.md "When the store cannot commit")."""
        self._t0 = None
        self._n_open = 0
        if self.hub.open():
            try:
                seq: int | None = self.hub.close_batch()
                return seq
            except AnnotError:
                self._t0 = _monotonic()
                raise
        return None

    def _refuse_durable(self) -> None:
        """Raise (counted) while the store cannot commit: before any change."""
        raise self._reject("store", self.hub.fault_error())

    def close(self) -> None:
        """Flush, then release the hub and the store. Idempotent."""
        if self._closed:
            return
        try:
            self.flush()
        finally:
            self._closed = True
            hub_close = getattr(self.hub, "close", None)
            if hub_close is not None:
                hub_close()
            if self.store is not None:
                if self._lost_nothing():
                    self.store.mark_clean()
                self.store.close()

    def _lost_nothing(self) -> bool:
        """At close: everything published is stored, and no job holds a
        volatile change that a restart would drop (see EventHub.restart_seq)."""
        store = self.store
        return (store is not None and getattr(self.hub, "fault", None) is None
                and store.last_seq() == self.hub.last_seq
                and all(job.durable for job in self.jobs.values()))

    def __enter__(self) -> "AnnotationService":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- bookkeeping -----------------------------------------------------------

    def _reject(self, reason: str, exc: AnnotError) -> AnnotError:
        self._rejected[reason] = self._rejected.get(reason, 0) + 1
        return exc

    def _guest_rate(self, cred: Cred) -> None:
        """EAGAIN (counted) when a guest's request rate is over its limit (§4:
        every guest request spends a token, reads included)."""
        if not cred.owner and not self.rate.take(cred.userid):
            raise self._reject("rate", error(EAGAIN, self._rate_message))

    def _count(self, kind: str) -> None:
        self._requests[kind] = self._requests.get(kind, 0) + 1

    def _lookup(self, id: int, reason_prefix: str = "") -> Job:
        """The job, or ENOENT (counted) when unknown."""
        job = self.jobs.get(id)
        if job is None:
            if type(id) is not int:
                _check_id(id)
            raise self._reject("unknown_job", error(ENOENT, "unknown job id"))
        return job

    def _set_state(self, id: int, job: Job, state: str, now: float) -> None:
        counts = self._counts
        counts[job.state] -= 1
        counts[state] = counts.get(state, 0) + 1
        job.state = state
        if state == INACTIVE:
            if job.user_bytes:
                # Inactive jobs no longer count toward the per-user total.
                self.user_bytes.add(job.userid, -job.user_bytes)
            self._hist.end(id, now, False)  # counts only if it had one and never started
        elif state == RUN:
            self._hist.end(id, now, True)
        self.hub.record_transition(id, state, now)
        self._touched(3)  # the transition and the caller's entries

    def _account(self, job: Job, info: ApplyInfo) -> None:
        """Keep the job's and its user's `user` byte counts in step with a change."""
        d = info.new_ns_len - info.old_ns_len
        if d:
            job.user_bytes += d
            if job.state != INACTIVE:
                self.user_bytes.add(job.userid, d)

    def _note_estimate(self, id: int, at: float) -> None:
        """A change to pending job `id` named `t_estimate`: record the
        estimate now in force at `at` (docs/accuracy.md). The job's tree is
        scanned in C (no Python parse); a value that is no finite number is
        left out and counted."""
        text = self.table.get(id)
        if text is not None:
            r = self._hist.note(id, text, at)
            if r:
                self._sched_extra(id, text, r, at)

    def _sched_extra(self, id: int, text: bytes, bits: int, at: float) -> None:
        """What the C scan left to Python (rare): the queue the text names
        (SCHED_QUEUE), or the whole estimate when the text has escapes in
        its keys or a long number (SCHED_SLOW). at < 0: now."""
        if bits & SCHED_SLOW:
            est, queue = sched_fields(json.loads(text))
            if est is not None and est is not BAD_ESTIMATE:
                self.estimates.estimate(id, est, at if at >= 0 else _now(), queue)
            elif est is BAD_ESTIMATE:
                self.estimates.count_bad()
            elif queue is not None:
                self.estimates.set_queue(id, queue)
        elif bits & SCHED_QUEUE:
            queue = self._scan_sched(text)[1]
            if queue is not None and self.estimates.queues.get(id) != queue:
                self.estimates.set_queue(id, queue)

    def _note_estimate_tree(self, id: int, tree: Any, at: float) -> None:
        """`_note_estimate` for a tree already decoded (the Flux mirror's events)."""
        self._record_estimate(id, *sched_fields(tree), at)

    def _record_estimate(self, id: int, est: float | bool | None, queue: str | None,
                         at: float) -> None:
        if est is None:
            return
        if est is BAD_ESTIMATE:
            self.estimates.count_bad()
        else:
            self.estimates.estimate(id, est, at, queue)

    def _discard_sched(self, id: int, job: Job) -> None:
        info = self.table.apply(id, _DISCARD_SCHED, self.owner_limits, _NS_USER)
        if info.changed:
            self._touched()

    # -- life cycle (§5) -------------------------------------------------------

    def submit(self, id: int, userid: int, t_submit: float | None = None) -> None:
        """Create job `id` of `userid` in SCHED; EEXIST when the id is known."""
        self._tick()
        self._count("submit")
        if self.hub.fault is not None:
            self._refuse_durable()
        try:
            _check_id(id)
            if isinstance(userid, bool) or not isinstance(userid, int) or not 0 <= userid < _U32:
                raise error(EINVAL, f"userid must be an unsigned 32-bit integer, not {userid!r}")
            if t_submit is None:
                t_submit = self._now()
            elif (
                isinstance(t_submit, bool)
                or not isinstance(t_submit, (int, float))
                or not math.isfinite(t_submit)
            ):
                raise error(EINVAL, f"t_submit must be a number, not {t_submit!r}")
            if id in self.jobs:
                raise error(EEXIST, f"job id {id} already exists")
        except AnnotError as exc:
            raise self._reject("invalid" if exc.errno != EEXIST else "exists", exc) from None
        self.jobs[id] = Job(userid, SCHED, t_submit)
        self._counts[SCHED] += 1
        hub = self.hub
        hub.record_entry(id, "submit", {"userid": userid}, t_submit)
        hub.record_transition(id, SCHED, t_submit)
        self._touched(2)
        if self._n_open >= self._max_entries:
            self._close_if_full()

    def state(self, id: int, state: str, note: str | None = None) -> None:
        """Move job `id` on (RUN→CLEANUP, CLEANUP→INACTIVE, RUN→INACTIVE, SCHED→INACTIVE)."""
        self._tick()
        self._count("state")
        if self.hub.fault is not None:
            self._refuse_durable()
        job = self._lookup(id)
        try:
            target = _state_name(state)
            if note is not None and not isinstance(note, str):
                raise error(EINVAL, f"note must be a string, not {type(note).__name__}")
            if (job.state, target) not in _TRANSITIONS:
                hint = ""
                if target == RUN and job.state == SCHED:
                    hint = " (a job reaches RUN only through a SUCCESS alloc response)"
                elif job.state == INACTIVE:
                    hint = " (an inactive job never changes state)"
                raise error(EINVAL, f"invalid transition from {job.state} to {target}{hint}")
        except AnnotError as exc:
            raise self._reject("transition", exc) from None
        now = self._now()
        if job.state == SCHED:
            # Left SCHED without SUCCESS: the scheduler's pending notes go.
            self._discard_sched(id, job)
        hub = self.hub
        if note:
            self.notes[id] = note
            ctx = {"type": "cancel", "severity": 0, "note": note}
            hub.record_entry(id, "exception", ctx, now)
        hub.record_entry(id, "state", {"state": target}, now)
        self._set_state(id, job, target, now)
        if self._n_open >= self._max_entries:
            self._close_if_full()

    def alloc_response(self, payload: dict[str, Any]) -> dict[str, Any]:
        """Apply an RFC 27 alloc response; `{"ignored": True}` when the job is not in SCHED."""
        t0 = self._t0
        if t0 is not None and (
            _monotonic() - t0 >= self._window or self._n_open >= self._max_entries
        ):
            self._tick()
        self._n_alloc += 1
        if type(payload) is not dict:
            raise self._reject(
                "malformed", error(EPROTO, "alloc response must be a JSON object")
            )
        id = payload.get("id", _MISSING)
        typ = payload.get("type", _MISSING)
        ann = payload.get("annotations")
        if type(id) is not int or type(typ) is not int or not 0 <= typ <= 3 or (
            ann is not None and type(ann) is not dict
        ):
            raise self._reject("malformed", _malformed(id, typ, ann))
        note = payload.get("note")
        if note is not None and type(note) is not str:
            raise self._reject(
                "malformed", error(EPROTO, "alloc response field 'note' must be a string")
            )
        if typ == A_ANNOTATE and ann is None:
            raise self._reject(
                "malformed",
                error(EPROTO, "alloc response of type ANNOTATE requires field 'annotations'"),
            )
        if typ != A_ANNOTATE and self.hub.fault is not None:
            self._refuse_durable()
        job = self.jobs.get(id)
        if job is None or job.state != SCHED:
            self._n_ignored += 1
            return {"ignored": True}
        if ann is not None:
            self._apply_sched(id, job, ann)
        if typ == A_ANNOTATE:
            if self._n_open >= self._max_entries:
                self._close_if_full()
            return {}
        now = self._now()
        hub = self.hub
        if typ == A_SUCCESS:
            tree = self.table.get(id)
            snap = b'{"annotations":' + (tree if tree is not None else b"null") + b"}"
            hub.record_entry(id, "alloc", snap, now)
            job.durable = True
            self._set_state(id, job, RUN, now)
        elif typ == A_DENY:
            self._discard_sched(id, job)
            if note:
                self.notes[id] = note
            ctx = {"type": "alloc", "severity": 0, "note": note or ""}
            hub.record_entry(id, "exception", ctx, now)
            hub.record_entry(id, "state", {"state": INACTIVE}, now)
            self._set_state(id, job, INACTIVE, now)
        else:  # A_CANCEL: requeued, stays SCHED
            self._discard_sched(id, job)
            hub.record_entry(id, "cancel", {}, now)
            self._touched(1)
        if self._n_open >= self._max_entries:
            self._close_if_full()
        return {}

    def _alloc_annotate_text(self, id: int, data: bytes, keys: dict[str, Any]) -> dict[str, Any] | None:
        """alloc_response({"id": id, "type": ANNOTATE, "annotations": ...}) from
        the server's frame decoder: `data` is the annotations' JSON text,
        parsed in C with the owner's limits, each namespace an object or null;
        `keys` a dict whose keys are its namespaces (never mutated). Returns
        the reply payload when it is not `{}` (`{"ignored": True}`), else None."""
        t0 = self._t0
        if t0 is not None and (
            _monotonic() - t0 >= self._window or self._n_open >= self._max_entries
        ):
            self._tick()
        self._n_alloc_text += 1
        job = self.jobs.get(id)
        if job is None or job.state != SCHED:
            self._n_ignored += 1
            return {"ignored": True}
        self._apply_sched(id, job, keys, data)
        if self._n_open >= self._max_entries:
            self._close_if_full()
        return None

    def _apply_sched(self, id: int, job: Job, ann: Any, data: bytes | None = None) -> None:
        """`ann`: the annotations dict (or, with `data`, their JSON text, a
        dict of their namespaces)."""
        ok = self._sched_ok
        for ns, v in ann.items():
            if v is not None and type(v) is not dict:
                raise self._reject(
                    "malformed",
                    error(
                        EPROTO,
                        f"alloc response field 'annotations': the value of namespace "
                        f"{ns!r} must be an object or null",
                    ),
                )
            if ok is not None and ns not in ok:
                try:
                    self.policy.check_sched(ann)
                except AnnotError as exc:
                    raise self._reject("permission", exc) from None
        try:
            if data is None:
                data = _encode_json(ann).encode("utf-8")
            if self._sched_writes_user:
                info = self.table.apply(id, data, self.owner_limits, _NS_USER)
                changed = info.changed
                if info.new_ns_len != info.old_ns_len:
                    self._account(job, info)
                if changed and b"t_estimate" in data:
                    self._note_estimate(id, self._now())
            else:
                # The scheduler cannot touch `user`: no byte accounting needed,
                # so the plain C call (table limits = owner limits) will do;
                # the same call records the estimate it names (docs/accuracy.md).
                changed = self.table.annotate_sched(
                    id, data, self._hist, -1.0 if self._wall_clock else self._now())
                if changed > 1:
                    self._sched_extra(id, data, changed, -1.0)
        except AnnotError as exc:
            raise self._reject("invalid", exc) from None
        except RecursionError:
            raise self._reject(
                "invalid", error(EPROTO, "alloc response annotations are nested too deeply")
            ) from None
        except (TypeError, ValueError) as exc:
            raise self._reject(
                "invalid", error(EPROTO, f"alloc response annotations are not valid JSON: {exc}")
            ) from None
        job.durable = False  # ANNOTATE's notes are volatile until a SUCCESS snapshot
        if changed:
            self._n_open += 1
            if self._t0 is None:
                self._t0 = _monotonic()

    # -- annotate / memo (§3, §4) ------------------------------------------------

    def annotate(self, cred: Cred, id: int, annotations: dict[str, Any] | str | bytes, volatile: bool = False) -> None:
        """Merge `annotations` (dict, or JSON text of an object) into job `id`."""
        self._n_annotate += 1
        self._modify(cred, id, annotations, volatile, False)
        if self._n_open >= self._max_entries:
            self._close_if_full()

    def memo(self, cred: Cred, id: int, memo: dict[str, Any] | str | bytes, volatile: bool = False) -> None:
        """`annotate(cred, id, {"user": memo})`, as `flux job memo`."""
        self._n_memo += 1
        self._modify(cred, id, memo, volatile, True)
        if self._n_open >= self._max_entries:
            self._close_if_full()

    def _annotate_text(self, cred: Cred, id: int, data: bytes, keys: dict[str, Any] | None,
                       volatile: bool, is_memo: bool) -> None:
        """annotate / memo from the server's frame decoder: `data` is the
        value's JSON text (bytes) as the frame carried it, already parsed in
        C with `cred`'s limits; `keys` a dict whose keys are its top-level
        namespaces (None: read them from the text). Never mutated."""
        if is_memo:
            self._n_memo_text += 1
        else:
            self._n_annotate_text += 1
        if not is_memo and keys is not None and cred.owner and (
            volatile or self.hub.fault is None
        ):
            # The scheduler's / owner's note, volatile or not, in short: the
            # same checks as _modify in the same order, for the case that
            # needs no byte accounting (`user` untouched) and whose
            # namespaces the owner may write on any job; anything else (a
            # durable one while the store fails too) goes to _modify. A
            # durable one's eventlog context is the value's text as the
            # frame carried it.
            t0 = self._t0
            if t0 is not None and (
                _monotonic() - t0 >= self._window or self._n_open >= self._max_entries
            ):
                self._tick()
            job = self.jobs.get(id)
            ok = self._owner_writes
            if job is not None and job.state != INACTIVE and type(cred) is Cred:
                for ns in keys:
                    w = ok.get(ns)
                    if w is None:
                        if len(ok) >= 4096:
                            ok.clear()
                        w = ok[ns] = ns != "user" and self.policy.writable("owner", ns)
                    if not w:
                        break
                else:
                    try:
                        changed = self.table.annotate(id, data)
                    except AnnotError as exc:
                        raise self._reject("invalid", exc) from None
                    if changed and job.state == SCHED and b"t_estimate" in data:
                        self._note_estimate(id, self._now())
                    if volatile:
                        if changed:  # self._touched(), inline
                            self._n_open += 1
                            if self._t0 is None:
                                self._t0 = _monotonic()
                        job.durable = False
                    else:  # durable even when unchanged, as in _modify
                        self.hub.record_entry(id, "annotate", data, self._now())
                        self._n_open += 2 if changed else 1
                        if self._t0 is None:
                            self._t0 = _monotonic()
                    if self._n_open >= self._max_entries:
                        self._close_if_full()
                    return
        self._modify(cred, id, data, volatile, is_memo, keys)
        if self._n_open >= self._max_entries:
            self._close_if_full()

    def _writable_job(self, id: int, data: bytes, guest: bool) -> Job:
        """The checks of a write before its merge, in order (docs/limits.md):
        a guest's payload size by its length alone, then the job (known, not
        inactive). Raises counted; returns the job."""
        if guest and len(data) > self._payload_max:
            raise self._reject(
                "payload_size",
                error(E2BIG, f"annotation payload exceeds {self._payload_max} bytes for guests"),
            )
        job = self._lookup(id)
        if job.state == INACTIVE:
            raise self._reject("inactive", error(ENOENT, "job is inactive"))
        return job

    def _modify(self, cred: Cred, id: int, obj: object, volatile: bool, is_memo: bool,
                keys: dict[str, Any] | None = None) -> None:
        if self._t0 is not None:
            self._tick()
        if type(cred) is not Cred:
            _check_cred(cred)
        if type(volatile) is not bool:
            raise self._reject(
                "invalid", error(EINVAL, f"volatile must be true or false, not {volatile!r}")
            )
        if not volatile and self.hub.fault is not None:
            self._refuse_durable()
        guest = not cred.owner
        if guest and not self.rate.take(cred.userid):
            raise self._reject("rate", error(EAGAIN, self._rate_message))
        what = "memo" if is_memo else "annotations"
        try:
            data, tree = _encode(obj, what)
        except AnnotError as exc:
            raise self._reject("invalid", exc) from None
        if keys is not None:
            tree = keys
        context = data
        if is_memo:
            data = b'{"user":' + data + b"}"
            if tree is not None:
                tree = {"user": tree}
        job = self._writable_job(id, data, guest)
        table = self.table
        if guest:
            info = self._guest_trial(cred, id, job, data, tree, is_memo)
            table.commit()
        else:
            own = job.userid == cred.userid
            try:
                if tree is not None:
                    self.policy.check_owner(_namespaces(tree, is_memo), own)
                    if "user" not in tree:
                        # `user` untouched: no byte accounting, so the plain
                        # C call (table limits = owner limits) will do.
                        if table.annotate(id, data):
                            self._touched()
                            if job.state == SCHED and b"t_estimate" in data:
                                self._note_estimate(id, self._now())
                        if not volatile:
                            self.hub.record_entry(
                                id, "memo" if is_memo else "annotate", context, self._now()
                            )
                            self._touched()
                        else:
                            job.durable = False
                        return
                    info = table.apply(id, data, self.owner_limits, _NS_USER)
                else:
                    # JSON text: C parses (and checks) it first; its keys come
                    # from a Python parse of the text C accepted.
                    info = table.apply(id, data, self.owner_limits, _NS_USER, dryrun=True)
                    self.policy.check_owner(_namespaces(json.loads(data), is_memo), own)
                    table.commit()
            except AnnotError as exc:
                raise self._reject(
                    "permission" if exc.errno == EPERM else "invalid", exc
                ) from None
        if info.new_ns_len != info.old_ns_len:
            self._account(job, info)
        if info.changed:
            self._touched()
            if job.state == SCHED and b"t_estimate" in data:
                self._note_estimate(id, self._now())
        if not volatile:
            # Durable even when unchanged: the same notes may so far be volatile.
            self.hub.record_entry(id, "memo" if is_memo else "annotate", context, self._now())
            self._touched()
        else:
            job.durable = False

    def _guest_trial(self, cred: Cred, id: int, job: Job, data: bytes, tree: dict[str, Any] | None, is_memo: bool) -> ApplyInfo:
        """All guest checks after the length check; leaves the result staged."""
        try:
            info = self.table.apply(id, data, self.guest_limits, _NS_USER, dryrun=True)
            # After the C parse: the text is valid and at most
            # guest_payload_bytes long, so this Python parse is bounded.
            keys = _namespaces(tree if tree is not None else json.loads(data), is_memo)
        except AnnotError as exc:
            raise self._reject("invalid", exc) from None
        if job.userid != cred.userid:
            raise self._reject(
                "permission", error(EPERM, "guests can only annotate their own jobs")
            )
        try:
            self.policy.check_guest(keys)
        except AnnotError as exc:
            raise self._reject("permission", exc) from None
        new = info.new_ns_len
        if new > self._ns_max and new > info.old_ns_len:
            raise self._reject(
                "namespace_size",
                error(
                    E2BIG,
                    f"the user namespace would be {new} bytes; "
                    f"guests are limited to {self._ns_max} bytes",
                ),
            )
        try:
            self.user_bytes.check(job.userid, new - info.old_ns_len)
        except AnnotError as exc:
            raise self._reject("user_total", exc) from None
        return info

    # -- reading -------------------------------------------------------------------

    def get(self, cred: Cred, id: int) -> dict[str, Any]:
        """`{id, userid, state, annotations}` of job `id` as `cred` may see it."""
        if self._t0 is not None:
            self._tick()
        self._count("get")
        _check_cred(cred)
        self._guest_rate(cred)
        job = self._lookup(id)
        if cred.owner or cred.userid == job.userid:
            text = self.table.get(id)
        else:
            p = self.policy
            text = self.table.get_view(id, p.view_namespaces, p.view_exclude)
        out = {
            "id": id,
            "userid": job.userid,
            "state": job.state,
            "annotations": json.loads(text) if text else None,
        }
        note = self.notes.get(id)
        if note is not None:
            out["exception"] = note
        return out

    def list(self, cred: Cred, states: str | Iterable[str] | None = None, userid: int | None = None, max: int | None = None) -> list[dict[str, Any]]:
        """Jobs (submit order) as in `get`, filtered by states and userid; at most `max`."""
        if self._t0 is not None:
            self._tick()
        self._count("list")
        _check_cred(cred)
        self._guest_rate(cred)
        try:
            if states is not None:
                if isinstance(states, str):
                    states = [states]
                states = {_state_name(s) for s in states}
            if userid is not None and (
                isinstance(userid, bool) or not isinstance(userid, int) or not 0 <= userid < _U32
            ):
                raise error(EINVAL, f"userid must be an unsigned 32-bit integer, not {userid!r}")
            if max is not None and (isinstance(max, bool) or not isinstance(max, int) or max < 0):
                raise error(EINVAL, f"max must be a non-negative integer, not {max!r}")
        except AnnotError as exc:
            raise self._reject("invalid", exc) from None
        sel = [
            (i, j)
            for i, j in self.jobs.items()
            if (states is None or j.state in states) and (userid is None or j.userid == userid)
        ]
        if max:
            sel = sel[:max]
        if not sel:
            return []
        ids = [i for i, _ in sel]
        p = self.policy
        if cred.owner:
            full = None
        else:
            me = cred.userid
            full = bytes(1 if j.userid == me else 0 for _, j in sel)
        trees = json.loads(self.table.encode(ids, full, p.view_namespaces, p.view_exclude))
        notes = self.notes
        out = []
        for (i, j), (_, tree) in zip(sel, trees):
            d = {"id": i, "userid": j.userid, "state": j.state, "annotations": tree}
            if notes:
                note = notes.get(i)
                if note is not None:
                    d["exception"] = note
            out.append(d)
        return out

    def subscribe(
        self, cred: Cred, topics: str | Iterable[str] | None = None, since: int | None = None, snapshot: bool = False, delta: bool = False, userid: int | None = None, notify: Callable[[], None] | None = None
    ) -> Subscription:
        """Follow batches (§6); see `flux_annot.events.Subscription`."""
        self._count("subscribe")
        _check_cred(cred)
        self._guest_rate(cred)
        if snapshot:
            # The snapshot must include every change made so far and name the
            # batch that holds them: close it first.
            self.flush()
        sub: Subscription = self.hub.subscribe(
            cred,
            topics=topics,
            userid=userid,
            since=since,
            snapshot=snapshot,
            delta=delta,
            notify=notify,
        )
        return sub

    def stats(self) -> dict[str, Any]:
        """Counters: jobs by state, requests by kind, rejections by reason, hub/store."""
        if self._t0 is not None:
            self._tick()
        out = dict(self.hub.stats())
        out.update(self.counters())
        out["started"] = self.started
        out["accuracy"] = self._accuracy_summary()
        return out

    def counters(self) -> dict[str, Any]:
        """The service's own part of `stats` (no hub, nothing closed): jobs by
        state, requests by kind, rejections by reason, ignored alloc
        responses, the C core's memory, guests. Cheap: the metrics read it."""
        requests = dict(self._requests)
        requests["alloc-response"] = self._n_alloc + self._n_alloc_text
        requests["annotate"] = self._n_annotate + self._n_annotate_text
        requests["memo"] = self._n_memo + self._n_memo_text
        return {
            "jobs": dict(self._counts),
            "jobs_total": len(self.jobs),
            "requests": requests,
            "rejected": dict(self._rejected),
            "ignored": self._n_ignored,
            "memory_bytes": self.table.memory_bytes(),
            "guest_buckets": len(self.rate),
            "guest_users": len(self.user_bytes),
        }

    def _accuracy_summary(self) -> dict[str, Any]:
        """stats' `accuracy`: counts and the last estimate's error over every
        job (docs/accuracy.md). Recomputed when the histories changed, at
        most once a second, or less often when a computation took long
        (ten times its own duration): stats stays cheap with 1M histories."""
        acc = self.estimates
        cached = self._acc_cache
        now = _monotonic()
        if cached is not None and (cached[1] == acc.version or now < cached[0]):
            out = dict(cached[2])
        else:
            rep = acc.report(self._userid_of, jobs=False)
            out = {
                "jobs_with_estimates": len(acc),
                "jobs_started": rep["jobs_started"],
                "jobs_never_started": rep["jobs_never_started"],
                "last": rep["last"],
            }
            spent = _monotonic() - now
            self._acc_cache = (now + max(1.0, 10 * spent), acc.version, out)
            out = dict(out)
        out["bad_estimates"] = acc.bad
        return out

    def _userid_of(self, jobid: int) -> int | None:
        job = self.jobs.get(jobid)
        return None if job is None else job.userid

    def accuracy(self, cred: Cred, since: float | None = None, queue: str | None = None,
                 by: str = "queue", jobs: bool = False, histogram: bool = False) -> dict[str, Any]:
        """The estimate accuracy report (docs/accuracy.md) over the jobs whose
        `sched` notes `cred` may read. since: only jobs that started (or left
        without starting) at or after this time (seconds since the epoch);
        queue: only that queue; by: "queue" or "user" (adds "by_user"); jobs:
        add the per-job records; histogram: add {"edges", "counts"} of the
        last estimate's error (the live views)."""
        if self._t0 is not None:
            self._tick()
        self._count("accuracy")
        _check_cred(cred)
        self._guest_rate(cred)
        try:
            if since is not None and (
                isinstance(since, bool) or not isinstance(since, (int, float))
                or not math.isfinite(since)
            ):
                raise error(EINVAL, f"since must be a time in seconds since the epoch, not {since!r}")
            if queue is not None and (not isinstance(queue, str) or not queue):
                raise error(EINVAL, f"queue must be a non-empty string, not {queue!r}")
            if by not in ("queue", "user"):
                raise error(EINVAL, f"by must be 'queue' or 'user', not {by!r}")
            for name, flag in (("jobs", jobs), ("histogram", histogram)):
                if type(flag) is not bool:
                    raise error(EINVAL, f"{name} must be true or false, not {flag!r}")
        except AnnotError as exc:
            raise self._reject("invalid", exc) from None
        visible = None
        reader = None  # whose view: None, everything
        if not cred.owner and "all" not in self.config.rules("sched").read:
            me = reader = cred.userid

            def visible(_jobid: int, userid: int) -> bool:
                return userid == me

        acc = self.estimates
        # The same question while nothing changed gets the same answer; and
        # when the histories are large, an answer is reused for ten times
        # what it took to compute (the live views ask after every start).
        key = (reader, since, queue, by, jobs, histogram)
        now = _monotonic()
        hit = self._acc_answers.get(key)
        if hit is not None and (hit[1] == acc.version or now < hit[0]):
            return copy.deepcopy(hit[2])
        out = acc.report(self._userid_of, visible, since=since, queue=queue, by=by, jobs=jobs)
        if histogram:
            out["histogram"] = _histogram(acc.last_errors(self._userid_of, visible))
        if not jobs:  # the per-job records are not kept (large)
            if len(self._acc_answers) >= 64:
                self._acc_answers.clear()
            self._acc_answers[key] = (now + 10 * (_monotonic() - now), acc.version, out)
            return copy.deepcopy(out)
        return out


def _malformed(id: object, typ: object, ann: object) -> AnnotError:
    if id is _MISSING:
        return error(EPROTO, "alloc response has no field 'id'")
    if type(id) is not int:
        return error(EPROTO, "alloc response field 'id' must be an integer")
    if typ is _MISSING:
        return error(EPROTO, "alloc response has no field 'type'")
    if type(typ) is not int or not 0 <= typ <= 3:
        return error(EPROTO, f"alloc response field 'type' must be 0, 1, 2 or 3, not {typ!r}")
    return error(EPROTO, "alloc response field 'annotations' must be an object")
