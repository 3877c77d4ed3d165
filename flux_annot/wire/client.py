"""Clients of the flux-annot service over its Unix socket (docs/protocol.md, docs/python-api.md).

`Client` is blocking: one request at a time on one connection; every call
of the in-process `AnnotationService` minus the credential (the service
reads it from the connection). `AsyncClient` is the asyncio form: the same
calls, each returning its reply to await, any number in flight on one
connection (pipelining), matched by matchtag.

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

What a request costs (docs/performance.md, "Clients"): the C core writes
the frames of annotate / memo calls (`core.RequestEncoder`: the envelope
is a fixed text, a patch given as JSON text is parsed there, never
decoded and encoded again) and reads every reply (`core.ReplyScanner`:
validated in C, so a `{}` payload is never decoded, and one call reads
all the replies of a recv). `annotate_pipelined` encodes each window's
patches with one call of json's encoder and one C call. `AsyncClient`
sends every call at once as a `_Reply` (an asyncio Future that is also a
coroutine: `await`, `gather`, `create_task` and `wait_for` all take it,
and gather needs no Task per call), queueing the frames of one event-loop
turn and writing them together, the annotate / memo ones encoded by one
C call.
"""

import asyncio
import errno as _errno
import socket as _socket
from array import array
from collections.abc import Coroutine, Generator, Iterable, Sequence
from typing import Any, TypeAlias, TypeVar

from flux_annot import core
from flux_annot.wire import protocol
from flux_annot.errors import EMSGSIZE, ENODATA, EPROTO, AnnotError, error
from flux_annot.wire.protocol import (
    ProtocolError,
    dumps_patch,
    reply_errstr,
    reply_payload,
    reply_tuple,
    request,
)

_RECV = 256 << 10
_W = core.REPLY_WORDS
_pack = protocol.HEADER.pack

# (topic, payload member) of the calls whose frames the C core writes
_ANNOTATE = (b"job-manager.annotate", b"annotations")
_MEMO = (b"job-manager.memo", b"memo")
_WHAT = {_ANNOTATE: "annotations", _MEMO: "memo"}
_GETATTR = b'{"topic":"job-manager.getattr","matchtag":%d,"payload":{"id":%d}}'

# A patch: a dict, or JSON text of an object (checked, then sent as written).
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


def _via_flux(socket: str | None, flux_uri: str | None) -> bool:
    """Whether a client with these arguments goes through a Flux broker
    (flux_annot.target: the selection order)."""
    from flux_annot.wire.target import resolve

    return resolve(socket, flux_uri).is_flux


def _jobid(id: JobId) -> int:
    if isinstance(id, int) and not isinstance(id, bool):
        return int(id)
    if isinstance(id, str):
        from flux_annot.ids import parse_jobid

        return int(parse_jobid(id))
    raise TypeError(f"job id must be an int or a string, not {type(id).__name__}")


def _patch(obj: Patch, what: str = "annotations") -> Any:
    """A patch given as dict, or as JSON text/bytes, as a value for `request`
    (the `_p_*` payloads of other transports): text is checked by the C
    parser first, so its nesting is bounded before `json` decodes it and a
    bad text is refused with the sentence the socket client gives."""
    if isinstance(obj, (str, bytes, bytearray)):
        import json

        data = obj.encode("utf-8", "surrogatepass") if isinstance(obj, str) else bytes(obj)
        try:
            core.check_json(data, protocol.REPLY_MAX_DEPTH)
        except AnnotError as e:
            raise error(e.errno, f"{what}: {e.message}") from None
        return json.loads(data)
    return obj


def _patch_text(obj: Patch, what: str) -> bytes:
    """One patch as JSON bytes for `core.RequestEncoder`: a dict is dumped
    compact; text goes as written (the encoder parses it before sending)."""
    if isinstance(obj, bytes):
        return obj
    if isinstance(obj, str):
        return obj.encode("utf-8", "surrogatepass")
    if isinstance(obj, (bytearray, memoryview)):
        return bytes(obj)
    text: bytes = dumps_patch(obj, what)
    return text


