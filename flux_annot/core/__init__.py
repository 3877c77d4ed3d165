"""The only module that touches the C core (`flux_annot.core._core`, `flux_annot.core._bulk`).

Bytes cross the boundary, not objects: patches go to C as `bytes` (cffi
passes them to `const char *` without a copy), ids as `array('Q')` through
`ffi.from_buffer`, and results come back as canonical compact JSON bytes.
The one exception is annotate_many's list of patches, read by `_bulk`
(a CPython extension) item by item where the bytes lie.
Every C error becomes an `AnnotError` subclass in one place, `_raise_from`.
"""

import json
from array import array
from collections import namedtuple
from collections.abc import Iterable, Sequence
from typing import Any, NoReturn, TypeAlias

from flux_annot import errors
from ._bulk import apply as _bulk_apply
from ._core import ffi, lib

__all__ = ["Limits", "merge", "canonical", "JobTable", "ApplyInfo", "FrameScanner",
           "ok_replies", "check_nesting", "check_json", "ReplyScanner", "RequestEncoder"]

_U64_MAX = (1 << 64) - 1

ApplyInfo = namedtuple("ApplyInfo", "changed old_len new_len old_ns_len new_ns_len")

# What a patch may be given as: JSON text (bytes, str) or a dict (dumped compact).
Patch: TypeAlias = bytes | bytearray | memoryview | str | dict[str, Any]


class Limits:
    """The parse limits of one class of writer (wraps `fa_limits`).

    depth: nesting depth of the annotations object (it counts 1);
    key_bytes: UTF-8 bytes of one key; object_keys: keys of one object;
    strict_keys: keys must be non-empty and contain no '.'.
    Immutable after creation.
    """

    __slots__ = ("_c", "depth", "key_bytes", "object_keys", "strict_keys")
    _c: Any
    depth: int
    key_bytes: int
    object_keys: int
    strict_keys: bool

    def __init__(self, depth: int = 64, key_bytes: int = 256, object_keys: int = 1024, strict_keys: bool = True) -> None:
        for name, v in (("depth", depth), ("key_bytes", key_bytes),
                        ("object_keys", object_keys)):
            if isinstance(v, bool) or not isinstance(v, int) or not 0 < v <= 0xFFFFFFFF:
                raise errors.error(errors.EINVAL, f"limit {name} must be a positive integer")
        c = ffi.new("fa_limits *")
        c.max_depth = depth
        c.max_key_bytes = key_bytes
        c.max_object_keys = object_keys
        c.strict_keys = 1 if strict_keys else 0
        object.__setattr__(self, "_c", c)
        object.__setattr__(self, "depth", depth)
        object.__setattr__(self, "key_bytes", key_bytes)
        object.__setattr__(self, "object_keys", object_keys)
        object.__setattr__(self, "strict_keys", bool(strict_keys))

    def __setattr__(self, name: str, value: Any) -> NoReturn:
        raise AttributeError("Limits is immutable")

    def __repr__(self) -> str:
        return (f"Limits(depth={self.depth}, key_bytes={self.key_bytes}, "
                f"object_keys={self.object_keys}, strict_keys={self.strict_keys})")


OWNER_LIMITS = Limits()
# The generic JSON parser: no key rules, depth up to the C cap.
_GENERIC = Limits(depth=lib.FA_DEPTH_CAP, key_bytes=0xFFFFFFFF,
                  object_keys=0xFFFFFFFF, strict_keys=False)


def _raise_from(ctx: Any, index: int | None = None) -> NoReturn:
    """Turn the last error of a C ctx into the matching AnnotError."""
    errnum = lib.fa_ctx_errnum(ctx)
    msg = ffi.string(lib.fa_ctx_errmsg(ctx)).decode("utf-8", "replace")
    if index is not None:
        msg = f"patch {index}: {msg}"
    exc = errors.error(errnum, msg)
    if index is not None:
        exc.index = index
    raise exc


def _output(ctx: Any, n: Any = None) -> bytes:
    """The ctx's last output as bytes; n: a reusable size_t * (else a new one)."""
    if n is None:
        n = ffi.new("size_t *")
    p = lib.fa_ctx_output(ctx, n)
    return ffi.unpack(p, n[0])


def _to_bytes(data: object, what: str = "annotations") -> bytes:
    """bytes/str/dict → JSON bytes for the core (dicts dumped compact)."""
    if isinstance(data, bytes):
        return data
    if isinstance(data, str):
        return data.encode("utf-8", "surrogatepass")
    if isinstance(data, (bytearray, memoryview)):
        return bytes(data)
    if isinstance(data, dict):
        try:
            return json.dumps(data, separators=(",", ":"), ensure_ascii=False,
                              allow_nan=False).encode("utf-8", "surrogatepass")
        except (TypeError, ValueError) as e:
            raise errors.error(errors.EINVAL, f"{what} are not JSON: {e}") from None
    raise errors.error(errors.EINVAL,
                       f"{what} must be a JSON object (dict, bytes or str), "
                       f"not {type(data).__name__}")


