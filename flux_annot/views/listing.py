"""Listing formats (docs/cli.md): `flux jobs`-style format strings over job dicts.

A job dict is what `get`/`list` return: `{"id", "userid", "state",
"annotations"}`. A format is a Python format string whose fields are:

    {id} {id.f58} {id.dec} {id.hex} {id.dothex}   job id (F58 by default)
    {userid} {username} {state} {state_single}
    {exception} {exception.note}                 note of a denied/canceled job
    {annotations} {annotations.NS.KEY...}        whole tree, or one value
    {sched.KEY...} {user.KEY...} {sched} {user}  shortcuts for annotations.NS

plus the extra names a caller declares (`watch` adds `{seq}` and `{event}`).

Why we parse the fields ourselves: `string.Formatter.get_field` reads
`a.b` as attribute access and `a[b]` as indexing, so annotation keys that
are not Python identifiers (`a-b`, `1a`, `class`, `ünï`, `12`) cannot be
reached, and one odd key in one job's memo would break every listing (as it
does in Flux). Here the field name is split on `.` and each step is a plain
dict key (or a list index), so every key that docs/data-model.md allows works except
the characters the format syntax itself reserves (`:`, `!`, `{`, `}`).

Robustness rules, so that nothing in one job's annotations can break the
listing of other fields or other jobs:

- a missing value prints as empty, still padded by the format spec;
- an object or array prints as compact JSON, cut at `JSON_LIMIT` characters
  with an iterative encoder (a memo 1000 levels deep is fine);
- a value whose type does not suit the spec (`{sched.t_estimate:.1f}` on a
  string) prints as a plain string with only the spec's fill, alignment,
  width and precision;
- control characters in strings are escaped (`\\n`, `\\x1b`): a guest's memo
  cannot inject terminal escape sequences into the owner's listing.

Conversions as in flux jobs: `!d` (timestamp → local date/time; the spec is
a strftime format, optionally followed by `::` and a normal spec, e.g.
`{sched.t_estimate!d:%H:%M:%S::>8}`), `!D` (the same, empty for 0), `!F`
(duration in Flux Standard Duration, `1.5m`), `!H` (duration as H:MM:SS).
Spec suffixes as in flux jobs: `h` prints `-` for an empty value, `+`
marks a value cut by the precision with a trailing `+`.
"""

import datetime
import json
import pwd
import re
import string

from flux_annot.ids import JobID

STATES = ("NEW", "DEPEND", "PRIORITY", "SCHED", "RUN", "CLEANUP", "INACTIVE")
STATE_SINGLE = {s: s[0] for s in STATES}
ACTIVE_STATES = STATES[:-1]
_STATE_ALIASES = {
    "pending": ("NEW", "DEPEND", "PRIORITY", "SCHED"),
    "running": ("RUN", "CLEANUP"),
    "active": ACTIVE_STATES,
    "inactive": ("INACTIVE",),
    "all": STATES,
}

JSON_LIMIT = 256  # characters of compact JSON shown for one object field
ELLIPSIS = "…"

DEFAULT_FORMAT = (
    "{id.f58:>12} {username:<8.8} {state:<8.8} {sched.jobs_ahead:>5} "
    "{sched.t_estimate!d:%H:%M:%S::>10} {sched.reason_pending:<24.24+} "
    "{sched.resource_summary:<18.18+} {user}"
)

# Headings of flux jobs (flux-core JobInfoFormat.headings) for the fields we
# have; `user` is MEMO rather than flux's USER, which collides with
# `{username}`; `sched.jobs_ahead` (written by flux-core's sched-simple)
# gets a short one so default columns stay narrow.
HEADINGS = {
    "id": "JOBID",
    "id.f58": "JOBID",
    "id.f58plain": "JOBID",
    "id.dec": "JOBID",
    "id.hex": "JOBID",
    "id.dothex": "JOBID",
    "userid": "UID",
    "username": "USER",
    "state": "STATE",
    "state_single": "ST",
    "exception": "EXCEPTION-NOTE",
    "exception.note": "EXCEPTION-NOTE",
    "annotations": "ANNOTATIONS",
    "sched": "SCHED",
    "user": "MEMO",
    "sched.t_estimate": "T_ESTIMATE",
    "sched.reason_pending": "REASON",
    "sched.resource_summary": "RESOURCES",
    "sched.jobs_ahead": "AHEAD",
}

