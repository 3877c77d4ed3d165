"""Clients of flux-annot through a Flux broker (docs/flux.md, docs/python-api.md).

`Client(...)` and `AsyncClient(...)` become a `FluxClient` /
`AsyncFluxClient` when `flux_annot.target.resolve` chooses the Flux
instance (`flux_uri=` or `$FLUX_URI`, no socket given): the same methods,
results and errors, carried as requests to the broker service `annot`
(methods `annot.getattr`, `annot.list`, ... with the socket's payloads;
`job-manager.X` topics given to `rpc()` are sent as `annot.X`).

How messages move. Each client owns one Flux handle (`flux_open` on the
URI) and speaks Flux's C API through the bindings' cffi module
(`flux.core.inner`): a request message per call with a matchtag of the
handle's pool, responses received with `flux_recv` and matched to their
call by matchtag, as the socket clients match theirs. Not Flux's futures
and reactor: the asyncio client puts the handle's `flux_pollfd` in the
asyncio loop (`add_reader`) and drains the handle when it is readable, so
one thread and one loop drive both (docs/DESIGN.md says why), and the
blocking client polls the same fd with its timeout.

Errors: a Flux error response raises the `AnnotError` subclass of its
errno with its sentence, as on the socket. ENOSYS from the broker itself
(no service `annot` registered) becomes one sentence naming the instance
(`NoServiceError`).

Streams: `events()` is a streaming RPC on a handle of its own, so that
closing the stream closes that handle; the broker then sends the service
the `annot.disconnect` that drops the subscription (Flux has no way to
cancel one streaming RPC among several on a handle other than the
service's own cancel method, and the annot service has none). A service
that dies without answering (kill -9) leaves a stream with no end: while
a stream is idle the client asks `annot.stats` every `probe` seconds on
the same handle, and ENOSYS there ends the stream as a lost connection.
"""

import asyncio
import collections
import errno as _errno
import os
import select
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from flux_annot.wire import protocol
from flux_annot.wire.client import AsyncClient, Client, JobId, Patch, Response, _p_annotate, _p_events
from flux_annot.core import check_nesting
from flux_annot.errors import EMSGSIZE, ENODATA, ENOSYS, AnnotError, error
from flux_annot.flux.flux_bindings import flux_lib
from flux_annot.wire.protocol import ProtocolError

DEFAULT_PROBE = 10.0  # seconds of silence on a stream before asking `annot.stats`

_JM = "job-manager."
_NO_SERVICE_PREFIX = "No service matching"  # the broker's ENOSYS sentence


def flux_topic(topic: str) -> str:
    """The broker method of a socket topic: `job-manager.X` → `annot.X`."""
    if topic.startswith(_JM):
        return "annot." + topic[len(_JM):]
    return topic


class NoServiceError(AnnotError):
    """ENOSYS from the broker: no flux-annot serves this Flux instance."""

    def __init__(self, uri: str) -> None:
        super().__init__(
            ENOSYS,
            f"no flux-annot service in the Flux instance at {uri} "
            "(start one with: flux-annotate serve --flux)",
        )
        self.uri = uri


def _lost(uri: str) -> AnnotError:
    return AnnotError(_errno.ECONNRESET, f"lost the connection to the Flux instance at {uri}")


def _gone(uri: str) -> AnnotError:
    return AnnotError(
        _errno.ECONNRESET, f"the flux-annot service of the Flux instance at {uri} went away"
    )


def _payload(text: bytes) -> dict[str, Any]:
    """A response payload → dict; EPROTO for anything else (as parse_response)."""
    try:
        check_nesting(text, protocol.REPLY_MAX_DEPTH)
        obj = protocol.decode_json(text)
    except (AnnotError, ValueError, RecursionError) as e:
        raise ProtocolError(_errno.EPROTO, f"malformed response from the service: {e}") from None
    if type(obj) is not dict:
        raise ProtocolError(_errno.EPROTO, "malformed response from the service (payload)")
    return obj