def _check_id(id: object) -> int:
    if isinstance(id, bool) or not isinstance(id, int):
        raise errors.error(errors.EINVAL, f"job id must be an integer, not {type(id).__name__}")
    if not 0 <= id <= _U64_MAX:
        raise errors.error(errors.EINVAL, f"job id {id} is out of range (0 to 2^64-1)")
    return id


def _ns_list(namespaces: Iterable[str]) -> bytes:
    """["a", "b"] → b"a\\0b\\0" (the C form of a namespace list)."""
    if not namespaces:
        return b""
    return b"".join(n.encode("utf-8") + b"\0" for n in namespaces)


_ctx: Any = None
_annotate = lib.fa_table_annotate  # the per-call hot path, looked up once


def _pure_ctx() -> Any:
    # One ctx for the pure functions. The GIL is held for the whole C call,
    # so calls never interleave on it.
    global _ctx
    if _ctx is None:
        c = lib.fa_ctx_new()
        if c == ffi.NULL:
            raise MemoryError("fa_ctx_new")
        _ctx = ffi.gc(c, lib.fa_ctx_destroy)
    return _ctx


def canonical(data: bytes | str) -> bytes:
    """Any JSON text (bytes) → its canonical compact form (bytes).

    Nulls and empty objects are kept; duplicate keys: the last wins at the
    first one's place. Raises AnnotValueError (EINVAL) on invalid JSON.
    """
    ctx = _pure_ctx()
    data = _to_bytes(data, "data") if not isinstance(data, bytes) else data
    if lib.fa_canonical(ctx, data, len(data), _GENERIC._c) < 0:
        _raise_from(ctx)
    return _output(ctx)


def merge(tree: Patch | None, patch: Patch, limits: Limits | None = None) -> dict[str, Any] | None:
    """The merge (docs/data-model.md) of `patch` (dict/bytes/str, a JSON object) into `tree`.

    `tree` may be None, a dict, or JSON bytes/str of an object. It is taken
    as the data model says a tree is: nulls and empty objects in it are
    pruned (so `merge({"a": None}, {})` is None). Returns the merged tree
    as a dict, or None when nothing is left. Owner limits apply unless
    `limits` is given.
    """
    ctx = _pure_ctx()
    lim = (limits or OWNER_LIMITS)._c
    t = b"" if tree is None else _to_bytes(tree, "tree")
    p = _to_bytes(patch)
    r = lib.fa_merge(ctx, t, len(t), p, len(p), lim)
    if r < 0:
        _raise_from(ctx)
    if r == 0:
        return None
    out: dict[str, Any] = json.loads(_output(ctx))
    return out