def _patches_text(patches: Sequence[Patch], what: str) -> tuple[bytes, bool]:
    """Many patches as one text for `core.RequestEncoder`: (text, as_array).
    All dicts (the common case): the JSON array of them, one call of json's
    encoder; otherwise each one's text, joined by NUL bytes."""
    if set(map(type, patches)) == {dict}:
        try:
            return dumps_patch(list(patches), what), True
        except AnnotError:
            pass  # found again below, with its index
    texts = []
    for i, p in enumerate(patches):
        try:
            t = _patch_text(p, what)
        except AnnotError as e:
            e.index = i
            raise
        if b"\0" in t:
            nul = error(_errno.EINVAL, f"{what}: a NUL byte is not JSON")
            nul.index = i
            raise nul
        texts.append(t)
    return b"\0".join(texts), False


def _shifted(e: AnnotError, offset: int) -> AnnotError:
    """The error of patch `e.index` of a chunk that starts at `offset`,
    naming its index in the whole call."""
    if getattr(e, "index", None) is None:
        return e
    at = e.index + offset
    out = error(e.errno, f"patch {at}: {e.message}")
    out.index = at
    return out


def _id_array(ids: Sequence[JobId]) -> "array[int]":
    """Job ids as an array('Q'), each checked as `_jobid` does."""
    if set(map(type, ids)) <= {int}:
        try:
            return array("Q", ids)  # type: ignore[arg-type]  # all int
        except OverflowError:
            pass  # named below
    out = array("Q")
    for i in ids:
        j = _jobid(i)
        if not 0 <= j < 1 << 64:
            raise error(_errno.EINVAL, f"job id {j} is out of range (0 to 2^64-1)")
        out.append(j)
    return out


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
    p = {"id": _jobid(id), "memo": _patch(memo, "memo")}
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


class _Unread:
    """The bytes received after the last whole reply. A large reply comes
    in many reads: they are gathered in one bytearray and scanned once the
    reply is whole, never copied again or rescanned per read."""

    __slots__ = ("data",)

    def __init__(self) -> None:
        self.data = bytearray()

    def feed(self, new: bytes) -> bytes | None:
        """What to scan now that `new` came: None while the first reply is
        not whole yet."""
        d = self.data
        if not d:
            return new
        d += new
        if len(d) < 4 or len(d) < 4 + int.from_bytes(d[:4], "big"):
            return None
        out = bytes(d)
        d.clear()
        return out

    def keep(self, buf: bytes, used: int) -> None:
        """Keep what a scan of `buf` left (it read `used` bytes)."""
        if used < len(buf):
            self.data += memoryview(buf)[used:]


class _Conn:
    """A blocking connection: request frames out, reply records in (every
    reply read and validated by the C core, `core.ReplyScanner`)."""

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
        self.scanner = core.ReplyScanner(protocol.REPLY_MAX_DEPTH)
        self.encoder = core.RequestEncoder(message_bytes, protocol.REPLY_MAX_DEPTH)
        self.recs: list[int] = []  # records of the last scan (REPLY_WORDS each)
        self.ri = 0  # the next record not looked at
        self.nerr = 0  # error replies among the last scan's records
        self.buf = b""  # the bytes the records' spans point into
        self.rest = _Unread()  # bytes after the last whole reply
        self.more = False  # the scan stopped at its cap: rest may hold whole replies
        self.fault: ProtocolError | None = None  # a malformed reply: the connection is done

    def check(self, frame: bytes) -> None:
        if len(frame) - protocol.HEADER_SIZE > self.message_bytes:
            raise error(
                EMSGSIZE,
                f"request of {len(frame) - protocol.HEADER_SIZE} bytes exceeds "
                f"the message limit of {self.message_bytes} bytes",
            )

    def send(self, data: bytes) -> None:
        """Send frames already checked against the message limit (not on a
        connection a malformed reply has ended)."""
        if self.fault is not None:
            raise self.fault
        try:
            self.sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            raise _lost(self.path) from None

    def fill(self) -> None:
        """Read once (unless whole replies wait already) and scan: new records."""
        if self.fault is not None:
            raise self.fault
        if self.more:
            buf = self.rest.feed(b"")
        else:
            try:
                data = self.sock.recv(_RECV)
            except ConnectionResetError:
                data = b""
            if not data:
                raise _lost(self.path)
            buf = self.rest.feed(data)
        if buf is None:  # a part of a large reply: read on
            self.recs, self.ri, self.nerr, self.more = [], 0, 0, False
            return
        recs, used, self.nerr, err = self.scanner.scan(buf)
        self.recs, self.ri, self.buf = recs, 0, buf
        self.more = len(recs) == self.scanner.cap * _W
        self.rest.keep(buf, used)
        if err is not None:
            self.fault = ProtocolError(EPROTO, err)
            if not recs:
                raise self.fault

    def wait(self, mt: int) -> int:
        """The reply to request `mt`, or a connection-level error (matchtag
        0): the index of its record in `recs` (other replies are skipped)."""
        while True:
            recs = self.recs
            i = self.ri
            n = len(recs)
            while i < n:
                rmt = recs[i + 1]
                if rmt == mt or (rmt == 0 and recs[i] >> 32):
                    self.ri = i + _W
                    return i
                i += _W
            self.ri = i
            self.fill()

    def error(self, i: int) -> AnnotError:
        """The error of the reply at recs[i]."""
        return error(self.recs[i] >> 32, reply_errstr(self.buf, self.recs, i))

    def result(self, i: int) -> dict[str, Any]:
        """The payload of the reply at recs[i] ({} if none), or raise its error."""
        if self.recs[i] >> 32:
            raise self.error(i)
        payload: dict[str, Any] | None = reply_payload(self.buf, self.recs, i)
        return payload if payload is not None else {}

    def next(self) -> Response:
        """The next reply as (matchtag, errnum, errstr, payload)."""
        while self.ri >= len(self.recs):
            self.fill()
        i = self.ri
        self.ri = i + _W
        resp: Response = reply_tuple(self.buf, self.recs, i)
        return resp

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None  # type: ignore[assignment]  # closed: unusable


