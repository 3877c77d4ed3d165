"""The service configuration (docs/configuration.md): a dict (or parsed TOML) → `Config`.

Every key is optional and takes the default of docs/configuration.md. An unknown key or a
bad value (wrong type, negative or zero where a positive count is needed,
unknown role name) raises `AnnotError(EINVAL, ...)` with a sentence naming
the key, so the service refuses to start rather than run with a typo.

The result is read-only in spirit and reads both ways:
``config.limits.guest_rate`` or ``config["limits"]["guest_rate"]``.
Namespace rules live in ``config.namespace`` as ``{name: Rules}`` where
``Rules.write`` / ``Rules.read`` are frozensets of role names; the table
``default`` applies to every namespace not named.

`batch_window`: the constructor argument of `AnnotationService` is used
unless the config itself has ``[batch] window``, which then wins (a file
written by the site is more deliberate than a library default).
"""

import math
from typing import Any

from flux_annot.errors import EINVAL, error

WRITER_ROLES = frozenset({"sched", "owner", "job-owner"})
READER_ROLES = frozenset({"all", "owner", "job-owner"})

# Defaults (docs/configuration.md), section → key → value.  The type of each default is
# the type a value must have (an int default also accepts only ints; a float
# default accepts ints and floats).
DEFAULTS = {
    "batch": {"window": 0.01, "max_entries": 10000},
    "events": {"backlog": 4096, "subscriber_queue_bytes": 16777216},
    # seconds a non-volatile request waits on a failing commit before ETIMEDOUT
    "store": {"commit_timeout": 5.0},
    # where `serve` offers Prometheus metrics, "ADDR:PORT" ("": nowhere; docs/operations.md)
    "metrics": {"listen": ""},
    "limits": {
        "message_bytes": 1048576,
        "guest_payload_bytes": 4096,
        "guest_namespace_bytes": 4096,
        "guest_user_total_bytes": 1048576,
        "guest_rate": 200.0,
        "guest_burst": 400,
        "depth_guest": 8,
        "depth_owner": 64,
        "key_bytes": 256,
        "object_keys": 1024,
    },
    # docs/accuracy.md: the estimate in force this many seconds before a start
    "accuracy": {"horizons": [60, 600, 3600]},
}

#: at most this many horizons (each is a column of the report)
MAX_HORIZONS = 16

# Keys that may be 0 (all others must be >= 1).
_ZERO_OK = {("batch", "window"), ("events", "backlog")}

DEFAULT_NAMESPACES = {
    "sched": {"write": ["sched"], "read": ["all"]},
    "user": {"write": ["owner", "job-owner"], "read": ["owner", "job-owner"]},
    "default": {"write": ["owner"], "read": ["owner"]},
}


class Rules:
    """Who may write / read one namespace (role names, docs/policy.md)."""

    __slots__ = ("write", "read")

    def __init__(self, write, read):
        self.write = frozenset(write)
        self.read = frozenset(read)

    def __getitem__(self, key):
        if key not in self.__slots__:
            raise KeyError(key)
        return getattr(self, key)

    def __repr__(self):
        return f"Rules(write={sorted(self.write)}, read={sorted(self.read)})"


class Section:
    """One `[table]` of the config: attribute and item access."""

    def __init__(self, values):
        self.__dict__.update(values)

    def __getitem__(self, key):
        return self.__dict__[key]

    def __iter__(self):
        return iter(self.__dict__)

    def as_dict(self):
        return dict(self.__dict__)

    def __repr__(self):
        return f"Section({self.__dict__!r})"


class Config:
    """A validated configuration (see the module docstring)."""

    # the sections, set in __init__ from DEFAULTS (attributes read as config.limits.key_bytes)
    batch: Any
    events: Any
    limits: Any
    metrics: Any
    accuracy: Any

    def __init__(self, data=None):
        if data is None:
            data = {}
        if isinstance(data, Config):
            data = data.as_dict()
        if not isinstance(data, dict):
            raise error(EINVAL, "config: must be a table (dict), not " + type(data).__name__)
        for key in data:
            if key not in DEFAULTS and key != "namespace":
                raise error(EINVAL, f"config: unknown section {_name(key)}")
        self.given = set()  # "section.key" explicitly present in the input
        for section, defaults in DEFAULTS.items():
            values = _section(data, section, defaults, self.given)
            setattr(self, section, Section(values))
        self.namespace = _namespaces(data.get("namespace", {}))

    def __getitem__(self, key):
        if key in DEFAULTS or key == "namespace":
            return getattr(self, key)
        raise KeyError(key)

    def rules(self, ns):
        """The Rules of namespace `ns` (the `default` table when not named)."""
        r = self.namespace.get(ns)
        return r if r is not None else self.namespace["default"]

    def as_dict(self):
        """The full config (defaults filled in) as plain dicts and lists."""
        out = {s: getattr(self, s).as_dict() for s in DEFAULTS}
        out["namespace"] = {
            n: {"write": sorted(r.write), "read": sorted(r.read)}
            for n, r in self.namespace.items()
        }
        return out