class JobTable:
    """The C core's job table: job id → canonical annotations, no policy.

    Default limits: the instance owner's (depth 64, keys of 256 bytes,
    1024 keys per object, strict keys).
    """

    __slots__ = ("_t", "_ctx", "_limits", "_lim", "_info", "_text", "_len", "_addr",
                 "_lim_addr", "__weakref__")

    def __init__(self, limits: Limits | None = None) -> None:
        t = lib.fa_table_new()
        if t == ffi.NULL:
            raise MemoryError("fa_table_new")
        self._t = ffi.gc(t, lib.fa_table_destroy)
        # borrowed from the table, which self._t keeps alive
        self._ctx = lib.fa_table_ctx(self._t)
        self._limits = limits or OWNER_LIMITS
        self._lim = self._limits._c
        lib.fa_table_set_limits(self._t, self._lim)
        # the same two as plain addresses for flux_annot.core._bulk (annotate_many)
        self._addr = int(ffi.cast("uintptr_t", self._t))
        self._lim_addr = int(ffi.cast("uintptr_t", self._lim))
        self._info = ffi.new("fa_info *")  # reused by apply(): no allocation per call
        # out-parameters of get() / __contains__, reused likewise (a table is
        # used by one thread at a time, as the C table itself requires)
        self._text = ffi.new("char **")
        self._len = ffi.new("size_t *")

    # ---- public (docs/python-api.md) ----

    def annotate(self, id: int, patch: Patch) -> bool:
        """Merge patch into job `id`; True if its annotations changed."""
        if type(patch) is not bytes:
            patch = _to_bytes(patch)
        try:
            r = _annotate(self._t, id, patch, len(patch))
        except (OverflowError, TypeError):
            _check_id(id)
            raise
        if r < 0:
            _raise_from(self._ctx)
        return r == 1

    def annotate_sched(self, id: int, patch: bytes, hist: "EstimateHistory", at: float) -> int:
        """`annotate` for the scheduler's hot path (internal): also records
        the estimate the patch names in `hist` at `at` (< 0: now) in the
        same C call (fa_table_annotate_sched). Returns 0 unchanged, else 1
        | SCHED_QUEUE | SCHED_SLOW (the caller reads the text itself)."""
        try:
            r: int = _annotate_sched(self._t, hist._h, id, patch, len(patch), at)
        except (OverflowError, TypeError):
            _check_id(id)
            raise
        if r < 0:
            _raise_from(self._ctx)
        return r

    def annotate_many(self, ids: Iterable[int], patches: Sequence[Patch] | Iterable[Patch]) -> int:
        """Apply patches[i] to ids[i] in order in one C call; how many changed.

        Stops at the first bad patch: raises its AnnotError with `.index`
        set (and named in the message); the earlier ones stay applied.
        """
        if not isinstance(patches, (list, tuple)):
            patches = list(patches)
        n = len(patches)
        try:
            idarr = ids if isinstance(ids, array) and ids.typecode == "Q" else array("Q", ids)
        except (OverflowError, TypeError):
            for i in ids:
                _check_id(i)
            raise
        if len(idarr) != n:
            raise errors.error(errors.EINVAL,
                               f"ids and patches differ in length ({len(idarr)} != {n})")
        if n == 0:
            return 0
        # The C module reads the list's bytes where they lie (no join, no
        # offsets pass); None: an item is not bytes, nothing was applied.
        res = _bulk_apply(self._addr, self._lim_addr, idarr, patches)
        if res is None:
            patches = [p if type(p) is bytes else _to_bytes(p) for p in patches]
            res = _bulk_apply(self._addr, self._lim_addr, idarr, patches)
            assert res is not None  # every item is bytes now
        r, changed, failed = res
        if r < 0:
            _raise_from(self._ctx, index=failed)
        return changed

    def get(self, id: int) -> bytes | None:
        """The job's canonical annotations as compact JSON bytes, or None."""
        if type(id) is not int:  # bool, str, ...: the same error as everywhere
            _check_id(id)
        text, n = self._text, self._len
        try:
            found = lib.fa_table_get(self._t, id, text, n)
        except (OverflowError, TypeError):
            _check_id(id)
            raise
        if not found:
            return None
        return ffi.unpack(text[0], n[0])

    def remove(self, id: int) -> bool:
        """Drop the job's annotations; True if it had any."""
        _check_id(id)
        r = lib.fa_table_remove(self._t, id)
        if r < 0:
            _raise_from(self._ctx)
        return r == 1

    def __len__(self) -> int:
        return lib.fa_table_count(self._t)

    def __contains__(self, id: object) -> bool:
        if isinstance(id, bool) or not isinstance(id, int) or not 0 <= id <= _U64_MAX:
            return False
        return bool(lib.fa_table_get(self._t, id, self._text, self._len))

    def memory_bytes(self) -> int:
        """Every byte the C core holds for this table (malloc overhead included)."""
        return lib.fa_table_memory(self._t)

    # ---- internal, for the service ----

    def apply(self, id: int, patch: Patch, limits: Limits, ns: str | bytes | None = None, replace: bool = False, dryrun: bool = False) -> ApplyInfo:
        """Merge with explicit limits and flags; an ApplyInfo.

        ns (str or bytes): a top-level key whose value sizes are reported.
        replace: merge into an empty tree. dryrun: stage the result; install
        it with commit() (any other apply/remove in between drops it).
        """
        if type(patch) is not bytes:
            patch = _to_bytes(patch)
        if ns is None:
            nsb = ffi.NULL
            nsl = 0
        else:
            nsb = ns if type(ns) is bytes else (
                ns.encode("utf-8") if isinstance(ns, str) else bytes(ns))
            nsl = len(nsb)
        flags = (lib.FA_REPLACE if replace else 0) | (lib.FA_DRYRUN if dryrun else 0)
        info = self._info
        try:
            r = lib.fa_table_apply(self._t, id, patch, len(patch), limits._c, nsb, nsl,
                                   flags, info)
        except (OverflowError, TypeError):
            _check_id(id)
            raise
        if r < 0:
            _raise_from(self._ctx)
        return ApplyInfo(bool(info.changed), info.old_len, info.new_len,
                         info.old_ns_len, info.new_ns_len)

    def commit(self) -> None:
        """Install the result staged by the last dry-run apply."""
        if lib.fa_table_commit(self._t) < 0:
            _raise_from(self._ctx)

    def get_view(self, id: int, namespaces: Iterable[str], exclude: bool = False) -> bytes | None:
        """The job's tree keeping only (or, exclude=True, dropping) the
        top-level `namespaces`: compact JSON bytes, or None if empty."""
        _check_id(id)
        nsl = _ns_list(namespaces)
        r = lib.fa_table_get_view(self._t, id, nsl, len(nsl), 1 if exclude else 0)
        if r < 0:
            _raise_from(self._ctx)
        return _output(self._ctx, self._len) if r else None

    def ids(self) -> list[int]:
        """All job ids with annotations (table order)."""
        n = lib.fa_table_count(self._t)
        buf = array("Q", bytes(8 * n))
        got = lib.fa_table_ids(self._t, ffi.from_buffer("uint64_t[]", buf), n)
        return buf.tolist()[:got]

    def track(self, on: bool) -> None:
        """Turn batch tracking (pre-image recording) on or off."""
        lib.fa_table_track(self._t, 1 if on else 0)

    def batch_count(self) -> int:
        """Jobs touched since the last batch_clear (upper bound)."""
        return lib.fa_table_batch_count(self._t)

    def batch_ids(self) -> list[int]:
        """Net-changed job ids since the last batch_clear, first-touch order."""
        n = lib.fa_table_batch_count(self._t)
        buf = array("Q", bytes(8 * n))
        got = lib.fa_table_batch_ids(self._t, ffi.from_buffer("uint64_t[]", buf), n)
        return buf.tolist()[:got]

    def batch_encode(self, full: bytes | None = None, namespaces: Iterable[str] = (), exclude: bool = False, delta: bool = False) -> bytes:
        """b'[[id,tree|null],...]' of the net-changed jobs (batch_ids order).

        full: bytes with one flag per net-changed job (1: whole tree, 0:
        filtered by namespaces/exclude; None: all whole). Filtered entries
        whose view did not change are left out. delta: each entry is the
        merge patch from the pre-image's view to the current one.
        """
        nsl = _ns_list(namespaces)
        fp = ffi.NULL if full is None else ffi.from_buffer("uint8_t[]", full)
        if full is not None and len(full) < len(self.batch_ids()):
            raise errors.error(errors.EINVAL, "full has fewer flags than net-changed jobs")
        if lib.fa_table_batch_encode(self._t, fp, nsl, len(nsl), 1 if exclude else 0,
                                     1 if delta else 0) < 0:
            _raise_from(self._ctx)
        return _output(self._ctx, self._len)

    def batch_encode_cuts(self, n: int, full: bytes | None = None, namespaces: Iterable[str] = (), exclude: bool = False, delta: bool = False) -> tuple[bytes, "array[int]"]:
        """`batch_encode`, with where each entry is: (data, cuts).

        n: the number of net-changed jobs (`len(batch_ids())`, EINVAL
        otherwise). cuts: array('Q') of 2n offsets into data; entry i is
        data[cuts[i]:cuts[n+i]] when cuts[i] < cuts[n+i] (left out
        otherwise), and data[cuts[p]:cuts[n+q-1]] is entries p..q-1 with
        their commas (fa.h `fa_table_batch_encode_cuts`).
        """
        nsl = _ns_list(namespaces)
        if full is not None and len(full) < n:
            raise errors.error(errors.EINVAL, "full has fewer flags than net-changed jobs")
        fp = ffi.NULL if full is None else ffi.from_buffer("uint8_t[]", full)
        cuts = array("Q", bytes(16 * n))
        if lib.fa_table_batch_encode_cuts(self._t, fp, nsl, len(nsl), 1 if exclude else 0,
                                          1 if delta else 0,
                                          ffi.from_buffer("uint64_t[]", cuts), n) < 0:
            _raise_from(self._ctx)
        return _output(self._ctx, self._len), cuts

    def batch_clear(self) -> None:
        """Forget the recorded pre-images (start a new batch)."""
        lib.fa_table_batch_clear(self._t)

    def encode(self, ids: Iterable[int], full: bytes | None = None, namespaces: Iterable[str] = (), exclude: bool = False) -> bytes:
        """b'[[id,tree|null],...]' of the current trees of `ids`."""
        try:
            idarr = ids if isinstance(ids, array) and ids.typecode == "Q" else array("Q", ids)
        except (OverflowError, TypeError):
            for i in ids:
                _check_id(i)
            raise
        if full is not None and len(full) < len(idarr):
            raise errors.error(errors.EINVAL, "full has fewer flags than ids")
        nsl = _ns_list(namespaces)
        fp = ffi.NULL if full is None else ffi.from_buffer("uint8_t[]", full)
        if lib.fa_table_encode(self._t, ffi.from_buffer("uint64_t[]", idarr), len(idarr),
                               fp, nsl, len(nsl), 1 if exclude else 0) < 0:
            _raise_from(self._ctx)
        return _output(self._ctx, self._len)


