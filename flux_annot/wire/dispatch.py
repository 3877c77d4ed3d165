"""The transport-independent dispatch of docs/protocol.md: decoded request
frames -> topic -> checks -> AnnotationService -> reply frames.

Every transport (the Unix socket, server.py / unix_server.py; the Flux
broker, broker_server.py) hands `Dispatch.serve` the bytes of one or more
request frames (4-byte length + `{"topic","matchtag","payload"}`) already
decoded by `FrameScanner` with the caller's limits (`scanner_for`), and a
*peer*: the caller, whose credential the transport alone established
(SO_PEERCRED; Flux's userid/rolemask). The dispatch writes reply frames
(`{"matchtag","errnum","errstr"?,"payload"?}`, the socket's own bytes) into
the peer's output and the transport moves them: as they are on the socket,
unpacked into Flux responses on the broker. docs/DESIGN.md "The dispatch
and its transports" lists what a peer is.

What lives here and nowhere else: the topics' handlers and the payload
field checks (EINVAL naming the field), the hot annotate / memo / alloc
paths (values as bytes of the frame straight to the service's text paths),
deferral of non-volatile replies until the batch holding their eventlog
entry has committed (`defer`, one `_Deferred` group per batch, commits on
the hub's writer thread), the batch timer, and event streams (`h_events`,
`drain`, `end_stream`), which end with ENODATA at shutdown.
"""

import asyncio
import functools
import json
import logging
import os
from array import array

from flux_annot.wire import protocol
from flux_annot.core import (
    F_HOT,
    F_MATCHTAG,
    F_MEMO,
    F_TOOBIG,
    F_TOPIC_ESC,
    F_TYPE,
    F_TYPE_SHIFT,
    F_VOLATILE,
    FRAME_WORDS,
    FrameScanner,
    Limits,
    ok_replies,
)
from flux_annot.service.events import Pieces
from flux_annot.errors import (
    E2BIG,
    EMSGSIZE,
    EINVAL,
    ENODATA,
    ENOSYS,
    EPERM,
    EPROTO,
    EAGAIN,
    AnnotError,
)
from flux_annot.wire.protocol import (
    HEADER_SIZE,
    oversize_error,
    response,
    response_error,
    response_parts,
    response_raw,
)

log = logging.getLogger("flux_annot.server")

_pack_header = protocol.HEADER.pack

#: collected replies are written early once they exceed this
FLUSH_BYTES = 256 << 10
#: a stream is written at most every this many seconds per subscriber the
#: service has (at most STREAM_GAP_MAX): 1 ms with 10, 20 ms with 200; the
#: batches published meanwhile go out together (after_io)
STREAM_GAP_PER_SUBSCRIBER = 100e-6
STREAM_GAP_MAX = 0.05
#: at most this much of a peer's input is decoded per call (the first
#: frame whole, whatever its size), and at most this many frames
SCAN_BYTES = 256 << 10
SCAN_BYTES_GUEST = 16 << 10
SCAN_FRAMES = 512
SCAN_FRAMES_GUEST = 4

#: the `topic` label of requests whose topic is not one served here
UNKNOWN_TOPIC = "unknown"

_MISSING = object()
_NO_KEYS = {}  # a memo's namespaces are the service's business ("user")

# Topics the frame decoder knows by index (records carry index + 1).
_TOPICS = (
    "job-manager.annotate",
    "job-manager.memo",
    "job-manager.submit",
    "job-manager.state",
    "job-manager.alloc-response",
    "job-manager.getattr",
    "job-manager.list",
    "job-manager.events",
    "job-manager.stats",
)
_WORDS = FRAME_WORDS
# Status words of the hot records (fa.h): the whole word compared at once.
_HOT = F_MATCHTAG | F_HOT
_HOT_ANNOTATE = _HOT | (_TOPICS.index("job-manager.annotate") + 1) << 16
_HOT_ANNOTATE_V = _HOT_ANNOTATE | F_VOLATILE
_HOT_MEMO = _HOT | F_MEMO | (_TOPICS.index("job-manager.memo") + 1) << 16
_HOT_MEMO_V = _HOT_MEMO | F_VOLATILE
_HOT_ALLOC_ANNOTATE = (  # RFC 27 type 1 (ANNOTATE)
    _HOT | F_TYPE | 1 << F_TYPE_SHIFT | (_TOPICS.index("job-manager.alloc-response") + 1) << 16
)
# the service's counters of the frames the hot paths hand it (topic_counts)
_HOT_COUNTERS = (
    ("job-manager.annotate", "_n_annotate_text"),
    ("job-manager.memo", "_n_memo_text"),
    ("job-manager.alloc-response", "_n_alloc_text"),
)
_U64 = 1 << 64
_U32 = 1 << 32
_I63 = 1 << 63


