"""Job ids (docs/data-model.md, Flux RFC 19): parse and print.

A job id is an unsigned 64-bit integer. Users type it as decimal, `0x` hex,
F58 (`ƒ` or ASCII `f` prefix, base 58 with the Bitcoin alphabet) or RFC 19
"dothex" (`0000.0000.0000.0000`), with blanks around it ignored, as Flux's
`fluid_parse()` does. We print F58 by default, with the `ƒ` prefix when the
output can carry it (UTF-8), the ASCII `f` otherwise.

`JobID` is an `int` with the RFC 19 spellings as attributes, so a format
string can say `{id.f58}`, `{id.dec}`, `{id.hex}` or `{id.dothex}` (as in
`flux jobs`); `str(JobID)` and `format(JobID, "<12")` give F58, a numeric
format type (`{id:d}`, `{id:x}`) gives the number.
"""

import codecs
import functools
import locale
import sys

from flux_annot.errors import EINVAL, AnnotValueError

F58_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
F58_PREFIX = "\u0192"  # ƒ  LATIN SMALL LETTER F WITH HOOK
F58_ASCII_PREFIX = "f"
MAX_ID = 2**64 - 1

_F58_DIGITS = {c: i for i, c in enumerate(F58_ALPHABET)}
_MAX_F58_LEN = 11  # 58**11 > 2**64: a longer string cannot be a job id
_HEXDIGITS = frozenset("0123456789abcdefABCDEF")


def _bad(text, why):
    shown = text if len(text) <= 40 else text[:40] + "..."
    return AnnotValueError(EINVAL, f"invalid job id {shown!r}: {why}")


def _check_range(value, text):
    if value > MAX_ID:
        raise _bad(text, "out of range (job ids are unsigned 64-bit)")
    return value


def _parse_f58(text, digits):
    if not digits:
        raise _bad(text, "no F58 digits after the prefix")
    if len(digits) > _MAX_F58_LEN:
        raise _bad(text, "out of range (job ids are unsigned 64-bit)")
    value = 0
    for c in digits:
        d = _F58_DIGITS.get(c)
        if d is None:
            raise _bad(text, f"{c!r} is not an F58 digit")
        value = value * 58 + d
    return _check_range(value, text)


def _parse_dothex(text, s):
    parts = s.split(".")
    if len(parts) != 4 or not all(1 <= len(p) <= 4 and set(p) <= _HEXDIGITS for p in parts):
        raise _bad(text, "dothex ids are four groups of 1-4 hex digits (0000.0000.0000.0000)")
    value = 0
    for p in parts:
        value = (value << 16) | int(p, 16)
    return value


def parse_jobid(text):
    """Return the job id that `text` spells, as an `int`.

    Accepts an `int` in range too. Raises `AnnotValueError` (a `ValueError`,
    errno EINVAL) with a sentence saying what is wrong.
    """
    if isinstance(text, int) and not isinstance(text, bool):
        if 0 <= text <= MAX_ID:
            return int(text)
        raise AnnotValueError(EINVAL, f"invalid job id {text}: out of range (job ids are unsigned 64-bit)")
    if not isinstance(text, str):
        raise AnnotValueError(EINVAL, f"invalid job id {text!r}: not a string or an integer")
    s = text.strip()
    if not s:
        raise _bad(text, "empty")
    if "." in s:
        return _parse_dothex(text, s)
    if s.startswith(F58_PREFIX):
        return _parse_f58(text, s[len(F58_PREFIX):])
    if s.startswith(F58_ASCII_PREFIX):
        return _parse_f58(text, s[len(F58_ASCII_PREFIX):])
    if s[:2] in ("0x", "0X"):
        digits = s[2:]
        if not digits or not set(digits) <= _HEXDIGITS:
            raise _bad(text, "not a hex number after 0x")
        return _check_range(int(digits, 16), text)
    # str.isdigit() accepts other scripts' digits and superscripts: be strict.
    if not s.isascii() or not s.isdigit():
        raise _bad(text, "expected decimal, 0x hex, F58 (ƒ... or f...) or dothex")
    if len(s) > 20:
        raise _bad(text, "out of range (job ids are unsigned 64-bit)")
    return _check_range(int(s), text)


@functools.lru_cache(maxsize=8)
def _is_utf8(encoding):
    try:
        return codecs.lookup(encoding).name == "utf-8"
    except (LookupError, TypeError):
        return False


def output_is_utf8(stream=None):
    """True if text written to `stream` (default: stdout) may hold `ƒ`.

    The stream's encoding decides (it follows the locale and
    PYTHONIOENCODING); without one, the locale's preferred encoding.
    """
    if stream is None:
        stream = sys.stdout
    enc = getattr(stream, "encoding", None)
    if not enc:
        enc = locale.getpreferredencoding(False)
    return _is_utf8(enc)


def encode_f58(value, ascii=None):
    """F58 spelling of `value`: `ƒ...`, or `f...` if `ascii` (default:
    when stdout is not UTF-8). F58 of 0 is `ƒ1`."""
    value = parse_jobid(value) if not isinstance(value, int) else value
    if not 0 <= value <= MAX_ID:
        raise AnnotValueError(EINVAL, f"invalid job id {value}: out of range (job ids are unsigned 64-bit)")
    if ascii is None:
        ascii = not output_is_utf8()
    digits = []
    while True:
        value, d = divmod(value, 58)
        digits.append(F58_ALPHABET[d])
        if not value:
            break
    return (F58_ASCII_PREFIX if ascii else F58_PREFIX) + "".join(reversed(digits))


_INT_TYPES = frozenset("bcdoxXn")


class JobID(int):
    """A job id: an `int` that prints as F58 and knows its RFC 19 forms."""

    __slots__ = ()

    def __new__(cls, value):
        return super().__new__(cls, parse_jobid(value))

    @property
    def dec(self):
        return int(self)

    @property
    def hex(self):
        return f"0x{int(self):x}"

    @property
    def f58(self):
        return encode_f58(int(self))

    @property
    def f58plain(self):
        return encode_f58(int(self), ascii=True)

    @property
    def dothex(self):
        v = int(self)
        return f"{v >> 48:04x}.{(v >> 32) & 0xFFFF:04x}.{(v >> 16) & 0xFFFF:04x}.{v & 0xFFFF:04x}"

    def __str__(self):
        return self.f58

    def __repr__(self):
        return f"JobID({int(self)})"

    def __format__(self, spec):
        if spec and spec[-1] in _INT_TYPES:
            return int.__format__(int(self), spec)
        return format(self.f58, spec)
