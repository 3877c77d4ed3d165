"""Replay fuzz inputs through the Python binding (bench/FUZZING.md).

Every file in tests/fuzz_regressions/ is an input that once crashed or
broke an invariant of a fuzz target in csrc/fuzz/; its name starts with the
target (`canonical-...` or `merge-...`). Each is replayed here with the same
input layout and the same invariants as the C target, so the test fails
until the bug is fixed (a crash in the core kills the run, which fails it
too). GUARDS below are inputs of the classic crash classes (nesting beyond
the parser's cap, huge keys and numbers, many NUL-separated patches),
replayed the same way.

Some bugs (undefined behaviour that happens to work) cannot be seen from
an ordinary build, so the kept crash files are also replayed through the
C targets themselves, built with ASan + UBSan (clang when present: its
UBSan checks more, e.g. arithmetic on a NULL pointer; else gcc) and linked
with csrc/fuzz/driver.c in replay mode.
"""

import errno
import glob
import json
import os
import shutil
import subprocess

import pytest

import flux_annot
from flux_annot import core

HERE = os.path.join(os.path.dirname(__file__), "fuzz_regressions")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WIDE = core.Limits(depth=core.lib.FA_DEPTH_CAP, key_bytes=2**32 - 1,
                   object_keys=2**32 - 1, strict_keys=False)
NAMESPACES = ["a", "sched", "user", "x"]

GUARDS = {
    "canonical-guard-deep-arrays": b"[" * 5000 + b"]" * 5000,
    "canonical-guard-deep-objects-open": b'{"a":' * 5000,
    "canonical-guard-long-key": b'{"' + b"k" * 100000 + b'":1}',
    "canonical-guard-long-number": b"1" * 100000,
    "canonical-guard-long-fraction": b"0." + b"0" * 5000 + b"1e5000",
    "canonical-guard-escapes": b'"' + b"\\ud83d\\ude00\\u0000" * 2000 + b'"',
    "merge-guard-deep-patch": bytes([0x06]) + b"\0" + b'{"a":' * 5000 + b"1" + b"}" * 5000,
    "merge-guard-many-patches": bytes([0x27]) + b"\0".join(
        [b'{"sched":{"a":1}}', b'{"sched":{"a":null}}', b'{"sched":{"b":[{}]}}',
         b'{"sched":null}', b'{"a":{"b":{"c":1}}}', b'{"a":{"b":{"c":null}}}',
         b'{"x":1,"x":null}', b'{"a.b":1}', b'{"y":2}', b'{"z":3}']),
    "merge-guard-id-zero-prune": bytes([0x87]) + b'{"a":{"b":1}}\0{"a":{"b":null}}\0{"a":1}',
    "merge-guard-small-limits": bytes([0x1b]) + b'{"abc":1}\0{"abcdefghi":1}\0'
    b'{"a":1,"b":2,"c":3,"d":4,"e":5}\0{"a":{"b":{"c":1}}}',
}


def _inputs():
    found = {}
    if os.path.isdir(HERE):
        for name in sorted(os.listdir(HERE)):
            if name.startswith(("canonical-", "merge-")):
                with open(os.path.join(HERE, name), "rb") as f:
                    found[name] = f.read()
    found.update(GUARDS)
    return sorted(found.items())


def replay_canonical(data):
    """fuzz_canonical.c: an error is EINVAL; a result is a fixed point."""
    try:
        out = core.canonical(data)
    except flux_annot.AnnotError as e:
        assert e.errno == errno.EINVAL and str(e)
        return
    assert core.canonical(out) == out
    assert not any(b < 0x20 for b in out)
    json.loads(out)


def _limits(sel):
    return core.Limits(depth=(2, 4, 8, 64)[(sel >> 1) & 3],
                       key_bytes=8 if sel & 0x08 else 256,
                       object_keys=4 if sel & 0x10 else 1024,
                       strict_keys=bool(sel & 0x01))


def _try(fn, *args, **kw):
    try:
        return fn(*args, **kw), None
    except flux_annot.AnnotError as e:
        assert e.errno > 0 and str(e)
        return None, e.errno


def _entry(batch, jobid):
    """The payload of a one-entry batch, None for [] (absent)."""
    entries = json.loads(batch)
    assert len(entries) <= 1
    if not entries:
        return None
    assert entries[0][0] == jobid
    return entries[0]


