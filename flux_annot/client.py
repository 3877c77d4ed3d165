"""Clients of the flux-annot service over its Unix socket (docs/protocol.md, docs/python-api.md).

`Client` is blocking: one request at a time on one connection; every call
of the in-process `AnnotationService` minus the credential (the service
reads it from the connection). `AsyncClient` is the asyncio form: the same
calls as coroutines, any number in flight on one connection (pipelining),
matched by matchtag.

`events(...)` opens a **second connection** for the stream, so the client
stays usable while iterating; closing the iterator closes that connection,
which is how a subscription is cancelled (§8 has no cancel message). The
request is sent when `events()` is called, but the service subscribes when
it reads it: use `snapshot=True` (the first item is the current state,
then every batch after it) or `since=SEQ` to follow without a gap.

Errors are raised as the `AnnotError` subclass of their errno, exactly as
the in-process service raises them. A request larger than the message
limit is refused locally with EMSGSIZE (the service would close the
connection after that error).
"""

import asyncio
import collections
import errno as _errno
import socket as _socket
from collections.abc import Iterable, Sequence
from typing import Any, TypeAlias

from . import protocol
from .errors import EMSGSIZE, ENODATA, AnnotError, error
from .protocol import FrameReader, ProtocolError, parse_response, request

_RECV = 256 << 10

# A patch: a dict, or JSON text of an object (decoded before sending).
Patch: TypeAlias = dict[str, Any] | str | bytes | bytearray
JobId: TypeAlias = int | str
# A response: (matchtag, errnum, errstr, payload)
Response: TypeAlias = tuple[int, int, str | None, Any]


def _connect_error(path: str, exc: BaseException) -> AnnotError:
    return AnnotError(
        getattr(exc, "errno", None) or _errno.ECONNREFUSED,
        f"cannot connect to the flux-annot service at {path}: "
        f"{getattr(exc, 'strerror', None) or exc}",
    )


def _lost(path: str) -> AnnotError:
    return AnnotError(
        _errno.ECONNRESET, f"the flux-annot service at {path} closed the connection"
    )


def _jobid(id: JobId) -> int:
    if isinstance(id, int) and not isinstance(id, bool):
        return int(id)
    if isinstance(id, str):
        from .ids import parse_jobid

        return int(parse_jobid(id))
    raise TypeError(f"job id must be an int or a string, not {type(id).__name__}")


def _patch(obj: Patch) -> Any:
    """A patch given as dict, or as JSON text/bytes (decoded here so that
    a syntax error is reported before anything is sent)."""
    if isinstance(obj, (str, bytes, bytearray)):
        import json

        from .core import check_nesting

        data = obj.encode("utf-8", "surrogatepass") if isinstance(obj, str) else bytes(obj)
        # nesting bounded without recursion first: json.loads recurses
        check_nesting(data, protocol.REPLY_MAX_DEPTH)
        try:
            return json.loads(data)
        except ValueError as e:
            raise error(_errno.EINVAL, f"annotations are not valid JSON: {e}") from None
    return obj


def _jobs(payload: dict[str, Any]) -> list[dict[str, Any]]:
    jobs: list[dict[str, Any]] = payload.get("jobs", [])
    if type(jobs) is not list:
        raise ProtocolError(_errno.EPROTO, "malformed response from the service (jobs)")
    return jobs


# Payload builders shared by both clients: topic and payload of each call.


def _p_submit(id: JobId, userid: int, t_submit: float | None = None) -> tuple[str, dict[str, Any]]:
    p: dict[str, Any] = {"id": _jobid(id), "userid": userid}
    if t_submit is not None:
        p["t_submit"] = t_submit
    return "job-manager.submit", p


def _p_state(id: JobId, state: str, note: str | None = None) -> tuple[str, dict[str, Any]]:
    p = {"id": _jobid(id), "state": state}
    if note is not None:
        p["note"] = note
    return "job-manager.state", p