# --- payload field checks (EINVAL naming the field) ---------------------------


def _bad(field, what):
    return AnnotError(EINVAL, f"payload field '{field}' {what}")


def _jobid(p, field="id"):
    v = p.get(field, _MISSING)
    if type(v) is int and 0 <= v < _U64:
        return v
    if v is _MISSING:
        raise _bad(field, "is missing")
    if type(v) is int:
        raise _bad(field, "is out of range for a job id (unsigned 64-bit)")
    raise _bad(field, "must be a job id (an integer)")


def _object(p, field):
    v = p.get(field, _MISSING)
    if type(v) is dict:
        return v
    if v is _MISSING:
        raise _bad(field, "is missing")
    raise _bad(field, "must be a JSON object")


def _opt_bool(p, field):
    v = p.get(field)
    if v is None or v is False:
        return False
    if v is True:
        return True
    raise _bad(field, "must be true or false")


def _opt_uint(p, field, bound):
    v = p.get(field)
    if v is None:
        return None
    if type(v) is int and 0 <= v < bound:
        return v
    raise _bad(field, "must be a non-negative integer")


def _opt_str(p, field):
    v = p.get(field)
    if v is None or type(v) is str:
        return v
    raise _bad(field, "must be a string")


def _opt_str_list(p, field):
    v = p.get(field)
    if v is None:
        return None
    if type(v) is str:
        return [v]
    if type(v) is list and all(type(x) is str for x in v):
        return v
    raise _bad(field, "must be a string or a list of strings")


def _config_value(config, section, key, default):
    """Read config[section][key] from a Config object or a dict."""
    if config is None:
        return default
    sec = config.get(section) if isinstance(config, dict) else getattr(config, section, None)
    if sec is None:
        return default
    val = sec.get(key, default) if isinstance(sec, dict) else getattr(sec, key, default)
    return default if val is None else val


class _Deferred(list):
    """Replies waiting on the commit of one batch, in order: `(conn, reply
    frame)`, or `(conn, array of matchtags)` for a run of one connection's
    empty success replies (`Server.defer_ok`), encoded in one C call
    (`core.ok_replies`) when released."""

    __slots__ = ("seq", "done")

    def __init__(self, seq):
        super().__init__()
        self.seq = seq  # the hub's open batch when the group started
        self.done = False

    def release(self):
        """Committed: every reply goes out."""
        self.done = True
        for conn, reply in self:
            if type(reply) is bytes:
                conn.push_deferred(reply)
            else:
                conn.push_deferred(ok_replies(reply), len(reply))

    def fail(self, err):
        """Not committed in time (or lost): each request gets the error,
        under its matchtag (read back from its reply)."""
        self.done = True
        for conn, reply in self:
            if type(reply) is bytes:
                mts = (json.loads(bytes(reply[HEADER_SIZE:]))["matchtag"],)
            else:
                mts = reply
            for mt in mts:
                conn.push_deferred(response_error(mt, err.errno, err.message))


class _Stream:
    """One `job-manager.events` subscription on a connection."""

    __slots__ = ("conn", "matchtag", "sub", "ended", "snap_start", "snap_end", "next_write")

    def __init__(self, conn, matchtag):
        self.conn = conn
        self.matchtag = matchtag
        self.sub = None
        self.ended = False
        # where its snapshot went in the connection's output (bytes pushed
        # before and after it: unix_server.Connection.held_for)
        self.snap_start = self.snap_end = 0
        self.next_write = 0.0  # loop time before which it is not drained again (after_io)


