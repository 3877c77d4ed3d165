"""A live model of "the jobs I can see", fed by one event subscription.

`LiveModel` holds every job a subscriber may see (id, userid, state, time
of the last transition, annotations) and is updated by the payloads of one
`job-manager.events` subscription opened with `snapshot` and `delta`
(docs/events.md): `apply_snapshot` replaces the whole state,
`apply_batch` applies one live batch, whose `annotations` entries are
merge patches (docs/data-model.md). The patches are merged by the C core
(a `JobTable` of the model's own), never by a second implementation, and
the trees are kept there as canonical JSON; a job's `annotations` dict is
decoded on first use after a change.

`changed()` returns the ids changed (or removed) since it was last asked,
so a view repaints only those; `add_listener(fn)` calls `fn(kind,
payload)` after each change of the model (kind "snapshot", "batch" or
"status").

`follow(model, socket)` is the asyncio driver: it subscribes (snapshot +
delta, both topics), applies every payload, and keeps going:

- the connection is lost (the service stopped or restarted): status
  "disconnected", reconnect every `retry` seconds and resume with
  `since=model.seq`, so no batch is missed or applied twice;
- the service cannot resume from there (EOVERFLOW "resync needed": `since`
  older than its backlog, or this subscriber was too slow; or a `since` in
  its future, a service that lost its store): status "resync", re-read the
  whole state with a new snapshot subscription, then live again. A
  snapshot rather than `list`: it carries the `seq` it stands for, so the
  live batches continue from it with no gap and no duplicate, where a
  `list` reply says nothing about which batches it includes.

One limit of `since` across a restart: the service drops volatile
annotations when it restarts (docs/durability.md) without publishing that
change, so the model keeps a volatile note the restarted service no longer
has until the writer (typically the scheduler, which re-annotates every
cycle) sends it again.

With `accuracy=True`, `follow` also keeps `model.accuracy`: the estimate
accuracy report (docs/accuracy.md) with its histogram of the last
estimate's error, asked of the service on the same connection after the
snapshot and after each batch in which a job started or ended (at most
one request in flight, at most one every ACCURACY_INTERVAL seconds);
listeners get it as kind "accuracy".

`LiveThread` runs `follow` on a thread of its own for synchronous programs
(`flux-annotate top`); the model's `lock` guards every read from another
thread.
"""

import asyncio
import collections
import errno as _errno
import json
import threading
import time

from flux_annot.wire import client as _client
from flux_annot.core import JobTable, Limits
from flux_annot.errors import EINVAL, ENODATA, EOVERFLOW, AnnotError, error
from flux_annot.wire.protocol import ProtocolError, request

__all__ = ["LiveJob", "LiveModel", "LiveThread", "decode_tree", "follow"]

#: seconds between two accuracy requests of one follower, at least
ACCURACY_INTERVAL = 0.5
_ENDS = frozenset(("RUN", "INACTIVE"))  # transitions that change the accuracy report

# The model stores whatever the service sends: no key rules or limits of
# its own beyond the parser's depth cap (the service has checked them).
_LIMITS = Limits(depth=4096, key_bytes=0xFFFFFFFF, object_keys=0xFFFFFFFF, strict_keys=False)

_UNSET = object()

try:  # a job's tree is decoded on each change shown: the fast decoder if there
    from orjson import loads as _loads
except ImportError:  # the text is the C core's canonical JSON: trusted, one value
    _raw_decode = json.JSONDecoder().raw_decode

    def _loads(raw):
        return _raw_decode(raw.decode("utf-8"))[0]


def decode_tree(raw):
    """Canonical tree bytes (`LiveJob.annotations_json`) → dict, or None."""
    return None if raw is None else _loads(raw)
_RATE_WINDOW = 5.0  # seconds of history behind events_per_second()

STATUSES = ("connecting", "live", "resync", "disconnected")


def _dumps(obj):
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode(
        "utf-8", "surrogatepass"
    )


class LiveJob:
    """One job as the model knows it.

    `userid` is None until known (a job first seen in a batch: the driver
    asks the service with `get`). `t_state`: time of the last transition
    seen (None for a job known only from a snapshot). `annotations`: the
    whole tree as a dict, or None.
    """

    __slots__ = ("id", "userid", "state", "t_state", "_model", "_ann")

    def __init__(self, model, id, userid=None, state=None, t_state=None):
        self._model = model
        self.id = id
        self.userid = userid
        self.state = state
        self.t_state = t_state
        self._ann = _UNSET

    @property
    def annotations(self):
        ann = self._ann
        if ann is _UNSET:
            raw = self._model._table.get(self.id)
            ann = self._ann = None if raw is None else _loads(raw)
        return ann

    @property
    def annotations_json(self):
        """The tree as canonical compact JSON bytes (no dict built), or None."""
        return self._model._table.get(self.id)

    def as_dict(self):
        """`{"id", "userid", "state", "annotations"}`, as `list` gives a job."""
        return {
            "id": self.id,
            "userid": self.userid,
            "state": self.state,
            "annotations": self.annotations,
        }

    def __repr__(self):
        return f"LiveJob({self.id}, userid={self.userid}, state={self.state})"