def _p_annotate(id: JobId, annotations: Patch, volatile: bool = False) -> tuple[str, dict[str, Any]]:
    p = {"id": _jobid(id), "annotations": _patch(annotations)}
    if volatile:
        p["volatile"] = True
    return "job-manager.annotate", p


def _p_memo(id: JobId, memo: Patch, volatile: bool = False) -> tuple[str, dict[str, Any]]:
    p = {"id": _jobid(id), "memo": _patch(memo)}
    if volatile:
        p["volatile"] = True
    return "job-manager.memo", p


def _p_accuracy(since: float | None, queue: str | None, by: str, jobs: bool,
                histogram: bool) -> tuple[str, dict[str, Any]]:
    p: dict[str, Any] = {}
    if since is not None:
        p["since"] = since
    if queue is not None:
        p["queue"] = queue
    if by != "queue":
        p["by"] = by
    if jobs:
        p["jobs"] = jobs
    if histogram:
        p["histogram"] = histogram
    return "job-manager.accuracy", p


def _p_list(states: str | Iterable[str] | None = None, userid: int | None = None, max: int | None = None) -> tuple[str, dict[str, Any]]:
    p: dict[str, Any] = {}
    if states is not None:
        p["states"] = [states] if isinstance(states, str) else list(states)
    if userid is not None:
        p["userid"] = userid
    if max is not None:
        p["max"] = max
    return "job-manager.list", p


def _p_events(topics: str | Iterable[str] | None = None, userid: int | None = None, since: int | None = None, snapshot: bool = False, delta: bool = False) -> tuple[str, dict[str, Any]]:
    p: dict[str, Any] = {}
    if topics is not None:
        p["topics"] = [topics] if isinstance(topics, str) else list(topics)
    if userid is not None:
        p["userid"] = userid
    if since is not None:
        p["since"] = since
    if snapshot:
        p["snapshot"] = True
    if delta:
        p["delta"] = True
    return "job-manager.events", p


class _Conn:
    """A blocking connection: send frames, read frame bodies."""

    def __init__(self, path: str, timeout: float | None = None, message_bytes: int = protocol.DEFAULT_MESSAGE_BYTES) -> None:
        self.path = path
        self.message_bytes = message_bytes
        self.sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        try:
            self.sock.settimeout(timeout)
            self.sock.connect(path)
        except OSError as e:
            self.sock.close()
            raise _connect_error(path, e) from None
        self.reader = FrameReader()
        self.frames: collections.deque[bytes] = collections.deque()

    def check(self, frame: bytes) -> None:
        if len(frame) - protocol.HEADER_SIZE > self.message_bytes:
            raise error(
                EMSGSIZE,
                f"request of {len(frame) - protocol.HEADER_SIZE} bytes exceeds "
                f"the message limit of {self.message_bytes} bytes",
            )

    def send(self, data: bytes, check: bool = True) -> None:
        """Send one frame (checked against the message limit) or, with
        check=False, any number of frames already checked."""
        if check:
            self.check(data)
        try:
            self.sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            raise _lost(self.path) from None

    def next(self) -> Response:
        """The next response as (matchtag, errnum, errstr, payload)."""
        frames = self.frames
        while not frames:
            try:
                data = self.sock.recv(_RECV)
            except ConnectionResetError:
                data = b""
            if not data:
                raise _lost(self.path)
            frames.extend(self.reader.feed(data))
        resp: Response = parse_response(frames.popleft())
        return resp

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None  # type: ignore[assignment]  # closed: unusable


