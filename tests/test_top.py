"""`flux-annotate top` as a person uses it: in tmux, keys sent, the screen
captured with `capture-pane` and compared with what `list` prints.

Each test has its own tmux server (its own socket file) and its own
service; top runs in a shell that prints `EXIT=<status>` when it ends, so
the tests see both the exit status and that the terminal was given back.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import pytest

from flux_annot.ids import JobID
from serverproc import ServerProc

TMUX = shutil.which("tmux") or "tmux"  # .ci/run installs it

CMD = [sys.executable, "-m", "flux_annot"]
# The same columns for top and list, so rows can be compared as text.
FMT = "{id.f58:>12} {state_single:>2} {sched.jobs_ahead:>5} {sched.reason_pending:<14.14} {user}"


def cli(sock, *args, env=None):
    e = dict(os.environ, FLUX_ANNOT_SOCKET=sock)
    e.update(env or {})
    r = subprocess.run(CMD + list(args), capture_output=True, text=True, env=e, timeout=60)
    assert r.returncode == 0, (args, r.stdout, r.stderr)
    return r.stdout


class Tmux:
    """One tmux server on a private socket, one window running `top`."""

    def __init__(self, width=80, height=24):
        self.dir = tempfile.mkdtemp(prefix="fa-tmux-")
        self.sock = os.path.join(self.dir, "tmux")
        self.width, self.height = width, height

    def tmux(self, *args):
        return subprocess.run([TMUX, "-S", self.sock] + list(args), capture_output=True,
                              text=True, timeout=30)

    def start(self, service_sock, *top_args, env=None):
        envs = {"FLUX_ANNOT_SOCKET": service_sock, "PYTHONPATH": os.environ.get("PYTHONPATH", "")}
        envs.update(env or {})
        exports = " ".join(f"{k}={_q(v)}" for k, v in envs.items())
        top = " ".join(_q(a) for a in CMD + ["top"] + list(top_args))
        # the shell survives Ctrl-C (a trap, reset to the default in top)
        shell = f"trap : INT; env {exports} {top}; echo EXIT=$?; sleep 600"
        r = self.tmux("-f", "/dev/null", "new-session", "-d", "-s", "t",
                      "-x", str(self.width), "-y", str(self.height), "sh", "-c", shell)
        assert r.returncode == 0, r.stderr
        return self

    def lines(self, escapes=False):
        args = ["capture-pane", "-p", "-t", "t"] + (["-e"] if escapes else [])
        out = self.tmux(*args).stdout
        return out[:-1].split("\n") if out.endswith("\n") else out.split("\n")

    def text(self):
        return "\n".join(self.lines())

    def keys(self, *keys):
        self.tmux("send-keys", "-t", "t", *keys)

    def wait(self, cond, what, timeout=30.0):
        """Poll the screen until cond(lines) holds (a bound on the wait)."""
        deadline = time.monotonic() + timeout
        while True:
            lines = self.lines()
            if cond(lines):
                return lines
            if time.monotonic() > deadline:
                raise AssertionError(f"gave up waiting for {what}; screen:\n" + "\n".join(lines))
            time.sleep(0.1)

    def close(self):
        self.tmux("kill-server")
        shutil.rmtree(self.dir, ignore_errors=True)


def _q(s):
    return "'" + str(s).replace("'", "'\\''") + "'"


def table(lines):
    """The job rows on the screen: between the heading and the first empty
    line, the detail pane's rule or the footer (the last line)."""
    out = []
    for line in lines[3:-2]:  # the last two: the accuracy line and the footer
        if not line.strip() or line.startswith("---"):
            break
        out.append(line.rstrip())
    return out


def listed(sock, *args, env=None):
    return [line.rstrip() for line in cli(sock, "list", "-o", FMT, "-n", *args, env=env).splitlines()]


@pytest.fixture
def service(tmp_path):
    s = ServerProc(store=tmp_path / "annot.db").start()
    yield s
    s.cleanup()


@pytest.fixture
def term():
    t = Tmux()
    yield t
    t.close()


def queue(sock):
    """Five jobs: a queue with reasons, one running, a memo; returns ids."""
    ids = [101, 102, 103, 104, 105]
    for i in ids:
        cli(sock, "submit", str(i))
    cli(sock, "sched", "103", "jobs_ahead=0", "reason_pending=resources")
    cli(sock, "sched", "101", "jobs_ahead=1", "reason_pending=priority")
    cli(sock, "sched", "105", "jobs_ahead=2", "reason_pending=dependency")
    cli(sock, "alloc", "102", "resource_summary=rank0/core0")
    cli(sock, "memo", "104", "note=see-me")
    return ids


def f58(i):
    return JobID(i).f58