class LiveModel:
    """The jobs one subscriber sees, kept live (module doc).

    `jobs`: {id: LiveJob}; `seq`: last batch applied (0: none yet);
    `status`: "connecting" | "live" | "resync" | "disconnected";
    `error`: the sentence of the last connection problem, or None;
    `lock`: an RLock held by every apply and status change (hold it to
    read the model from another thread).
    """

    def __init__(self):
        self.jobs = {}
        self.seq = 0
        self.status = "connecting"
        self.error = None
        self.lock = threading.RLock()
        self.synced = False  # a snapshot has been applied (since=seq is meaningful)
        self.t_update = None  # time.time() of the last applied payload
        self._table = JobTable(_LIMITS)
        self._changed = set()
        self._listeners = []
        self._unknown_userid = set()
        self._rate = collections.deque()  # (monotonic second, entries)
        self._t0 = time.monotonic()
        self.accuracy = None  # the accuracy report with its histogram (follow(accuracy=True))

    # -- applying ------------------------------------------------------

    def apply_snapshot(self, payload):
        """Replace the whole state by a snapshot message
        (`{"seq", "snapshot": true, "jobs": [...]}`); only jobs that differ
        are reported by `changed()`."""
        table = self._table
        with self.lock:
            jobs = self.jobs
            seen = set()
            changed = self._changed
            for j in payload.get("jobs", ()):
                jid = j["id"]
                seen.add(jid)
                job = jobs.get(jid)
                if job is None:
                    job = jobs[jid] = LiveJob(self, jid, j.get("userid"), j.get("state"))
                    changed.add(jid)
                elif job.userid != j.get("userid") or job.state != j.get("state"):
                    job.userid = j.get("userid")
                    job.state = j.get("state")
                    changed.add(jid)
                tree = j.get("annotations")
                if tree is None:
                    differs = table.remove(jid)
                else:
                    differs = table.apply(jid, _dumps(tree), _LIMITS, replace=True).changed
                if differs:
                    job._ann = _UNSET
                    changed.add(jid)
                if job.userid is None:
                    self._unknown_userid.add(jid)
                else:
                    self._unknown_userid.discard(jid)
            for jid in [i for i in jobs if i not in seen]:
                del jobs[jid]
                table.remove(jid)
                self._unknown_userid.discard(jid)
                changed.add(jid)
            self.seq = payload.get("seq", 0)
            self.synced = True
            self.t_update = time.time()
            self._notify("snapshot", payload)

    def apply_batch(self, payload):
        """Apply one live batch (`{"seq", "transitions"?, "annotations"?}`
        with delta entries). A batch at or below `seq` was applied already
        and is ignored."""
        seq = payload.get("seq", 0)
        table = self._table
        with self.lock:
            if seq <= self.seq:
                return
            jobs = self.jobs
            changed = self._changed
            n = 0
            for entry in payload.get("transitions", ()):
                jid, state = entry[0], entry[1]
                ts = entry[2] if len(entry) > 2 else None
                job = jobs.get(jid)
                if job is None:
                    job = jobs[jid] = LiveJob(self, jid)
                    self._unknown_userid.add(jid)
                job.state = state
                job.t_state = ts
                changed.add(jid)
                n += 1
            entries = payload.get("annotations", ())
            if entries:
                ids = []
                patches = []
                for jid, patch in entries:
                    job = jobs.get(jid)
                    if job is None:  # annotations of a job not seen yet
                        job = jobs[jid] = LiveJob(self, jid)
                        self._unknown_userid.add(jid)
                    job._ann = _UNSET
                    changed.add(jid)
                    if patch is None:
                        table.remove(jid)
                    else:
                        ids.append(jid)
                        patches.append(_dumps(patch))
                if ids:
                    table.annotate_many(ids, patches)
                n += len(entries)
            self.seq = seq
            self.t_update = time.time()
            self._count(n)
            self._notify("batch", payload)

    def set_userid(self, jid, userid):
        """Record the owner of a job first seen in a batch."""
        with self.lock:
            self._unknown_userid.discard(jid)
            job = self.jobs.get(jid)
            if job is not None and job.userid != userid:
                job.userid = userid
                self._changed.add(jid)

    def unknown_userids(self):
        """Ids of jobs whose owner is not known yet (the driver asks)."""
        with self.lock:
            return [i for i in self._unknown_userid if i in self.jobs]

    def set_accuracy(self, report):
        """Keep the latest accuracy report (docs/accuracy.md) and tell listeners."""
        with self.lock:
            self.accuracy = report
            self._notify("accuracy", report)

    def set_status(self, status, error=None):
        """Change `status` (and `error`), telling listeners if it changed."""
        if status not in STATUSES:
            raise ValueError(f"unknown status {status!r}")
        with self.lock:
            if status == self.status and error == self.error:
                return
            self.status = status
            self.error = error
            self._notify("status", {"status": status, "error": error, "seq": self.seq})

    # -- reading -------------------------------------------------------

    def changed(self):
        """Ids changed or removed since the last call (then forgotten)."""
        with self.lock:
            out, self._changed = self._changed, set()
            return out

    def events_per_second(self):
        """Transitions plus annotation entries per second, over the last
        few seconds."""
        now = time.monotonic()
        with self.lock:
            self._trim(now)
            total = sum(n for _, n in self._rate)
            span = min(_RATE_WINDOW, max(1.0, now - self._t0))
            return total / span

    def snapshot(self):
        """A snapshot-shaped dict of the model
        (`{"seq", "snapshot": true, "jobs": [...]}`)."""
        with self.lock:
            return {
                "seq": self.seq,
                "snapshot": True,
                "jobs": [j.as_dict() for j in self.jobs.values()],
            }

    def counts(self):
        """{state: number of jobs}."""
        with self.lock:
            out = collections.Counter(j.state for j in self.jobs.values())
        return dict(out)

    def add_listener(self, fn):
        """Call fn(kind, payload) after each change: kind "snapshot"
        (payload: the snapshot message), "batch" (the batch as received),
        "status" (`{"status", "error", "seq"}`) or "accuracy" (the report). Listeners run on the
        thread that applies, with `lock` held: keep them short."""
        self._listeners.append(fn)

    def remove_listener(self, fn):
        try:
            self._listeners.remove(fn)
        except ValueError:
            pass

    # -- internals -----------------------------------------------------

    def _notify(self, kind, payload):
        for fn in list(self._listeners):
            fn(kind, payload)

    def _count(self, n):
        now = time.monotonic()
        sec = int(now)
        rate = self._rate
        if rate and rate[-1][0] == sec:
            rate[-1] = (sec, rate[-1][1] + n)
        else:
            rate.append((sec, n))
        self._trim(now)

    def _trim(self, now):
        rate = self._rate
        while rate and rate[0][0] < now - _RATE_WINDOW:
            rate.popleft()


