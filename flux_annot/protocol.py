"""The wire protocol of SPEC §8: framing, message encode/decode, socket path.

A message on the Unix stream socket is a 4-byte big-endian length followed by
that many bytes of one UTF-8 JSON object (names after Flux RFC 3/6):

    request:  {"topic": str, "matchtag": int, "payload": {...}}
    response: {"matchtag": int, "errnum": int, "errstr": str?, "payload": {...}?}

Choices made where the spec is silent:

- The message size limit (`limits.message_bytes`, default 1 MiB) is decided
  from the length header alone: the body of an oversized frame is never
  read. The reply is EMSGSIZE with **matchtag 0** (the matchtag sits in the
  unread body) and the server closes the connection after it.
- Errors the server meets before it can read a matchtag (invalid UTF-8,
  malformed JSON, not an object, missing or non-integer `matchtag`) are
  replied to with **matchtag 0**; clients therefore number their requests
  from 1, and treat a matchtag-0 error as a connection-level error.
- Top-level framing errors (UTF-8, JSON, `topic`, `matchtag`, `payload`)
  are EPROTO; bad fields inside a payload are EINVAL. Both name the field.
- JSON constants `NaN`/`Infinity` are rejected (they are not JSON).
- A streaming response's payload (an event batch, already encoded once in C
  and shared by every subscriber) is spliced into the response as bytes,
  never decoded and re-encoded (`response_raw`).
"""

import json
import os
import struct

from .errors import EMSGSIZE, EPROTO, AnnotError

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

_scan_once = _DECODER.scan_once
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


def parse_request(body):
    """Decode one request body → (topic, matchtag, payload dict).

    Raises ProtocolError (EPROTO) naming what is wrong, with the matchtag
    to reply with (0 when it could not be read).
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ProtocolError(EPROTO, f"message is not valid UTF-8 (byte {e.start})")
    # Fast path: the C scanner alone (JSONDecoder.decode adds two regex
    # whitespace matches, ~40% of the cost of a small request). Anything
    # unusual (surrounding whitespace, trailing data, an error) goes through
    # the full decoder, which also words the error message.
    try:
        msg, end = _scan_once(text, 0)
    except (StopIteration, ValueError, RecursionError):
        end = -1
    if end != len(text):
        try:
            msg = _decode_json(text)
        except (ValueError, RecursionError) as e:
            raise ProtocolError(EPROTO, f"message is not valid JSON: {_short(e)}")
    if type(msg) is not dict:
        raise ProtocolError(EPROTO, "message is not a JSON object")
    matchtag = msg.get("matchtag")
    if type(matchtag) is not int or not 0 <= matchtag < 1 << 63:
        what = "is missing" if matchtag is None else "must be a non-negative integer"
        raise ProtocolError(EPROTO, f"request field 'matchtag' {what}")
    topic = msg.get("topic")
    if type(topic) is not str:
        what = "is missing" if topic is None else "must be a string"
        raise ProtocolError(EPROTO, f"request field 'topic' {what}", matchtag)
    payload = msg.get("payload")
    if type(payload) is not dict:
        what = "is missing" if payload is None else "must be a JSON object"
        raise ProtocolError(EPROTO, f"request field 'payload' {what}", matchtag)
    return topic, matchtag, payload


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


def parse_response(body):
    """Decode one response body → (matchtag, errnum, errstr, payload)."""
    try:
        msg = _decode_json(body.decode("utf-8"))
    except (ValueError, RecursionError) as e:
        raise ProtocolError(EPROTO, f"malformed response from the service: {_short(e)}")
    if type(msg) is not dict or type(msg.get("matchtag")) is not int:
        raise ProtocolError(EPROTO, "malformed response from the service")
    errnum = msg.get("errnum", 0)
    if type(errnum) is not int:
        raise ProtocolError(EPROTO, "malformed response from the service (errnum)")
    return msg["matchtag"], errnum, msg.get("errstr"), msg.get("payload")


def oversize_error(length, limit):
    """The EMSGSIZE response for a frame announced as `length` bytes."""
    return response_error(
        0, EMSGSIZE, f"message of {length} bytes exceeds the limit of {limit} bytes"
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
    """SPEC §8: $FLUX_ANNOT_SOCKET, else $XDG_RUNTIME_DIR/flux-annot/socket,
    else /tmp/flux-annot-$UID/socket."""
    env = os.environ if environ is None else environ
    path = env.get("FLUX_ANNOT_SOCKET")
    if path:
        return path
    runtime = env.get("XDG_RUNTIME_DIR")
    if runtime:
        return os.path.join(runtime, "flux-annot", "socket")
    return f"/tmp/flux-annot-{os.getuid()}/socket"
