"""The Unix-socket transport of docs/protocol.md: connections, SO_PEERCRED,
guest throttling, write buffering. What a request does is the dispatch's
business (flux_annot.dispatch); this module only moves frames in and out.

Each connection is an `asyncio.BufferedProtocol` (`Connection`): bytes
arrive in one shared receive buffer, complete frames are decoded in C
(`FrameScanner`, with the limits of the connection's class) and handed to
`Dispatch.serve`, whose replies collect in the connection's output and are
written with one `transport.write` per read chunk. Credentials come from
SO_PEERCRED only; the owner role is peer uid == the service's owner uid.

Backpressure: each transport has a write high-water mark; above it the
connection stops reading and stops decoding buffered frames, and its
subscriptions stop draining. So a client that never reads costs at most
one read chunk of pending replies plus the high-water mark, and others are
served as usual. A subscriber's bound (`[events] subscriber_queue_bytes`)
counts what this connection holds for it besides its queue in the hub:
replies not written yet, the transport's buffer and what the kernel holds
unread in the socket (`Connection.held_for`, its snapshot not counted), so
a subscriber that stopped reading is dropped with EOVERFLOW once that
exceeds the bound, however little is published (docs/events.md).

Streamed batches are written as the pieces they are made of (the frame's
head, the hub's encodings or memoryviews of them, "}"), with one
`os.writev` when the transport's buffer is empty: no copy of a batch per
subscriber in Python (`Connection.push_stream`, `flush`).

Guests over their rate: a connection refused with EAGAIN stops being read
and waits its uid's turn (`SocketTransport.throttle`), so a flooding uid
costs a bounded share of the loop however many connections it holds.
"""

import asyncio
import collections
import errno as _errno
import fcntl
import logging
import os
import socket
import stat
import struct
import termios

from flux_annot.wire import protocol
from flux_annot.errors import AnnotError, EINVAL
from flux_annot.wire.dispatch import SCAN_BYTES
from flux_annot.wire.protocol import HEADER_SIZE

log = logging.getLogger("flux_annot.server")

_UCRED = struct.Struct("3i")
_INT = struct.Struct("i")
_unpack_header = protocol.HEADER.unpack_from
_pack_header = protocol.HEADER.pack
#: pieces per writev call (IOV_MAX on Linux)
IOV_MAX = 1024

#: transport write buffer: above HIGH the connection pauses (see module doc)
WRITE_HIGH = 1 << 20
WRITE_LOW = 256 << 10
#: bytes read from a connection at once
RECV_BYTES = 256 << 10
#: a uid over its rate has one of its throttled connections served at most
#: this often (each time with the tokens earned since): what a flooding uid
#: costs the server, however many connections it floods on
THROTTLE_WAKE_HZ = 20
#: seconds to wait for slow readers at shutdown
SHUTDOWN_GRACE = 5.0