# --- the asyncio driver --------------------------------------------------------

_EVENTS_MT = 1
_HIGH = 64  # payloads queued before the socket stops being read
_LOW = 8


class _StreamProto(_client._AsyncProto):
    """One connection carrying the subscription (matchtag 1, to the queue)
    and ordinary requests (other matchtags, to futures). Stops reading the
    socket while many payloads wait, so a model that cannot keep up is
    dropped by the service with EOVERFLOW (then resynchronises) instead of
    growing without bound."""

    def __init__(self, path):
        super().__init__(path)
        self.queue = collections.deque()
        self.waiter = None
        self.paused = False

    def data_received(self, data):
        resps, fault = self.responses(data)
        for resp in resps:
            mt, errnum, errstr, payload = resp
            if mt == _EVENTS_MT or (mt == 0 and errnum):
                self._put(resp)
                if mt == 0:
                    self._fail_all(error(errnum, errstr))
                continue
            fut = self.pending.pop(mt, None)
            if fut is None or fut.done():
                continue
            if errnum:
                fut.set_exception(error(errnum, errstr))
            else:
                fut.set_result(payload if payload is not None else {})
        if fault is not None:
            self._fail_all(fault)
            self._put(fault)
            self.transport.close()
            return
        if len(self.queue) >= _HIGH and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()

    def connection_lost(self, exc):
        self.lost = _client._lost(self.path)
        self._fail_all(self.lost)
        self._put(None)

    def _put(self, item):
        self.queue.append(item)
        w = self.waiter
        if w is not None and not w.done():
            w.set_result(None)

    async def get(self):
        while not self.queue:
            self.waiter = asyncio.get_running_loop().create_future()
            await self.waiter
        item = self.queue.popleft()
        if self.paused and len(self.queue) <= _LOW and self.transport is not None:
            self.paused = False
            self.transport.resume_reading()
        return item