def test_screen_shows_what_list_shows_and_follows_changes(service, term):
    sock = service.path
    queue(sock)
    term.start(sock, "-o", FMT)
    lines = term.wait(lambda ls: len(table(ls)) == 5, "five rows")
    assert sorted(table(lines)) == sorted(listed(sock))
    # pending in scheduling order (jobs_ahead), then the running job
    order = [row.split()[0] for row in table(lines)]
    assert order == [f58(103), f58(101), f58(105), f58(104), f58(102)]
    head = lines[0] + "\n" + lines[1]
    assert "SCHED 4" in head and "RUN 1" in head and "seq " in head
    assert lines[2].split() == ["JOBID", "ST", "AHEAD", "REASON", "MEMO"]

    # changes while it runs: a new job, a new estimate order, a memo, a denial
    cli(sock, "submit", "106")
    cli(sock, "sched", "106", "jobs_ahead=0", "reason_pending=backfill")
    cli(sock, "sched", "103", "jobs_ahead=3")
    cli(sock, "memo", "101", "why=waiting")
    cli(sock, "deny", "105", "too big")
    want = sorted(listed(sock))
    lines = term.wait(lambda ls: sorted(table(ls)) == want, "the screen to match list")
    order = [row.split()[0] for row in table(lines)]
    assert order[:3] == [f58(106), f58(101), f58(103)]
    assert f58(105) not in "\n".join(lines)  # inactive: not shown by default
    assert "INACTIVE 1" in lines[1]  # counted, though not listed


def test_keys_move_detail_filter_sort_quit(service, term):
    sock = service.path
    queue(sock)
    term.start(sock, "-o", FMT)
    term.wait(lambda ls: len(table(ls)) == 5, "five rows")
    term.keys("j", "Enter")  # second row (f58 of 101), its detail pane
    lines = term.wait(lambda ls: any(line.startswith("---") for line in ls), "the detail pane")
    rule = next(i for i, line in enumerate(lines) if line.startswith("---"))
    assert lines[rule + 1].startswith(f"{f58(101)}  101  user ")
    detail = "\n".join(lines[rule + 1:])
    assert '"reason_pending": "priority"' in detail and '"jobs_ahead": 1' in detail
    term.keys("k")  # back up: the detail follows the selection
    term.wait(lambda ls: any(line.startswith(f"{f58(103)}  103") for line in ls), "detail of 103")
    term.keys("Enter")  # closes the pane
    term.wait(lambda ls: not any(line.startswith("---") for line in ls), "the pane to close")

    term.keys("/", "s", "e", "e", "-", "m", "e", "Enter")  # text in a memo
    lines = term.wait(lambda ls: len(table(ls)) == 1, "one row after the filter")
    assert table(lines)[0].split()[0] == f58(104)
    assert "filter /see-me" in lines[1]
    term.keys("/", "BSpace", "BSpace", "BSpace", "BSpace", "BSpace", "BSpace", "Enter")  # clear it
    term.wait(lambda ls: len(table(ls)) == 5, "all rows again")

    term.keys("s")  # sort by id
    lines = term.wait(lambda ls: "sort id" in ls[1], "sort by id")
    assert [row.split()[0] for row in table(lines)] == [f58(i) for i in (101, 102, 103, 104, 105)]

    term.keys("p")
    term.wait(lambda ls: "[PAUSED]" in ls[0], "the pause marker")
    cli(sock, "memo", "102", "paused=yes")
    seq = json.loads(cli(sock, "stats"))["seq"]
    # the header keeps following (its seq), the rows do not
    lines = term.wait(lambda ls: f"seq {seq} " in ls[0], "the header to show the memo's batch")
    assert "yes" not in "\n".join(table(lines))
    term.keys("p")
    term.wait(lambda ls: any('"paused":"yes"' in row for row in table(ls)), "the memo after unpausing")

    term.keys("q")
    lines = term.wait(lambda ls: "EXIT=0" in "\n".join(ls), "top to quit")
    assert not any("JOBID" in line for line in lines)  # the terminal's own screen is back


def test_resize_shows_more_rows(service, term):
    sock = service.path
    for i in range(1, 41):
        cli(sock, "submit", str(i))
    term.start(sock, "-o", FMT)
    # rows: the height less the header (3 lines), the accuracy line and the footer
    lines = term.wait(lambda ls: len(table(ls)) == 24 - 5, "a full 80x24 screen")
    assert len(lines[0]) <= 80
    term.tmux("resize-window", "-t", "t", "-x", "100", "-y", "40")
    lines = term.wait(lambda ls: len(table(ls)) == 40 - 5, "more rows after the resize")
    assert table(lines) == listed(sock)[: 40 - 5]
    term.tmux("resize-window", "-t", "t", "-x", "60", "-y", "10")
    lines = term.wait(lambda ls: len(table(ls)) == 10 - 5, "fewer rows after the resize")
    assert all(len(line) <= 60 for line in lines)