# ---- request frames (fa_frame.c) ----

FRAME_WORDS = lib.FA_FRAME_WORDS
F_MATCHTAG = lib.FA_FRAME_MATCHTAG
F_HOT = lib.FA_FRAME_HOT
F_MEMO = lib.FA_FRAME_MEMO
F_VOLATILE = lib.FA_FRAME_VOLATILE
F_TOOBIG = lib.FA_FRAME_TOOBIG
F_TOPIC_ESC = lib.FA_FRAME_TOPIC_ESC
F_TYPE = lib.FA_FRAME_TYPE
F_TYPE_SHIFT = lib.FA_FRAME_TYPE_SHIFT


class FrameScanner:
    """Request frames decoded in C with one class of caller's limits.

    `topics`: the topic names the caller dispatches on (a record carries
    the index + 1 of its topic in that list, 0 for any other). `limits`: a
    `Limits` (applied to every payload value; its key rules to annotations
    and memo). `max_message`: the frame size limit. `max_annotations`,
    `max_memo` (0: none): longer values are delimited, not parsed, and
    flagged F_TOOBIG. One scanner per event loop: its record array and ctx
    are reused by every call (`scan` copies what it returns).
    """

    __slots__ = ("_ctx", "_opts", "_topics", "_ntopics", "_rec", "_cap", "_n", "_used",
                 "_olen", "_lim", "_mts", "_scan")

    def __init__(self, topics: Sequence[str], limits: "Limits", max_message: int,
                 max_annotations: int = 0, max_memo: int = 0, cap: int = 512) -> None:
        c = lib.fa_ctx_new()
        if c == ffi.NULL:
            raise MemoryError("fa_ctx_new")
        self._ctx = ffi.gc(c, lib.fa_ctx_destroy)
        self._lim = limits  # keeps the limits' cdata alive (copied into opts anyway)
        o = ffi.new("fa_frame_opts *")
        o.lim = limits._c[0]
        o.max_message = max_message
        o.max_annotations = max_annotations
        o.max_memo = max_memo
        self._opts = o
        self._topics = _ns_list(topics)
        self._ntopics = len(self._topics)
        self._cap = cap
        self._rec = ffi.new("uint64_t[]", cap * FRAME_WORDS)
        self._mts = ffi.new("uint64_t[]", cap)  # ok_replies' matchtags
        self._n = ffi.new("size_t *")
        self._used = ffi.new("size_t *")
        self._olen = ffi.new("size_t *")
        self._scan = lib.fa_frames_scan

    def scan(self, data: bytes) -> tuple[Any, int, bytes, str | None]:
        """Decode the complete frames at the start of `data` (bytes).

        Returns (records, used, keys, error): records a flat list of
        FRAME_WORDS ints per frame (fa.h, fa_frames_scan), used the bytes
        they cover, keys the namespace lists of hot annotate records (bytes),
        error the sentence of the last record when it is a fault (else None).
        """
        n = self._n
        ctx = self._ctx
        rec = self._rec
        rc = self._scan(ctx, data, len(data), self._opts, self._topics, self._ntopics, rec,
                        self._cap, n, self._used)
        if rc < 0:
            _raise_from(ctx)
        recs = ffi.unpack(rec, n[0] * FRAME_WORDS)
        olen = self._olen
        p = lib.fa_ctx_output(ctx, olen)
        keys = ffi.unpack(p, olen[0]) if olen[0] else b""
        if rc == 0:
            return recs, self._used[0], keys, None
        err = ffi.string(lib.fa_ctx_errmsg(ctx)).decode("utf-8", "replace")
        return recs, self._used[0], keys, err

    def ok_replies(self, matchtags: Sequence[int]) -> bytes:
        """`ok_replies` for at most `cap` matchtags, on this scanner's
        buffers (its ctx output: call after what `scan` returned is read)."""
        k = len(matchtags)
        mts = self._mts
        mts[0:k] = matchtags
        ctx = self._ctx
        if lib.fa_reply_ok(ctx, mts, k) < 0:
            _raise_from(ctx)
        olen = self._olen
        p = lib.fa_ctx_output(ctx, olen)
        return ffi.unpack(p, olen[0])


