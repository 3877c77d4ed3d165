"""Helpers that run the bench's anchors (bench/py_merge.py, bench/jansson_merge.c)
for bench/run.py and bench/report.py.

- `workload(njobs, ncycles)`: the standard workload (bench/workload.py) as
  (jobid, patch bytes) pairs, byte-identical to the lines it writes.
- `run_orjson(ops)`: py_merge.py's logic with orjson, in this process.
- `run_jansson(ops_file)`: compile jansson_merge.c and run it (a str saying
  why if it cannot be built here: no gcc, no jansson headers).
- `digest(trees)`: the state digest every contender must print.
"""

import functools
import importlib.util
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

ANCHORS = Path(__file__).resolve().parent  # workload.py, py_merge.py, jansson_merge.c


@functools.lru_cache(maxsize=None)
def _load(name):
    spec = importlib.util.spec_from_file_location(f"_anchor_{name}", ANCHORS / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def workload(njobs=10_000, ncycles=5):
    return _load("workload").lines(njobs, ncycles)


def write_ops(ops, path):
    with open(path, "wb") as f:
        for jid, p in ops:
            f.write(b"%d %s\n" % (jid, p))


def digest(items):
    """items: (jobid, tree dict) in any order; bench/workload.py's djb2 digest."""
    return _load("workload").digest(items)


def run_orjson(ops):
    """py_merge.py --orjson, in process. Returns (seconds, digest)."""
    _, loads, dumps = _load("py_merge").codec(True)
    texts = [(jid, p.decode()) for jid, p in ops]  # the anchor reads str lines
    # time.perf_counter looked up here: bench/run.py --cpu swaps this module's `time`
    dt, jobs, _ = _load("py_merge").apply(texts, loads, dumps, clock=time.perf_counter)
    return dt, digest(jobs.items())


def run_jansson(ops_file):
    """Build and run jansson_merge.c. Returns (seconds, digest) or a reason str."""
    if not shutil.which("gcc") or not shutil.which("pkg-config"):
        return "gcc/pkg-config missing"
    try:
        flags = subprocess.run(["pkg-config", "--cflags", "--libs", "jansson"],
                               capture_output=True, text=True, check=True).stdout.split()
    except (subprocess.CalledProcessError, OSError):
        return "jansson headers not found (Debian: apt-get install -y libjansson-dev)"
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