class FluxHandle:
    """One connection to a Flux broker: request messages out, responses in.

    `send` returns the request's matchtag; `recv` returns the next
    response as `(matchtag, errnum, errstr, payload)` or None when none is
    waiting (never blocks); `wait(timeout)` blocks until the handle may
    have one. A broken connection raises an `AnnotError` (ECONNRESET).
    """

    def __init__(self, uri: str, message_bytes: int = protocol.DEFAULT_MESSAGE_BYTES) -> None:
        ffi, lib = flux_lib()
        self._ffi = ffi
        self._lib = lib
        self.uri = uri
        self.message_bytes = message_bytes
        err = ffi.new("flux_error_t *")
        h = lib.flux_open_ex(uri.encode("utf-8"), 0, err)
        if h == ffi.NULL:
            code = ffi.errno or _errno.ECONNREFUSED
            why = ffi.string(err.text).decode("utf-8", "replace") or os.strerror(code)
            raise AnnotError(code, f"cannot connect to the Flux instance at {uri}: {why}")
        self._h: Any = h
        self.fd: int = lib.flux_pollfd(h)
        # any message: one that is not a response is dropped here (a
        # RESPONSE match would requeue it and keep the handle readable)
        self._match = lib.flux_match_init(lib.FLUX_MSGTYPE_ANY, lib.FLUX_MATCHTAG_NONE, ffi.NULL)
        self._mt = ffi.new("uint32_t *")
        self._int = ffi.new("int *")
        self._str = ffi.new("char **")
        self.broken: AnnotError | None = None

    def _handle(self) -> Any:
        if self._h is None:
            raise AnnotError(_errno.EBADF, "the client is closed")
        if self.broken is not None:
            raise self.broken
        return self._h

    def send(self, topic: str, payload: dict[str, Any], streaming: bool = False) -> int:
        """Send one request (EMSGSIZE above the message limit, nothing sent)."""
        h = self._handle()
        body = protocol.dumps(payload)
        if len(body) > self.message_bytes:
            raise error(
                EMSGSIZE,
                f"request of {len(body)} bytes exceeds the message limit of "
                f"{self.message_bytes} bytes",
            )
        lib = self._lib
        msg = lib.flux_request_encode(topic.encode("utf-8"), body)
        if msg == self._ffi.NULL:
            raise error(self._ffi.errno or _errno.ENOMEM, f"cannot encode a {topic} request")
        try:
            mt = lib.flux_matchtag_alloc(h)
            if mt == lib.FLUX_MATCHTAG_NONE:
                raise AnnotError(_errno.EAGAIN, "too many requests in flight on one Flux handle")
            lib.flux_msg_set_matchtag(msg, mt)
            if streaming:
                lib.flux_msg_set_streaming(msg)
            if lib.flux_send(h, msg, 0) < 0:
                lib.flux_matchtag_free(h, mt)
                self.broken = _lost(self.uri)
                raise self.broken
        finally:
            lib.flux_msg_destroy(msg)
        return int(mt)

    def free(self, matchtag: int) -> None:
        """Give a matchtag back once its last response has come."""
        if self._h is not None:
            self._lib.flux_matchtag_free(self._h, matchtag)

    def recv(self) -> Response | None:
        """The next response waiting on the handle, or None (never blocks)."""
        while True:
            msg = self._recv_msg()
            if msg is None:
                return None
            try:
                resp = self._decode(msg)
            finally:
                self._lib.flux_msg_destroy(msg)
            if resp is not None:
                return resp

    def _recv_msg(self) -> Any:
        h = self._handle()
        lib, ffi = self._lib, self._ffi
        # flux_pollevents consumes the handle's edge-triggered fd events:
        # without it the fd stays readable for an outer loop (docs/DESIGN.md)
        ev = lib.flux_pollevents(h)
        if ev < 0 or ev & lib.FLUX_POLLERR:
            self.broken = _lost(self.uri)
            raise self.broken
        if not ev & lib.FLUX_POLLIN:
            return None
        msg = lib.flux_recv(h, self._match, lib.FLUX_O_NONBLOCK)
        if msg == ffi.NULL:
            if ffi.errno in (_errno.EAGAIN, _errno.EWOULDBLOCK):
                return None
            self.broken = _lost(self.uri)
            raise self.broken
        return msg

    def _decode(self, msg: Any) -> Response | None:
        """A response message → Response; None for any other message."""
        lib, ffi = self._lib, self._ffi
        if lib.flux_msg_get_type(msg, self._int) < 0 or self._int[0] != lib.FLUX_MSGTYPE_RESPONSE:
            return None
        lib.flux_msg_get_matchtag(msg, self._mt)
        mt = int(self._mt[0])
        lib.flux_msg_get_errnum(msg, self._int)
        errnum = int(self._int[0])
        if errnum:
            errstr = None
            if lib.flux_response_decode_error(msg, self._str) == 0:
                errstr = ffi.string(self._str[0]).decode("utf-8", "replace")
            if errnum == ENOSYS and (errstr is None or errstr.startswith(_NO_SERVICE_PREFIX)):
                return mt, ENOSYS, NoServiceError(self.uri).message, None
            return mt, errnum, errstr, None
        if lib.flux_msg_get_string(msg, self._str) < 0 or self._str[0] == ffi.NULL:
            return mt, 0, None, None
        try:
            return mt, 0, None, _payload(ffi.string(self._str[0]))
        except ProtocolError as e:
            return mt, e.errno, e.message, None

    def wait(self, timeout: float | None) -> bool:
        """Block until the handle's fd is readable or `timeout` seconds pass
        (None: no bound); False on timeout."""
        self._handle()
        poller = select.poll()
        poller.register(self.fd, select.POLLIN)
        ms = None if timeout is None else max(0, int(timeout * 1000))
        return bool(poller.poll(ms))

    def close(self) -> None:
        """Close the handle (idempotent): the broker tells the service."""
        h, self._h = self._h, None
        if h is not None:
            self._lib.flux_close(h)


