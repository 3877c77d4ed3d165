"""The wire protocol of docs/protocol.md: framing, message encode/decode, socket path.

A message on the Unix stream socket is a 4-byte big-endian length followed by
that many bytes of one UTF-8 JSON object (names after Flux RFC 3/6):

    request:  {"topic": str, "matchtag": int, "payload": {...}}
    response: {"matchtag": int, "errnum": int, "errstr": str?, "payload": {...}?}

Choices made where the spec is silent:

- The message size limit (`limits.message_bytes`, default 1 MiB) is decided
  from the length header alone: the body of an oversized frame is never
  read. The reply is EMSGSIZE with **matchtag 0** (the matchtag sits in the
  unread body) and the server closes the connection after it.
- A request frame is decoded by the C core (`core.FrameScanner`) with the
  caller's limits applied while it is read. An error reply carries the
  request's matchtag whenever the frame's `matchtag` member came before the
  fault; only when it could not be read (missing, mistyped, or after the
  fault) is the reply's matchtag 0, so clients number their requests from
  1 and treat a matchtag-0 error as a connection-level error.
- Grammar faults and anything wrong outside the payload (`topic`,
  `matchtag`, `payload` missing or mistyped) are EPROTO; a limit (depth,
  key bytes, keys per object), invalid UTF-8 or a number out of range
  inside the payload is EINVAL naming the field and the limit; bad fields
  inside a payload are EINVAL naming the field.
- Replies are decoded by clients only after their nesting is checked
  without recursion (`REPLY_MAX_DEPTH`); a reply of the wrong shape is
  EPROTO, never a crash.
- JSON constants `NaN`/`Infinity` are rejected (they are not JSON).
- A streaming response's payload (an event batch, already encoded once in C
  and shared by every subscriber) is spliced into the response as bytes,
  never decoded and re-encoded (`response_raw`).
"""

import json
import os
import struct

from .errors import EINVAL, EMSGSIZE, EPROTO, AnnotError

HEADER = struct.Struct(">I")
HEADER_SIZE = HEADER.size
DEFAULT_MESSAGE_BYTES = 1 << 20

_pack = HEADER.pack
_unpack_from = HEADER.unpack_from


def _reject_constant(name):
    raise ValueError(f"{name} is not valid JSON")


# One decoder for every message: json.loads(..., **kw) would build a new
# decoder per call.
_DECODER = json.JSONDecoder(parse_constant=_reject_constant)
_decode_json = _DECODER.decode


def decode_json(data):
    """Decode JSON bytes the C core has already bounded (server payloads)."""
    return _decode_json(data.decode("utf-8"))

_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)
_encode_json = _ENCODER.encode
_ASCII_ENCODER = json.JSONEncoder(separators=(",", ":"), allow_nan=False)


class ProtocolError(AnnotError):
    """A message that cannot be served: carries the matchtag to reply with."""

    def __init__(self, errnum, message, matchtag=0):
        super().__init__(errnum, message)
        self.matchtag = matchtag


def dumps(obj):
    """Compact JSON bytes of `obj` (UTF-8; lone surrogates escaped, not lost)."""
    try:
        return _encode_json(obj).encode("utf-8")
    except UnicodeEncodeError:
        return _ASCII_ENCODER.encode(obj).encode("ascii")
    except RecursionError:
        raise AnnotError(EINVAL, "the request is nested too deeply to encode") from None


def frame(body):
    """Prefix `body` (bytes) with its length."""
    return _pack(len(body)) + body


# --- requests ---------------------------------------------------------------


def request(topic, matchtag, payload):
    """A whole request frame."""
    body = b'{"topic":%s,"matchtag":%d,"payload":%s}' % (
        dumps(topic),
        matchtag,
        dumps(payload),
    )
    return _pack(len(body)) + body


def parse_request(body, limits=None):
    """Decode one request body → (topic, matchtag, payload dict).

    The body is decoded by the C core (`core.FrameScanner`) with `limits`
    (a `core.Limits`; default: the owner's depth, 64, and no other limit):
    no recursive decoder runs over it before its nesting is bounded. Raises ProtocolError naming what is
    wrong, with the matchtag to reply with (0 unless the frame's matchtag
    came before the fault): EPROTO for a malformed message, EINVAL for a
    limit, invalid UTF-8 or a bad value inside the payload.
    """
    from . import core

    sc = _SCANNERS.get(limits)
    if sc is None:
        lim = limits or core.Limits(
            depth=64, key_bytes=0xFFFFFFFF, object_keys=0xFFFFFFFF, strict_keys=False
        )
        sc = _SCANNERS[limits] = core.FrameScanner(_TOPICS, lim, 0xFFFFFFFF, cap=1)
    data = _pack(len(body)) + bytes(body)
    recs, _used, _keys, err = sc.scan(data)
    st, mt = recs[0], recs[1]
    if st >> 32:
        raise ProtocolError(st >> 32, err, mt if st & core.F_MATCHTAG else 0)
    toff, tlen = recs[9], recs[10]
    topic = decode_json(data[toff - 1 : toff + tlen + 1])
    poff, plen = recs[7], recs[8]
    return topic, mt, decode_json(data[poff : poff + plen])