_JOB_FIELDS = ("id", "userid", "username", "state", "state_single", "exception", "annotations")
_ID_FORMS = ("f58", "f58plain", "dec", "hex", "dothex")
_CONVERSIONS = ("s", "r", "a", "d", "D", "F", "H", None)


class _Missing:
    """A field with no value: prints as empty."""

    __slots__ = ()

    def __format__(self, spec):
        return ""

    def __str__(self):
        return ""


MISSING = _Missing()

# Control characters (C0, DEL, C1, line/paragraph separators) → escapes.
_ESCAPES = {c: f"\\x{c:02x}" for c in list(range(0x20)) + [0x7F] + list(range(0x80, 0xA0))}
_ESCAPES.update({0x0A: "\\n", 0x0D: "\\r", 0x09: "\\t", 0x2028: "\\u2028", 0x2029: "\\u2029"})
_ESCAPE_RE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def sanitize(text):
    """`text` with control characters escaped, safe for one terminal line."""
    if _ESCAPE_RE.search(text) is None:
        return text
    return text.translate(_ESCAPES)


def _scalar_json(v):
    if v is True:
        return "true"
    if v is False:
        return "false"
    if v is None:
        return "null"
    if isinstance(v, (int, float)):
        try:
            return json.dumps(v)
        except ValueError:  # int too long for str(): cannot come from JSON
            return '"?"'
    return json.dumps(v if isinstance(v, str) else str(v), ensure_ascii=False)


def iter_json(value):
    """Compact JSON of `value` in pieces, without recursion (any depth)."""
    frames = []  # [iterator, is_object, first]
    v = value
    while True:
        if isinstance(v, dict):
            yield "{"
            frames.append([iter(v.items()), True, True])
        elif isinstance(v, (list, tuple)):
            yield "["
            frames.append([iter(v), False, True])
        else:
            yield _scalar_json(v)
        while frames:
            top = frames[-1]
            try:
                item = next(top[0])
            except StopIteration:
                frames.pop()
                yield "}" if top[1] else "]"
                continue
            if not top[2]:
                yield ","
            top[2] = False
            if top[1]:
                k, v = item
                yield _scalar_json(k if isinstance(k, str) else str(k)) + ":"
            else:
                v = item
            break
        else:
            return


def compact_json(value, limit=JSON_LIMIT):
    """Compact JSON of `value`, cut to `limit` characters (ending in …)."""
    out = []
    n = 0
    for piece in iter_json(value):
        out.append(piece)
        n += len(piece)
        if limit is not None and n > limit:
            return "".join(out)[: limit - 1] + ELLIPSIS
    return "".join(out)


_SPEC_RE = re.compile(
    r"^(?:(?P<fill>.)?(?P<align>[<>=^]))?(?P<sign>[-+ ])?z?#?(?P<zero>0)?"
    r"(?P<width>\d+)?[,_]?(?:\.(?P<precision>\d+))?(?P<type>[a-zA-Z%])?$",
    re.DOTALL,
)


_NUMERIC_TYPES = frozenset("bcdoxXneEfFgGn%")


def _string_spec(spec):
    """The part of a format spec that applies to any string (fill, align,
    width, precision), or "" if the spec is not a standard one."""
    m = _SPEC_RE.match(spec)
    if not m:
        return ""
    align = m.group("align")
    if align == "=":
        align = ">"
    out = ""
    if align:
        out = (m.group("fill") or "") + align
    elif m.group("zero") or m.group("type") in _NUMERIC_TYPES:
        out = ">"  # numbers align right: keep their column's look
    if m.group("width"):
        out += m.group("width")
    # A precision cuts strings, but for a number it counts decimals.
    if m.group("precision") and m.group("type") in (None, "s"):
        out += "." + m.group("precision")
    return out


def _safe_format(value, spec):
    """format(value, spec), falling back to a padded plain string."""
    try:
        return format(value, spec)
    except (ValueError, TypeError, OverflowError):
        pass
    try:
        return format(str(value), _string_spec(spec))
    except (ValueError, TypeError):
        return str(value)