def _reply(resp: Response, uri: str) -> dict[str, Any]:
    """A response's payload, or its error raised (NoServiceError for the
    broker's ENOSYS, which `FluxHandle.recv` has reworded)."""
    _mt, errnum, errstr, payload = resp
    if errnum:
        if errnum == ENOSYS and errstr == NoServiceError(uri).message:
            raise NoServiceError(uri)
        raise error(errnum, errstr)
    return payload if payload is not None else {}


class _Inbox:
    """Blocking receive by matchtag on one handle (responses for other
    matchtags wait in their own queue)."""

    def __init__(self, handle: FluxHandle) -> None:
        self.handle = handle
        self.queues: dict[int, collections.deque[Response]] = collections.defaultdict(collections.deque)

    def next(self, matchtags: Iterable[int] | None, timeout: float | None) -> Response | None:
        """The next response for one of `matchtags` (None: any), or None
        after `timeout` seconds."""
        want = None if matchtags is None else set(matchtags)
        deadline = None if timeout is None else time.monotonic() + timeout
        queues = self.queues
        while True:
            for mt in list(queues) if want is None else want:
                q = queues.get(mt)
                if q:
                    first = q.popleft()
                    if not q:
                        del queues[mt]
                    return first
            resp = self.handle.recv()
            if resp is not None:
                queues[resp[0]].append(resp)
                continue
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return None
            self.handle.wait(left)


class FluxClient(Client):
    """`Client` through the broker of the Flux instance at `flux_uri`
    (module doc). `timeout`: seconds to wait for each reply (ETIMEDOUT)."""

    def __init__(
        self,
        socket: str | None = None,
        timeout: float | None = None,
        message_bytes: int = protocol.DEFAULT_MESSAGE_BYTES,
        flux_uri: str | None = None,
        probe: float = DEFAULT_PROBE,
    ) -> None:
        uri = flux_uri or os.environ.get("FLUX_URI")
        if not uri:
            raise AnnotError(_errno.EINVAL, "no Flux instance given (flux_uri= or $FLUX_URI)")
        self.uri = uri
        self.path = f"Flux {uri}"  # what messages and views name
        self._timeout = timeout
        self._message_bytes = message_bytes
        self._probe = probe
        self._flux: FluxHandle | None = FluxHandle(uri, message_bytes)
        self._inbox = _Inbox(self._flux)

    def close(self) -> None:
        h, self._flux = self._flux, None
        if h is not None:
            h.close()

    def _wait(self, mt: int) -> Response:
        resp = self._inbox.next((mt,), self._timeout)
        if resp is None:  # the matchtag is not freed: a late reply must match nothing
            raise AnnotError(
                _errno.ETIMEDOUT,
                f"no reply from the flux-annot service of the Flux instance at {self.uri} "
                f"within {self._timeout} s",
            )
        return resp

    def rpc(self, topic: str, payload: dict[str, Any]) -> dict[str, Any]:
        h = self._flux
        if h is None:
            raise AnnotError(_errno.EBADF, "the client is closed")
        mt = h.send(flux_topic(topic), payload)
        resp = self._wait(mt)
        h.free(mt)
        return _reply(resp, self.uri)

    # submit, state, alloc_response, annotate, memo, get, list and stats
    # are Client's own: they go through rpc() (docs/DESIGN.md, the seam).

    def events(self, topics: str | Iterable[str] | None = None, userid: int | None = None, since: int | None = None, snapshot: bool = False, delta: bool = False) -> "FluxEventStream":  # type: ignore[override]  # same iterator protocol
        _, p = _p_events(topics, userid, since, snapshot, delta)
        return FluxEventStream(self.uri, p, self._timeout, self._probe)

    def annotate_pipelined(self, ids: Sequence[JobId], patches: Sequence[Patch], volatile: bool = False, window: int = 256) -> int:
        h = self._flux
        if h is None:
            raise AnnotError(_errno.EBADF, "the client is closed")
        n = len(ids)
        sent = done = 0
        first_err: AnnotError | None = None
        inflight: set[int] = set()
        while done < n:
            while sent < n and sent - done < window:
                topic, p = _p_annotate(ids[sent], patches[sent], volatile)
                inflight.add(h.send(flux_topic(topic), p))
                sent += 1
            resp = self._inbox.next(inflight, self._timeout)
            if resp is None:
                raise AnnotError(_errno.ETIMEDOUT, f"no reply from the Flux instance at {self.uri}")
            inflight.discard(resp[0])
            h.free(resp[0])
            done += 1
            if resp[1] and first_err is None:
                first_err = error(resp[1], resp[2])
        if first_err is not None:
            raise first_err
        return done