class _Session:
    """One connection: the subscription plus a request channel."""

    def __init__(self, proto):
        self.proto = proto
        self.mt = _EVENTS_MT
        self.closed = False

    @classmethod
    async def open(cls, path):
        loop = asyncio.get_running_loop()
        try:
            _, proto = await loop.create_unix_connection(lambda: _StreamProto(path), path)
        except OSError as e:
            raise _client._connect_error(path, e) from None
        return cls(proto)

    def subscribe(self, payload):
        self.proto.transport.write(request("job-manager.events", _EVENTS_MT, payload))

    def send(self, topic, payload):
        p = self.proto
        if p.lost is not None:
            raise p.lost
        self.mt += 1
        fut = asyncio.get_running_loop().create_future()
        p.pending[self.mt] = fut
        p.transport.write(request(topic, self.mt, payload))
        return fut

    def close(self):
        self.closed = True
        t = self.proto.transport
        if t is not None:
            t.close()


async def _fill_userids(model, session):
    ids = model.unknown_userids()
    if not ids:
        return
    futs = [session.send("job-manager.getattr", {"id": i}) for i in ids]
    for jid, res in zip(ids, await asyncio.gather(*futs, return_exceptions=True)):
        if isinstance(res, dict) and isinstance(res.get("userid"), int):
            model.set_userid(jid, res["userid"])
        elif isinstance(res, AnnotError) and res.errno == _errno.ENOENT:
            model.set_userid(jid, None)  # gone: stop asking
        elif isinstance(res, BaseException) and not isinstance(res, AnnotError):
            raise res


async def _wait(stop, seconds):
    """Sleep `seconds` or until stop is set; True if stopped."""
    if stop is None:
        await asyncio.sleep(seconds)
        return False
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except asyncio.TimeoutError:
        return False
    return True


class _AccuracyFeed:
    """follow(accuracy=True): ask the service for the accuracy report when
    the snapshot came or a job started or ended, throttled (module doc)."""

    def __init__(self, model, session):
        self.model = model
        self.session = session
        self.wanted = False
        self.busy = False
        self.last = -ACCURACY_INTERVAL
        self.timer = None
        self.off = False  # the service has no accuracy topic

    def poke(self, payload):
        if self.off:
            return
        if not payload.get("snapshot") and not any(
            e[1] in _ENDS for e in payload.get("transitions", ())
        ):
            return
        self.wanted = True
        self._maybe()

    def _maybe(self):
        if not self.wanted or self.busy or self.timer is not None or self.session.closed:
            return
        loop = asyncio.get_running_loop()
        wait = self.last + ACCURACY_INTERVAL - loop.time()
        if wait > 0:
            self.timer = loop.call_later(wait, self._fire)
            return
        self._fire()

    def _fire(self):
        self.timer = None
        if self.session.closed:
            return
        self.wanted = False
        self.busy = True
        self.last = asyncio.get_running_loop().time()
        try:
            fut = self.session.send("job-manager.accuracy", {"histogram": True})
        except AnnotError:
            self.busy = False
            return
        fut.add_done_callback(self._done)

    def _done(self, fut):
        self.busy = False
        if fut.cancelled():
            return
        exc = fut.exception()
        if exc is None:
            if isinstance(fut.result(), dict):
                self.model.set_accuracy(fut.result())
        elif isinstance(exc, AnnotError) and exc.errno == _errno.ENOSYS:
            self.off = True  # an older service
            return
        self._maybe()

    def close(self):
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


