"""The Flux broker transport (SPEC §15, docs/flux.md): the service `annot`
of the instance `serve --flux` mirrors, served by the same `Dispatch` as
the Unix socket (flux_annot.dispatch).

`BrokerTransport(dispatch, uri)` holds one Flux handle of its own, used
only on the event loop's thread: the handle's poll fd is watched by the
loop (`add_reader`), and each wake-up receives every request waiting
(`flux_recv` with FLUX_O_NONBLOCK) and answers with `flux_respond*`. No
Flux reactor runs on this handle once the service is registered, and no
thread hand-off sits between a request and the dispatch (docs/DESIGN.md
"The broker transport" says why).

A request `annot.M` with payload P becomes the socket frame
`{"topic":"job-manager.M","matchtag":T,"payload":P}` (T a matchtag of
this transport, unique per pending request), decoded by the C frame
decoder with the limits of the caller's class, so a broker request gets
exactly the checks, errors and paths a socket request gets. The
frame's decoded spans are checked to be those of P (a payload cannot end
the object and add members of its own). Replies come back as the
socket's reply frames and go out as Flux responses: success with the
frame's payload bytes, errors with `flux_respond_error` (errno and
sentence). Credentials are the message's userid and rolemask only
(FLUX_ROLE_OWNER: the owner; anything else: a guest with that userid).

A streaming `annot.events` request keeps its message until the stream
ends (an error response: ENODATA, EOVERFLOW, ...). `annot.disconnect`
(sent by the broker when a client goes away) drops every pending request
and stream of that client (RFC 6: first route hop and credential match).
"""

import asyncio
import errno as _errno
import logging
import os
import re
import stat

from flux_annot.wire import protocol
from flux_annot.core import F_MATCHTAG
from flux_annot.wire.dispatch import UNKNOWN_TOPIC
from flux_annot.errors import EPROTO, AnnotError
from flux_annot.wire.protocol import HEADER_SIZE, oversize_error, response_error

log = logging.getLogger("flux_annot.broker")

SERVICE = "annot"
#: requests received per loop wake-up before others get a turn
RECV_BATCH = 256
#: seconds between attempts to reach Flux again
RECONNECT = 1.0

_pack_header = protocol.HEADER.pack
_AT_BYTE = re.compile(rb"at byte (\d+)")
_OK_HEAD = b'{"matchtag":'
_ERRNUM = b',"errnum":'
_PAYLOAD = b',"payload":'
_ERRSTR = b',"errstr":'


def _connector_socket(pollfd):
    """The Unix socket of a `local://` handle, read from the registrations
    of its pollfd (an epoll set: the connector's socket and the handle's
    requeue queue; proc(5), "tfd" lines), or None. `recvfd` reads exactly
    one message per call, so the socket is readable exactly while a message
    waits: level-triggered, it needs no flux_pollevents and does not wake
    for POLLOUT. (The requeue queue only holds what a reactor requeued; none
    runs on this handle once the service is registered.)"""
    try:
        with open(f"/proc/self/fdinfo/{pollfd}") as f:
            tfds = [int(line.split()[1]) for line in f if line.startswith("tfd:")]
    except (OSError, ValueError, IndexError):
        return None
    socks = []
    for fd in tfds:
        try:
            if stat.S_ISSOCK(os.fstat(fd).st_mode):
                socks.append(fd)
        except OSError:
            pass
    return socks[0] if len(socks) == 1 else None


class BrokerPeer:
    """Every caller of one credential (a uid and its role) through the
    broker: the peer of the dispatch (docs/DESIGN.md). Its replies are
    reply frames whose matchtag names the pending request they answer."""

    paused = False  # the broker reads what we send at once (no flow control)
    throttled = False  # a guest over its rate gets EAGAIN per request
    closing = False

    def __init__(self, link, uid, owner):
        self.link = link
        self.transport = link  # not None while the transport serves
        self.uid = uid
        self.owner = owner
        self.pid = 0
        self.cred = link.dispatch.make_cred(uid, owner)
        self.scanner, self.scan_bytes = link.dispatch.scanner_for(owner)
        self.out = []
        self.outn = 0
        self.streams = {}  # matchtag -> dispatch._Stream
        self.ndeferred = 0

    def flush(self):
        out = self.out
        if not out:
            return
        self.out = []
        self.outn = 0
        if self.transport is None:
            return
        respond = self.link.respond_frames
        for chunk in out:
            respond(chunk)

    def push(self, reply):
        if self.transport is None:
            return
        self.out.append(reply)
        self.outn += len(reply)
        self.link.dispatch.dirty.add(self)

    def push_deferred(self, reply, n=1):
        self.ndeferred -= n
        self.push(reply)

    def throttle(self):
        pass  # nothing to pause: each request over the rate is refused (EAGAIN)

    def refuse_oversize(self):
        self.flush()