class _Liveness:
    """Whether the service that serves a stream is still the one it
    subscribed to: the `stats` reply that follows the subscription gives
    the service's `started`; a later `stats` reply with ENOSYS (no service)
    or another `started` (a service restarted in between) means the
    stream's service is gone."""

    def __init__(self) -> None:
        self.started: Any = None

    def first(self, resp: Response) -> bool:
        """Record the first reply; True if the service is already gone."""
        if resp[1] == ENOSYS:
            return True
        if resp[3] is not None:
            self.started = resp[3].get("started")
        return False

    def gone(self, resp: Response) -> bool:
        if resp[1] == ENOSYS:
            return True
        started = resp[3].get("started") if resp[3] is not None else None
        return self.started is not None and started is not None and started != self.started


class FluxEventStream:
    """Iterator over one `annot.events` stream on a handle of its own
    (module doc); `close()` closes the handle, which cancels it."""

    def __init__(self, uri: str, payload: dict[str, Any], timeout: float | None = None, probe: float = DEFAULT_PROBE) -> None:
        self.uri = uri
        self._probe = probe
        self._flux: FluxHandle | None = FluxHandle(uri)
        self._inbox = _Inbox(self._flux)
        self._mt = self._flux.send("annot.events", payload, streaming=True)
        self._live = _Liveness()
        self._ident: int | None = self._flux.send("annot.stats", {})  # _Liveness.first

    def __iter__(self) -> "FluxEventStream":
        return self

    def __next__(self) -> dict[str, Any]:
        h = self._flux
        if h is None:
            raise StopIteration
        try:
            resp = self._next(h)
        except BaseException:
            self.close()
            raise
        errnum = resp[1]
        if errnum == ENODATA:
            self.close()
            raise StopIteration
        if errnum:
            self.close()
            _reply(resp, self.uri)
        batch: dict[str, Any] = resp[3] if resp[3] is not None else {}
        return batch

    def _next(self, h: FluxHandle) -> Response:
        while True:
            resp = self._inbox.next((self._mt,), self._probe)
            if resp is not None:
                return resp
            # idle: is the service still the one we subscribed to? (module doc)
            if self._ident is not None:
                first = self._inbox.next((self._ident,), 0)
                if first is not None:
                    h.free(self._ident)
                    self._ident = None
                    if self._live.first(first):
                        raise _gone(self.uri)
            probe = h.send("annot.stats", {})
            reply = self._inbox.next((probe,), max(self._probe, 10.0))
            if reply is not None:
                h.free(probe)
                if self._live.gone(reply):
                    raise _gone(self.uri)

    def close(self) -> None:
        """Cancel the subscription (closes its handle)."""
        h, self._flux = self._flux, None
        if h is not None:
            h.close()

    def __enter__(self) -> "FluxEventStream":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- asyncio ------------------------------------------------------------------