def ok_replies(matchtags: "Sequence[int] | array[int]") -> bytes:
    """The frames of {"matchtag":M,"errnum":0,"payload":{}} for each M, joined."""
    ctx = _pure_ctx()
    arr = matchtags if isinstance(matchtags, array) else array("Q", matchtags)
    if lib.fa_reply_ok(ctx, ffi.from_buffer("uint64_t[]", arr), len(arr)) < 0:
        _raise_from(ctx)
    return _output(ctx)


def check_json(data: bytes, max_depth: int) -> None:
    """AnnotValueError (EINVAL, the parser's sentence, as RequestEncoder
    words it) unless `data` is one JSON value nesting at most `max_depth`
    levels: a recursive decoder may run on it afterwards."""
    ctx = _pure_ctx()
    lim = _JSON_LIMITS.get(max_depth)
    if lim is None:
        lim = _JSON_LIMITS[max_depth] = Limits(depth=max_depth, key_bytes=0xFFFFFFFF,
                                               object_keys=0xFFFFFFFF, strict_keys=False)
    if lib.fa_canonical(ctx, data, len(data), lim._c) < 0:
        _raise_from(ctx)


_JSON_LIMITS: dict[int, Limits] = {}


def check_nesting(data: bytes, max_depth: int) -> None:
    """AnnotValueError (EINVAL) if the JSON text `data` (bytes) nests more
    than `max_depth` objects and arrays; checked without recursion, so a
    recursive decoder may run on it afterwards."""
    ctx = _pure_ctx()
    if lib.fa_json_nesting(ctx, data, len(data), max_depth) < 0:
        _raise_from(ctx)