class Client:
    """Blocking client (module doc). `socket`: path, default as docs/protocol.md says.

    With no socket given, `flux_annot.target.resolve` chooses; when it
    chooses a Flux instance (`flux_uri=` or `$FLUX_URI`), `Client(...)` is a
    `flux_annot.flux_client.FluxClient`: the same calls through the broker.
    """

    def __new__(cls, socket: str | None = None, *args: Any, flux_uri: str | None = None, **kw: Any) -> "Client":
        if cls is Client and _via_flux(socket, flux_uri):
            from flux_annot.flux.flux_client import FluxClient

            return object.__new__(FluxClient)
        return object.__new__(cls)

    def __init__(self, socket: str | None = None, timeout: float | None = None, message_bytes: int = protocol.DEFAULT_MESSAGE_BYTES, flux_uri: str | None = None) -> None:
        self.path = socket or protocol.default_socket_path()
        self._timeout = timeout
        self._message_bytes = message_bytes
        self._conn = _Conn(self.path, timeout, message_bytes)
        self._mt = 0

    def __init_subclass__(cls, **kw: Any) -> None:
        """The seam of other transports: a subclass that brings its own `rpc`
        (the Flux broker's client) gets every call through it, as
        `_p_annotate` etc. build them; the frames the socket client writes
        itself (annotate, memo, get) are the socket's business."""
        super().__init_subclass__(**kw)
        if "rpc" in cls.__dict__:
            if "_note" not in cls.__dict__:
                cls._note = Client._note_rpc  # type: ignore[method-assign]  # the generic form
            if "get" not in cls.__dict__:
                cls.get = Client._get_rpc  # type: ignore[method-assign]  # the generic form

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection (idempotent)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None  # type: ignore[assignment]  # closed: rpc raises EBADF

    def _open(self) -> _Conn:
        conn = self._conn
        if conn is None:
            raise AnnotError(_errno.EBADF, "the client is closed")
        return conn

    def rpc(self, topic: str, payload: dict[str, Any]) -> dict[str, Any]:
        """Send one request, return its payload (a dict) or raise its error."""
        conn = self._open()
        self._mt += 1
        mt = self._mt
        frame = request(topic, mt, payload)
        conn.check(frame)
        conn.send(frame)
        return conn.result(conn.wait(mt))

    def _call(self, built: tuple[str, dict[str, Any]]) -> dict[str, Any]:
        return self.rpc(*built)

    def _note(self, kind: tuple[bytes, bytes], id: JobId, patch: Patch, volatile: bool) -> None:
        """annotate / memo: the frame written by the C core, the reply read there."""
        conn = self._open()
        if type(id) is not int:
            id = _jobid(id)
        text = dumps_patch(patch, _WHAT[kind]) if type(patch) is dict else _patch_text(
            patch, _WHAT[kind])
        mt = self._mt + 1
        frame = conn.encoder.encode(kind[0], kind[1], mt, id, text, 1, volatile)
        self._mt = mt
        conn.send(frame)
        i = conn.wait(mt)
        if conn.recs[i] >> 32:
            raise conn.error(i)

    def _note_rpc(self, kind: tuple[bytes, bytes], id: JobId, patch: Patch, volatile: bool) -> None:
        self._call((_p_annotate if kind is _ANNOTATE else _p_memo)(id, patch, volatile))

    def _get_rpc(self, id: JobId) -> dict[str, Any]:
        return self.rpc("job-manager.getattr", {"id": _jobid(id)})

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
        self._note(_ANNOTATE, id, annotations, volatile)

    def memo(self, id: JobId, memo: Patch, volatile: bool = False) -> None:
        self._note(_MEMO, id, memo, volatile)

    def get(self, id: JobId) -> dict[str, Any]:
        """{id, userid, state, annotations} as this connection may see it."""
        conn = self._open()
        if type(id) is not int:
            id = _jobid(id)
        self._mt += 1
        mt = self._mt
        body = _GETATTR % (mt, id)
        conn.send(_pack(len(body)) + body)
        return conn.result(conn.wait(mt))

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
        how many succeeded, raises the first error after all replies.

        Frames go in chunks of at least a quarter of the window, each chunk's
        patches encoded by one json call (dicts) and one C call; replies are
        counted from the C core's records, looked at one by one only when a
        scan holds an error.
        """
        conn = self._open()
        n = len(ids)
        if len(patches) != n:
            raise error(_errno.EINVAL, f"ids and patches differ in length ({n} != {len(patches)})")
        window = max(1, window)
        sent = done = 0
        first_err: AnnotError | None = None
        base = self._mt
        topic, member = _ANNOTATE
        what = _WHAT[_ANNOTATE]
        while done < n:
            room = window - (sent - done)
            if sent < n and 4 * room >= window:
                k = min(room, n - sent)
                try:
                    text, as_array = _patches_text(patches[sent : sent + k], what)
                    frames = conn.encoder.encode(topic, member, base + sent + 1,
                                                 _id_array(ids[sent : sent + k]), text, k,
                                                 volatile, as_array)
                except AnnotError as e:
                    # nothing of this chunk was sent: wait for what was, then raise
                    first_err = first_err or _shifted(e, sent)
                    n = sent
                    continue
                conn.send(frames)
                sent += k
                self._mt = base + sent
            if conn.ri >= len(conn.recs):
                conn.fill()
            recs, i = conn.recs, conn.ri
            conn.ri = len(recs)
            done += (len(recs) - i) // _W
            if conn.nerr:
                stop = False
                for j in range(i, len(recs), _W):
                    if recs[j] >> 32:
                        if first_err is None:
                            first_err = conn.error(j)
                        stop = stop or recs[j + 1] == 0
                if stop:
                    break
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

_T = TypeVar("_T")

# what a _Reply's result is made of
_VOID = 0  # None (annotate, memo, submit, state)
_DICT = 1  # the payload dict
_JOBS = 2  # the payload's "jobs" list (list)


class _Reply(asyncio.Future[_T], Coroutine[Any, Any, _T]):
    """The reply to one AsyncClient call, already sent: an asyncio Future
    (gather and wait_for take it as it is: no Task per call) that is also a
    coroutine, so that `asyncio.create_task(c.annotate(...))` and
    `asyncio.run` accept it as they accepted the `async def` methods."""

    kind = _DICT  # what the result is made of (the subclasses below)

    # the coroutine protocol, for a Task that drives it: wait on the Future
    def send(self, value: Any) -> Any:
        if self.done():
            raise StopIteration(self.result())
        self._asyncio_future_blocking = True
        return self

    def throw(self, typ: Any, val: Any = None, tb: Any = None) -> Any:
        raise typ if val is None else val

    def close(self) -> None:
        pass


class _VoidReply(_Reply[None]):
    kind = _VOID


class _JobsReply(_Reply[list[dict[str, Any]]]):
    kind = _JOBS


class _AsyncProto(asyncio.Protocol):
    """Matches responses to pending futures (rpc) or a queue (stream)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.transport: Any = None
        self.scanner = core.ReplyScanner(protocol.REPLY_MAX_DEPTH)
        self.rest = _Unread()  # bytes after the last whole reply
        self.pending: dict[int, Any] = {}  # matchtag -> _Reply (or a plain Future: live.py)
        self.queue: asyncio.Queue[Response | None] | None = None  # stream mode: parsed responses
        self.lost: AnnotError | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def _scans(self, data: bytes) -> Generator[tuple[bytes, list[int], int, str | None], None, None]:
        """The C core's records of the whole replies received so far, as
        (buffer, records, error replies among them, error) per scan (error:
        a malformed reply ends the connection, after the records before it)."""
        buf = self.rest.feed(data)
        scan = self.scanner.scan
        full = self.scanner.cap * _W
        while buf is not None:
            recs, used, nerr, err = scan(buf)
            more = err is None and len(recs) == full
            self.rest.keep(buf, used)
            yield buf, recs, nerr, err
            if not more:
                return
            buf = self.rest.feed(b"")

    def responses(self, data: bytes) -> tuple[list[Response], ProtocolError | None]:
        """The replies received so far as (matchtag, errnum, errstr, payload),
        and the ProtocolError that ends the connection, if one came after them."""
        out: list[Response] = []
        for buf, recs, _nerr, err in self._scans(data):
            try:
                for i in range(0, len(recs), _W):
                    out.append(reply_tuple(buf, recs, i))
            except ProtocolError as e:
                return out, e
            if err is not None:
                return out, ProtocolError(EPROTO, err)
        return out, None

    def data_received(self, data: bytes) -> None:
        if self.queue is not None:
            resps, fault = self.responses(data)
            for resp in resps:
                self.queue.put_nowait(resp)
            if fault is not None:
                self._fail_all(fault)
                self.transport.close()
            return
        for buf, recs, nerr, err in self._scans(data):
            if not nerr:
                self._resolve_ok(buf, recs)
            else:
                self._resolve(buf, recs)
            if err is not None:
                self._fail_all(ProtocolError(EPROTO, err))
                self.transport.close()
                return

    def _resolve_ok(self, buf: bytes, recs: list[int]) -> None:
        """Replies without an error (the common case): set their results."""
        pop = self.pending.pop
        for k, mt in enumerate(recs[1::_W]):
            fut = pop(mt, None)
            if fut is None:
                continue
            try:
                if fut.kind == _VOID:
                    fut.set_result(None)
                else:
                    self._set_payload(fut, buf, recs, k * _W)
            except asyncio.InvalidStateError:
                pass  # cancelled by its caller

    def _set_payload(self, fut: Any, buf: bytes, recs: list[int], i: int) -> None:
        try:
            payload = reply_payload(buf, recs, i)
            if payload is None:
                payload = {}
            fut.set_result(_jobs(payload) if fut.kind == _JOBS else payload)
        except ProtocolError as e:
            fut.set_exception(e)

    def _resolve(self, buf: bytes, recs: list[int]) -> None:
        """Replies some of which are errors."""
        pending = self.pending
        for i in range(0, len(recs), _W):
            fut = pending.pop(recs[i + 1], None)
            st = recs[i]
            if fut is None:
                if recs[i + 1] == 0 and st >> 32:  # connection-level error
                    self._fail_all(error(st >> 32, reply_errstr(buf, recs, i)))
                continue
            if fut.done():
                continue
            if st >> 32:
                fut.set_exception(error(st >> 32, reply_errstr(buf, recs, i)))
            elif fut.kind == _VOID:
                fut.set_result(None)
            else:
                self._set_payload(fut, buf, recs, i)

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