class AsyncFluxConn:
    """A Flux handle driven by the running asyncio loop: the handle's fd
    is a reader of the loop; each response goes to its request's future,
    or to the callback of a stream. `lost` is set (and every waiter
    failed) when the connection breaks."""

    def __init__(self, uri: str, message_bytes: int = protocol.DEFAULT_MESSAGE_BYTES) -> None:
        self.uri = uri
        self.handle = FluxHandle(uri, message_bytes)
        self.loop = asyncio.get_running_loop()
        self.pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.streams: dict[int, Callable[[Response | None], None]] = {}
        self.lost: AnnotError | None = None
        self.loop.add_reader(self.handle.fd, self._readable)

    def request(self, topic: str, payload: dict[str, Any]) -> "asyncio.Future[dict[str, Any]]":
        if self.lost is not None:
            raise self.lost
        mt = self.handle.send(flux_topic(topic), payload)
        fut: asyncio.Future[dict[str, Any]] = self.loop.create_future()
        self.pending[mt] = fut
        return fut

    def stream(self, topic: str, payload: dict[str, Any], put: Callable[[Response | None], None]) -> int:
        """Start a streaming request; each response (None: connection lost)
        is passed to `put`."""
        if self.lost is not None:
            raise self.lost
        mt = self.handle.send(flux_topic(topic), payload, streaming=True)
        self.streams[mt] = put
        return mt

    def _readable(self) -> None:
        handle = self.handle
        try:
            while True:
                resp = handle.recv()
                if resp is None:
                    return
                mt = resp[0]
                put = self.streams.get(mt)
                if put is not None:
                    if resp[1]:  # a stream's last response
                        del self.streams[mt]
                        handle.free(mt)
                    put(resp)
                    continue
                fut = self.pending.pop(mt, None)
                if fut is None:
                    continue
                handle.free(mt)
                if fut.done():
                    continue
                try:
                    fut.set_result(_reply(resp, self.uri))
                except AnnotError as e:
                    fut.set_exception(e)
        except AnnotError as e:
            self._fail(e)

    def _fail(self, exc: AnnotError) -> None:
        self.lost = exc
        self.loop.remove_reader(self.handle.fd)
        pending, self.pending = self.pending, {}
        for fut in pending.values():
            if not fut.done():
                fut.set_exception(exc)
        streams, self.streams = self.streams, {}
        for put in streams.values():
            put(None)

    def close(self) -> None:
        """Close the handle (idempotent); the broker tells the service."""
        if self.handle._h is not None:
            self.loop.remove_reader(self.handle.fd)
            self.handle.close()
        if self.lost is None:
            self.lost = AnnotError(_errno.EBADF, "the client is closed")
        pending, self.pending = self.pending, {}
        for fut in pending.values():
            if not fut.done():
                fut.cancel()


class AsyncFluxClient(AsyncClient):
    """`AsyncClient` through the broker of the Flux instance at `flux_uri`
    (module doc): any number of requests in flight on one handle."""

    def __init__(self, socket: str | None = None, message_bytes: int = protocol.DEFAULT_MESSAGE_BYTES, flux_uri: str | None = None, probe: float = DEFAULT_PROBE) -> None:
        uri = flux_uri or os.environ.get("FLUX_URI")
        if not uri:
            raise AnnotError(_errno.EINVAL, "no Flux instance given (flux_uri= or $FLUX_URI)")
        self.uri = uri
        self.path = f"Flux {uri}"
        self._message_bytes = message_bytes
        self._probe = probe
        self._conn: AsyncFluxConn | None = None

    async def open(self) -> "AsyncFluxClient":
        if self._conn is None:
            self._conn = AsyncFluxConn(self.uri, self._message_bytes)
        return self

    async def __aenter__(self) -> "AsyncFluxClient":
        return await self.open()

    async def close(self) -> None:
        c, self._conn = self._conn, None
        if c is not None:
            c.close()
        await asyncio.sleep(0)

    def send(self, topic: str, payload: dict[str, Any]) -> "asyncio.Future[dict[str, Any]]":
        c = self._conn
        if c is None:
            raise AnnotError(_errno.EBADF, "the client is not connected")
        return c.request(topic, payload)

    # rpc and the calls (submit ... stats) are AsyncClient's own: they go
    # through send() (docs/DESIGN.md, the seam).

    def events(self, topics: str | Iterable[str] | None = None, userid: int | None = None, since: int | None = None, snapshot: bool = False, delta: bool = False) -> "AsyncFluxEventStream":  # type: ignore[override]  # same async iterator protocol
        _, p = _p_events(topics, userid, since, snapshot, delta)
        return AsyncFluxEventStream(self.uri, p, self._probe)