# ---- the client side (fa_client.c) ----

REPLY_WORDS = lib.FA_REPLY_WORDS
R_ERRSTR = lib.FA_REPLY_ERRSTR
R_ERRSTR_ESC = lib.FA_REPLY_ERRSTR_ESC
R_PAYLOAD = lib.FA_REPLY_PAYLOAD


class ReplyScanner:
    """Reply frames read and validated in C (`fa_replies_scan`).

    `scan(data)` reads the complete replies at the start of `data` (bytes),
    at most `cap` per call, and returns (records, used, nerr, error):
    records a flat list of REPLY_WORDS ints per reply (status: R_* flags |
    errnum << 32, matchtag, errstr offset and length in `data` (the string
    with its quotes), payload offset and length), used the bytes they
    cover, nerr how many carry an errnum, error the sentence (EPROTO,
    "malformed response from the service: ...") when the reply at `used`
    cannot be read, else None. Every value of a returned reply was parsed
    with at most `max_depth` levels of nesting, so its spans may be decoded
    with `json`. One scanner per connection (its buffers are reused).
    """

    __slots__ = ("_ctx", "_rec", "_cap", "_depth", "_n", "_used", "_nerr", "_scan")

    def __init__(self, max_depth: int, cap: int = 1024) -> None:
        c = lib.fa_ctx_new()
        if c == ffi.NULL:
            raise MemoryError("fa_ctx_new")
        self._ctx = ffi.gc(c, lib.fa_ctx_destroy)
        self._cap = cap
        self._depth = max_depth
        self._rec = ffi.new("uint64_t[]", cap * REPLY_WORDS)
        self._n = ffi.new("size_t *")
        self._used = ffi.new("size_t *")
        self._nerr = ffi.new("size_t *")
        self._scan = lib.fa_replies_scan

    @property
    def cap(self) -> int:
        return self._cap

    def scan(self, data: bytes) -> tuple[list[int], int, int, str | None]:
        n = self._n
        ctx = self._ctx
        rc = self._scan(ctx, data, len(data), self._depth, self._rec, self._cap, n,
                        self._used, self._nerr)
        if rc < 0:
            _raise_from(ctx)
        recs: list[int] = ffi.unpack(self._rec, n[0] * REPLY_WORDS)  # type: ignore[assignment]
        if rc == 0:
            return recs, self._used[0], self._nerr[0], None
        err = ffi.string(lib.fa_ctx_errmsg(ctx)).decode("utf-8", "replace")
        return recs, self._used[0], self._nerr[0], err


