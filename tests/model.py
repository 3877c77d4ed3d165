"""An obviously-correct pure-Python model of docs/data-model.md (merge + pruning) and
of the canonical text the C core writes. Property tests compare the core
against it."""

import json

INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1


def merge(tree, patch):
    """docs/data-model.md: merge dict `patch` into `tree` (dict or None, already pruned).

    null deletes; object into object recurses; object into anything else is
    merged into an empty object; any other value replaces (keeping the key's
    place); objects left empty are removed, up to the root (None).
    """
    result = dict(tree) if tree else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict):
            old = result.get(key)
            merged = merge(old if isinstance(old, dict) else None, value)
            if merged is None:
                result.pop(key, None)
            else:
                result[key] = merged
        else:
            result[key] = value
    return result or None


def prune(tree):
    """The data-model reading of a tree: nulls and empty objects removed."""
    return merge(None, tree) if tree else None


def normalize(value):
    """Numbers as the core keeps them: int64 ints stay, other ints are doubles."""
    if isinstance(value, bool) or value is None or isinstance(value, (str, float)):
        return value
    if isinstance(value, int):
        return value if INT64_MIN <= value <= INT64_MAX else float(value)
    if isinstance(value, list):
        return [normalize(v) for v in value]
    return {k: normalize(v) for k, v in value.items()}


def canonical(value):
    """The canonical compact text of a value (bytes), or None for None."""
    if value is None:
        return None
    return json.dumps(normalize(value), separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")
