"""flux-annotate through subprocess against a real `serve` process (docs/cli.md):
formats, exit codes 0/1/2, stdin values, owner tools, watch, demo."""

import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import pytest

from flux_annot.ids import encode_f58

UID = os.getuid()
CMD = [sys.executable, "-m", "flux_annot"]


def run(*args, sock=None, input=None, env=None, timeout=60):
    e = dict(os.environ)
    e.pop("FLUX_ANNOT_SOCKET", None)
    e["PYTHONIOENCODING"] = "utf-8"
    if env:
        e.update(env)
    cmd = CMD + (["--socket", sock] if sock else []) + [str(a) for a in args]
    return subprocess.run(cmd, input=input, capture_output=True, text=True, env=e, timeout=timeout)


class Server:
    def __init__(self, extra=()):
        self.dir = tempfile.mkdtemp(prefix="fa-cli-", dir="/tmp")
        self.path = os.path.join(self.dir, "s")
        self.proc = subprocess.Popen(
            CMD + ["serve", "--socket", self.path, "--store", ":memory:", *extra],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        deadline = time.monotonic() + 30
        while not os.path.exists(self.path):
            if self.proc.poll() is not None:
                raise RuntimeError("serve exited: " + self.proc.stderr.read())
            if time.monotonic() > deadline:
                self.proc.kill()
                raise RuntimeError("serve did not create its socket")
            time.sleep(0.02)

    def __call__(self, *args, **kw):
        return run(*args, sock=self.path, **kw)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        self.proc.stdout.close()
        self.proc.stderr.close()
        shutil.rmtree(self.dir, ignore_errors=True)
        return rc


@pytest.fixture
def fa():
    srv = Server()
    yield srv
    assert srv.stop() == 0


def ok(r):
    assert r.returncode == 0, (r.returncode, r.stdout, r.stderr)
    return r.stdout


def get(fa, jobid, *path):
    return json.loads(ok(fa("get", jobid, *path)))


def test_submit_set_get_and_default_listing(fa):
    ok(fa("submit", 1234))
    ok(fa("set", 1234, "user.note=hello", "user.n=3", "user.flag=true", 'user.q="7"', "user.arr=[1,2]"))
    assert get(fa, 1234) == {"user": {"note": "hello", "n": 3, "flag": True, "q": "7", "arr": [1, 2]}}
    assert get(fa, encode_f58(1234), "user.n") == 3
    assert get(fa, hex(1234), "user.note") == "hello"
    job = get(fa, 1234, "--job")
    assert job["id"] == 1234 and job["userid"] == UID and job["state"] == "SCHED"
    out = ok(fa("list")).splitlines()
    assert out[0].split()[:3] == ["JOBID", "USER", "STATE"]
    assert "MEMO" in out[0] and "T_ESTIMATE" in out[0] and "REASON" in out[0]
    assert out[1].split()[0] == encode_f58(1234, ascii=False)
    assert "SCHED" in out[1] and '"note":"hello"' in out[1]


def test_null_deletes_and_patches_merge(fa):
    ok(fa("submit", 7))
    ok(fa("set", 7, "user.a.b=1", "user.a.c=2", "user.x=keep"))
    ok(fa("set", 7, "user.a.b=null"))
    assert get(fa, 7) == {"user": {"a": {"c": 2}, "x": "keep"}}
    ok(fa("set", 7, "user.a=null", "user.x=null"))
    assert get(fa, 7) is None
    r = fa("get", 7, "user.x")
    assert r.returncode == 1 and "has no annotation user.x" in r.stderr


def test_memo_goes_under_user_and_stdin_value(fa):
    ok(fa("submit", 8))
    ok(fa("memo", 8, "note=from memo", "deep.k=1"))
    ok(fa("memo", 8, "text=-", input="two\nlines\n"))
    ok(fa("set", 8, "user.obj=-", input='{"from": "stdin", "n": [1]}\n'))
    assert get(fa, 8, "user") == {
        "note": "from memo", "deep": {"k": 1}, "text": "two\nlines", "obj": {"from": "stdin", "n": [1]},
    }
    r = fa("memo", 8, "a=-", "b=-", input="x")
    assert r.returncode == 2 and "only one value" in r.stderr


def test_non_identifier_keys_in_set_and_formats(fa):
    ok(fa("submit", 9))
    ok(fa("set", 9, "user.a-b=1", "user.1a=x", "user.class=c", "user.ünï=u", "user.12=twelve"))
    out = ok(fa("list", "-n", "-o", "{id.dec}|{user.a-b}|{user.1a}|{user.class}|{user.ünï}|{user.12}|{user.none:>4}|"))
    assert out == "9|1|x|c|u|twelve|    |\n"
    hdr = ok(fa("list", "-o", "{user.a-b} {sched.t_estimate} {userid}")).splitlines()[0]
    assert hdr.split() == ["USER.A-B", "T_ESTIMATE", "UID"]


def test_usage_errors_exit_2_and_change_nothing(fa):
    ok(fa("submit", 10))
    ok(fa("set", 10, "user.keep=1"))
    for args in (
        ("set", "fOO", "user.x=1"),          # bad F58
        ("set", "18446744073709551616", "user.x=1"),  # out of range
        ("set", 10, "user.x"),               # no =
        ("set", 10, "user..x=1"),            # empty key
        ("set", 10, "user.ok=1", "=2"),      # one bad argument spoils all
        ("set", 10),                         # nothing to set
        ("list", "-o", "{nope}"),
        ("list", "-o", "{"),
        ("list", "--states", "Q"),
        ("state", 10, "BOGUS"),
        ("watch", "--since", "-1"),
        ("bogus-command",),
        (),
    ):
        r = fa(*args)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        assert r.stderr.strip(), args
    assert get(fa, 10) == {"user": {"keep": 1}}
    assert "invalid job id" in fa("get", "fOO").stderr
    assert "unknown format field {nope}" in fa("list", "-o", "{nope}").stderr


def test_service_errors_exit_1_with_errstr(fa):
    r = fa("set", 424242, "user.x=1")
    assert r.returncode == 1 and "unknown job id" in r.stderr and r.stderr.startswith("flux-annotate: set:")
    ok(fa("submit", 11))
    ok(fa("set", 11, "user.keep=1"))
    r = fa("set", 11, "sched.t_estimate=5", "user.y=2")  # sched is the scheduler's: whole patch refused
    assert r.returncode == 1 and "reserved for the scheduler" in r.stderr
    assert get(fa, 11) == {"user": {"keep": 1}}
    r = fa("submit", 11)
    assert r.returncode == 1 and r.stderr.strip()
    r = fa("state", 11, "CLEANUP")  # SCHED -> CLEANUP is not a transition
    assert r.returncode == 1 and r.stderr.strip()
    assert get(fa, 11, "--job")["state"] == "SCHED"


def test_no_service_is_exit_1():
    d = tempfile.mkdtemp(prefix="fa-none-", dir="/tmp")
    try:
        r = run("list", sock=os.path.join(d, "nothing"))
        assert r.returncode == 1 and "cannot connect" in r.stderr
        r = run("list", env={"FLUX_ANNOT_SOCKET": os.path.join(d, "nothing")})
        assert r.returncode == 1 and os.path.join(d, "nothing") in r.stderr
    finally:
        shutil.rmtree(d)


def test_socket_from_environment_and_after_command(fa):
    ok(run("submit", 12, env={"FLUX_ANNOT_SOCKET": fa.path}))
    out = ok(run("list", "--socket", fa.path, "-n", "-o", "{id.dec}"))
    assert out == "12\n"


def test_scheduler_tools_and_states(fa):
    for j in (21, 22, 23, 24):
        ok(fa("submit", j))
    ok(fa("memo", 21, "note=mine"))
    ok(fa("sched", 21, "t_estimate=1700000000.5", "reason_pending=insufficient resources", "jobs_ahead=0"))
    assert get(fa, 21, "sched") == {"t_estimate": 1700000000.5, "reason_pending": "insufficient resources",
                                    "jobs_ahead": 0}
    line = ok(fa("list", "-n", "-o", "{id.dec} {sched.reason_pending:<24}|{sched.jobs_ahead:>3}|{sched.t_estimate:.1f}"))
    assert line.splitlines()[0] == "21 insufficient resources  |  0|1700000000.5"
    ok(fa("alloc", 21, "resource_summary=rank0/core[0-1]"))  # clears the pending notes
    job = get(fa, 21, "--job")
    assert job["state"] == "RUN"
    assert job["annotations"] == {"user": {"note": "mine"}, "sched": {"resource_summary": "rank0/core[0-1]"}} or \
        job["annotations"] == {"sched": {"resource_summary": "rank0/core[0-1]"}, "user": {"note": "mine"}}
    r = fa("alloc", 21)  # not pending any more: ignored
    assert r.returncode == 1 and "ignored" in r.stderr
    ok(fa("sched", 22, "reason_pending=later"))
    ok(fa("cancel", 22))
    job = get(fa, 22, "--job")
    assert job["state"] == "SCHED" and job["annotations"] is None
    ok(fa("deny", 23, "too big"))
    assert get(fa, 23, "--job")["state"] == "INACTIVE"
    assert ok(fa("list", "-n", "--states", "I", "-o", "{id.dec} {state} {exception}")) == "23 INACTIVE too big\n"
    ok(fa("state", 24, "I", "--note", "canceled"))
    ok(fa("state", 21, "C"))
    ok(fa("state", 21, "inactive"))
    r = fa("set", 21, "user.x=1")
    assert r.returncode == 1 and "inactive" in r.stderr


def test_list_filters_like_flux_jobs(fa):
    ok(fa("submit", 31))
    ok(fa("submit", 32))
    ok(fa("submit", 33, "--userid", 4242))
    ok(fa("alloc", 32))
    ok(fa("submit", 34))
    ok(fa("state", 34, "INACTIVE"))
    ids = lambda out: [int(x) for x in out.split()]
    assert ids(ok(fa("list", "-n", "-o", "{id.dec}"))) == [31, 32]
    assert ids(ok(fa("list", "-n", "-a", "-o", "{id.dec}"))) == [31, 32, 34]
    assert ids(ok(fa("list", "-n", "-A", "-o", "{id.dec}"))) == [31, 33, 32]
    assert ids(ok(fa("list", "-n", "-A", "-a", "-o", "{id.dec}"))) == [31, 33, 32, 34]
    assert ids(ok(fa("list", "-n", "--states", "R,i", "-o", "{id.dec}"))) == [32, 34]
    assert ok(fa("list", "-n", "-A", "--states", "S", "-o", "{id.dec} {userid} {state_single}")) == \
        f"31 {UID} S\n33 4242 S\n"
    data = json.loads(ok(fa("list", "--json", "-a")))
    assert sorted(j["id"] for j in data["jobs"]) == [31, 32, 34]
    assert ok(fa("list", "--states", "CLEANUP", "-n")) == ""


def test_ascii_prefix_when_output_is_not_utf8(fa):
    ok(fa("submit", 1234))
    out = ok(fa("list", "-n", "-o", "{id} {id.f58}", env={"PYTHONIOENCODING": "latin-1"}))
    assert out == f"{encode_f58(1234, ascii=True)} {encode_f58(1234, ascii=True)}\n"
    assert out.startswith("f")
    out = ok(fa("list", "-n", "-o", "{id}"))
    assert out.startswith("ƒ")


def test_stats_is_json(fa):
    ok(fa("submit", 41))
    stats = json.loads(ok(fa("stats")))
    assert isinstance(stats, dict) and stats


def _read_lines(proc, want, timeout=30):
    """Lines from proc.stdout until `want` of them arrived (or timeout)."""
    lines, buf = [], b""
    deadline = time.monotonic() + timeout
    fd = proc.stdout.fileno()
    while len(lines) < want:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            break
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        buf += chunk
        *done, buf = buf.split(b"\n")
        lines += [d.decode() for d in done]
    return lines


def test_watch_follows_changes_and_ends_with_the_service():
    srv = Server()
    try:
        ok(srv("submit", 50))
        e = dict(os.environ, PYTHONIOENCODING="utf-8")
        w = subprocess.Popen(
            CMD + ["--socket", srv.path, "watch", "-o",
                   "{event} {id.dec} {state} {sched.reason_pending} {user.n} {username}"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=e,
        )
        head = _read_lines(w, 1)
        assert head and head[0].split() == ["EVENT", "JOBID", "STATE", "REASON", "USER.N", "USER"]
        time.sleep(0.3)  # let the subscription reach the service
        ok(srv("submit", 51))
        ok(srv("sched", 50, "reason_pending=busy"))
        ok(srv("memo", 50, "n=5"))
        ok(srv("alloc", 50))
        lines = [l.split() for l in _read_lines(w, 5)]
        name = __import__("pwd").getpwuid(UID).pw_name
        assert lines == [
            ["state", "51", "SCHED", name],
            ["annotations", "50", "SCHED", "busy", name],
            ["annotations", "50", "SCHED", "busy", "5", name],
            ["annotations", "50", "SCHED", "5", name],  # alloc clears the pending reason...
            ["state", "50", "RUN", "5", name],  # ...in the same batch as RUN
        ]
        assert srv.stop() == 0
        assert w.wait(20) == 0  # ENODATA at shutdown ends watch with 0
        w.stdout.close()
        w.stderr.close()
    finally:
        if srv.proc.poll() is None:
            srv.stop()


def test_watch_since_and_topic(fa):
    ok(fa("submit", 60))
    ok(fa("set", 60, "user.a=1"))
    out = subprocess.Popen(
        CMD + ["--socket", fa.path, "watch", "-n", "--since", "0", "--topic", "job-annotations",
               "-o", "{seq} {event} {id.dec} {user.a}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    lines = _read_lines(out, 1, timeout=20)
    out.terminate()
    out.wait(10)
    out.stdout.close()
    out.stderr.close()
    assert lines and lines[0].split()[1:] == ["annotations", "60", "1"]
    assert all(" state " not in l for l in lines)


def test_serve_bad_config_exit_1_naming_key(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[limits]\nguest_rate = -3\n")
    r = run("serve", "--socket", str(tmp_path / "s"), "--store", ":memory:", "--config", str(bad), timeout=60)
    assert r.returncode == 1 and "guest_rate" in r.stderr
    bad.write_text("[limits\n")
    r = run("serve", "--socket", str(tmp_path / "s"), "--store", ":memory:", "--config", str(bad), timeout=60)
    assert r.returncode == 1 and "not valid TOML" in r.stderr
    r = run("serve", "--socket", str(tmp_path / "s"), "--config", str(tmp_path / "missing.toml"))
    assert r.returncode == 1 and "cannot read config" in r.stderr


def test_serve_with_config_and_default_store(tmp_path):
    cfg = tmp_path / "ok.toml"
    cfg.write_text("[batch]\nwindow = 0.001\n")
    env = {"XDG_STATE_HOME": str(tmp_path / "state")}
    d = tempfile.mkdtemp(prefix="fa-cfg-", dir="/tmp")
    sock = os.path.join(d, "s")
    e = dict(os.environ, **env)
    p = subprocess.Popen(CMD + ["serve", "--socket", sock, "--config", str(cfg)], env=e,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while not os.path.exists(sock) and time.monotonic() < deadline and p.poll() is None:
            time.sleep(0.02)
        ok(run("submit", 70, sock=sock))
        ok(run("memo", 70, "kept=yes", sock=sock))
        assert (tmp_path / "state" / "flux-annot" / "annot.db").exists()
    finally:
        p.send_signal(signal.SIGTERM)
        assert p.wait(20) == 0
        p.stdout.close()
        p.stderr.close()
        shutil.rmtree(d, ignore_errors=True)


def test_demo_piped_ends_by_itself():
    t = time.monotonic()
    r = run("demo", "--jobs", "8", "--cores", "4", "--seconds", "2", timeout=120)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "\x1b[" not in out  # plain lines when not a terminal
    assert "insufficient resources" in out  # the scheduler's notes appear...
    assert "rank0/core" in out  # ...and the allocation's resource summary
    assert "INACTIVE" in out and "denied" in out
    assert "T_ESTIMATE" in out and "REASON" in out
    assert "8 of 8 jobs finished" in out
    last = out.split("\n\n")[-2]  # the final listing: nothing pending, no pending notes left
    assert "insufficient" not in last and "SCHED " not in last
    assert time.monotonic() - t < 120


def test_help_and_usage():
    r = run("--help")
    assert r.returncode == 0 and "demo" in r.stdout and "watch" in r.stdout
    r = run("list", "--help")
    assert r.returncode == 0 and "--format" in r.stdout