class Connection(asyncio.BufferedProtocol):
    """One client connection: framing, flow control, reply collection.

    Reads land in the server's one receive buffer (`get_buffer`), not in a
    new 256 KiB bytes object per read: allocating (and shrinking) that many
    bytes is an mmap/mremap/munmap per read in glibc, a good share of a
    round trip. The bytes read are copied out at once (`buffer_updated`).
    """

    def __init__(self, dispatch, link):
        self.server = dispatch  # serves the frames (flux_annot.dispatch)
        self.link = link  # the SocketTransport: receive buffer, throttling
        self.transport = None
        self.buf = bytearray()
        self.out = []  # reply frames (or pieces of frames) waiting for the next write
        self.outn = 0
        self.pushed = 0  # bytes ever put in `out` (positions in the output stream)
        self.fd = -1
        self.kernel_cap = 0  # the most the kernel may hold unread (2 x SO_SNDBUF)
        self.paused = False  # transport above its high-water mark
        self.throttled = False  # a guest over its rate: reading paused a while
        self.closing = False  # EMSGSIZE sent, or shutting down
        self.streams = {}  # matchtag -> _Stream
        self.ndeferred = 0  # replies waiting for a commit
        self.eof = False  # the client half-closed (or closed)
        self.uid = -1
        self.pid = 0
        self.owner = False
        self.cred = None
        self.scanner = None  # core.FrameScanner with this connection's limits
        self.scan_bytes = SCAN_BYTES

    # asyncio callbacks

    def connection_made(self, transport):
        self.transport = transport
        srv = self.server
        try:
            sock = transport.get_extra_info("socket")
            raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
            self.pid, self.uid, _gid = _UCRED.unpack(raw)
            self.fd = sock.fileno()
            self.kernel_cap = 2 * sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
        except OSError as e:  # cannot happen on a Unix socket; refuse rather than guess
            log.error("SO_PEERCRED failed (%s); closing the connection", e)
            transport.abort()
            return
        self.owner = self.uid == srv.owner_uid
        self.cred = srv.make_cred(self.uid, self.owner)
        self.scanner, self.scan_bytes = srv.scanner_for(self.owner)
        transport.set_write_buffer_limits(high=WRITE_HIGH, low=WRITE_LOW)
        srv.conns.add(self)
        self.link.conns.add(self)
        srv.nconn_total += 1

    def connection_lost(self, exc):
        srv = self.server
        srv.conns.discard(self)
        srv.dirty.discard(self)
        link = self.link
        link.conns.discard(self)
        self.transport = None
        self.buf = bytearray()
        self.out = []
        for st in self.streams.values():
            st.ended = True
            srv.ready.discard(st)
            if st.sub is not None:
                st.sub.close()
        self.streams.clear()
        if link.closed_waiter is not None and not link.conns:
            if not link.closed_waiter.done():
                link.closed_waiter.set_result(None)

    def get_buffer(self, sizehint):
        # One buffer for every connection: the loop calls get_buffer, reads
        # into it and calls buffer_updated before anything else runs.
        return self.link.rbuf

    def buffer_updated(self, nbytes):
        with memoryview(self.link.rbuf) as mv:
            data = bytes(mv[:nbytes])
        self.data_received(data)

    def data_received(self, data):
        if self.closing:
            return
        if self.paused or self.throttled:
            self.buf += data
        elif self.buf:
            self.buf += data
            self.process()
        else:
            self.process(data)  # the common case: no copy into the buffer
        if self.out:
            self.flush()  # replies first (round-trip latency), then the rest
        self.server.after_io()
        if self.out:
            self.flush()

    def eof_received(self):
        # The client closed (or half-closed) its side: close ours now, or,
        # if replies still wait for a commit, once they are written.
        self.eof = True
        return self.ndeferred > 0

    def pause_writing(self):
        self.paused = True
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self):
        self.paused = False
        if self.transport is None or self.closing:
            return
        if not self.throttled:
            self.transport.resume_reading()
        srv = self.server
        for st in list(self.streams.values()):
            srv.drain(st)
        if self.buf and not self.throttled:
            self.process()
        srv.after_io()
        if self.out:
            self.flush()

    # framing and replies

    def process(self, chunk=None):
        """Decode and serve every complete frame in the input buffer.

        The frames are decoded in C (`core.FrameScanner`, with this
        connection's limits), up to a few hundred per call; the server then
        serves the records (`Dispatch.serve`). Only the bytes of frames served
        are dropped from the buffer: one left unserved (paused, throttled)
        is decoded again later. `chunk`: bytes just read while the buffer
        was empty, served straight from there (what is left is buffered).
        """
        srv = self.server
        if chunk is not None:
            recs, used, keys, err = self.scanner.scan(chunk)
            done = srv.serve(self, chunk, recs, keys, err) if recs else 0
            if self.closing:
                return
            if done < len(chunk):
                self.buf += memoryview(chunk)[done:]
            if done < used or not (self.buf and used):
                return
        buf = self.buf
        limit = srv.message_bytes
        while len(buf) >= HEADER_SIZE and not (self.paused or self.throttled or self.closing):
            length = _unpack_header(buf, 0)[0]
            if length <= limit and len(buf) - HEADER_SIZE < length:
                break  # the first frame is incomplete: no copy of it yet
            # Decode a bounded prefix: a throttled or paused connection may
            # hold megabytes, of which it is served a frame at a time.
            take = max(self.scan_bytes, HEADER_SIZE + length)
            if len(buf) > take:
                with memoryview(buf) as mv:
                    data = bytes(mv[:take])
            else:
                data = bytes(buf)
            recs, used, keys, err = self.scanner.scan(data)
            done = srv.serve(self, data, recs, keys, err)
            if self.closing:
                return
            del buf[:done]
            if done < used or used == 0:
                break

    def throttle(self):
        """A guest request was refused for its rate (EAGAIN): serve nothing
        more from this connection until its turn comes (`SocketTransport.throttle`).

        The reply to the refused request is sent as usual (with those of the
        frames decoded with it: over the rate too); the frames after them
        wait in this connection's buffer and, reading paused, in the kernel's
        socket buffer. So a flooding guest costs the server a few requests
        per token interval of its uid, however many connections it floods
        on, not every request it manages to send, and the scheduler's
        requests keep their share of the event loop (docs/limits.md).
        """
        if self.throttled or self.transport is None:
            return
        self.throttled = True
        self.transport.pause_reading()  # a no-op while woken (reading still paused)
        self.link.throttle(self)

    def unthrottle(self):
        """Its turn (`SocketTransport.wake`): serve what it has buffered; read again
        only if that did not throttle it again (no resume/pause pair)."""
        self.throttled = False
        if self.transport is None or self.closing:
            return
        if not self.paused:
            if self.buf:
                self.process()
            if self.out:
                self.flush()
            if not (self.throttled or self.paused or self.closing) and self.transport is not None:
                self.transport.resume_reading()
        self.server.after_io()
        if self.out:
            self.flush()

    def refuse_oversize(self):
        """An EMSGSIZE reply is in `out`: send it and close (§4)."""
        self.closing = True
        self.buf = bytearray()
        self.flush()
        self.transport.close()

    def push(self, reply):
        """Queue a reply produced outside `process` (streamed)."""
        if self.transport is None:
            return
        self.out.append(reply)
        self.outn += len(reply)
        self.pushed += len(reply)
        self.server.dirty.add(self)

    def push_deferred(self, reply, n=1):
        """A deferred reply (n: replies, joined) whose batch has committed."""
        self.ndeferred -= n
        self.push(reply)

    def push_stream(self, st, payload, snapshot=False):
        """Queue one batch of stream `st` as the response frame around
        `payload` (bytes, or `events.Pieces`: bytes and memoryviews whose
        join is the payload), kept as pieces; `snapshot`: it is the
        stream's snapshot (its place in the output is noted: `held_for`
        does not count it)."""
        if self.transport is None:
            return
        head = b'{"matchtag":%d,"errnum":0,"payload":' % st.matchtag
        size = len(head) + 1 + len(payload)
        out = self.out
        out.append(_pack_header(size) + head)
        if type(payload) is bytes:
            out.append(payload)
        else:
            out += payload.parts
        out.append(b"}")
        size += protocol.HEADER_SIZE
        if snapshot:
            st.snap_start = self.pushed
            st.snap_end = self.pushed + size
        self.outn += size
        self.pushed += size
        self.server.dirty.add(self)

    def held_for(self, st, budget):
        """Bytes this connection holds for stream `st`'s subscriber outside
        the hub's queue: output not written yet, the transport's buffer and
        what the kernel holds unread in the socket (`TIOCOUTQ`: its memory
        for those bytes, a little more than the bytes), less the part of
        its snapshot still there. The kernel is asked only when it could
        make the total exceed `budget` (Subscription.outside)."""
        t = self.transport
        if t is None:
            return 0
        near = self.outn + t.get_write_buffer_size()
        mine = near - self._snapshot_in(st, near)
        if mine > budget or near + self.kernel_cap <= budget:
            return mine
        total = near + self._kernel_unread()
        return total - self._snapshot_in(st, total)

    def _snapshot_in(self, st, held):
        """Bytes of st's snapshot among the last `held` bytes pushed."""
        if not st.snap_end:
            return 0
        return max(0, st.snap_end - max(st.snap_start, self.pushed - held))

    def _kernel_unread(self):
        try:
            return _INT.unpack(fcntl.ioctl(self.fd, termios.TIOCOUTQ, b"\0\0\0\0"))[0]
        except OSError:
            return 0

    def flush(self):
        out = self.out
        if not out:
            return
        t = self.transport
        self.out = []
        if t is None:
            self.outn = 0
            return
        if len(out) == 1:
            t.write(out[0])
        elif t.get_write_buffer_size() or t.is_closing():
            t.write(b"".join(out))
        else:
            self._writev(t, out, self.outn)
        self.outn = 0
        if self.eof and not self.ndeferred:
            t.close()

    def _writev(self, t, out, total):
        """Write pieces (`total` bytes) with writev while the socket takes
        them (the transport's buffer being empty, as asyncio's own write
        does); what is left goes to the transport, joined."""
        fd = self.fd
        i = 0
        while i < len(out):
            chunk = out if i == 0 and len(out) <= IOV_MAX else out[i:i + IOV_MAX]
            try:
                n = os.writev(fd, chunk)
            except OSError:  # full, or the peer is gone (asyncio's write reports that)
                break
            if n == total:
                return  # all of it (the common case)
            total -= n
            for piece in chunk:
                size = len(piece)
                if n < size:  # the socket is full: the rest of this piece on
                    out[i] = memoryview(piece)[n:]
                    break
                n -= size
                i += 1
            else:
                continue
            break
        if i < len(out):
            t.write(b"".join(out[i:]))