class Client:
    """Blocking client (module doc). `socket`: path, default as docs/protocol.md says."""

    def __init__(self, socket: str | None = None, timeout: float | None = None, message_bytes: int = protocol.DEFAULT_MESSAGE_BYTES) -> None:
        self.path = socket or protocol.default_socket_path()
        self._timeout = timeout
        self._message_bytes = message_bytes
        self._conn = _Conn(self.path, timeout, message_bytes)
        self._mt = 0

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection (idempotent)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None  # type: ignore[assignment]  # closed: rpc raises EBADF

    def rpc(self, topic: str, payload: dict[str, Any]) -> dict[str, Any]:
        """Send one request, return its payload (a dict) or raise its error."""
        conn = self._conn
        if conn is None:
            raise AnnotError(_errno.EBADF, "the client is closed")
        self._mt += 1
        mt = self._mt
        conn.send(request(topic, mt, payload))
        while True:
            rmt, errnum, errstr, rpayload = conn.next()
            if rmt == mt or (rmt == 0 and errnum):
                if errnum:
                    raise error(errnum, errstr)
                return rpayload if rpayload is not None else {}

    def _call(self, built: tuple[str, dict[str, Any]]) -> dict[str, Any]:
        return self.rpc(*built)

    # the service's calls

    def submit(self, id: JobId, userid: int, t_submit: float | None = None) -> None:
        self._call(_p_submit(id, userid, t_submit))

    def state(self, id: JobId, state: str, note: str | None = None) -> None:
        self._call(_p_state(id, state, note))

    def alloc_response(self, payload: dict[str, Any]) -> dict[str, Any]:
        """RFC 27 alloc response; returns the reply (`{"ignored": true}` for a
        response about a job that is not in SCHED)."""
        return self.rpc("job-manager.alloc-response", dict(payload))

    def annotate(self, id: JobId, annotations: Patch, volatile: bool = False) -> None:
        self._call(_p_annotate(id, annotations, volatile))

    def memo(self, id: JobId, memo: Patch, volatile: bool = False) -> None:
        self._call(_p_memo(id, memo, volatile))

    def get(self, id: JobId) -> dict[str, Any]:
        """{id, userid, state, annotations} as this connection may see it."""
        return self.rpc("job-manager.getattr", {"id": _jobid(id)})

    def list(self, states: str | Iterable[str] | None = None, userid: int | None = None, max: int | None = None) -> list[dict[str, Any]]:
        """List of {id, userid, state, annotations}."""
        return _jobs(self._call(_p_list(states, userid, max)))

    def stats(self) -> dict[str, Any]:
        return self.rpc("job-manager.stats", {})

    def accuracy(self, since: float | None = None, queue: str | None = None, by: str = "queue",
                 jobs: bool = False, histogram: bool = False) -> dict[str, Any]:
        """The estimate accuracy report (docs/accuracy.md), as
        `AnnotationService.accuracy` gives it to this connection's user."""
        return self.rpc(*_p_accuracy(since, queue, by, jobs, histogram))

    def events(self, topics: str | Iterable[str] | None = None, userid: int | None = None, since: int | None = None, snapshot: bool = False, delta: bool = False) -> "EventStream":
        """An iterator of event payloads (§6) on its own connection; ends when
        the service ends the stream (ENODATA); other errors raise."""
        topic, p = _p_events(topics, userid, since, snapshot, delta)
        return EventStream(self.path, p, self._timeout)

    def annotate_pipelined(self, ids: Sequence[JobId], patches: Sequence[Patch], volatile: bool = False, window: int = 256) -> int:
        """Send many annotate requests with up to `window` in flight; returns
        how many succeeded, raises the first error after all replies."""
        conn = self._conn
        n = len(ids)
        sent = done = 0
        first_err = None
        base = self._mt
        while done < n:
            chunk = []
            while sent < n and sent - done < window:
                topic, p = _p_annotate(ids[sent], patches[sent], volatile)
                sent += 1
                frame = request(topic, base + sent, p)
                conn.check(frame)
                chunk.append(frame)
            if chunk:
                conn.send(b"".join(chunk), check=False)
            rmt, errnum, errstr, _ = conn.next()
            done += 1
            if errnum and first_err is None:
                first_err = error(errnum, errstr)
            if rmt == 0 and errnum:
                break
        self._mt = base + sent
        if first_err is not None:
            raise first_err
        return done