class RequestEncoder:
    """Request frames of annotate / memo calls written in C (`fa_requests_encode`).

    `encode(topic, member, mt0, ids, patches, n, volatile, as_array)`: the
    frames of n calls as bytes (matchtags mt0, mt0 + 1, ...); `ids` an int
    (n == 1) or an `array('Q')`; `patches` JSON bytes: one array text of
    the n patches (as_array=True: what `json` writes for a list of dicts) or
    the n texts joined by NUL bytes. Every patch is parsed (depth at most
    `max_depth`) before anything is written: an invalid one raises
    AnnotValueError (EINVAL) with `.index`, a frame over `max_body` bytes
    LimitError (EMSGSIZE) with `.index`. One encoder per connection.
    """

    __slots__ = ("_ctx", "_lim", "_max_body", "_one", "_failed", "_olen", "_enc")

    def __init__(self, max_body: int, max_depth: int) -> None:
        c = lib.fa_ctx_new()
        if c == ffi.NULL:
            raise MemoryError("fa_ctx_new")
        self._ctx = ffi.gc(c, lib.fa_ctx_destroy)
        self._lim = Limits(depth=max_depth, key_bytes=0xFFFFFFFF, object_keys=0xFFFFFFFF,
                           strict_keys=False)
        self._max_body = min(max_body, 0xFFFFFFFF)
        self._one = ffi.new("uint64_t[1]")
        self._failed = ffi.new("size_t *")
        self._olen = ffi.new("size_t *")
        self._enc = lib.fa_requests_encode

    def encode(self, topic: bytes, member: bytes, mt0: int, ids: "int | array[int]",
               patches: bytes, n: int, volatile: bool, as_array: bool = False) -> bytes:
        if type(ids) is int:
            try:
                self._one[0] = ids
            except OverflowError:
                raise errors.error(errors.EINVAL,
                                   f"job id {ids} is out of range (0 to 2^64-1)") from None
            idp = self._one
        else:
            idp = ffi.from_buffer("uint64_t[]", ids)
        flags = (lib.FA_REQ_VOLATILE if volatile else 0) | (lib.FA_REQ_ARRAY if as_array else 0)
        ctx = self._ctx
        if self._enc(ctx, topic, member, mt0, idp, patches, len(patches), n, flags,
                     self._lim._c, self._max_body, self._failed) < 0:
            errnum = lib.fa_ctx_errnum(ctx)
            msg = ffi.string(lib.fa_ctx_errmsg(ctx)).decode("utf-8", "replace")
            exc = errors.error(errnum, msg if errnum == errors.EMSGSIZE else
                               f"{member.decode()}: {msg}")
            exc.index = self._failed[0]
            raise exc
        olen = self._olen
        p = lib.fa_ctx_output(ctx, olen)
        return ffi.unpack(p, olen[0])


# -- estimates (fa_scan.c, docs/accuracy.md) ----------------------------------

_EST_NUMBER = lib.FA_EST_NUMBER
_EST_OTHER = lib.FA_EST_OTHER
_EST_QUEUE = lib.FA_QUEUE
_EST_SLOW = lib.FA_SCAN_SLOW
#: sched_estimate's answer for a t_estimate that is there but is no finite number
BAD_ESTIMATE = False


class SchedScanner:
    """`sched.t_estimate` and `sched.queue` of JSON object text, found in C
    (fa_sched_scan) without a Python parse. One per thread (it owns its
    output words)."""

    __slots__ = ("_out",)

    def __init__(self) -> None:
        self._out = ffi.new("size_t[4]")

    def scan(self, text: bytes) -> tuple[float | bool | None, str | None]:
        """(estimate, queue): estimate a finite float, None (absent or null)
        or BAD_ESTIMATE (there, but no finite number); queue a str or None.
        `text` must be an object the core has parsed (a patch or a tree)."""
        out = self._out
        f = lib.fa_sched_scan(text, len(text), out)
        if f & _EST_SLOW:
            return _sched_fields(json.loads(text))
        queue = None
        if f & _EST_QUEUE:
            queue = text[out[2] : out[2] + out[3]].decode("utf-8")
        if f & _EST_NUMBER:
            v = float(text[out[0] : out[0] + out[1]])
            return (v if v - v == 0.0 else BAD_ESTIMATE), queue
        if f & _EST_OTHER:
            return BAD_ESTIMATE, queue
        return None, queue


def _sched_fields(tree: Any) -> tuple[float | bool | None, str | None]:
    """SchedScanner.scan's answer for a decoded tree."""
    sched = tree.get("sched") if type(tree) is dict else None
    if type(sched) is not dict:
        return None, None
    q = sched.get("queue")
    queue = q if type(q) is str else None
    v = sched.get("t_estimate")
    if v is None:
        return None, queue
    if type(v) in (int, float) and v - v == 0:
        try:
            return float(v), queue
        except OverflowError:  # an int beyond any double
            pass
    return BAD_ESTIMATE, queue


sched_fields = _sched_fields


# -- estimate histories (fa_hist.c, docs/accuracy.md) ---------------------------

_annotate_sched = lib.fa_table_annotate_sched
#: bits of JobTable.annotate_sched / EstimateHistory.note beyond "changed"
SCHED_QUEUE = lib.FA_QUEUE << 1
SCHED_SLOW = lib.FA_SCAN_SLOW << 1
HIST_MAX = lib.FA_HIST_MAX
_NAN = float("nan")


def _nan_none(x: float) -> float | None:
    return None if x != x else x