class SocketTransport:
    """One listening Unix socket feeding a `Dispatch` (module doc)."""

    def __init__(self, dispatch, socket_path):
        self.dispatch = dispatch
        self.socket_path = socket_path
        self.aserver = None
        self.closed_waiter = None
        self.conns = set()  # this transport's connections (also in dispatch.conns)
        self.rbuf = bytearray(RECV_BYTES)  # every connection's reads (Connection.get_buffer)
        # Guest connections refused for their rate wait in one queue per uid
        # (`throttle`); one of them is served per token interval, or per
        # 1/THROTTLE_WAKE_HZ s with the tokens earned meanwhile if shorter.
        self.throttle_delay = max(1.0 / dispatch.guest_rate, 1.0 / THROTTLE_WAKE_HZ)
        self._throttled = {}  # uid -> deque of throttled connections

    async def start(self):
        loop = asyncio.get_running_loop()
        path = self.socket_path
        prepare_socket_path(path)
        self.aserver = await loop.create_unix_server(
            lambda: Connection(self.dispatch, self), path=path, backlog=128
        )
        os.chmod(path, 0o666)
        log.debug("listening on %s", path)

    def stop_accepting(self):
        if self.aserver is not None:
            self.aserver.close()

    async def close(self):
        """Close every connection (its streams already ended by the
        dispatch), waiting SHUTDOWN_GRACE s for slow readers; remove the
        socket file."""
        if self.conns:
            self.closed_waiter = asyncio.get_running_loop().create_future()
            for conn in list(self.conns):
                if conn.transport is not None:
                    conn.transport.close()
            try:
                await asyncio.wait_for(self.closed_waiter, SHUTDOWN_GRACE)
            except asyncio.TimeoutError:
                for conn in list(self.conns):
                    if conn.transport is not None:
                        conn.transport.abort()
        await asyncio.sleep(0)
        if self.aserver is None:
            return  # never bound: the path (if any) is someone else's
        try:
            if os.path.exists(self.socket_path) and stat.S_ISSOCK(
                os.stat(self.socket_path).st_mode
            ):
                os.unlink(self.socket_path)
        except OSError:
            pass

    # guests over their rate

    def throttle(self, conn):
        """Queue a throttled guest connection behind the others of its uid.

        One timer per uid wakes one queued connection per `throttle_delay`
        (a token interval, at least 1/THROTTLE_WAKE_HZ s), in turn, which
        serves what it has buffered (requests on the tokens earned since,
        EAGAIN to the rest of what was decoded with the refused one) and
        queues again if still over. So a uid over its rate costs at most
        THROTTLE_WAKE_HZ wake-ups a second however many connections it
        holds, and a paused connection costs nothing.
        """
        q = self._throttled.get(conn.uid)
        if q is None:
            q = self._throttled[conn.uid] = collections.deque()
            self.dispatch.loop.call_later(self.throttle_delay, self.wake, conn.uid)
        q.append(conn)

    def wake(self, uid):
        q = self._throttled.get(uid)
        while q:
            conn = q.popleft()
            if conn.transport is not None and not conn.closing:
                conn.unthrottle()  # may queue it again, at the back
                break
        if q:
            self.dispatch.loop.call_later(self.throttle_delay, self.wake, uid)
        else:
            self._throttled.pop(uid, None)


def prepare_socket_path(path):
    """Create the socket's directory (0755) if missing; remove a stale socket
    file only if nothing listens on it. Raises AnnotError with a sentence."""
    if len(os.fsencode(path)) >= 108:
        raise AnnotError(EINVAL, f"socket path is too long for a Unix socket: {path}")
    d = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(d):
        os.makedirs(d, mode=0o755, exist_ok=True)
        os.chmod(d, 0o755)  # the umask must not hide the socket from guests
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise AnnotError(_errno.EEXIST, f"{path} exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except ConnectionRefusedError:
        os.unlink(path)  # stale: nobody listens
        return
    except FileNotFoundError:
        return
    finally:
        probe.close()
    raise AnnotError(_errno.EADDRINUSE, f"another service is already listening on {path}")