# A batch is written as soon as it holds this many calls, before the turn
# ends: the service starts on them while the caller makes the next ones.
_WRITE_EVERY = 128


async def _finish(fut: "asyncio.Future[dict[str, Any]]", kind: int) -> Any:
    """A reply through another transport's `send`, made what the call returns."""
    payload = await fut
    if kind == _VOID:
        return None
    return _jobs(payload) if kind == _JOBS else payload


class _Batch:
    """annotate / memo calls of one event-loop turn with the same topic and
    volatility, sent as consecutive matchtags: encoded by one C call."""

    __slots__ = ("kind", "volatile", "mt0", "ids", "patches")

    def __init__(self, kind: tuple[bytes, bytes], volatile: bool, mt0: int) -> None:
        self.kind = kind
        self.volatile = volatile
        self.mt0 = mt0
        self.ids: list[int] = []
        self.patches: list[Patch] = []


class AsyncClient:
    """asyncio client with pipelining (module doc).

    Use `async with AsyncClient(path) as c:` or `c = await AsyncClient.connect(path)`.
    Chooses a Flux instance as `Client` does (`AsyncFluxClient`).
    """

    def __new__(cls, socket: str | None = None, *args: Any, flux_uri: str | None = None, **kw: Any) -> "AsyncClient":
        if cls is AsyncClient and _via_flux(socket, flux_uri):
            from flux_annot.flux.flux_client import AsyncFluxClient

            return object.__new__(AsyncFluxClient)
        return object.__new__(cls)

    def __init__(self, socket: str | None = None, message_bytes: int = protocol.DEFAULT_MESSAGE_BYTES, flux_uri: str | None = None) -> None:
        self.path = socket or protocol.default_socket_path()
        self._message_bytes = message_bytes
        self._proto: _AsyncProto | None = None
        self._mt = 0
        self._encoder = core.RequestEncoder(message_bytes, protocol.REPLY_MAX_DEPTH)
        self._out: list[bytes] = []  # frames of this turn, in request order
        self._batch: _Batch | None = None  # annotate / memo calls after them
        self._loop: asyncio.AbstractEventLoop | None = None
        self._flushing = False

    def __init_subclass__(cls, **kw: Any) -> None:
        """The seam of other transports, as Client's: a subclass that brings
        its own `send` gets every call through it (its requests are not
        queued and encoded here)."""
        super().__init_subclass__(**kw)
        if "send" in cls.__dict__:
            if "_note" not in cls.__dict__:
                cls._note = AsyncClient._note_send  # type: ignore[method-assign, assignment]  # generic
            if "_request" not in cls.__dict__:
                cls._request = AsyncClient._request_send  # type: ignore[method-assign, assignment]  # generic

    def _request_send(self, topic: str, payload: dict[str, Any], cls: "type[_Reply[Any]]") -> "Coroutine[Any, Any, Any]":
        return _finish(self.send(topic, payload), cls.kind)

    def _note_send(self, kind: tuple[bytes, bytes], id: JobId, patch: Patch, volatile: bool) -> "Coroutine[Any, Any, None]":
        topic, p = (_p_annotate if kind is _ANNOTATE else _p_memo)(id, patch, volatile)
        return _finish(self.send(topic, p), _VOID)

    @classmethod
    async def connect(cls, socket: str | None = None, **kw: Any) -> "AsyncClient":
        c = cls(socket, **kw)
        await c.open()
        return c

    async def open(self) -> "AsyncClient":
        if self._proto is None:
            self._proto = await _aconnect(self.path)
            self._loop = asyncio.get_running_loop()
        return self

    async def __aenter__(self) -> "AsyncClient":
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        p = self._proto
        if p is not None:
            self._write()
            self._proto = None
            if p.transport is not None:
                p.transport.close()
        await asyncio.sleep(0)

    # -- sending: frames queued for this turn, written by _flush

    def _open(self) -> _AsyncProto:
        p = self._proto
        if p is None:
            raise AnnotError(_errno.EBADF, "the client is not connected")
        if p.lost is not None:
            raise p.lost
        return p

    def _request(self, topic: str, payload: dict[str, Any], cls: "type[_Reply[Any]]") -> "_Reply[Any]":
        p = self._open()
        frame = request(topic, self._mt + 1, payload)
        if len(frame) - protocol.HEADER_SIZE > self._message_bytes:
            raise error(
                EMSGSIZE,
                f"request of {len(frame) - protocol.HEADER_SIZE} bytes exceeds "
                f"the message limit of {self._message_bytes} bytes",
            )
        if self._batch is not None:
            self._seal()
        self._mt = mt = self._mt + 1
        self._out.append(frame)
        fut = p.pending[mt] = cls(loop=self._loop)
        if not self._flushing:
            self._flushing = True
            self._loop.call_soon(self._flush)  # type: ignore[union-attr]  # set with _proto
        return fut

    def _note(self, kind: tuple[bytes, bytes], id: JobId, patch: Patch, volatile: bool) -> "_Reply[None]":
        """annotate / memo: queued in the open batch (the C core encodes it)."""
        p = self._open()
        if type(id) is not int:
            id = _jobid(id)
        self._mt = mt = self._mt + 1
        b = self._batch
        if b is None or b.kind is not kind or b.volatile != volatile:
            if b is not None:
                self._seal()
            b = self._batch = _Batch(kind, volatile, mt)
        ids = b.ids
        ids.append(id)
        b.patches.append(patch)
        fut: _Reply[None] = _VoidReply(loop=self._loop)
        p.pending[mt] = fut
        if len(ids) >= _WRITE_EVERY:
            self._write()
        elif not self._flushing:
            self._flushing = True
            self._loop.call_soon(self._flush)  # type: ignore[union-attr]  # set with _proto
        return fut

    def _seal(self) -> None:
        """Encode the open batch into the frames of this turn. A patch the
        encoder refuses fails its own reply; the others are sent."""
        b, self._batch = self._batch, None
        if b is None:
            return
        topic, member = b.kind
        what = _WHAT[b.kind]
        enc = self._encoder.encode
        try:
            text, as_array = _patches_text(b.patches, what)
            self._out.append(enc(topic, member, b.mt0, _id_array(b.ids), text, len(b.ids),
                                 b.volatile, as_array))
            return
        except AnnotError:
            pass
        pending = self._proto.pending if self._proto is not None else {}
        for k, (id, patch) in enumerate(zip(b.ids, b.patches)):
            try:
                self._out.append(enc(topic, member, b.mt0 + k, id, _patch_text(patch, what), 1,
                                     b.volatile))
            except AnnotError as e:
                fut = pending.pop(b.mt0 + k, None)
                if fut is not None and not fut.done():
                    fut.set_exception(e)

    def _flush(self) -> None:
        """The end of the turn: write what is queued."""
        self._flushing = False
        self._write()

    def _write(self) -> None:
        """Write the frames queued (one write)."""
        self._seal()
        out = self._out
        if not out:
            return
        data = out[0] if len(out) == 1 else b"".join(out)
        out.clear()
        p = self._proto
        if p is not None and p.transport is not None:
            p.transport.write(data)

    # -- the calls

    def send(self, topic: str, payload: dict[str, Any]) -> "asyncio.Future[dict[str, Any]]":
        """Queue one request now; returns a future of its reply payload.
        (Every call does this; this one takes any topic.)"""
        return self._request(topic, payload, _Reply)

    def rpc(self, topic: str, payload: dict[str, Any]) -> "Coroutine[Any, Any, dict[str, Any]]":
        return self._request(topic, payload, _Reply)

    def submit(self, id: JobId, userid: int, t_submit: float | None = None) -> "Coroutine[Any, Any, None]":
        return self._request(*_p_submit(id, userid, t_submit), _VoidReply)

    def state(self, id: JobId, state: str, note: str | None = None) -> "Coroutine[Any, Any, None]":
        return self._request(*_p_state(id, state, note), _VoidReply)

    def alloc_response(self, payload: dict[str, Any]) -> "Coroutine[Any, Any, dict[str, Any]]":
        return self._request("job-manager.alloc-response", dict(payload), _Reply)

    def annotate(self, id: JobId, annotations: Patch, volatile: bool = False) -> "Coroutine[Any, Any, None]":
        return self._note(_ANNOTATE, id, annotations, volatile)

    def memo(self, id: JobId, memo: Patch, volatile: bool = False) -> "Coroutine[Any, Any, None]":
        return self._note(_MEMO, id, memo, volatile)

    def get(self, id: JobId) -> "Coroutine[Any, Any, dict[str, Any]]":
        return self._request("job-manager.getattr", {"id": _jobid(id)}, _Reply)

    def list(self, states: str | Iterable[str] | None = None, userid: int | None = None, max: int | None = None) -> "Coroutine[Any, Any, list[dict[str, Any]]]":
        return self._request(*_p_list(states, userid, max), _JobsReply)

    def stats(self) -> "Coroutine[Any, Any, dict[str, Any]]":
        return self._request("job-manager.stats", {}, _Reply)

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