def replay_merge(data):
    """fuzz_merge.c: every path agrees, errors change nothing."""
    if not data:
        return
    sel = data[0]
    segs = data[1:].split(b"\0", 8)  # start tree + up to 8 patches
    lim = _limits(sel)
    ns = NAMESPACES[(sel >> 5) & 3]
    jobid = 0 if sel & 0x80 else 2**64 - 1

    scratch = flux_annot.JobTable(lim)
    _, err = _try(scratch.apply, 1, segs[0], lim)
    start = scratch.get(1) if err is None else None

    ta, tb, tc, tf = (flux_annot.JobTable(lim) for _ in range(4))
    for t in (ta, tb, tc, tf):
        if start is not None:
            assert t.apply(jobid, start, WIDE, replace=True).changed
        assert t.get(jobid) == start
    tb.track(True)

    cur, first_bad, at_fail, nchanged = start, None, None, 0
    for i, patch in enumerate(segs[1:]):
        pure, perr = _try(core.merge, cur, patch, lim)
        info, aerr = _try(ta.apply, jobid, patch, lim, ns=ns, dryrun=True)
        assert aerr == perr, (patch, aerr, perr)
        assert ta.get(jobid) == cur  # a dry run installs nothing
        if perr is None:
            ta.commit()
        want = ta.get(jobid)
        if perr is None:
            assert (json.loads(want) if want else None) == pure
            assert info.changed == (want != cur)
            assert (info.old_len, info.new_len) == (len(cur or b""), len(want or b""))
        else:
            assert want == cur
            if first_bad is None:
                first_bad, at_fail = i, cur
        r, berr = _try(tb.apply, jobid, patch, lim)
        assert berr == perr and tb.get(jobid) == want
        changed, ferr = _try(tf.annotate, jobid, patch)  # the hot path
        assert ferr == perr and tf.get(jobid) == want
        assert ferr is not None or changed == (r.changed)
        if perr is None and first_bad is None:
            nchanged += r.changed
        cur = want

    n, merr = _try(tc.annotate_many, [jobid] * (len(segs) - 1), segs[1:])
    if first_bad is None:
        assert merr is None and n == nchanged and tc.get(jobid) == cur
    else:
        assert merr is not None and tc.get(jobid) == at_fail

    net = start != cur
    assert tb.batch_ids() == ([jobid] if net else [])
    e = _entry(tb.batch_encode(), jobid)
    assert (e is not None) == net
    if e is not None:
        assert e[1] == (json.loads(cur) if cur else None)
    e = _entry(tb.batch_encode(delta=True), jobid)
    if e is not None:
        got = core.merge(start, json.dumps(e[1]).encode(), WIDE) if e[1] is not None else None
        assert got == (json.loads(cur) if cur else None)
    tb.batch_clear()
    assert tb.batch_ids() == []
    assert tb.remove(jobid) == (cur is not None)
    assert len(tb) == 0


@pytest.mark.parametrize("name, data", _inputs(), ids=[n for n, _ in _inputs()])
def test_replay(name, data):
    if name.startswith("canonical-"):
        replay_canonical(data)
    else:
        replay_merge(data)


def _kept_files(target):
    return sorted(glob.glob(os.path.join(HERE, target + "-*")))


@pytest.mark.parametrize(
    "target", [t for t in ("canonical", "merge", "frames", "replies") if _kept_files(t)] or ["merge"]
)
def test_kept_crashes_replay_clean_under_sanitizers(target, tmp_path):
    files = _kept_files(target) or [os.path.join(HERE, "README.md")]
    cc = shutil.which("clang") or "gcc"
    exe = tmp_path / f"fuzz_{target}"
    srcs = [os.path.join(ROOT, "csrc", "fuzz", f"fuzz_{target}.c"),
            os.path.join(ROOT, "csrc", "fuzz", "driver.c")]
    srcs += sorted(glob.glob(os.path.join(ROOT, "csrc", "*.c")))
    subprocess.run([cc, "-g", "-O1", "-D_GNU_SOURCE", "-fsanitize=address,undefined",
                    "-fno-sanitize-recover=all", "-I", os.path.join(ROOT, "csrc"),
                    *srcs, "-o", str(exe), "-lm"], check=True)
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=1", UBSAN_OPTIONS="halt_on_error=1")
    r = subprocess.run([str(exe), "-t", "0", "-a", str(tmp_path) + "/", *files],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, f"{cc} {target}: {r.stderr[-3000:]}"
    assert "no crash" in r.stdout


def test_delta_batch_leaves_out_a_job_whose_keys_only_moved():
    """Fuzz finding: deleting a key and adding it back changes the text (the
    key moves to the end) but not the value; the delta batch wrote an empty
    entry `[[id,]]` (invalid JSON) instead of leaving the job out."""
    from flux_annot import JobTable

    t = JobTable()
    t.annotate(7, b'{"a":1,"y":2}')
    t.track(True)
    t.annotate(7, b'{"a":null}')
    t.annotate(7, b'{"a":1}')
    assert t.get(7) == b'{"y":2,"a":1}'
    assert json.loads(t.batch_encode()) == [[7, {"y": 2, "a": 1}]]
    assert t.batch_encode(delta=True) == b"[]"