def fsd(seconds):
    """Flux Standard Duration (RFC 23), as flux jobs' `!F`."""
    s = float(seconds)
    if s != s or s in (float("inf"), float("-inf")):
        raise ValueError("not a finite duration")
    if s < 60.0:
        return f"{s:.4g}s"
    if s < 3600.0:
        return f"{s / 60:.4g}m"
    if s < 86400.0:
        return f"{s / 3600:.4g}h"
    return f"{s / 86400:.4g}d"


def hms(seconds):
    """Duration as H:MM:SS, as flux jobs' `!H`."""
    s = int(round(float(seconds)))
    sign = "-" if s < 0 else ""
    h, rem = divmod(abs(s), 3600)
    m, sec = divmod(rem, 60)
    return f"{sign}{h}:{m:02d}:{sec:02d}"


def _is_number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


class _Field:
    __slots__ = ("literal", "name", "path", "kind", "conversion", "spec", "dash", "plus", "time_spec")

    def __init__(self, literal, name, conversion, spec, extra_fields):
        self.literal = literal
        self.name = name
        self.conversion = conversion
        if conversion not in _CONVERSIONS:
            raise ValueError(f"unknown conversion !{conversion} in field {{{name}}}")
        if "{" in spec or "}" in spec:
            raise ValueError(f"nested fields are not supported in the spec of {{{name}}}")
        self.time_spec = None
        if conversion in ("d", "D"):
            tspec, sep, rest = spec.partition("::")
            self.time_spec = tspec or "%Y-%m-%dT%H:%M:%S"
            spec = rest if sep else ""
        self.dash = spec.endswith("h")
        if self.dash:
            spec = spec[:-1]
        self.plus = spec.endswith("+")
        if self.plus:
            spec = spec[:-1]
        self.spec = spec
        steps = name.split(".")
        head = steps[0]
        if head in extra_fields and len(steps) == 1:
            self.kind, self.path = "extra", head
        elif head == "id" and (len(steps) == 1 or (len(steps) == 2 and steps[1] in _ID_FORMS)):
            self.kind, self.path = "id", steps[1] if len(steps) == 2 else None
        elif head in ("userid", "username", "state", "state_single") and len(steps) == 1:
            self.kind, self.path = head, None
        elif name in ("exception", "exception.note"):
            self.kind, self.path = "exception", None  # the note of a DENY / canceled job
        elif head == "annotations":
            self.kind, self.path = "annotations", steps[1:]
        elif head in ("sched", "user"):
            self.kind, self.path = "annotations", steps
        else:
            known = ", ".join(_JOB_FIELDS + ("sched.KEY", "user.KEY") + tuple(extra_fields))
            raise ValueError(f"unknown format field {{{name}}} (known: {known})")
        if any(s == "" for s in steps):
            raise ValueError(f"empty key in format field {{{name}}}")

    def heading(self):
        name = self.name
        h = HEADINGS.get(name)
        if h is None and name.startswith("annotations."):
            h = HEADINGS.get(name[len("annotations."):])
            if h is None:
                h = name[len("annotations."):].upper()
        if h is None:
            h = name.upper()
        return _safe_format(h, _string_spec(self.spec))

    def value(self, job, extra):
        kind = self.kind
        if kind == "annotations":
            v = job.get("annotations")
            for step in self.path:
                if isinstance(v, dict):
                    v = v.get(step, MISSING)
                elif isinstance(v, list) and step.isascii() and step.isdigit():
                    i = int(step)
                    v = v[i] if i < len(v) else MISSING
                else:
                    return MISSING
            return MISSING if v is None else v
        if kind == "id":
            raw = job.get("id")
            if raw is None:
                return MISSING
            jid = JobID(raw)
            return jid if self.path is None else getattr(jid, self.path)
        if kind == "extra":
            v = extra.get(self.path, MISSING) if extra else MISSING
            return MISSING if v is None else v
        if kind == "state_single":
            st = job.get("state")
            return STATE_SINGLE.get(st, MISSING) if st is not None else MISSING
        if kind == "username":
            uid = job.get("userid")
            return MISSING if uid is None else username(uid)
        v = job.get(kind)
        return MISSING if v is None else v

    def render(self, job, extra):
        try:
            v = self.value(job, extra)
        except Exception:  # a bad id or uid in one job must not stop the listing
            v = MISSING
        spec = self.spec
        if v is MISSING:
            text = "-" if self.dash else ""
            return _safe_format(text, _string_spec(spec))
        conv = self.conversion
        if conv is not None:
            v = self._convert(v, conv)
        if isinstance(v, (dict, list)):
            v = compact_json(v)
        elif isinstance(v, bool):
            v = "true" if v else "false"
        elif isinstance(v, str):
            v = sanitize(v)
        elif not _is_number(v) and not isinstance(v, JobID):
            v = sanitize(str(v))
        if self.plus and isinstance(v, str):
            m = _SPEC_RE.match(spec)
            prec = m.group("precision") if m else None
            if prec is not None and len(v) > int(prec) > 0:
                v = v[: int(prec) - 1] + "+"
        if self.dash and v == "":
            v = "-"
        return _safe_format(v, spec)

    def _convert(self, v, conv):
        try:
            if conv == "s":
                return v if isinstance(v, str) else compact_json(v) if isinstance(v, (dict, list)) else str(v)
            if conv == "r":
                return repr(v)
            if conv == "a":
                return ascii(v)
            if not _is_number(v):
                return v  # wrong type: shown as it is
            if conv in ("d", "D"):
                if conv == "D" and v == 0:
                    return ""
                return datetime.datetime.fromtimestamp(v).strftime(self.time_spec)
            if conv == "F":
                return fsd(v)
            if conv == "H":
                return hms(v)
        except (ValueError, OverflowError, OSError, TypeError):
            pass
        return v


