"""A scheduler written against the public API gets help from its type checker.

mypy --strict runs on two small user scripts, against the package as
installed (found through its `py.typed` marker): correct use passes, and
the mistakes an editor should catch are reported on their lines.
"""

import os
import subprocess
import sys
import textwrap

import flux_annot

GOOD = """\
from flux_annot import AnnotationService, Client, Cred, JobTable, merge, sched, AnnotError

def cycle(svc: AnnotationService, pending: list[int]) -> int:
    for n, jobid in enumerate(pending):
        svc.alloc_response(sched.annotate(jobid, t_estimate=1.7e9 + n, jobs_ahead=n))
    seq = svc.flush()
    return seq if seq is not None else 0

svc = AnnotationService(store=None)
svc.submit(1, userid=1001)
svc.memo(Cred(1001), 1, {"step": 3})
job = svc.get(Cred.owner_of(svc), 1)
states: list[str] = [j["state"] for j in svc.list(Cred(1001))]
t = JobTable()
changed: bool = t.annotate(1, b'{"user":{"a":1}}')
text = t.get(1)
size = len(text) if text is not None else 0
tree = merge(None, {"a": 1})
try:
    Client("/nonexistent").get("fNH")
except AnnotError as e:
    code: int = e.errno
"""

BAD = """\
from flux_annot import AnnotationService, Cred, JobTable

svc = AnnotationService()
svc.get(1, Cred(1001))
t = JobTable()
t.get(1).decode()
svc.submit(1, userid="alice")
"""


def run_mypy(tmp_path, name, source):
    path = tmp_path / name
    path.write_text(source)
    env = dict(os.environ)
    pkg_parent = os.path.dirname(os.path.dirname(flux_annot.__file__))
    if "site-packages" not in pkg_parent:  # an editable (development) install
        env["MYPYPATH"] = pkg_parent
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", "--follow-imports=silent",
         "--cache-dir", str(tmp_path / "cache"), str(path)],
        capture_output=True, text=True, env=env, cwd=tmp_path)


def test_the_package_is_typed():
    pkg = os.path.dirname(flux_annot.__file__)
    assert os.path.exists(os.path.join(pkg, "py.typed"))


def test_correct_use_passes_strict(tmp_path):
    r = run_mypy(tmp_path, "good.py", GOOD)
    assert r.returncode == 0, r.stdout + r.stderr


def test_mistakes_are_reported(tmp_path):
    r = run_mypy(tmp_path, "bad.py", BAD)
    out = r.stdout
    assert r.returncode == 1, out + r.stderr
    assert 'bad.py:4: error: Argument 1 to "get" of "AnnotationService" has incompatible type "int"' in out, out
    assert 'bad.py:6: error: Item "None" of "bytes | None" has no attribute "decode"' in out, out
    assert 'bad.py:7: error: Argument "userid" to "submit" of "AnnotationService" has incompatible type "str"' in out, out
