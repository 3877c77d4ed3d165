"""Differential tests: the C core against Python's `json` and a model of §2.

1. Random JSON documents (nested objects and arrays, strings with escapes,
   surrogate pairs, non-ASCII and control characters, edge numbers, random
   whitespace, duplicate keys) go through `flux_annot.core.canonical` and
   through `json.loads`; the decoded values must be equal (types, float
   signs and key order included), the canonical text must be exactly what
   `json.dumps(..., ensure_ascii=False, separators=(",", ":"))` writes for
   the expected value, and canonical text must be a fixed point.

   The number rule (docs/data-model.md, DESIGN "Numbers"): an integer literal that
   fits in int64 stays an integer (`-0` is `0`); every other number - one
   with a fraction or an exponent, or an integer outside [-2**63, 2**63-1] -
   is a double, printed as `repr(float)`. A number whose double would be
   infinite (`1e400`, a 400-digit integer) is EINVAL; one that underflows
   becomes 0.0 or a subnormal, as in `float()`.

2. Invalid UTF-8 (bad bytes, overlongs, encoded surrogates, beyond
   U+10FFFF, truncated sequences) and lone `\\u` surrogates are EINVAL,
   raised as `flux_annot.AnnotError` with `.errno == errno.EINVAL`, and
   change nothing in a `JobTable`.

3. Random patch sequences through `JobTable.annotate`, `annotate_many` and
   `flux_annot.merge` against `model_merge` below (docs/data-model.md, written here
   from the spec so this file does not depend on tests/model.py).
"""

import errno
import json
import math
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import flux_annot
from flux_annot import core

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

SETTINGS = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
# Patch sequences spend most of their time generating data: fewer examples.
SEQ_SETTINGS = settings(SETTINGS, max_examples=60)


# ---------------------------------------------------------------- helpers


def expected_value(v):
    """What the core must give back for a value decoded by json.loads.

    Integers outside int64 become doubles; raises OverflowError when a
    number has no finite double (the core must then refuse with EINVAL).
    """
    if isinstance(v, bool) or v is None or isinstance(v, str):
        return v
    if isinstance(v, int):
        return v if INT64_MIN <= v <= INT64_MAX else float(v)  # may overflow
    if isinstance(v, float):
        if math.isinf(v) or math.isnan(v):
            raise OverflowError("not a finite double")
        return v
    if isinstance(v, list):
        return [expected_value(x) for x in v]
    return {k: expected_value(x) for k, x in v.items()}


