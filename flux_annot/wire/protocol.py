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
- Replies are read by the C core first (`core.ReplyScanner`: every value
  parsed, nesting at most `REPLY_MAX_DEPTH`, each member of its type);
  `json` decodes only the spans a caller needs. A reply of the wrong shape
  is EPROTO, never a crash.
- JSON constants `NaN`/`Infinity` are rejected (they are not JSON).
- A streaming response's payload (an event batch, already encoded once in C
  and shared by every subscriber) is spliced into the response as bytes,
  never decoded and re-encoded (`response_raw`).
"""

import json
import os
import struct
from json.encoder import c_make_encoder, encode_basestring, encode_basestring_ascii

from flux_annot import core
from flux_annot.errors import EINVAL, EMSGSIZE, EPROTO, AnnotError, error

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

# json's C encoder made once (JSONEncoder.encode makes one per call):
# compact, no cycle check (a cycle ends in RecursionError, refused as too
# deep), NaN refused. Patches of the clients' hot calls go through it.
_c_encode = c_make_encoder(None, _ENCODER.default, encode_basestring, None, ":", ",",
                           False, False, False)
_c_encode_ascii = c_make_encoder(None, _ENCODER.default, encode_basestring_ascii, None, ":",
                                 ",", False, False, False)


def dumps_patch(obj, what="annotations"):
    """Compact JSON bytes of a patch (a dict, or a list of them: the JSON
    array of them all), as `dumps`; anything that is not JSON is EINVAL."""
    try:
        try:
            return "".join(_c_encode(obj, 0)).encode("utf-8")
        except UnicodeEncodeError:  # lone surrogates: escaped, the service decides
            return "".join(_c_encode_ascii(obj, 0)).encode("ascii")
    except RecursionError:
        raise error(EINVAL, f"{what}: nested too deeply to encode") from None
    except (TypeError, ValueError) as e:
        raise error(EINVAL, f"{what}: not JSON: {e}") from None


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


def response_parts(matchtag, parts):
    """A success response whose payload is the join of `parts` (bytes or
    memoryviews of encoded JSON), built with one copy: a stream's batches
    are large and go to many readers."""
    head = b'{"matchtag":%d,"errnum":0,"payload":' % matchtag
    size = len(head) + 1 + sum(map(len, parts))
    return b"".join((_pack(size), head, *parts, b"}"))


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
    never anything else: the C core reads and validates it first
    (`core.ReplyScanner`: nesting bounded by `REPLY_MAX_DEPTH`, every
    member of its type), then `json` decodes its spans.
    """
    global _REPLY_SCANNER
    if _REPLY_SCANNER is None:
        _REPLY_SCANNER = core.ReplyScanner(REPLY_MAX_DEPTH, cap=1)
    data = _pack(len(body)) + bytes(body)
    recs, _used, _nerr, err = _REPLY_SCANNER.scan(data)
    if err is not None:
        raise ProtocolError(EPROTO, err)
    return reply_tuple(data, recs, 0)


_REPLY_SCANNER = None


def _malformed(what):
    return ProtocolError(EPROTO, f"malformed response from the service: {what}")


def decode_span(data, off, n):
    """The JSON value data[off:off+n] (spans of replies the C core has
    validated); a value `json` still refuses (an integer of more digits
    than Python converts) is EPROTO."""
    try:
        return _scan_once(data[off : off + n].decode("utf-8"), 0)[0]
    except (ValueError, RecursionError, StopIteration) as e:
        raise _malformed(_short(e)) from None


_scan_once = _DECODER.scan_once


def reply_errstr(data, recs, i):
    """The errstr of the reply whose record starts at recs[i] (None if absent)."""
    st = recs[i]
    if not st & _R_ERRSTR:
        return None
    off, n = recs[i + 2], recs[i + 3]
    if st & _R_ERRSTR_ESC:
        return decode_span(data, off, n)
    return data[off + 1 : off + n - 1].decode("utf-8")


def reply_payload(data, recs, i):
    """The payload dict of the reply whose record starts at recs[i] (None if absent)."""
    n = recs[i + 5]
    if n == 2:
        return {}
    if not n:
        return None
    return decode_span(data, recs[i + 4], n)


def reply_tuple(data, recs, i):
    """(matchtag, errnum, errstr, payload) of the reply at recs[i]."""
    return recs[i + 1], recs[i] >> 32, reply_errstr(data, recs, i), reply_payload(data, recs, i)


_R_ERRSTR = core.R_ERRSTR
_R_ERRSTR_ESC = core.R_ERRSTR_ESC


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