_usernames = {}


def username(uid):
    """The login name of `uid`, or the number as a string."""
    name = _usernames.get(uid)
    if name is None:
        try:
            name = pwd.getpwuid(int(uid)).pw_name
        except (KeyError, ValueError, OverflowError, TypeError):
            name = str(uid)
        _usernames[uid] = name
    return name


class JobFormat:
    """A parsed format string: `header()` and `format(job)`.

    Raises `ValueError` with a sentence at construction for a bad format
    (unbalanced braces, unknown field, unknown conversion); `format` never
    raises for any job dict.
    """

    def __init__(self, fmt, extra_fields=()):
        self.fmt = fmt
        self._fields = []
        self._tail = ""
        try:
            parsed = list(string.Formatter().parse(fmt))
        except ValueError as e:
            raise ValueError(f"bad format string: {e}") from None
        pending = ""
        for literal, name, spec, conv in parsed:
            pending += literal
            if name is None:
                continue
            if name == "" or name.isdigit():
                raise ValueError("format fields need a name, e.g. {id} or {sched.t_estimate}")
            self._fields.append(_Field(pending, name, conv, spec or "", tuple(extra_fields)))
            pending = ""
        self._tail = pending

    @property
    def fields(self):
        return [f.name for f in self._fields]

    def header(self):
        parts = []
        for f in self._fields:
            parts.append(f.literal)
            parts.append(f.heading())
        parts.append(self._tail)
        return "".join(parts).rstrip()

    def format(self, job, extra=None):
        parts = []
        for f in self._fields:
            parts.append(f.literal)
            parts.append(f.render(job, extra))
        parts.append(self._tail)
        return "".join(parts).rstrip()


def parse_states(text):
    """A comma list of state names, single letters (`S,R`) or flux's
    aliases (`pending`, `running`, `active`, `inactive`, `all`) → names."""
    out = []
    for word in text.split(","):
        w = word.strip()
        if not w:
            continue
        up = w.upper()
        if up in STATES:
            names = (up,)
        elif len(w) == 1 and up in STATE_SINGLE.values():
            names = tuple(s for s in STATES if s[0] == up)
        elif w.lower() in _STATE_ALIASES:
            names = _STATE_ALIASES[w.lower()]
        else:
            raise ValueError(
                f"unknown state {w!r}: use {', '.join(STATES)}, their first letters, "
                "or pending, running, active, inactive, all"
            )
        for n in names:
            if n not in out:
                out.append(n)
    if not out:
        raise ValueError("no state given")
    return out


_ORDER = {s: (0 if s in _STATE_ALIASES["pending"] else 1 if s in ("RUN", "CLEANUP") else 2) for s in STATES}


def sort_jobs(jobs):
    """flux jobs order: pending first (queue order, oldest id first), then
    running and inactive (newest first)."""

    def key(job):
        group = _ORDER.get(job.get("state"), 3)
        jid = job.get("id") if isinstance(job.get("id"), int) else 0
        return (group, jid if group == 0 else -jid)

    return sorted(jobs, key=key)