def same(a, b):
    """Strict equality: types, float bits (-0.0 != 0.0) and key order."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return repr(a) == repr(b)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    return a == b


def py_canonical(v):
    """The canonical text of an (already normalised) value, by Python."""
    return json.dumps(v, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


def expect_einval(fn, *args):
    with pytest.raises(flux_annot.AnnotError) as ei:
        fn(*args)
    assert ei.value.errno == errno.EINVAL, ei.value
    assert str(ei.value), "the error must carry a sentence"
    return ei.value


# ------------------------------------------------------------- generators

EDGE_INTS = [0, 1, -1, INT64_MAX, INT64_MIN, INT64_MAX + 1, INT64_MIN - 1, 2**64, -(2**64), 10**20]
EDGE_FLOATS = [
    0.0,
    -0.0,
    1e308,
    -1e308,
    1.7976931348623157e308,
    5e-324,
    -5e-324,
    2.2250738585072014e-308,  # smallest normal
    2.225073858507201e-308,  # largest subnormal
    1.5e-310,
    0.1 + 0.2,
    0.1,
    1e16,
    1e-5,
    1e22,
    9007199254740993.0,
    123456789.125,
    1700000000.5,
    float(2**63),
]

ints = st.integers(INT64_MIN, INT64_MAX) | st.sampled_from(EDGE_INTS) | st.integers()
floats = st.floats(allow_nan=False, allow_infinity=False) | st.sampled_from(EDGE_FLOATS)
texts = st.text(max_size=12) | st.text(
    alphabet=st.characters(max_codepoint=0x1F) | st.sampled_from('"\\/\x7f\u2028é€😀𝄞\ufeff'),
    max_size=8,
)
scalars = st.none() | st.booleans() | ints | floats | texts
documents = st.recursive(
    scalars,
    lambda c: st.lists(c, max_size=4) | st.dictionaries(texts, c, max_size=4),
    max_leaves=24,
)


class Writer:
    """Writes a Python value as JSON text in one of many equivalent ways."""

    def __init__(self, rnd: random.Random):
        self.r = rnd

    def ws(self):
        return self.r.choice(["", "", "", " ", "\n", "\t ", "\r\n"])

    def string(self, s):
        out = ['"']
        short = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\b": "\\b", "\f": "\\f"}
        for ch in s:
            cp = ord(ch)
            must = ch in '"\\' or cp < 0x20
            if must and ch in short and self.r.random() < 0.6:
                out.append(short[ch])
            elif must or self.r.random() < 0.15:
                out.append(self.escape(cp))
            elif ch == "/" and self.r.random() < 0.5:
                out.append("\\/")
            else:
                out.append(ch)
        out.append('"')
        return "".join(out)

    def escape(self, cp):
        def u(x):
            h = "%04x" % x
            return "\\u" + (h.upper() if self.r.random() < 0.5 else h)

        if cp < 0x10000:
            return u(cp)
        cp -= 0x10000  # a surrogate pair
        return u(0xD800 + (cp >> 10)) + u(0xDC00 + (cp & 0x3FF))

    def number(self, v):
        if isinstance(v, int):
            if v == 0 and self.r.random() < 0.3:
                return "-0"
            return str(v)
        text = repr(v)
        choice = self.r.random()
        if choice < 0.25:
            text = "%.17e" % v
        elif choice < 0.4:
            text = text.replace("e", "E")
        elif choice < 0.5 and "e" not in text:
            text += "e0"
        return text

    def write(self, v):
        w = self.ws
        if v is None:
            return "null"
        if v is True:
            return "true"
        if v is False:
            return "false"
        if isinstance(v, (int, float)):
            return self.number(v)
        if isinstance(v, str):
            return self.string(v)
        if isinstance(v, list):
            return "[" + w() + ("," + w()).join(self.write(x) + w() for x in v) + "]"
        pairs = ",".join(f"{w()}{self.string(k)}{w()}:{w()}{self.write(x)}{w()}" for k, x in v.items())
        return "{" + w() + pairs + "}"


# ---------------------------------------------------------- 1: canonical


@SETTINGS
@given(documents, st.randoms(use_true_random=False))
def test_canonical_agrees_with_python_json(doc, rnd):
    text = (Writer(rnd).ws() + render(doc, rnd) + Writer(rnd).ws()).encode()
    decoded = json.loads(text)
    try:
        want = expected_value(decoded)
    except OverflowError:
        expect_einval(core.canonical, text)
        return
    out = core.canonical(text)
    assert same(json.loads(out), want), (text, out)
    assert out == py_canonical(want), (text, out)
    assert core.canonical(out) == out


def render(value, rnd):
    """JSON text for value, written with Writer, some keys given twice."""
    w = Writer(rnd)
    if isinstance(value, list):
        return "[" + w.ws() + ",".join(render(x, rnd) + w.ws() for x in value) + "]"
    if isinstance(value, dict):
        pairs = [w.string(k) + w.ws() + ":" + render(x, rnd) for k, x in value.items()]
        if value and rnd.random() < 0.2:
            # {"k":[0], ..., "k":v}: json.loads and the core keep v at k's
            # first place; move k's real pair to the end.
            k = rnd.choice(list(value))
            i = list(value).index(k)
            real = pairs.pop(i)
            pairs.insert(i, w.string(k) + ":[0]")
            pairs.append(real)
        return "{" + w.ws() + ",".join(pairs) + w.ws() + "}"
    return w.write(value)


@SETTINGS
@given(ints | floats, st.randoms(use_true_random=False))
def test_numbers_round_trip_as_repr(x, rnd):
    text = Writer(rnd).number(x).encode()
    if isinstance(x, int) and not INT64_MIN <= x <= INT64_MAX:
        try:
            want = repr(float(x))
        except OverflowError:
            expect_einval(core.canonical, text)
            return
    else:
        want = repr(x)  # int: str(x); float: the shortest round trip
    assert core.canonical(text) == want.encode()


@pytest.mark.parametrize(
    "text, want",
    [
        (b"9223372036854775807", b"9223372036854775807"),
        (b"-9223372036854775808", b"-9223372036854775808"),
        (b"9223372036854775808", b"9.223372036854776e+18"),  # just beyond: double
        (b"-9223372036854775809", b"-9.223372036854776e+18"),
        (b"18446744073709551616", b"1.8446744073709552e+19"),
        (b"-0", b"0"),
        (b"-0.0", b"-0.0"),
        (b"0e0", b"0.0"),
        (b"1E2", b"100.0"),
        (b"1e308", b"1e+308"),
        (b"1.7976931348623157e308", b"1.7976931348623157e+308"),
        (b"5e-324", b"5e-324"),
        (b"4e-324", b"5e-324"),
        (b"2.2250738585072014e-308", b"2.2250738585072014e-308"),
        (b"2.225073858507201e-308", b"2.225073858507201e-308"),
        (b"1e-400", b"0.0"),
        (b"0.30000000000000004", b"0.30000000000000004"),
        (b"0.1", b"0.1"),
        (b"1e16", b"1e+16"),
        (b"0.00001", b"1e-05"),
        (b"1700000000.5", b"1700000000.5"),
        (b"[1.0,-0,1e1]", b"[1.0,0,10.0]"),
        # Powers of two: the correctly rounded 16-digit decimal does not
        # round-trip, but its upper neighbour does and is what repr prints.
        (b"5.9604644775390625e-08", b"5.960464477539063e-08"),  # 2**-24
        (b"7.1202363472230444e-307", b"7.120236347223045e-307"),  # 2**-1017
        (b"5.8581906792798084e-244", b"5.858190679279809e-244"),
    ],
)
def test_number_edges(text, want):
    assert core.canonical(text) == want
    assert json.loads(want) == expected_value(json.loads(text))


@pytest.mark.parametrize(
    "text",
    [b"1e400", b"-1e400", b"1" * 400, b"-" + b"9" * 400, b"1.7976931348623159e308", b"[0,1e999]"],
)
def test_numbers_without_a_finite_double_are_einval(text):
    expect_einval(core.canonical, text)


# ------------------------------------------------------- 2: bad strings

BAD_UTF8 = [
    b"\x80",  # lone continuation byte
    b"\xbf",
    b"\xc0\x80",  # overlong NUL
    b"\xc1\xbf",  # overlong
    b"\xe0\x80\x80",
    b"\xe0\x9f\xbf",  # overlong 3-byte
    b"\xed\xa0\x80",  # encoded high surrogate
    b"\xed\xbf\xbf",  # encoded low surrogate
    b"\xf0\x80\x80\x80",
    b"\xf0\x8f\xbf\xbf",  # overlong 4-byte
    b"\xf4\x90\x80\x80",  # beyond U+10FFFF
    b"\xf5\x80\x80\x80",
    b"\xf8\x88\x80\x80\x80",
    b"\xfe",
    b"\xff",
    b"\xc3",  # truncated before the closing quote
    b"\xe2\x82",
    b"\xf0\x9f\x98",
    b"\xc3\x28",  # lead byte then ASCII
    b"\xe2\x28\xa1",
]
LONE_SURROGATES = [
    b"\\ud800",
    b"\\uDBFF",
    b"\\udc00",
    b"\\uDFFF",
    b"\\ud800x",
    b"\\udc00\\ud800",
    b"\\ud800\\u0041",
    b"\\ud800\\ud800",
    b"\\ud800\\n",
]

safe_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters='"\\'),
    max_size=6,
).map(lambda s: s.encode())
invalid_utf8 = st.binary(min_size=1, max_size=8).filter(lambda b: not _valid_utf8(b))


def _valid_utf8(b):
    try:
        b.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


@SETTINGS
@given(
    safe_text,
    st.sampled_from(BAD_UTF8 + LONE_SURROGATES) | invalid_utf8,
    safe_text,
    st.sampled_from(["value", "key", "nested", "array"]),
)
def test_invalid_utf8_and_lone_surrogates_are_einval(pre, bad, post, where):
    s = b'"' + pre + bad + post + b'"'
    doc = {
        "value": b'{"user":{"k":' + s + b"}}",
        "key": b'{"user":{' + s + b":1}}",
        "nested": b'{"user":{"a":{"b":' + s + b"}}}",
        "array": b'{"user":{"a":[1,' + s + b"]}}",
    }[where]
    expect_einval(core.canonical, doc)
    expect_einval(core.canonical, s)
    table = flux_annot.JobTable()
    table.annotate(7, b'{"user":{"k":"before"}}')
    expect_einval(table.annotate, 7, doc)
    assert table.get(7) == b'{"user":{"k":"before"}}'
    expect_einval(flux_annot.merge, {"user": {"k": 1}}, doc)


@pytest.mark.parametrize(
    "text, want",
    [
        (b'"\\ud83d\\ude00"', "😀".encode()),
        (b'"\\uD834\\uDD1E"', "𝄞".encode()),
        (b'"\xf0\x9f\x98\x80"', "😀".encode()),
        (b'"\\u00e9\xc3\xa9"', "éé".encode()),
        (b'"\\u0000\\u001f\\u007f"', b'"\\u0000\\u001f\x7f"'),
        (b'"\\/\\b\\f\\n\\r\\t\\"\\\\"', b'"/\\b\\f\\n\\r\\t\\"\\\\"'),
        (b'"\xef\xbb\xbf\xf4\x8f\xbf\xbf"', b'"\xef\xbb\xbf\xf4\x8f\xbf\xbf"'),
    ],
)
def test_valid_escapes_and_pairs(text, want):
    out = core.canonical(text)
    if not want.startswith(b'"'):
        want = b'"' + want + b'"'
    assert out == want
    assert json.loads(out) == json.loads(text)


# ------------------------------------------------- 3: patches vs model


def model_merge(tree, patch):
    """docs/data-model.md written plainly: RFC 7396 for object patches, plus pruning.

    Returns the new tree (a dict, never empty) or None when nothing is left.
    Python dict assignment keeps a replaced key at its place (§2 key order).
    """
    out = dict(tree) if tree else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        elif isinstance(v, dict):
            old = out.get(k)
            sub = model_merge(old if isinstance(old, dict) else None, v)
            if sub is None:
                out.pop(k, None)
            else:
                out[k] = sub
        else:
            out[k] = v
    return out or None


KEYS = ["a", "b", "c", "user", "sched", "é", "k-1", "𝄞"]
patch_scalars = st.booleans() | ints | floats | st.text(max_size=6)
patch_values = st.recursive(
    st.none() | patch_scalars | st.lists(patch_scalars | st.none() | st.just({}), max_size=3),
    lambda c: st.dictionaries(st.sampled_from(KEYS), c, max_size=4),
    max_leaves=8,
)
patches = st.dictionaries(st.sampled_from(KEYS), patch_values, max_size=4)

BAD_PATCHES = [
    b'{"a.b":1}',
    b'{"user":{"":1}}',
    b'{"user":{"x":{"y.z":null}}}',
    b"[1]",
    b"1",
    b"null",
    b'"s"',
    b"{",
    b'{"a":1}x',
    b'{"user":' * 70 + b"1" + b"}" * 70,  # deeper than the owner limit 64
    b'{"' + b"k" * 300 + b'":1}',  # key longer than 256 bytes
    b'{"a":1e400}',
]


def _nested(patch):
    """A patch as JSON bytes (non-ASCII raw, so the core decodes UTF-8)."""
    return json.dumps(patch, ensure_ascii=False).encode()


@SEQ_SETTINGS
@given(
    st.lists(
        st.tuples(st.sampled_from([1, 2, 0, 2**64 - 1]), patches | st.sampled_from(BAD_PATCHES)),
        max_size=12,
    )
)
def test_patch_sequences_match_the_model(ops):
    table = flux_annot.JobTable()
    model = {}
    for jobid, patch in ops:
        before = table.get(jobid)
        if isinstance(patch, bytes):
            expect_einval(table.annotate, jobid, patch)
            assert table.get(jobid) == before  # atomic: nothing changed
            continue
        text = _nested(patch)
        try:
            p = expected_value(patch)
        except OverflowError:  # an int with no finite double
            expect_einval(table.annotate, jobid, text)
            assert table.get(jobid) == before
            continue
        new = model_merge(model.get(jobid), p)
        old_text = py_canonical(model[jobid]) if jobid in model else None
        new_text = py_canonical(new) if new is not None else None
        changed = table.annotate(jobid, text)
        assert changed == (old_text != new_text), (model.get(jobid), patch)
        assert table.get(jobid) == new_text, (model.get(jobid), patch)
        got = flux_annot.merge(model.get(jobid), text)
        assert (got is None and new is None) or same(got, new)
        if new is None:
            model.pop(jobid, None)
        else:
            model[jobid] = new
    assert len(table) == len(model)
    for jobid in model:
        assert jobid in table


@SEQ_SETTINGS
@given(st.lists(st.tuples(st.sampled_from([5, 6, 7]), patches), min_size=1, max_size=8))
def test_annotate_many_matches_the_model(ops):
    ops = [(i, p) for i, p in ops if _finite(p)]
    table = flux_annot.JobTable()
    model, nchanged = {}, 0
    for jobid, patch in ops:
        new = model_merge(model.get(jobid), expected_value(patch))
        old = model.get(jobid)
        nchanged += (py_canonical(old) if old else None) != (py_canonical(new) if new else None)
        if new is None:
            model.pop(jobid, None)
        else:
            model[jobid] = new
    n = table.annotate_many([i for i, _ in ops], [_nested(p) for _, p in ops])
    assert n == nchanged
    for jobid in (5, 6, 7):
        assert table.get(jobid) == (py_canonical(model[jobid]) if jobid in model else None)


def _finite(patch):
    try:
        expected_value(patch)
        return True
    except OverflowError:
        return False


def test_annotate_many_stops_at_the_first_bad_patch():
    table = flux_annot.JobTable()
    with pytest.raises(flux_annot.AnnotError) as ei:
        table.annotate_many([1, 2, 3], [b'{"a":1}', b'{"a.b":1}', b'{"c":1}'])
    assert ei.value.errno == errno.EINVAL
    assert "1" in str(ei.value)  # names the failing index
    assert table.get(1) == b'{"a":1}'
    assert table.get(2) is None and table.get(3) is None


def test_spec_example_prunes_to_nothing():
    table = flux_annot.JobTable()
    assert table.annotate(1, {"a": "foo"}) is True
    assert table.annotate(1, b'{"a":{"bb":{"ccc":null}}}') is True
    assert table.get(1) is None and 1 not in table and len(table) == 0
    assert flux_annot.merge({"a": "foo"}, {"a": {"bb": {"ccc": None}}}) is None