class EstimateHistory:
    """Every job's estimate history in C (internal; `accuracy.Accuracy` is
    its Python face): pairs (t_estimate, at), at most HIST_MAX kept."""

    def __init__(self) -> None:
        h = lib.fa_hist_new()
        if h == ffi.NULL:
            raise MemoryError("fa_hist_new")
        self._h = ffi.gc(h, lib.fa_hist_destroy)
        self._ctx = lib.fa_hist_ctx(self._h)
        self._info = ffi.new("fa_hist_info *")

    def estimate(self, id: int, value: float, at: float) -> bool:
        r = lib.fa_hist_estimate(self._h, id, value, at)
        if r < 0:
            _raise_from(self._ctx)
        return r == 1

    def end(self, id: int, at: float, started: bool) -> bool:
        r = lib.fa_hist_end(self._h, id, at, 1 if started else 0)
        if r < 0:
            _raise_from(self._ctx)
        return r == 1

    def note(self, id: int, text: bytes, at: float) -> int:
        """Record the estimate the JSON object text names; SCHED_QUEUE /
        SCHED_SLOW (shifted as annotate_sched's) when the caller must look."""
        return int(lib.fa_hist_note(self._h, id, text, len(text), at)) << 1

    def get(self, id: int) -> tuple[list[float], int, float | None, float | None] | None:
        """(pairs flat [t_estimate, at, ...], n, start, ended) or None."""
        info = self._info
        if not lib.fa_hist_get(self._h, id, info):
            return None
        k = info.kept
        pairs: list[float] = list(ffi.unpack(info.pairs, 2 * k)) if k else []  # floats: a double[]
        return pairs, info.n, _nan_none(info.start), _nan_none(info.ended)

    def load(self, id: int, pairs: bytes, n: int, start: float | None, ended: float | None) -> None:
        kept = len(pairs) // 16
        r = lib.fa_hist_load(self._h, id, ffi.from_buffer("double[]", pairs), kept, n,
                             _NAN if start is None else start, _NAN if ended is None else ended)
        if r < 0:
            _raise_from(self._ctx)

    def pairs_bytes(self, id: int) -> bytes:
        info = self._info
        if not lib.fa_hist_get(self._h, id, info):
            return b""
        return bytes(ffi.buffer(info.pairs, 16 * info.kept))

    def ids(self) -> list[int]:
        n = lib.fa_hist_count(self._h)
        buf = ffi.new("uint64_t[]", max(1, n))
        k = lib.fa_hist_ids(self._h, buf, n)
        return list(ffi.unpack(buf, k))

    def take_dirty(self) -> list[int]:
        n = lib.fa_hist_dirty_count(self._h)
        if not n:
            return []
        buf = ffi.new("uint64_t[]", n)
        k = lib.fa_hist_take_dirty(self._h, buf, n)
        return list(ffi.unpack(buf, k))

    def dirty_count(self) -> int:
        return int(lib.fa_hist_dirty_count(self._h))

    def mark_dirty(self, id: int) -> None:
        if lib.fa_hist_mark_dirty(self._h, id) < 0:
            _raise_from(self._ctx)

    def dump(self, all: bool = False) -> bytes:
        """The dirty records (or all) in the store's form (fa_hist_dump);
        none is dirty afterwards."""
        if lib.fa_hist_dump(self._h, 1 if all else 0) < 0:
            _raise_from(self._ctx)
        n = ffi.new("size_t *")
        p = lib.fa_ctx_output(self._ctx, n)
        out = bytes(ffi.buffer(p, n[0]))
        lib.fa_hist_dump_done(self._h)
        return out

    def rows(self, horizons: list[float]) -> tuple["memoryview[int]", "memoryview[float]", int]:
        """(ids, values, width) of every record that started or left
        (fa_hist_rows): ids[i] its job, values[i*width : (i+1)*width] start,
        ended, n, first t_estimate, first at, last t_estimate, last at, then
        the error at each horizon (nan: none)."""
        hs = ffi.new("double[]", [float(x) for x in horizons] or [0.0])
        m = lib.fa_hist_rows(self._h, hs, len(horizons))
        if m < 0:
            _raise_from(self._ctx)
        n = ffi.new("size_t *")
        p = lib.fa_ctx_output(self._ctx, n)
        data = bytes(ffi.buffer(p, n[0]))
        lib.fa_hist_dump_done(self._h)
        mv = memoryview(data)
        return mv[: 8 * m].cast("Q"), mv[8 * m :].cast("d"), lib.FA_HIST_ROW + len(horizons)

    def load_dump(self, data: bytes) -> None:
        if lib.fa_hist_load_dump(self._h, data, len(data)) < 0:
            _raise_from(self._ctx)

    def redirty_dump(self, data: bytes) -> None:
        if lib.fa_hist_redirty_dump(self._h, data, len(data)) < 0:
            _raise_from(self._ctx)

    def __len__(self) -> int:
        return int(lib.fa_hist_count(self._h))

    def memory_bytes(self) -> int:
        return int(lib.fa_hist_memory(self._h))

    def version(self) -> int:
        return int(lib.fa_hist_version(self._h))

    def bad(self) -> int:
        return int(lib.fa_hist_bad(self._h))

    def add_bad(self, n: int = 1) -> None:
        lib.fa_hist_add_bad(self._h, n)
