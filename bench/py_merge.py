#!/usr/bin/env python3
"""Anchor: the annotation path written in plain Python, as a Python service would.

Per operation: decode the patch, merge it into the job's annotations
(objects recurse, null deletes, emptied objects are pruned), and encode the
job's whole annotations for its event. With --orjson, orjson decodes and
encodes (the fastest Python JSON library); otherwise the stdlib json.

    python bench/py_merge.py OPS_FILE [--orjson]

prints `ops_per_s=... digest=...` (the digest of bench/workload.py).
"""

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from workload import digest  # noqa: E402


def merge(tree, patch):
    """Merge `patch` into the dict `tree` in place (merge rules of
    docs/data-model.md: null deletes, objects recurse, empties pruned)."""
    for key, value in patch.items():
        if value is None:
            tree.pop(key, None)
        elif isinstance(value, dict):
            sub = tree.get(key)
            if not isinstance(sub, dict):
                sub = tree[key] = {}
            merge(sub, value)
            if not sub:
                del tree[key]
        else:
            tree[key] = value


def codec(use_orjson):
    """(name, loads, dumps) of the JSON library the anchor times."""
    if use_orjson:
        import orjson
        return "python-orjson-merge", orjson.loads, orjson.dumps
    return ("python-json-merge", json.loads,
            json.JSONEncoder(separators=(",", ":")).encode)


def apply(ops, loads, dumps, clock=time.perf_counter):
    """Apply (jobid, patch text) in order → (seconds by `clock`, jobs, event bytes)."""
    jobs = {}
    out = 0
    t0 = clock()
    for jobid, text in ops:
        tree = jobs.get(jobid)
        if tree is None:
            tree = jobs[jobid] = {}
        merge(tree, loads(text))
        out += len(dumps(tree))
    return clock() - t0, jobs, out


def main(argv):
    name, loads, dumps = codec("--orjson" in argv)
    ops = []
    with open(argv[1]) as f:
        for line in f:
            jobid, patch = line.split(" ", 1)
            ops.append((int(jobid), patch))
    dt, jobs, out = apply(ops, loads, dumps)
    print(f"{name} ops={len(ops)} seconds={dt:.3f} ops_per_s={len(ops) / dt:.0f} "
          f"event_bytes={out} digest={digest(jobs.items())}")


if __name__ == "__main__":
    main(sys.argv)