def test_no_color_and_the_disconnected_marker(tmp_path):
    results = {}
    for no_color in (False, True):
        s = ServerProc(store=tmp_path / f"annot{no_color}.db").start()
        t = Tmux()
        try:
            cli(s.path, "submit", "7")
            env = {"NO_COLOR": "1"} if no_color else {}
            t.start(s.path, "--give-up", "600", env=env)
            t.wait(lambda ls: len(table(ls)) == 1, "the job")
            s.stop()
            t.wait(lambda ls: "[DISCONNECTED]" in ls[0], "the disconnected marker")
            results[no_color] = "\n".join(t.lines(escapes=True))
        finally:
            t.close()
            s.cleanup()
    colour_codes = ("\x1b[31m", "\x1b[33m", "\x1b[32m", ";31m", ";31;")
    assert any(c in results[False] for c in colour_codes), "expected a red marker with colour"
    assert not any(c in results[True] for c in colour_codes), "colour under NO_COLOR"
    assert "[DISCONNECTED]" in results[True]


def test_ascii_ids_in_a_non_utf8_locale(service, term):
    sock = service.path
    cli(sock, "submit", "4242")
    cli(sock, "memo", "4242", "city=Zürich")
    term.start(sock, "-o", FMT, env={"LC_ALL": "C", "LANG": "C"})
    lines = term.wait(lambda ls: len(table(ls)) == 1, "the job")
    row = table(lines)[0]
    assert row.split()[0] == JobID(4242).f58plain  # f..., not ƒ...
    assert "\u0192" not in "\n".join(lines)
    assert '"city":"Z?rich"' in row
    term.keys("q")
    term.wait(lambda ls: "EXIT=0" in "\n".join(ls), "top to quit")


def test_restart_resumes_and_service_gone_for_good_exits(service, term):
    sock = service.path
    cli(sock, "submit", "9")
    term.start(sock, "-o", FMT, "--give-up", "3")
    term.wait(lambda ls: len(table(ls)) == 1, "the job")
    service.stop()
    term.wait(lambda ls: "[DISCONNECTED]" in ls[0], "the disconnected marker")
    service.start()
    cli(sock, "memo", "9", "after=restart")
    lines = term.wait(lambda ls: '"after":"restart"' in "\n".join(table(ls)), "the change after the restart")
    assert "[DISCONNECTED]" not in lines[0] and "[RESYNC]" not in lines[0]
    service.stop()  # for good
    lines = term.wait(lambda ls: "EXIT=1" in "\n".join(ls), "top to give up", timeout=60)
    text = "\n".join(lines)
    assert "the service went away" in text
    assert "JOBID" not in text  # the terminal is restored


def test_ctrl_c_restores_the_terminal(service, term):
    cli(service.path, "submit", "3")
    term.start(service.path)
    term.wait(lambda ls: len(table(ls)) == 1, "the job")
    term.keys("C-c")
    lines = term.wait(lambda ls: "EXIT=130" in "\n".join(ls), "top to stop")
    assert "JOBID" not in "\n".join(lines)


def test_top_without_a_service_says_so(tmp_path, term):
    term.start(str(tmp_path / "none"))
    lines = term.wait(lambda ls: "EXIT=1" in "\n".join(ls), "top to refuse")
    assert "cannot connect to the flux-annot service" in "\n".join(lines)


def test_top_needs_a_terminal(service):
    r = subprocess.run(CMD + ["top"], capture_output=True, text=True, timeout=60,
                       env=dict(os.environ, FLUX_ANNOT_SOCKET=service.path))
    assert r.returncode == 2
    assert "top needs a terminal" in r.stderr


def test_accuracy_line_follows_starts(service, term):
    """The line above the footer is the estimate accuracy summary
    (docs/accuracy.md), the one `stats` carries, updated as jobs start."""
    import json

    from flux_annot.views.accuracy_table import summary_line

    sock = service.path
    now = time.time()
    for i in (201, 202, 203):
        cli(sock, "submit", str(i))
        cli(sock, "sched", str(i), f"t_estimate={now + 30 * (i - 200)}")
    term.start(sock, "-A")
    term.wait(lambda ls: ls[-2].rstrip() == "accuracy: 0 started, 0 never", "the empty accuracy line")
    cli(sock, "alloc", "201")
    cli(sock, "alloc", "202")

    def matches(ls):
        st = json.loads(cli(sock, "stats"))["accuracy"]
        return st["jobs_started"] == 2 and ls[-2].rstrip() == summary_line(st)

    lines = term.wait(matches, "the accuracy line of two starts")
    assert lines[-2].startswith("accuracy: 2 started, 0 never; last: bias -")
    cli(sock, "deny", "203", "no")
    term.wait(lambda ls: ls[-2].startswith("accuracy: 2 started, 1 never; last: bias -"),
              "a denied job counted")