class FluxSession:
    """One handle carrying a subscription and ordinary requests, for
    `flux_annot.live.follow` (the socket's `_Session`, through Flux): the
    subscription's responses wait in `queue` (None: connection lost),
    `get()` takes the next; `proto` is the session itself (the driver
    reads `session.proto.queue`). While the subscription is silent for
    `probe` seconds, `annot.stats` checks that the service is still there
    (module doc)."""

    def __init__(self, uri: str, probe: float = DEFAULT_PROBE) -> None:
        self.conn = AsyncFluxConn(uri)
        self.uri = uri
        self.proto = self
        self.queue: collections.deque[Response | Exception | None] = collections.deque()
        self.waiter: asyncio.Future[None] | None = None
        self.closed = False
        self.probe = probe
        self._heard = time.monotonic()
        self._timer: asyncio.TimerHandle | None = None
        self._probing = False
        self._live = _Liveness()

    @classmethod
    async def open(cls, uri: str, probe: float = DEFAULT_PROBE) -> "FluxSession":
        return cls(uri, probe)

    @property
    def lost(self) -> AnnotError | None:
        return self.conn.lost

    def subscribe(self, payload: dict[str, Any]) -> None:
        self.conn.stream("annot.events", payload, self._put)
        self.conn.request("annot.stats", {}).add_done_callback(self._first)
        self._arm()

    def _first(self, fut: "asyncio.Future[dict[str, Any]]") -> None:
        if fut.cancelled() or self.closed:
            return
        exc = fut.exception()
        if exc is None:
            self._live.first((0, 0, None, fut.result()))

    def send(self, topic: str, payload: dict[str, Any]) -> "asyncio.Future[dict[str, Any]]":
        return self.conn.request(topic, payload)

    def _put(self, item: Response | Exception | None) -> None:
        self._heard = time.monotonic()
        self.queue.append(item)
        w = self.waiter
        if w is not None and not w.done():
            w.set_result(None)

    async def get(self) -> Response | Exception | None:
        while not self.queue:
            self.waiter = asyncio.get_running_loop().create_future()
            await self.waiter
        return self.queue.popleft()

    def _arm(self) -> None:
        if not self.closed and self.probe > 0:
            self._timer = self.conn.loop.call_later(self.probe, self._check)

    def _check(self) -> None:
        if self.closed:
            return
        if time.monotonic() - self._heard >= self.probe and not self._probing:
            try:
                fut = self.conn.request("annot.stats", {})
            except AnnotError:
                return
            self._probing = True
            fut.add_done_callback(self._probed)
        self._arm()

    def _probed(self, fut: "asyncio.Future[dict[str, Any]]") -> None:
        self._probing = False
        if self.closed or fut.cancelled():
            return
        exc = fut.exception()
        if isinstance(exc, AnnotError) and exc.errno == ENOSYS:
            self._put(_gone(self.uri))
        elif exc is None and self._live.gone((0, 0, None, fut.result())):
            self._put(_gone(self.uri))

    def close(self) -> None:
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
        self.conn.close()


class AsyncFluxEventStream:
    """Async iterator over one `annot.events` stream on a handle of its own;
    connects on first use; `await it.aclose()` closes the handle."""

    def __init__(self, uri: str, payload: dict[str, Any], probe: float = DEFAULT_PROBE) -> None:
        self.uri = uri
        self._payload = payload
        self._probe = probe
        self._session: FluxSession | None = None
        self._done = False

    async def start(self) -> "AsyncFluxEventStream":
        """Connect and send the subscription now (else on first iteration)."""
        if self._session is None and not self._done:
            self._session = FluxSession(self.uri, self._probe)
            self._session.subscribe(self._payload)
        return self

    def __aiter__(self) -> "AsyncFluxEventStream":
        return self

    async def __anext__(self) -> dict[str, Any]:
        if self._done:
            raise StopAsyncIteration
        await self.start()
        assert self._session is not None
        item = await self._session.get()
        if item is None:
            await self.aclose()
            raise _lost(self.uri)
        if isinstance(item, Exception):
            await self.aclose()
            raise item
        if item[1] == ENODATA:
            await self.aclose()
            raise StopAsyncIteration
        if item[1]:
            await self.aclose()
            _reply(item, self.uri)
        batch: dict[str, Any] = item[3] if item[3] is not None else {}
        return batch

    async def aclose(self) -> None:
        self._done = True
        s, self._session = self._session, None
        if s is not None:
            s.close()

    async def __aenter__(self) -> "AsyncFluxEventStream":
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