async def follow(model, socket=None, *, retry=1.0, stop=None, userid=None, give_up=None,
                 flux_uri=None, accuracy=False):
    """Keep `model` live from the service at `socket` (module doc).

    The service is the one a client with `socket` and `flux_uri` talks to
    (flux_annot.target): through a Flux broker the session is a
    `flux_client.FluxSession`, with the same behaviour (a service that
    stops or goes away is waited for, then resumed from `since`).
    userid: follow only that user's jobs (as `events` does); None: every
    job this user may see. Returns when `stop` (an asyncio.Event) is set.
    give_up: seconds without a connection after which the last connection
    error is raised (None: retry for ever). accuracy: keep `model.accuracy`
    (module doc).
    """
    from flux_annot.wire.target import resolve

    target = resolve(socket, flux_uri)
    path = target.describe()
    if target.is_flux:
        from flux_annot.flux.flux_client import FluxSession

        opener = FluxSession.open
    else:
        opener = _Session.open
    since = model.seq if model.synced else None
    lost_since = None
    while stop is None or not stop.is_set():
        session = None
        try:
            session = await opener(target.address)
            lost_since = None
            sub = {"topics": ["job-state", "job-annotations"], "delta": True}
            if userid is not None:
                sub["userid"] = userid
            if since is None:
                sub["snapshot"] = True
            else:
                sub["since"] = since
            session.subscribe(sub)
            # A request after the subscription on the same connection: its
            # reply comes after the subscription's error, if any, so once it
            # arrives the resume from `since` has been accepted.
            accepted = session.send("job-manager.stats", {})
            if since is not None:
                def resumed(f, session=session):
                    if not (f.cancelled() or f.exception() or session.closed):
                        model.set_status("live")

                accepted.add_done_callback(resumed)
            feed = _AccuracyFeed(model, session) if accuracy else None
            if feed is not None and since is not None:
                feed.wanted = True  # a resume: the report may have moved meanwhile
                feed._maybe()
            try:
                await _pump(model, session, stop, userid, feed)
            finally:
                if feed is not None:
                    feed.close()
            if stop is not None and stop.is_set():
                return
            raise _client._lost(path)  # the service ended the stream
        except AnnotError as e:
            if e.errno == EOVERFLOW or (e.errno == EINVAL and since is not None and "since" in str(e)):
                # Cannot resume from model.seq: re-read everything.
                since = None
                model.set_status("resync", str(e))
                lost_since = None
                continue
            model.set_status("disconnected", str(e))
            since = model.seq if model.synced else None
            now = time.monotonic()
            lost_since = lost_since or now
            if give_up is not None and now - lost_since >= give_up:
                raise
            if await _wait(stop, retry):
                return
        finally:
            if session is not None:
                session.close()
    return


async def _pump(model, session, stop, userid=None, feed=None):
    """Apply the subscription's payloads until the stream ends or stop.
    userid: the subscription's owner filter (new jobs are that user's)."""
    proto = session.proto
    stopper = None
    if stop is not None:
        stopper = asyncio.ensure_future(stop.wait())
    try:
        while True:
            if not proto.queue and stopper is not None:
                getter = asyncio.ensure_future(proto.get())
                done, _ = await asyncio.wait({getter, stopper}, return_when=asyncio.FIRST_COMPLETED)
                if getter not in done:
                    getter.cancel()
                    return
                item = getter.result()
            else:
                item = await proto.get()
            if item is None:
                return
            if isinstance(item, ProtocolError):
                raise error(_errno.EPROTO, f"bad message from the service: {item}")
            if isinstance(item, Exception):  # e.g. the Flux service went away
                raise item
            _mt, errnum, errstr, payload = item
            if errnum == ENODATA:
                return
            if errnum:
                raise error(errnum, errstr)
            if payload is None:
                continue
            if payload.get("snapshot"):
                model.apply_snapshot(payload)
                model.set_status("live")
            else:
                model.apply_batch(payload)
            if feed is not None:
                feed.poke(payload)
            if model._unknown_userid:
                if userid is not None:
                    for jid in model.unknown_userids():
                        model.set_userid(jid, userid)
                else:
                    await _fill_userids(model, session)
    finally:
        if stopper is not None:
            stopper.cancel()


# --- a thread for synchronous programs ---------------------------------------------


class LiveThread:
    """`follow(model, ...)` on a daemon thread with its own event loop.

    `stop()` ends it and waits; `error` holds the exception that ended it
    (e.g. `give_up` reached), `done` is set when it has ended.
    """

    def __init__(self, model, socket=None, **kw):
        self.model = model
        self.socket = socket
        self.kw = kw
        self.error = None
        self.done = threading.Event()
        self._loop = None
        self._stop = None
        self._thread = threading.Thread(target=self._run, name="flux-annot-live", daemon=True)
        self._started = threading.Event()

    def start(self):
        self._thread.start()
        self._started.wait()
        return self

    def _run(self):
        async def main():
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            self._started.set()
            await follow(self.model, self.socket, stop=self._stop, **self.kw)

        try:
            asyncio.run(main())
        except BaseException as e:  # reported to the owner of the thread
            self.error = e
        finally:
            self._started.set()
            self.done.set()

    def stop(self, timeout=10.0):
        loop, ev = self._loop, self._stop
        if loop is not None and ev is not None and not self.done.is_set():
            try:
                loop.call_soon_threadsafe(ev.set)
            except RuntimeError:  # loop already closed
                pass
        self._thread.join(timeout)