_SCANNERS = {}
_TOPICS = ("job-manager.annotate",)


def _short(exc):
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 200 else text[:200] + "..."


# --- responses --------------------------------------------------------------


def response(matchtag, payload=None):
    """A success response frame; `payload` a dict (None: `{}`)."""
    if not payload:
        body = b'{"matchtag":%d,"errnum":0,"payload":{}}' % matchtag
    else:
        body = b'{"matchtag":%d,"errnum":0,"payload":%s}' % (matchtag, dumps(payload))
    return _pack(len(body)) + body


def response_raw(matchtag, payload_bytes):
    """A success response whose payload is already-encoded JSON bytes."""
    body = b'{"matchtag":%d,"errnum":0,"payload":%s}' % (matchtag, payload_bytes)
    return _pack(len(body)) + body


def response_error(matchtag, errnum, errstr=None):
    """An error response frame."""
    if errstr:
        body = b'{"matchtag":%d,"errnum":%d,"errstr":%s}' % (
            matchtag,
            errnum,
            _ASCII_ENCODER.encode(str(errstr)).encode("ascii"),
        )
    else:
        body = b'{"matchtag":%d,"errnum":%d}' % (matchtag, errnum)
    return _pack(len(body)) + body


#: deepest reply a client decodes (annotations at the owner's depth limit,
#: 64 by default, plus the few levels of a reply around them)
REPLY_MAX_DEPTH = 512


def parse_response(body):
    """Decode one response body → (matchtag, errnum, errstr, payload).

    A reply from a broken or hostile service raises ProtocolError (EPROTO),
    never anything else: its nesting is checked without recursion before
    `json` decodes it, and every member must have its type.
    """
    from . import core

    try:
        core.check_nesting(body, REPLY_MAX_DEPTH)
        msg = _decode_json(body.decode("utf-8"))
    except (AnnotError, ValueError, RecursionError) as e:
        raise ProtocolError(EPROTO, f"malformed response from the service: {_short(e)}")
    if type(msg) is not dict:
        raise ProtocolError(EPROTO, "malformed response from the service (not an object)")
    mt = msg.get("matchtag")
    errnum = msg.get("errnum", 0)
    errstr = msg.get("errstr")
    payload = msg.get("payload")
    if type(mt) is not int or mt < 0:
        raise ProtocolError(EPROTO, "malformed response from the service (matchtag)")
    if type(errnum) is not int or not 0 <= errnum < 4096:
        raise ProtocolError(EPROTO, "malformed response from the service (errnum)")
    if errstr is not None and type(errstr) is not str:
        raise ProtocolError(EPROTO, "malformed response from the service (errstr)")
    if payload is not None and type(payload) is not dict:
        raise ProtocolError(EPROTO, "malformed response from the service (payload)")
    return mt, errnum, errstr, payload


def oversize_error(length, limit, matchtag=0):
    """The EMSGSIZE response for a frame announced as `length` bytes (matchtag
    0 on the socket: it sits in the unread body; the broker knows it)."""
    return response_error(
        matchtag, EMSGSIZE, f"message of {length} bytes exceeds the limit of {limit} bytes"
    )


# --- framing ----------------------------------------------------------------


class FrameReader:
    """Split a byte stream into frame bodies (used by the clients).

    `feed(data)` returns the list of complete bodies. A length above
    `limit` raises ProtocolError(EMSGSIZE) before any body byte is kept.
    """

    __slots__ = ("buf", "limit")

    def __init__(self, limit=None):
        self.buf = bytearray()
        self.limit = limit

    def feed(self, data):
        buf = self.buf
        buf += data
        out = []
        off = 0
        n = len(buf)
        limit = self.limit
        while n - off >= HEADER_SIZE:
            (length,) = _unpack_from(buf, off)
            if limit is not None and length > limit:
                raise ProtocolError(
                    EMSGSIZE, f"message of {length} bytes exceeds the limit of {limit}"
                )
            end = off + HEADER_SIZE + length
            if end > n:
                break
            out.append(bytes(buf[off + HEADER_SIZE : end]))
            off = end
        if off:
            del buf[:off]
        return out


# --- socket path ------------------------------------------------------------


def default_socket_path(environ=None):
    """docs/protocol.md: $FLUX_ANNOT_SOCKET, else $XDG_RUNTIME_DIR/flux-annot/socket,
    else /tmp/flux-annot-$UID/socket."""
    env = os.environ if environ is None else environ
    path = env.get("FLUX_ANNOT_SOCKET")
    if path:
        return path
    runtime = env.get("XDG_RUNTIME_DIR")
    if runtime:
        return os.path.join(runtime, "flux-annot", "socket")
    return f"/tmp/flux-annot-{os.getuid()}/socket"