def _name(key):
    return repr(key) if isinstance(key, str) else f"{key!r} ({type(key).__name__})"


def _section(data, section, defaults, given):
    raw = data.get(section, {})
    if not isinstance(raw, dict):
        raise error(EINVAL, f"config: [{section}] must be a table, not {type(raw).__name__}")
    for key in raw:
        if key not in defaults:
            raise error(EINVAL, f"config: unknown key {section}.{key}")
    values = {}
    for key, default in defaults.items():
        if key in raw:
            values[key] = _value(section, key, raw[key], default)
            given.add(f"{section}.{key}")
        else:
            values[key] = list(default) if isinstance(default, list) else default
    return values


def _horizons(where, value):
    """A list of distinct positive finite numbers of seconds, at most MAX_HORIZONS."""
    if not isinstance(value, (list, tuple)):
        raise error(EINVAL, f"config: {where} must be a list of seconds, not {type(value).__name__}")
    if len(value) > MAX_HORIZONS:
        raise error(EINVAL, f"config: {where} has {len(value)} horizons (at most {MAX_HORIZONS})")
    out = []
    for h in value:
        if isinstance(h, bool) or not isinstance(h, (int, float)) or not math.isfinite(h) or h <= 0:
            raise error(EINVAL, f"config: {where}: {h!r} is not a positive number of seconds")
        if h in out:
            raise error(EINVAL, f"config: {where}: {h!r} is given twice")
        out.append(h)
    return out


def _value(section, key, value, default):
    where = f"{section}.{key}"
    if isinstance(default, str):
        if not isinstance(value, str):
            raise error(EINVAL, f"config: {where} must be a string, not {type(value).__name__}")
        return value  # its own syntax is checked where it is used (metrics.parse_listen)
    if isinstance(default, list):
        return _horizons(where, value)
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise error(EINVAL, f"config: {where} must be a number, not {type(value).__name__}")
        value = float(value)
        if not math.isfinite(value):
            raise error(EINVAL, f"config: {where} must be a finite number")
    else:
        if isinstance(value, bool) or not isinstance(value, int):
            raise error(EINVAL, f"config: {where} must be an integer, not {type(value).__name__}")
    if value < 0:
        raise error(EINVAL, f"config: {where} must not be negative (got {value})")
    if value == 0 and (section, key) not in _ZERO_OK:
        raise error(EINVAL, f"config: {where} must be positive (got 0)")
    if isinstance(default, int) and value >= 1 << 32:
        raise error(EINVAL, f"config: {where} is too large (got {value})")
    return value


def _roles(where, value, allowed):
    if not isinstance(value, (list, tuple)):
        raise error(EINVAL, f"config: {where} must be a list of role names")
    for role in value:
        if role not in allowed:
            raise error(
                EINVAL,
                f"config: {where}: unknown role {_name(role)} "
                f"(expected one of {', '.join(sorted(allowed))})",
            )
    return value


def _namespaces(raw):
    if not isinstance(raw, dict):
        raise error(EINVAL, f"config: [namespace] must be a table, not {type(raw).__name__}")
    out = {n: Rules(r["write"], r["read"]) for n, r in DEFAULT_NAMESPACES.items()}
    for ns, table in raw.items():
        if not isinstance(ns, str) or not ns or "." in ns:
            raise error(EINVAL, f"config: namespace name {_name(ns)} is not a valid key")
        if not isinstance(table, dict):
            raise error(EINVAL, f"config: [namespace.{ns}] must be a table")
        for key in table:
            if key not in ("write", "read"):
                raise error(EINVAL, f"config: unknown key namespace.{ns}.{key}")
        base = out.get(ns, out["default"])
        write = _roles(f"namespace.{ns}.write", table.get("write", sorted(base.write)), WRITER_ROLES)
        read = _roles(f"namespace.{ns}.read", table.get("read", sorted(base.read)), READER_ROLES)
        out[ns] = Rules(write, read)
    return out