class Dispatch:
    """The topics of an AnnotationService, for peers of any transport
    (module doc). A transport registers itself (`add_transport`) and its
    live peers (`conns`); `start`/`stop` run the batch writer and the
    graceful end of every peer's streams."""

    # Hot annotate/memo/alloc frames go straight to the service's text paths
    # (`serve`); a subclass whose writes take another way (the Flux mirror
    # sends memos to Flux) sets False and gets them through its handlers.
    hot_writes = True

    def __init__(self, service):
        self.service = service
        self.hub = service.hub
        self.owner_uid = getattr(service, "owner_uid", os.getuid())
        cfg = getattr(service, "config", None)
        self.window = float(_config_value(cfg, "batch", "window", 0.01))
        self.message_bytes = int(
            _config_value(cfg, "limits", "message_bytes", protocol.DEFAULT_MESSAGE_BYTES)
        )
        self.guest_rate = float(_config_value(cfg, "limits", "guest_rate", 200))
        self.transports = []
        self.conns = set()  # live peers of every transport
        self.dirty = set()  # peers with replies pushed from outside serve()
        self.ready = set()  # streams the service has notified
        self.held = set()  # notified streams waiting for their next_write (after_io)
        self.stream_timer = None
        self.timer = None
        self.loop = None
        self.stopping = False
        self.nconn_total = 0
        self.nrequests = 0
        self.nerrors = 0
        # requests by topic, but for the hot frames, which the service's
        # text paths count (topic_counts); UNKNOWN_TOPIC: any topic not
        # served here, and frames refused before their topic was read
        self._topic_n = dict.fromkeys(_TOPICS + (UNKNOWN_TOPIC,), 0)
        self._after_commit = self.hub.after_commit
        self._hub_open = self.hub.open
        self._open_seq = self.hub.open_seq
        self._close_waits = self.hub.close_waits
        self._group = None  # the _Deferred replies of the open batch
        from flux_annot.service.policy import Cred

        self._Cred = Cred
        self._list_takes_max = _accepts(service.list, "max")
        self._key_trees = {}  # namespace lists of hot annotates -> dict (serve)
        self._reject = getattr(service, "_reject", None)
        self._guest_rate = getattr(service, "_guest_rate", None)
        # the end of an EAGAIN reply for the rate, after its matchtag (serve)
        rate_message = getattr(service, "_rate_message", None) or (
            "guest request rate exceeded: try again later"
        )
        head = HEADER_SIZE + len(b'{"matchtag":0')
        self._eagain_tail = response_error(0, EAGAIN, rate_message)[head:]
        self._alloc_text = getattr(service, "_alloc_annotate_text", None)
        # Frames are decoded in C with the limits of the caller's class.
        lim = getattr(service, "owner_limits", None) or Limits()
        glim = getattr(service, "guest_limits", None) or Limits(depth=8)
        self.guest_payload_bytes = int(_config_value(cfg, "limits", "guest_payload_bytes", 4096))
        self.scan_owner = FrameScanner(_TOPICS, lim, self.message_bytes, cap=SCAN_FRAMES)
        self.scan_guest = FrameScanner(
            _TOPICS,
            glim,
            self.message_bytes,
            self.guest_payload_bytes,
            max(1, self.guest_payload_bytes - len(b'{"user":}')),
            cap=SCAN_FRAMES_GUEST,
        )
        self.handlers = {
            "job-manager.submit": self.h_submit,
            "job-manager.state": self.h_state,
            "job-manager.alloc-response": self.h_alloc_response,
            "job-manager.annotate": self.h_annotate,
            "job-manager.memo": self.h_memo,
            "job-manager.getattr": self.h_getattr,
            "job-manager.list": self.h_list,
            "job-manager.events": self.h_events,
            "job-manager.stats": self.h_stats,
            "job-manager.accuracy": self.h_accuracy,
        }

    def make_cred(self, uid, owner):
        return self._Cred(uid, owner=owner)

    def topic_counts(self):
        """{topic: requests received}, every request counted once whatever
        its answer (refusals included): frames the hot paths gave the
        service are counted there (`_n_*_text`), every other one here, on
        the path that answered it. Unknown topics count as UNKNOWN_TOPIC
        (a client must not create series at will)."""
        out = dict(self._topic_n)
        svc = self.service
        for topic, attr in _HOT_COUNTERS:
            out[topic] += getattr(svc, attr, 0)
        for t in self.transports:
            # a transport whose wire has other topics (the broker's annot.M)
            # counts its requests itself and says which ones it handed on
            for topic, n in getattr(t, "handed", {}).items():
                out[topic] -= n
            for topic, n in getattr(t, "wire_counts", {}).items():
                out[topic] = out.get(topic, 0) + n
        return out

    def _count_refused(self, st):
        """Count a frame refused before its handler: by the topic the
        decoder found, else as UNKNOWN_TOPIC."""
        idx = (st >> 16) & 0xFFFF
        self._topic_n[_TOPICS[idx - 1] if idx else UNKNOWN_TOPIC] += 1

    def scanner_for(self, owner):
        """The frame decoder with the limits of the caller's class, and how
        many bytes of its input to decode per call (guests are served at
        most their rate: few)."""
        if owner:
            return self.scan_owner, SCAN_BYTES
        return self.scan_guest, SCAN_BYTES_GUEST

    def add_transport(self, transport):
        """`transport.stop_accepting()` and `await transport.close()` are
        called by `stop` (accept nothing new; end the peers)."""
        self.transports.append(transport)

    # life cycle

    def start_writer(self):
        """Commits run on the hub's writer thread; committed batches come
        back to this loop, which then writes out what they released."""
        if self.loop is None:
            self.loop = asyncio.get_running_loop()
        start_writer = getattr(self.hub, "start_writer", None)
        if start_writer is not None:
            start_writer(self.loop, after=self.after_io)

    async def stop(self):
        """Graceful shutdown: accept nothing new, commit the open batch, send
        the deferred replies and the queued batches, end every stream with
        ENODATA, then let each transport close its peers; idempotent."""
        if self.stopping:
            return
        self.stopping = True
        for t in self.transports:
            t.stop_accepting()
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.stream_timer is not None:
            self.stream_timer.cancel()
            self.stream_timer = None
        self.ready |= {st for st in self.held if not st.ended}
        self.held.clear()
        try:
            self.service.flush()
        except Exception:
            log.exception("committing the last batch failed")
        stop_writer = getattr(self.hub, "stop_writer", None)
        if stop_writer is not None:
            try:
                stop_writer()  # every batch in flight committed and published
            except Exception:
                log.exception("committing the last batches failed")
        self.after_io()
        for conn in list(self.conns):
            for st in list(conn.streams.values()):
                self.drain(st, force=True)
                if not st.ended:
                    self.end_stream(st, ENODATA, "the service is shutting down")
            conn.closing = True
            conn.flush()
        for t in self.transports:
            await t.close()

    def after_io(self):
        """After any service work: arm the batch timer, drain notified
        streams, write replies pushed to other connections."""
        if (
            self.timer is None
            and not self.stopping
            and self._hub_open()
            and not self._close_waits()
        ):
            if self.window > 0:
                self.timer = self.loop.call_later(self.window, self.on_timer)
            else:
                self.timer = self.loop.call_soon(self.on_timer)
        if self.ready:
            ready = self.ready
            self.ready = set()
            # Many streams: each is written at most every `gap` s, the
            # batches published meanwhile together (one write, one wake-up
            # of its reader): what delivering costs stays bounded however
            # many subscribe (docs/events.md "Fan-out"). Few: at once.
            gap = min(STREAM_GAP_MAX, STREAM_GAP_PER_SUBSCRIBER * self.hub.subscribers())
            now = self.loop.time() if self.loop is not None else 0.0
            for st in ready:
                if now < st.next_write and not self.stopping:
                    self.held.add(st)
                    continue
                st.next_write = now + gap
                try:
                    self.drain(st)
                except Exception:  # never let one stream break the loop
                    log.exception("draining a subscription failed")
                    self.end_stream(st, EPROTO, "internal error in the event stream")
            if self.held and self.stream_timer is None:
                first = min(st.next_write for st in self.held)
                self.stream_timer = self.loop.call_at(first, self._release_held)
        if self.dirty:
            dirty = self.dirty
            self.dirty = set()
            for conn in dirty:
                conn.flush()

    def _release_held(self):
        """Timer: the held streams whose time has come are drained."""
        self.stream_timer = None
        now = self.loop.time()
        due = {st for st in self.held if st.next_write <= now or st.ended}
        self.held -= due
        self.ready |= {st for st in due if not st.ended}
        self.after_io()
        if self.held and self.stream_timer is None:
            first = min(st.next_write for st in self.held)
            self.stream_timer = self.loop.call_at(first, self._release_held)

    def on_timer(self):
        self.timer = None
        try:
            self.service.flush()
        except Exception:
            log.exception("closing the batch failed")
        self.after_io()

    def defer(self, conn, reply):
        """Send `reply` once the open batch has committed; if the commit is
        not done within `[store] commit_timeout`, an error instead (ETIMEDOUT;
        the store's errno if the service stops before it is written).

        The replies waiting on one batch form one `_Deferred` group with
        one pair of hub callbacks (not a pair per request): a new group
        starts when the hub has closed a batch since (`hub.open_seq()`
        changed) or the last group was already released.
        """
        conn.ndeferred += 1
        group = self._group
        if group is not None and group.seq == self._open_seq() and not group.done:
            group.append((conn, reply))
            return
        group = _Deferred(self._open_seq())
        group.append((conn, reply))  # first: after_commit may release it at once
        self._after_commit(group.release, group.fail)
        # Share it only while it is tied to the open batch (an empty batch's
        # callbacks go to an earlier batch's commit).
        self._group = group if self._hub_open() else None

    def defer_ok(self, conn, mt):
        """`defer(conn, response(mt))`, the reply kept as its matchtag: one
        connection's run of them in one group is one array, encoded at once
        on release."""
        conn.ndeferred += 1
        group = self._group
        if group is not None and group.seq == self._open_seq() and not group.done:
            last_conn, last = group[-1]
            if last_conn is conn and type(last) is not bytes:
                last.append(mt)
            else:
                group.append((conn, array("Q", (mt,))))
            return
        group = _Deferred(self._open_seq())
        group.append((conn, array("Q", (mt,))))  # first: after_commit may release it at once
        self._after_commit(group.release, group.fail)
        self._group = group if self._hub_open() else None

    # streams

    def notify(self, st):
        if not st.ended:
            self.ready.add(st)

    def drain(self, st, force=False):
        """Move queued batches of a stream into its connection's output,
        while the transport is below its high-water mark (or `force`)."""
        conn = st.conn
        sub = st.sub
        if st.ended or sub is None or conn.transport is None:
            return
        pop = sub.pop_payload
        mt = st.matchtag
        # a transport that writes the pieces as they are (no join) and
        # counts what it holds for the subscriber's bound
        push_stream = getattr(conn, "push_stream", None)
        while force or not conn.paused:
            snapshot = sub.head_is_snapshot()
            try:
                payload = pop()
            except AnnotError as e:  # dropped (EOVERFLOW): the stream ends
                self.end_stream(st, e.errno, e.message)
                return
            if payload is None:
                break
            if push_stream is not None:
                push_stream(st, payload, snapshot)
            elif type(payload) is Pieces:
                conn.push(response_parts(mt, payload.parts))
            else:
                conn.push(response_raw(mt, payload))
            if conn.outn > FLUSH_BYTES and not force:
                conn.flush()
        if sub.closed and not st.ended:
            err = sub.error
            if err is not None:
                self.end_stream(st, err.errno, err.message)
            else:
                self.end_stream(st, ENODATA, "the subscription was closed")

    def end_stream(self, st, errnum, errstr):
        st.ended = True
        self.ready.discard(st)
        self.held.discard(st)
        st.conn.streams.pop(st.matchtag, None)
        if st.sub is not None and not st.sub.closed:
            st.sub.close()
        st.conn.push(response_error(st.matchtag, errnum, errstr))

    # dispatch

    def serve(self, conn, data, recs, keys, err):
        """Serve the decoded frames of `data` (records of
        `FrameScanner.scan`); returns the bytes of the frames served.

        The common request (annotate or memo whose payload is exactly id,
        the value and volatile) goes straight to the service with its value
        as bytes of the frame and its namespaces from the decoder; success
        replies to volatile ones are collected and encoded in one C call
        (`core.ok_replies`), kept in order with any other reply.
        """
        out = conn.out
        oks = []
        ok_replies = conn.scanner.ok_replies  # oks never exceed the records of one scan
        done = 0
        service = self.service
        cred = conn.cred
        text = service._annotate_text
        alloc_text = self._alloc_text
        trees = self._key_trees
        last_koff = last_klen = -1  # the namespaces of the last hot annotate (the decoder
        tree = None  # gives a repeated list the same offset)
        nrec = len(recs) // _WORDS
        self.nrequests += nrec  # less the frames left unserved (below)
        served = 0
        nohot = not self.hot_writes
        it = iter(recs)
        records = zip(it, it, it, it, it, it, it, it, it, it, it, it)
        for st, mt, jobid, voff, vlen, koff, klen, poff, plen, toff, tlen, end in records:
            reply = None
            if nohot:
                st &= ~F_HOT  # served by the topic's handler (serve_other)
            try:
                if st == _HOT_ANNOTATE_V:
                    if koff != last_koff or klen != last_klen:  # else: same namespaces
                        kb = keys[koff : koff + klen]
                        tree = trees.get(kb) or self._key_tree(kb)
                        last_koff, last_klen = koff, klen
                    text(cred, jobid, data[voff : voff + vlen], tree, True, False)
                    oks.append(mt)
                elif st == _HOT_ANNOTATE:
                    if koff != last_koff or klen != last_klen:
                        kb = keys[koff : koff + klen]
                        tree = trees.get(kb) or self._key_tree(kb)
                        last_koff, last_klen = koff, klen
                    text(cred, jobid, data[voff : voff + vlen], tree, False, False)
                    self.defer_ok(conn, mt)
                elif st == _HOT_MEMO_V:
                    text(cred, jobid, data[voff : voff + vlen], _NO_KEYS, True, True)
                    oks.append(mt)
                elif st == _HOT_MEMO:
                    text(cred, jobid, data[voff : voff + vlen], _NO_KEYS, False, True)
                    self.defer_ok(conn, mt)
                elif st == _HOT_ALLOC_ANNOTATE and conn.owner and alloc_text is not None:
                    # the scheduler's note (RFC 27 ANNOTATE): volatile, replied at once
                    if koff != last_koff or klen != last_klen:
                        kb = keys[koff : koff + klen]
                        tree = trees.get(kb) or self._key_tree(kb)
                        last_koff, last_klen = koff, klen
                    res = alloc_text(jobid, data[voff : voff + vlen], tree)
                    if res is None:
                        oks.append(mt)
                    else:
                        reply = response(mt, res)
                elif st >> 32:
                    self._count_refused(st)
                    if st >> 32 == EMSGSIZE:
                        self.nerrors += 1
                        if oks:
                            out.append(ok_replies(oks))
                        out.append(oversize_error(jobid, self.message_bytes))
                        conn.refuse_oversize()  # the socket: flush, then close
                        return done
                    self.nerrors += 1
                    if not conn.owner and self._guest_rate is not None:
                        # a guest's refused frame spends a token like any of
                        # its requests: over its rate it is EAGAIN, throttled
                        self._guest_rate(cred)
                    if st >> 32 == EINVAL and self._reject is not None:
                        self._reject("invalid", None)  # counted as the service counts it
                    reply = response_error(mt if st & F_MATCHTAG else 0, st >> 32, err)
                else:
                    reply = self.serve_other(conn, data, st, mt, jobid, voff, vlen, poff, plen,
                                             toff, tlen)
            except AnnotError as e:
                if e.errno == EAGAIN and not conn.owner:
                    conn.throttle()
                reply = response_error(mt, e.errno, e.message)
            except Exception as e:
                log.exception("unexpected error serving a request (uid %d)", conn.uid)
                self.nerrors += 1
                reply = response_error(
                    mt, EPROTO, f"internal error: {type(e).__name__}: {e}"[:500]
                )
            done = end
            served += 1
            if reply is not None:
                if oks:
                    out.append(ok_replies(oks))
                    oks = []
                out.append(reply)
                conn.outn += len(reply)
                if conn.outn > FLUSH_BYTES:
                    conn.flush()
                    out = conn.out  # flush hands the transport its list and starts a new one
                    if conn.paused:
                        break
            if conn.throttled:
                # The frames decoded with the refused one are over the rate
                # too (its bucket is empty): EAGAIN to each, now, in bulk.
                reject, tail = self._reject, self._eagain_tail
                for st, mt, jobid, voff, vlen, koff, klen, poff, plen, toff, tlen, end in records:
                    code = st >> 32
                    if code == EMSGSIZE:
                        break  # served on its turn: the error and the close
                    if code and not st & F_MATCHTAG:
                        mt = 0
                    self._count_refused(st)
                    body = b'{"matchtag":%d' % mt + tail
                    reply = _pack_header(len(body)) + body
                    out.append(reply)
                    conn.outn += len(reply)
                    if reject is not None:
                        reject("rate", None)
                    done = end
                    served += 1
                break
        if oks:
            if len(oks) == 1:  # a round trip: cheaper than the C call
                body = b'{"matchtag":%d,"errnum":0,"payload":{}}' % oks[0]
                okb = _pack_header(len(body)) + body
            else:
                okb = ok_replies(oks)
            out.append(okb)
            conn.outn += len(okb)
        self.nrequests -= nrec - served
        return done

    def _key_tree(self, kb):
        """The namespaces of a hot annotate ("a\0b\0") as the service takes
        them: a dict with those keys (values unused). Cached: a scheduler
        writes the same namespaces again and again."""
        tree = dict.fromkeys(kb[:-1].decode("utf-8").split("\0")) if kb else {}
        if len(self._key_trees) >= 1024:
            self._key_trees.clear()
        self._key_trees[kb] = tree
        return tree

    def serve_other(self, conn, data, st, mt, jobid, voff, vlen, poff, plen, toff, tlen):
        """Any decoded frame but the hot ones: its payload is decoded with
        `json` (bounded: the C decoder has parsed it with this connection's
        limits), then served by its topic's handler."""
        idx = (st >> 16) & 0xFFFF
        if idx:
            topic = _TOPICS[idx - 1]
        else:
            raw = data[toff : toff + tlen]
            topic = protocol.decode_json(b'"' + raw + b'"') if st & F_TOPIC_ESC else raw.decode()
        counts = self._topic_n
        counts[topic if topic in counts else UNKNOWN_TOPIC] += 1
        if st & F_TOOBIG:
            # A guest's value longer than guest_payload_bytes was only
            # delimited, not parsed: the frame is refused by that length
            # alone, as the service refuses it (a rate token spent first).
            if self._guest_rate is not None:
                self._guest_rate(conn.cred)
            exc = AnnotError(
                E2BIG, f"annotation payload exceeds {self.guest_payload_bytes} bytes for guests"
            )
            if self._reject is not None:
                self._reject("payload_size", exc)
            raise exc
        h = self.handlers.get(topic)
        if h is None:
            self.nerrors += 1
            return response_error(mt, ENOSYS, f"unknown topic {topic[:200]!r}")
        payload = protocol.decode_json(data[poff : poff + plen])
        return h(conn, mt, payload)

    def _owner_only(self, conn, topic):
        if not conn.owner:
            raise AnnotError(EPERM, f"{topic} is reserved for the instance owner")

    def h_submit(self, conn, mt, p):
        self._owner_only(conn, "job-manager.submit")
        jobid = _jobid(p)
        userid = p.get("userid", _MISSING)
        if userid is _MISSING:
            raise _bad("userid", "is missing")
        if type(userid) is not int or not 0 <= userid < _U32:
            raise _bad("userid", "must be an unsigned 32-bit integer")
        t_submit = p.get("t_submit")
        if t_submit is not None and type(t_submit) not in (int, float):
            raise _bad("t_submit", "must be a number")
        self.service.submit(jobid, userid, t_submit=t_submit)
        self.defer(conn, response(mt))

    def h_state(self, conn, mt, p):
        self._owner_only(conn, "job-manager.state")
        jobid = _jobid(p)
        state = p.get("state", _MISSING)
        if state is _MISSING:
            raise _bad("state", "is missing")
        if type(state) is not str:
            raise _bad("state", "must be a string")
        note = _opt_str(p, "note")
        self.service.state(jobid, state, note=note)
        self.defer(conn, response(mt))

    def h_alloc_response(self, conn, mt, p):
        self._owner_only(conn, "job-manager.alloc-response")
        _jobid(p)
        result = self.service.alloc_response(p)
        reply = response(mt, result if isinstance(result, dict) else None)
        if p.get("type") == 1:  # ANNOTATE is volatile: reply at once
            return reply
        self.defer(conn, reply)

    def h_annotate(self, conn, mt, p):
        # The hot path (§11 RPC targets): the common well-typed case is
        # checked inline; the helpers only word the errors.
        jobid = p.get("id")
        if type(jobid) is not int or not 0 <= jobid < _U64:
            jobid = _jobid(p)
        ann = p.get("annotations")
        if type(ann) is not dict:
            ann = _object(p, "annotations")
        volatile = p.get("volatile", False)
        if volatile is True or (volatile is not False and _opt_bool(p, "volatile")):
            self.service.annotate(conn.cred, jobid, ann, volatile=True)
            body = b'{"matchtag":%d,"errnum":0,"payload":{}}' % mt
            return _pack_header(len(body)) + body
        self.service.annotate(conn.cred, jobid, ann, volatile=False)
        self.defer(conn, response(mt))

    def h_memo(self, conn, mt, p):
        jobid = _jobid(p)
        memo = _object(p, "memo")
        volatile = _opt_bool(p, "volatile")
        self.service.memo(conn.cred, jobid, memo, volatile=volatile)
        if volatile:
            return response(mt)
        self.defer(conn, response(mt))

    def h_getattr(self, conn, mt, p):
        jobid = _jobid(p)
        return response(mt, self.service.get(conn.cred, jobid))

    def h_list(self, conn, mt, p):
        states = _opt_str_list(p, "states")
        userid = _opt_uint(p, "userid", _U32)
        max_ = _opt_uint(p, "max", _U64)
        if self._list_takes_max:
            jobs = self.service.list(conn.cred, states=states, userid=userid, max=max_)
        else:
            jobs = self.service.list(conn.cred, states=states, userid=userid)
            if max_ is not None and max_ > 0:
                jobs = jobs[:max_]
        if isinstance(jobs, dict):
            return response(mt, jobs)
        if isinstance(jobs, (bytes, bytearray)):
            return response_raw(mt, b'{"jobs":%s}' % jobs)
        return response(mt, {"jobs": list(jobs)})

    def h_events(self, conn, mt, p):
        if mt in conn.streams:
            raise AnnotError(EINVAL, f"matchtag {mt} already names an open stream")
        topics = _opt_str_list(p, "topics")
        userid = _opt_uint(p, "userid", _U32)
        since = _opt_uint(p, "since", _U64)
        snapshot = _opt_bool(p, "snapshot")
        delta = _opt_bool(p, "delta")
        st = _Stream(conn, mt)
        st.sub = self.service.subscribe(
            conn.cred,
            topics=topics,
            userid=userid,
            since=since,
            snapshot=snapshot,
            delta=delta,
            notify=functools.partial(self.notify, st),
        )
        held_for = getattr(conn, "held_for", None)
        if held_for is not None:  # its transport's buffers count against the bound
            st.sub.outside = functools.partial(held_for, st)
        conn.streams[mt] = st
        self.ready.add(st)  # a snapshot or a `since` backlog may be waiting
        return None

    def h_accuracy(self, conn, mt, p):
        """The estimate accuracy report (docs/accuracy.md) as the caller may see it."""
        since = p.get("since")
        if since is not None and type(since) not in (int, float):
            raise _bad("since", "must be a number (seconds since the epoch)")
        by = _opt_str(p, "by")
        report = self.service.accuracy(
            conn.cred,
            since=since,
            queue=_opt_str(p, "queue"),
            by="queue" if by is None else by,
            jobs=_opt_bool(p, "jobs"),
            histogram=_opt_bool(p, "histogram"),
        )
        return response(mt, report)

    def h_stats(self, conn, mt, p):
        stats = dict(self.service.stats())
        stats["server"] = {
            "connections": len(self.conns),
            "connections_total": self.nconn_total,
            "requests": self.nrequests,
            "protocol_errors": self.nerrors,
            "streams": sum(len(c.streams) for c in self.conns),
        }
        for t in self.transports:
            if hasattr(t, "stats"):
                stats["server"][t.name] = t.stats()
        return response(mt, stats)


def _accepts(fn, name):
    import inspect

    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is p.VAR_KEYWORD for p in params.values())