class EventStream:
    """Iterator over one `job-manager.events` subscription (own connection)."""

    def __init__(self, path: str, payload: dict[str, Any], timeout: float | None = None) -> None:
        self._conn = _Conn(path, timeout)
        self._conn.send(request("job-manager.events", 1, payload))

    def __iter__(self) -> "EventStream":
        return self

    def __next__(self) -> dict[str, Any]:
        conn = self._conn
        if conn is None:
            raise StopIteration
        try:
            _mt, errnum, errstr, payload = conn.next()
        except BaseException:
            self.close()
            raise
        if errnum == ENODATA:
            self.close()
            raise StopIteration
        if errnum:
            self.close()
            raise error(errnum, errstr)
        batch: dict[str, Any] = payload
        return batch

    def close(self) -> None:
        """Cancel the subscription (closes its connection)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None  # type: ignore[assignment]  # closed: iteration stops

    def __enter__(self) -> "EventStream":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- asyncio ------------------------------------------------------------------


class _AsyncProto(asyncio.Protocol):
    """Matches responses to pending futures (rpc) or a queue (stream)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.transport: Any = None
        self.reader = FrameReader()
        self.pending: dict[int, asyncio.Future[dict[str, Any]]] = {}  # matchtag -> Future
        self.queue: asyncio.Queue[Response | None] | None = None  # stream mode: parsed responses
        self.lost: AnnotError | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        for body in self.reader.feed(data):
            try:
                resp = parse_response(body)
            except ProtocolError as e:
                self._fail_all(e)
                self.transport.close()
                return
            if self.queue is not None:
                self.queue.put_nowait(resp)
                continue
            mt, errnum, errstr, payload = resp
            fut = self.pending.pop(mt, None)
            if fut is None:
                if mt == 0 and errnum:  # connection-level error
                    self._fail_all(error(errnum, errstr))
                continue
            if fut.done():
                continue
            if errnum:
                fut.set_exception(error(errnum, errstr))
            else:
                fut.set_result(payload if payload is not None else {})

    def _fail_all(self, exc: BaseException) -> None:
        pending, self.pending = self.pending, {}
        for fut in pending.values():
            if not fut.done():
                fut.set_exception(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = _lost(self.path)
        self._fail_all(self.lost)
        if self.queue is not None:
            self.queue.put_nowait(None)


async def _aconnect(path: str) -> _AsyncProto:
    loop = asyncio.get_running_loop()
    try:
        _, proto = await loop.create_unix_connection(lambda: _AsyncProto(path), path)
    except OSError as e:
        raise _connect_error(path, e) from None
    return proto


class AsyncClient:
    """asyncio client with pipelining (module doc).

    Use `async with AsyncClient(path) as c:` or `c = await AsyncClient.connect(path)`.
    """

    def __init__(self, socket: str | None = None, message_bytes: int = protocol.DEFAULT_MESSAGE_BYTES) -> None:
        self.path = socket or protocol.default_socket_path()
        self._message_bytes = message_bytes
        self._proto: _AsyncProto | None = None
        self._mt = 0

    @classmethod
    async def connect(cls, socket: str | None = None, **kw: Any) -> "AsyncClient":
        c = cls(socket, **kw)
        await c.open()
        return c

    async def open(self) -> "AsyncClient":
        if self._proto is None:
            self._proto = await _aconnect(self.path)
        return self

    async def __aenter__(self) -> "AsyncClient":
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        p = self._proto
        if p is not None:
            self._proto = None
            if p.transport is not None:
                p.transport.close()
        await asyncio.sleep(0)

    def send(self, topic: str, payload: dict[str, Any]) -> "asyncio.Future[dict[str, Any]]":
        """Queue one request now; returns a future of its reply payload.
        (Lets a caller put many requests in flight without a task each.)"""
        p = self._proto
        if p is None:
            raise AnnotError(_errno.EBADF, "the client is not connected")
        if p.lost is not None:
            raise p.lost
        self._mt += 1
        mt = self._mt
        frame = request(topic, mt, payload)
        if len(frame) - protocol.HEADER_SIZE > self._message_bytes:
            raise error(
                EMSGSIZE,
                f"request of {len(frame) - protocol.HEADER_SIZE} bytes exceeds "
                f"the message limit of {self._message_bytes} bytes",
            )
        fut = asyncio.get_running_loop().create_future()
        p.pending[mt] = fut
        p.transport.write(frame)
        return fut

    async def rpc(self, topic: str, payload: dict[str, Any]) -> dict[str, Any]:
        return await self.send(topic, payload)

    async def submit(self, id: JobId, userid: int, t_submit: float | None = None) -> None:
        await self.rpc(*_p_submit(id, userid, t_submit))

    async def state(self, id: JobId, state: str, note: str | None = None) -> None:
        await self.rpc(*_p_state(id, state, note))

    async def alloc_response(self, payload: dict[str, Any]) -> dict[str, Any]:
        return await self.rpc("job-manager.alloc-response", dict(payload))

    async def annotate(self, id: JobId, annotations: Patch, volatile: bool = False) -> None:
        await self.rpc(*_p_annotate(id, annotations, volatile))

    async def memo(self, id: JobId, memo: Patch, volatile: bool = False) -> None:
        await self.rpc(*_p_memo(id, memo, volatile))

    async def get(self, id: JobId) -> dict[str, Any]:
        return await self.rpc("job-manager.getattr", {"id": _jobid(id)})

    async def list(self, states: str | Iterable[str] | None = None, userid: int | None = None, max: int | None = None) -> list[dict[str, Any]]:
        return _jobs(await self.rpc(*_p_list(states, userid, max)))

    async def stats(self) -> dict[str, Any]:
        return await self.rpc("job-manager.stats", {})

    async def accuracy(self, since: float | None = None, queue: str | None = None,
                       by: str = "queue", jobs: bool = False,
                       histogram: bool = False) -> dict[str, Any]:
        """`Client.accuracy`."""
        return await self.rpc(*_p_accuracy(since, queue, by, jobs, histogram))

    def events(self, topics: str | Iterable[str] | None = None, userid: int | None = None, since: int | None = None, snapshot: bool = False, delta: bool = False) -> "AsyncEventStream":
        """An async iterator of event payloads on its own connection
        (`async for ev in c.events(...)`); `await it.aclose()` cancels."""
        _, p = _p_events(topics, userid, since, snapshot, delta)
        return AsyncEventStream(self.path, p)


class AsyncEventStream:
    """Async iterator over one subscription; connects on first use."""

    def __init__(self, path: str, payload: dict[str, Any]) -> None:
        self._path = path
        self._payload = payload
        self._proto: Any = None  # _AsyncProto once started
        self._done = False

    async def start(self) -> "AsyncEventStream":
        """Connect and send the subscription now (else on first iteration)."""
        if self._proto is None and not self._done:
            self._proto = await _aconnect(self._path)
            self._proto.queue = asyncio.Queue()
            self._proto.transport.write(request("job-manager.events", 1, self._payload))
        return self

    def __aiter__(self) -> "AsyncEventStream":
        return self

    async def __anext__(self) -> dict[str, Any]:
        if self._done:
            raise StopAsyncIteration
        await self.start()
        resp = await self._proto.queue.get()
        if resp is None:
            await self.aclose()
            raise _lost(self._path)
        _mt, errnum, errstr, payload = resp
        if errnum == ENODATA:
            await self.aclose()
            raise StopAsyncIteration
        if errnum:
            await self.aclose()
            raise error(errnum, errstr)
        batch: dict[str, Any] = payload
        return batch

    async def aclose(self) -> None:
        self._done = True
        p, self._proto = self._proto, None
        if p is not None and p.transport is not None:
            p.transport.close()

    async def __aenter__(self) -> "AsyncEventStream":
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
