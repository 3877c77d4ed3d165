"""Helpers that run the shared anchors (../shared/anchors) for bench/run.py.

- `workload(njobs, ncycles)`: the standard workload as (jobid, patch bytes)
  pairs, byte-identical to the lines `workload.py` writes.
- `run_orjson(ops)`: py_merge.py's logic with orjson, in this process.
- `run_jansson(ops_file)`: compile jansson_merge.c and run it (None if it
  cannot be built here).
- `digest(trees)`: the anchors' state digest.
"""

import importlib.util
import json
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

ANCHORS = Path(__file__).resolve().parents[2] / "shared" / "anchors"


def _load(name):
    spec = importlib.util.spec_from_file_location(f"_anchor_{name}", ANCHORS / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def workload(njobs=10_000, ncycles=5):
    wl = _load("workload")
    return [(jid, json.dumps(p, separators=(",", ":")).encode())
            for jid, p in wl.ops(njobs, ncycles)]


def write_ops(ops, path):
    with open(path, "wb") as f:
        for jid, p in ops:
            f.write(b"%d %s\n" % (jid, p))


def digest(items):
    """items: (jobid, tree dict) in any order; the anchors' djb2 digest."""
    h = 5381
    for jid, tree in sorted(items):
        if not tree:
            continue
        s = f"{jid}:" + json.dumps(tree, separators=(",", ":"), sort_keys=True)
        for c in s.encode():
            h = (h * 33 + c) & 0xFFFFFFFFFFFFFFFF
    return f"{h:x}"


def run_orjson(ops):
    """py_merge.py --orjson, in process. Returns (seconds, digest)."""
    import orjson

    merge = _load("py_merge").merge
    loads, dumps = orjson.loads, orjson.dumps
    texts = [(jid, p.decode()) for jid, p in ops]  # the anchor reads str lines
    jobs = {}
    out = 0
    t0 = time.perf_counter()
    for jid, text in texts:
        ann = jobs.get(jid)
        if ann is None:
            ann = jobs[jid] = {}
        merge(ann, loads(text))
        out += len(dumps(ann))
    dt = time.perf_counter() - t0
    return dt, digest(jobs.items())


def run_jansson(ops_file):
    """Build and run jansson_merge.c. Returns (seconds, digest) or a reason str."""
    if not shutil.which("gcc") or not shutil.which("pkg-config"):
        return "gcc/pkg-config missing"
    try:
        flags = subprocess.run(["pkg-config", "--cflags", "--libs", "jansson"],
                               capture_output=True, text=True, check=True).stdout.split()
    except (subprocess.CalledProcessError, OSError):
        return "libjansson-dev not installed (apt-get install -y libjansson-dev)"
    exe = Path(tempfile.mkdtemp(prefix="fa-jansson-")) / "jansson_merge"
    r = subprocess.run(["gcc", "-O2", "-o", str(exe), str(ANCHORS / "jansson_merge.c"), *flags],
                       capture_output=True, text=True)
    if r.returncode:
        return f"build failed: {r.stderr.strip()[:200]}"
    out = subprocess.run([str(exe), str(ops_file)], capture_output=True, text=True).stdout
    m = re.search(r"seconds=([\d.]+) .*digest=([0-9a-f]+)", out)
    if not m:
        return f"unexpected output: {out.strip()[:200]}"
    return float(m.group(1)), m.group(2)