class BrokerTransport:
    """The service `annot` of one Flux instance (module doc)."""

    name = "broker"  # its entry in stats()["server"]

    def __init__(self, dispatch, uri=None):
        self.dispatch = dispatch
        self.uri = uri
        self.flux = None  # the bindings (flux_source.load_flux)
        self.h = None  # flux.Flux handle while connected and registered
        self.hp = None  # its flux_t *
        self.fd = -1
        self._direct = False  # self.fd is the connector's socket (_connector_socket)
        self.peers = {}  # (uid, owner) -> BrokerPeer
        # matchtag -> (flux_msg_t * (a reference of ours), peer, stream):
        # stream is None, or (sender, the client's matchtag) for an
        # annot.events request (answered until an error response ends it)
        self.pending = {}
        self.by_sender = {}  # sender (the client's route) -> matchtags of its streams
        self.next_mt = 1
        self.stopped = False
        self.registered = False
        self._detached = False  # the connection was lost once (log lines)
        # requests by their topic on the wire (annot.M; unknown ones as
        # UNKNOWN_TOPIC), and how many of them the dispatch counted under
        # job-manager.M: Dispatch.topic_counts shows them under annot.M
        self.wire_counts = {}
        self.handed = {}
        self.nrequests = 0
        self.ndisconnects = 0
        self.nwakeups = 0  # loop wake-ups on the handle's fd
        self._retry = None
        self.ffi = self.lib = None  # Flux's cffi module, once attached
        self._topics = {}  # b"annot.M" -> (frame prefix up to the payload, is a stream)

    # life cycle

    async def start(self):
        """Connect and register `annot` (before serve reports ready).
        Flux not reachable: retried in the background. The name already
        taken (another flux-annot serves the instance): AnnotError."""
        from flux_annot.flux.flux_source import load_flux

        self.flux = load_flux()
        await self._connect()

    async def _connect(self):
        loop = asyncio.get_running_loop()
        try:
            h = await loop.run_in_executor(None, self._open)
        except AnnotError:
            raise
        except OSError as exc:
            log.warning(
                "cannot register the %s service with the Flux instance at %s (%s); retrying",
                SERVICE,
                self.uri,
                exc.strerror or exc,
            )
            self._schedule_retry()
            return
        if self.stopped:
            return
        self._attach(h)

    def _open(self):
        """Connect and register (in a worker thread: connecting may wait)."""
        flux = self.flux
        h = flux.Flux(self.uri) if self.uri else flux.Flux()
        if not self.uri:
            try:
                self.uri = h.attr_get("local-uri")
            except OSError:
                pass
        try:
            h.service_register(SERVICE).get()
        except OSError as exc:
            if exc.errno == _errno.EEXIST:
                raise AnnotError(
                    _errno.EEXIST,
                    f"the Flux instance at {self.uri} already has a service named "
                    f"{SERVICE!r} (another flux-annotate serve --flux?)",
                ) from None
            raise
        return h

    def _attach(self, h):
        from flux.core.inner import ffi, lib

        self.ffi, self.lib = ffi, lib
        self.h = h
        self.hp = h.handle
        match = ffi.new("struct flux_match *")
        match.typemask = 1  # FLUX_MSGTYPE_REQUEST
        match.matchtag = 0  # FLUX_MATCHTAG_NONE
        match.topic_glob = ffi.NULL
        self._match = match[0]
        self._match_keep = match
        self._topic_p = ffi.new("char **")
        self._data_p = ffi.new("void **")
        self._len_p = ffi.new("size_t *")
        self._u32_p = ffi.new("uint32_t *")
        self._cred_p = ffi.new("struct flux_msg_cred *")
        pollfd = lib.flux_pollfd(self.hp)
        sock = _connector_socket(pollfd)
        # the connector's socket itself when it can be found (readable only
        # when a message waits), else the handle's pollfd (which also wakes
        # for POLLOUT, i.e. once more after each response we send)
        self.fd = sock if sock is not None else pollfd
        self._direct = sock is not None
        self.registered = True
        asyncio.get_running_loop().add_reader(self.fd, self.on_readable)
        # One line per event (docs/operations.md): after a loss, the
        # mirror's journal says that Flux is back; this is the same event.
        (log.debug if self._detached else log.info)(
            "serving as the service '%s' of the Flux instance at %s", SERVICE, self.uri)
        self.on_readable()  # anything that came during registration

    def _schedule_retry(self):
        if self.stopped or self._retry is not None:
            return

        def retry():
            self._retry = None
            if not self.stopped:
                asyncio.ensure_future(self._reconnect())

        self._retry = asyncio.get_running_loop().call_later(RECONNECT, retry)

    async def _reconnect(self):
        try:
            await self._connect()
        except AnnotError as exc:  # the name is taken now: keep trying
            log.warning("%s; retrying", exc)
            self._schedule_retry()

    def _detach(self, why):
        """The connection to the broker is gone: its requests and streams
        went with it (their clients get Flux's own error)."""
        if self.h is None:
            return
        # the journal's connection to the same broker logs the loss (mirror.py)
        log.debug("lost the Flux instance at %s (%s); reconnecting", self.uri, why)
        self._detached = True
        try:
            asyncio.get_running_loop().remove_reader(self.fd)
        except (RuntimeError, ValueError):
            pass
        self._forget_all()
        self.h = self.hp = None
        self.registered = False
        self._schedule_retry()

    def _forget_all(self):
        for mt in list(self.pending):
            self._forget(mt)
        self.by_sender.clear()

    def stop_accepting(self):
        self.stopped = True
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        if self.h is not None:
            try:
                asyncio.get_running_loop().remove_reader(self.fd)
            except (RuntimeError, ValueError):
                pass

    async def close(self):
        """After the dispatch ended every stream (ENODATA, flushed)."""
        for peer in self.peers.values():
            peer.flush()
            self.dispatch.conns.discard(peer)
            peer.transport = None
        self._forget_all()
        self.h = self.hp = None  # the handle closes (and `annot` goes) when collected
        self.registered = False

    # requests

    def on_readable(self):
        lib = self.lib
        hp = self.hp
        if hp is None:
            return
        self.nwakeups += 1
        if not self._direct:
            ev = lib.flux_pollevents(hp)
            if ev < 0 or ev & 4:  # FLUX_POLLERR
                self._detach("connection error")
                return
            if not ev & 1:  # FLUX_POLLIN: nothing to read (the fd also wakes for POLLOUT,
                return  # i.e. after each response we send)
        n = 0
        while n < RECV_BATCH and self.hp is not None:
            msg = lib.flux_recv(hp, self._match, 4)  # FLUX_O_NONBLOCK
            if msg == self.ffi.NULL:
                err = self.ffi.errno
                if err not in (_errno.EAGAIN, _errno.EWOULDBLOCK):
                    self._detach(_errno.errorcode.get(err, str(err)))
                    return
                break
            n += 1
            try:
                self.on_request(msg)
            except Exception:  # never let one request stop the service
                log.exception("serving a broker request failed")
        if n == RECV_BATCH:  # more may wait: the fd will not signal them again
            asyncio.get_running_loop().call_soon(self.on_readable)
        self.dispatch.after_io()

    def on_request(self, msg):
        lib, ffi = self.lib, self.ffi
        keep = False  # True: the message is answered later (held until then)
        try:
            # one call for type, topic and payload, one for userid and rolemask
            if lib.flux_request_decode_raw(msg, self._topic_p, self._data_p, self._len_p) < 0:
                return
            if lib.flux_msg_get_cred(msg, self._cred_p) < 0:
                return
            topic = ffi.string(self._topic_p[0])
            cred = self._cred_p
            uid = cred.userid
            owner = bool(cred.rolemask & 1)  # FLUX_ROLE_OWNER
            self._count_wire(topic)
            if topic == b"annot.disconnect":
                self.disconnect(self._sender(msg), uid, owner)
                return
            if topic == b"annot.cancel":
                self.cancel(self._sender(msg), uid, owner)
                return
            keep = self.serve_request(msg, topic, uid, owner)
        finally:
            if not keep:
                lib.flux_msg_decref(msg)

    def _sender(self, msg):
        """The message's first route hop: the client (RFC 6)."""
        route = self.lib.flux_msg_route_first(msg)
        return self.ffi.string(route) if route != self.ffi.NULL else b""

    def serve_request(self, msg, topic, uid, owner):
        """Returns True when `msg` is kept (a pending request)."""
        disp = self.dispatch
        self.nrequests += 1
        n = self._len_p[0]
        if n:
            payload = self.ffi.buffer(self._data_p[0], n)[:]
            if payload[-1] == 0:  # a string payload (Flux keeps its NUL)
                payload = payload[:-1]
        else:
            payload = b"{}"  # no payload: an empty request, as `flux.Flux().rpc(topic)` sends
        meta = self._topics.get(topic)
        if meta is None:
            meta = self._topic_meta(topic)
            if meta is None:
                disp.nrequests += 1
                disp.nerrors += 1
                name = topic.decode("utf-8", "replace")
                self._respond_error(msg, _errno.ENOSYS, f"unknown topic {name[:200]!r}")
                return False
        prefix, jm_topic, stream = meta
        peer = self.peers.get((uid, owner))
        if peer is None:
            peer = self.peers[(uid, owner)] = BrokerPeer(self, uid, owner)
            disp.conns.add(peer)
            disp.nconn_total += 1
        mt = self.next_mt
        self.next_mt = mt + 1 if mt < 0xFFFFFFFF else 1
        if stream:
            # a stream lives until an error ends it or its client goes:
            # remember who that is (disconnect, cancel)
            sender = self._sender(msg)
            self.lib.flux_msg_get_matchtag(msg, self._u32_p)
            self.pending[mt] = (msg, peer, (sender, self._u32_p[0]))
            mts = self.by_sender.get(sender)
            if mts is None:
                mts = self.by_sender[sender] = set()
            mts.add(mt)
        else:
            self.pending[mt] = (msg, peer, None)
        head = prefix % mt
        body_len = len(head) + len(payload) + 1
        if body_len > disp.message_bytes:
            # what the socket answers from the length header alone (§4);
            # there is no connection to close here
            disp.nrequests += 1
            disp.nerrors += 1
            peer.push(oversize_error(body_len, disp.message_bytes, mt))
            peer.flush()
            return True
        head = _pack_header(body_len) + head
        data = head + payload + b"}"
        recs, used, keys, err = peer.scanner.scan(data)
        poff = len(head)
        if len(recs) != 12 or not (recs[0] >> 32 or (recs[7] == poff and recs[8] == len(payload))):
            # the payload closed the object and went on: not one JSON value
            disp.nrequests += 1
            disp.nerrors += 1
            peer.push(response_error(mt, EPROTO, "the payload is not one JSON object"))
            peer.flush()
            return True
        if err is not None and recs[0] >> 32:
            base = poff - HEADER_SIZE  # offsets in sentences: of the payload, not of our frame
            err = _AT_BYTE.sub(lambda m: b"at byte %d" % (int(m.group(1)) - base), err.encode()
                               ).decode()
        recs[1] = mt  # the matchtag is ours whatever the payload holds
        recs[0] |= F_MATCHTAG
        self.handed[jm_topic] = self.handed.get(jm_topic, 0) + 1
        disp.serve(peer, data, recs, keys, err)
        peer.flush()
        return True

    def _count_wire(self, topic):
        """Count a request under its topic: annot.M for the methods served
        (and disconnect, cancel), UNKNOWN_TOPIC for any other."""
        name = topic.decode("utf-8", "replace")
        if name not in self.wire_counts:
            method = name[6:] if name.startswith("annot.") else None
            if method not in ("disconnect", "cancel") and (
                    method is None or "job-manager." + method not in self.dispatch.handlers):
                name = UNKNOWN_TOPIC
        self.wire_counts[name] = self.wire_counts.get(name, 0) + 1

    def _topic_meta(self, topic):
        """annot.M -> (frame prefix with %d for the matchtag, job-manager.M, is it a stream),
        None for a method the dispatch does not have."""
        if not topic.startswith(b"annot."):
            return None
        try:
            method = topic[6:].decode("ascii")
        except UnicodeDecodeError:
            return None
        jm = "job-manager." + method
        if jm not in self.dispatch.handlers or not method.replace("-", "").isalnum():
            return None
        prefix = b'{"topic":"%s","matchtag":%%d,"payload":' % jm.encode()
        self._topics[topic] = meta = (prefix, jm, jm == "job-manager.events")
        return meta

    # responses

    def respond_frames(self, chunk):
        """Send the reply frames in `chunk` (one or more, joined) as Flux
        responses to the requests their matchtags name."""
        if self.hp is None:  # the broker is gone, and its requests with it
            return
        n = len(chunk)
        off = 0
        while off < n:
            (blen,) = protocol.HEADER.unpack_from(chunk, off)
            start = off + HEADER_SIZE
            off = start + blen
            self._respond_frame(chunk[start:off])

    def _respond_frame(self, body):
        # body: {"matchtag":M,"errnum":E[,"payload":P|,"errstr":S]} (protocol.response*)
        i = body.index(_ERRNUM, len(_OK_HEAD))
        mt = int(body[len(_OK_HEAD) : i])
        p = self.pending.get(mt)
        if p is None:
            return  # its client went away (disconnect) or the broker did
        j = i + len(_ERRNUM)
        k = j
        while body[k] in b"0123456789":
            k += 1
        errnum = int(body[j:k])
        msg = p[0]
        if errnum == 0:
            if body.startswith(_PAYLOAD, k):
                payload = body[k + len(_PAYLOAD) : -1]
            else:
                payload = b"{}"
            if self.lib.flux_respond(self.hp, msg, payload) < 0:
                log.warning("flux_respond failed: %s", _errno.errorcode.get(self.ffi.errno))
            if p[2] is None:  # not a stream: answered
                del self.pending[mt]
                self.lib.flux_msg_decref(msg)
            return
        if body.startswith(_ERRSTR, k):
            errstr = protocol.decode_json(body[k + len(_ERRSTR) : -1])
        else:
            errstr = None
        self._respond_error(msg, errnum, errstr)
        self._forget(mt)

    def _respond_error(self, msg, errnum, errstr):
        if self.hp is None:
            return
        s = errstr.encode("utf-8", "replace") if errstr else self.ffi.NULL
        if self.lib.flux_respond_error(self.hp, msg, errnum, s) < 0:
            log.warning("flux_respond_error failed: %s", _errno.errorcode.get(self.ffi.errno))

    def _forget(self, mt):
        p = self.pending.pop(mt, None)
        if p is None:
            return
        msg, peer, stream = p
        if stream is not None:
            sender = stream[0]
            mts = self.by_sender.get(sender)
            if mts is not None:
                mts.discard(mt)
                if not mts:
                    del self.by_sender[sender]
            st = peer.streams.pop(mt, None)
            if st is not None and not st.ended:  # the client is gone: no response
                st.ended = True
                self.dispatch.ready.discard(st)
                if st.sub is not None and not st.sub.closed:
                    st.sub.close()
        if self.lib is not None:
            self.lib.flux_msg_decref(msg)

    def disconnect(self, sender, uid, owner):
        """RFC 6 disconnect: forget every stream of that client (the broker
        sets the route; the credential must match as well). Its other
        requests are answered as usual: the broker drops what has no
        client any more."""
        self.ndisconnects += 1
        mts = self.by_sender.get(sender)
        if not mts:
            return
        for mt in list(mts):
            p = self.pending.get(mt)
            if p is not None and (owner or p[1].uid == uid):
                self._forget(mt)

    def cancel(self, sender, uid, owner):
        """RFC 6 cancel `{"matchtag": N}` (the payload just decoded): end
        that client's stream N with ENODATA (no response to the cancel)."""
        if not self._len_p[0]:
            return
        try:
            raw = self.ffi.buffer(self._data_p[0], self._len_p[0])[:].rstrip(b"\0")
            if len(raw) > 256:
                return
            cmt = protocol.decode_json(raw).get("matchtag")
        except (ValueError, AttributeError, UnicodeDecodeError):
            return
        for mt in list(self.by_sender.get(sender, ())):
            p = self.pending.get(mt)
            if p is None or p[2][1] != cmt or not (owner or p[1].uid == uid):
                continue
            st = p[1].streams.get(mt)
            if st is not None and not st.ended:
                self.dispatch.end_stream(st, _errno.ENODATA, "the stream was canceled")
                p[1].flush()

    def stats(self):
        return {
            "uri": self.uri,
            "registered": self.registered,
            "requests": self.nrequests,
            "pending": len(self.pending),
            "stream_clients": len(self.by_sender),
            "disconnects": self.ndisconnects,
            "wakeups": self.nwakeups,
        }
