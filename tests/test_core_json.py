"""The canonical encoder: numbers, strings, UTF-8, limits of the parser."""

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flux_annot import AnnotValueError
from flux_annot.core import canonical


@pytest.mark.parametrize(
    "text, want",
    [
        (b"1700000123.5", b"1700000123.5"),
        (b"-0", b"0"),
        (b"-0.0", b"-0.0"),
        (b"0.000", b"0.0"),
        (b"1.50", b"1.5"),
        (b"100", b"100"),
        (b"1E2", b"100.0"),
        (b"1e16", b"1e+16"),
        (b"1234567890123456.0", b"1234567890123456.0"),
        (b"12345678901234567.0", b"1.2345678901234568e+16"),
        (b"0.0001", b"0.0001"),
        (b"0.00001", b"1e-05"),
        (b"0.1", b"0.1"),
        (b"9223372036854775807", b"9223372036854775807"),
        (b"-9223372036854775808", b"-9223372036854775808"),
        (b"9223372036854775808", b"9.223372036854776e+18"),
        (b"1e-400", b"0.0"),
        (b"5e-324", b"5e-324"),
        (b"2.5E-3", b"0.0025"),
        (b"123456789012345.678", b"123456789012345.67"),
    ],
)
def test_numbers(text, want):
    assert canonical(text) == want


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_doubles_print_like_python_repr(x):
    for text in (repr(x), f"{x:.17e}", f"{x:.20E}"):
        assert canonical(text.encode()) == repr(x).encode()


@given(st.integers(-(2**63), 2**63 - 1))
def test_int64_stay_integers(n):
    assert canonical(str(n).encode()) == str(n).encode()


@pytest.mark.parametrize("text", [b"1e400", b"-1e400", b"[1.8e308]"])
def test_overflow_is_einval(text):
    with pytest.raises(AnnotValueError, match="number out of range"):
        canonical(text)


def test_strings():
    assert canonical(b'"\\u00e9\\/\\n\\t\\r\\b\\f\\u0001\\u001f\\"\\\\"') == \
        '"é/\\n\\t\\r\\b\\f\\u0001\\u001f\\"\\\\"'.encode()
    assert canonical(b'"\\ud83d\\ude00"') == '"😀"'.encode()
    assert canonical('"\u2028\x7f"'.encode()) == '"\u2028\x7f"'.encode()
    assert canonical(b'"\\u0000"') == b'"\\u0000"'


@given(st.text())
def test_strings_match_python_dumps(s):
    want = json.dumps(s, ensure_ascii=False).encode("utf-8", "surrogatepass")
    try:
        want.decode("utf-8")
    except UnicodeDecodeError:  # lone surrogates: not valid UTF-8, rejected
        with pytest.raises(AnnotValueError):
            canonical(json.dumps(s).encode())
        return
    assert canonical(json.dumps(s).encode()) == want  # from \u escapes
    assert canonical(want) == want                     # from raw UTF-8


@pytest.mark.parametrize(
    "text, msg",
    [
        (b'"\xc0\xaf"', "invalid UTF-8"),          # overlong
        (b'"\xed\xa0\x80"', "invalid UTF-8"),      # encoded surrogate
        (b'"\xf4\x90\x80\x80"', "invalid UTF-8"),  # > U+10FFFF
        (b'"\xe2\x82"', "invalid UTF-8"),          # truncated
        (b'"\\udc00"', "lone surrogate"),
        (b'"\\ud800\\u0041"', "lone surrogate"),
        (b'"abc', "unterminated string"),
        (b'"\\u12"', "invalid \\u escape"),
        (b"[1,]", "expected a value"),
        (b"[01]", "leading zero"),
        (b"[.5]", "expected a value"),
        (b"[1.]", "invalid number"),
        (b"[1e]", "invalid number"),
        (b"[-]", "invalid number"),
        (b"tru", "expected a value"),
        (b"\x0c1", "expected a value"),  # form feed is not whitespace
        (b"", "unexpected end of input"),
        (b"1 2", "trailing data"),
    ],
)
def test_syntax_errors(text, msg):
    with pytest.raises(AnnotValueError) as ei:
        canonical(text)
    assert msg in str(ei.value) and ei.value.errno == 22


def test_inputs_are_not_read_past_their_length():
    # every prefix of a valid text is either valid or a clean EINVAL
    text = '{"a":[1,2.5,"x\\u00e9",{"b":null}],"c":true}'.encode()
    for i in range(len(text)):
        try:
            canonical(text[:i])
        except AnnotValueError:
            pass


def test_deep_nesting_fails_fast_without_recursion():
    with pytest.raises(AnnotValueError, match="nesting depth exceeds"):
        canonical(b"[" * 100_000)
    with pytest.raises(AnnotValueError, match="nesting depth exceeds"):
        canonical(b'{"a":' * 100_000)
    ok = b"[" * 1000 + b"]" * 1000
    assert canonical(ok) == ok


def test_canonical_keeps_nulls_and_empty_objects():
    assert canonical(b' { "a" : null , "b" : { } , "c":[ ] } ') == b'{"a":null,"b":{},"c":[]}'


def test_many_keys_use_the_index():
    obj = {f"k{i}": i for i in range(3000)}
    text = json.dumps(obj).encode()
    assert json.loads(canonical(text)) == obj
    dup = b"{" + b",".join(b'"k%d":%d' % (i % 100, i) for i in range(1000)) + b"}"
    assert json.loads(canonical(dup)) == json.loads(dup)
