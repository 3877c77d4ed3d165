"""Clients reaching flux-annot through the Flux broker (docs/flux.md,
"On every node"): a real four-broker instance (`flux start
--test-size=4`: four broker processes joined by Flux's overlay), the
mirror (`flux-annotate serve --flux`) registered as the service `annot`,
and the CLI run as a user of the instance runs it: `FLUX_URI` of the rank
it is on, no socket, no PYTHONPATH (the bindings are found through the
`flux` on PATH).

Needs $FLUX_ANNOT_TEST_FLUX_PREFIX (set by .ci/run; see tests/fluxinst.py).
"""

import errno
import json
import os
import select
import signal
import subprocess
import sys
import time

import pytest

from fluxinst import FluxInstance, Mirror, flux_prefix, submit, wait_for
from serverproc import NOBODY, is_root

from flux_annot.ids import JobID

SIZE = 4
LEAF = SIZE - 1
BIN = os.path.dirname(sys.executable)  # flux-annotate, installed beside this Python


@pytest.fixture(scope="module")
def inst():
    i = FluxInstance(flux_prefix(), size=SIZE, access_guests=True).start()
    yield i
    i.cleanup()


@pytest.fixture(scope="module")
def mirror(inst, tmp_path_factory):
    m = Mirror(inst, tmp_path_factory.mktemp("mirror") / "mirror.db").start()
    m.wait_synced()
    wait_for("the annot service in the instance", lambda: _served(inst))
    yield m
    m.cleanup()


def _served(inst):
    r = run_cli(inst, 0, "stats", check=False)
    return r.returncode == 0


def user_env(inst, rank):
    """The environment of a user's shell on rank `rank` of the instance:
    Flux's bin and flux-annotate on PATH, FLUX_URI of that rank, no socket,
    no PYTHONPATH."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "FLUX_ANNOT_SOCKET", "XDG_RUNTIME_DIR")}
    env["PATH"] = os.pathsep.join([BIN, os.path.join(inst.prefix, "bin"), env.get("PATH", "")])
    env["FLUX_URI"] = inst.rank_uri(rank)
    return env


@pytest.fixture
def user_shell(inst, monkeypatch):
    """This test process as a user's shell on the leaf rank (user_env), for
    the Python API."""
    for k, v in user_env(inst, LEAF).items():
        monkeypatch.setenv(k, v)
    for k in ("PYTHONPATH", "FLUX_ANNOT_SOCKET", "XDG_RUNTIME_DIR"):
        monkeypatch.delenv(k, raising=False)


def run_cli(inst, rank, *args, check=True, env=None):
    r = subprocess.run(
        [sys.executable, "-m", "flux_annot", *args],
        env=env or user_env(inst, rank), capture_output=True, text=True, timeout=120,
        stdin=subprocess.DEVNULL, cwd="/",
    )
    if check:
        assert r.returncode == 0, (args, r.stdout, r.stderr)
    return r


def flux_jobs(inst):
    """`flux jobs -a`: {id: (userid, state, annotations)}."""
    return {jid: (j["userid"], j["state"], j.get("annotations") or None)
            for jid, j in inst.jobs().items()}


def listed(inst, rank):
    out = run_cli(inst, rank, "list", "-a", "-A", "--json").stdout
    return {j["id"]: (j["userid"], j["state"], j["annotations"]) for j in json.loads(out)["jobs"]}


def memo_events(inst, jobid):
    log = inst.flux("job", "eventlog", str(jobid)).stdout
    return [line for line in log.splitlines() if " memo " in line]


class Proc:
    """A long-running CLI command (watch): its output read line by line."""

    def __init__(self, args, env):
        self.p = subprocess.Popen(
            [sys.executable, "-m", "flux_annot", *args], env=env, cwd="/",
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
        )
        self.out = []
        self.err = []
        self._buf = {self.p.stdout: b"", self.p.stderr: b""}

    def _read(self, timeout):
        fds = [f for f in (self.p.stdout, self.p.stderr) if not f.closed]
        ready, _, _ = select.select(fds, [], [], timeout)
        for f in ready:
            data = os.read(f.fileno(), 65536)
            if not data:
                continue
            *done, self._buf[f] = (self._buf[f] + data).split(b"\n")
            (self.out if f is self.p.stdout else self.err).extend(d.decode() for d in done)

    def wait_line(self, what, cond, timeout=60.0, stream="out"):
        deadline = time.monotonic() + timeout
        while True:
            lines = self.out if stream == "out" else self.err
            for line in lines:
                if cond(line):
                    return line
            if time.monotonic() > deadline:
                raise AssertionError(f"no {what}; out={self.out} err={self.err} rc={self.p.poll()}")
            if self.p.poll() is not None and not select.select([self.p.stdout, self.p.stderr], [], [], 0)[0]:
                raise AssertionError(f"exited ({self.p.returncode}) before {what}; "
                                     f"out={self.out} err={self.err}")
            self._read(0.2)

    def stop(self):
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGINT)
            try:
                self.p.wait(20)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        self.p.stdout.close()
        self.p.stderr.close()
        return self.p.returncode


# --- every rank ------------------------------------------------------------------


def test_list_on_every_rank_equals_flux_jobs(inst, mirror):
    held = submit(inst, "--urgency=0", "sleep", "300")
    running = submit(inst, "sleep", "300")
    done = submit(inst, "true")
    inst.flux("job", "memo", str(held), "note=held", "n=1")
    inst.flux("job", "memo", "--volatile", str(running), "progress=0.5")
    inst.flux("job", "wait-event", str(done), "clean")
    inst.flux("job", "wait-event", str(running), "start")
    try:
        for rank in range(SIZE):
            # the mirror follows Flux's journal: wait until it has what Flux has
            want = flux_jobs(inst)
            got = wait_for(f"list on rank {rank} to equal flux jobs -a",
                           lambda: (lambda g: g if g == flux_jobs(inst) else None)(listed(inst, rank)))
            assert {held, running, done} <= set(got)
            assert got[held][2] == {"user": {"note": "held", "n": 1}}
            assert got[running][2]["user"] == {"progress": 0.5}
            assert got[done][1] == "INACTIVE"
            assert set(got) == set(want)
    finally:
        inst.flux("cancel", str(held), str(running), check=False)


def test_every_command_on_a_leaf_rank_needs_no_option(inst, mirror):
    jobid = submit(inst, "--urgency=0", "sleep", "300")
    try:
        wait_for("the job in the mirror", lambda: jobid in listed(inst, LEAF))
        run_cli(inst, LEAF, "memo", str(JobID(jobid).f58), "step=3")
        assert json.loads(run_cli(inst, LEAF, "get", str(jobid), "user.step").stdout) == 3
        run_cli(inst, LEAF, "set", str(jobid), "user.note=from-rank-3")
        assert json.loads(run_cli(inst, LEAF, "get", str(jobid)).stdout) == {
            "user": {"step": 3, "note": "from-rank-3"}}
        row = run_cli(inst, LEAF, "list", "-n", "-o", "{id.dec} {user.step}").stdout.split()
        assert row[row.index(str(jobid)) + 1] == "3"
        stats = json.loads(run_cli(inst, LEAF, "stats").stdout)
        assert stats["flux"]["uri"] == inst.uri
        # Flux holds the memo made from rank 3
        assert inst.jobs()[jobid]["annotations"]["user"] == {"step": 3, "note": "from-rank-3"}
        # what Flux owns is refused, the service's sentence in one line
        for args in (["submit", "4242"], ["set", str(jobid), "workflow.stage=2"]):
            r = run_cli(inst, LEAF, *args, check=False)
            assert r.returncode == 1 and r.stderr.count("\n") == 1, r.stderr
            assert "the Flux instance owns" in r.stderr
    finally:
        inst.flux("cancel", str(jobid), check=False)


def test_a_job_on_the_last_rank_annotates_itself(inst, mirror):
    env = user_env(inst, 0)
    r = subprocess.run(
        [os.path.join(inst.prefix, "bin", "flux"), "run", f"--requires=rank:{LEAF}",
         "sh", "-c", 'flux-annotate memo "$FLUX_JOB_ID" progress=50 && '
                     'flux getattr rank && printenv FLUX_URI && flux-annotate get "$FLUX_JOB_ID"'],
        env=env, capture_output=True, text=True, timeout=120, cwd="/",
    )
    assert r.returncode == 0, r.stderr
    rank, uri, got = r.stdout.split("\n")[:3]
    assert rank == str(LEAF) and uri == inst.rank_uri(LEAF)  # ran on the leaf, through its broker
    got = json.loads(got)
    assert got["user"] == {"progress": 50}  # the reply came once the memo was in
    assert got["sched"]["resource_summary"] == f"rank{LEAF}/core0"
    jobid = max(inst.jobs())
    assert inst.jobs()[jobid]["annotations"]["user"] == {"progress": 50}  # Flux holds it
    out = inst.flux("jobs", "-a", "-n", "-o", "{id.dec} {user.progress}").stdout.split()
    assert out[out.index(str(jobid)) + 1] == "50"


# --- streams ---------------------------------------------------------------------


def test_watch_on_a_leaf_rank_sees_a_change_made_on_rank_0(inst, mirror):
    jobid = submit(inst, "--urgency=0", "sleep", "300")
    w = Proc(["watch", "-o", "{id.dec} {event} {user.step}"], user_env(inst, LEAF))
    try:
        w.wait_line("the heading", lambda l: l.split() == ["JOBID", "EVENT", "USER.STEP"])
        time.sleep(0.5)  # the snapshot is in: what follows is live
        run_cli(inst, 0, "memo", str(jobid), "step=7")
        w.wait_line("the memo made on rank 0", lambda l: l.split() == [str(jobid), "annotations", "7"])
    finally:
        w.stop()
        inst.flux("cancel", str(jobid), check=False)


def test_closing_a_stream_cancels_it_at_the_service(inst, mirror, user_shell):
    from flux_annot import AsyncClient, Client

    def subscribers():
        with Client(flux_uri=inst.rank_uri(LEAF)) as c:
            return c.stats()["subscribers"]

    before = subscribers()
    with Client(flux_uri=inst.rank_uri(LEAF)) as c:
        assert type(c).__name__ == "FluxClient"
        stream = c.events(snapshot=True)
        assert next(stream)["snapshot"] is True
        assert subscribers() == before + 1
        stream.close()  # its handle closes: Flux tells the service
        wait_for("the service to forget the stream", lambda: subscribers() == before, 20)

    import asyncio

    async def follow_one():
        async with AsyncClient(flux_uri=inst.rank_uri(LEAF)) as ac:
            assert type(ac).__name__ == "AsyncFluxClient"
            stream = ac.events(snapshot=True)
            async for batch in stream:
                assert batch["snapshot"] is True
                n = (await ac.stats())["subscribers"]
                break
            await stream.aclose()
            return n

    assert asyncio.run(follow_one()) == before + 1
    wait_for("the service to forget the async stream", lambda: subscribers() == before, 20)


def test_errors_keep_their_errno_and_sentence_through_the_broker(inst, mirror, user_shell):
    from flux_annot import AnnotError, Client, UnknownJobError

    unknown = 123456789
    with Client(socket=mirror.socket) as s, Client(flux_uri=inst.rank_uri(LEAF)) as f:
        for call in (lambda c: c.get(unknown), lambda c: c.memo(unknown, {"a": 1}),
                     lambda c: c.annotate(1, {"sched": {"x": 1}}),
                     lambda c: c.list(states=["NOPE"]), lambda c: c.memo(1, "{bad json")):
            errs = []
            for c in (s, f):
                with pytest.raises(AnnotError) as ei:
                    call(c)
                errs.append((type(ei.value), ei.value.errno, str(ei.value)))
            assert errs[0] == errs[1]
        with pytest.raises(UnknownJobError):
            f.get(unknown)


# --- guests ----------------------------------------------------------------------


def as_user(uid, env, fn):
    """fn() run as `uid` with environment `env` in a forked child (the
    interpreter lives where another uid cannot exec it): (exit status, its
    JSON-able result, stdout, stderr)."""
    import tempfile

    out, err, res = (tempfile.TemporaryFile() for _ in range(3))
    pid = os.fork()
    if pid == 0:
        status = 99
        try:
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            os.chdir("/")
            os.dup2(out.fileno(), 1)
            os.dup2(err.fileno(), 2)
            sys.stdout = open(1, "w", closefd=False)  # not pytest's capture
            sys.stderr = open(2, "w", closefd=False)
            os.environ.clear()
            os.environ.update(env)
            value = fn()
            res.write(json.dumps(value).encode())
            status = value if isinstance(value, int) else 0
        except BaseException:  # noqa: BLE001 - any failure is the test's to see
            import traceback

            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            res.flush()
            os._exit(status)
    _, status = os.waitpid(pid, 0)
    for f in (out, err, res):
        f.seek(0)
    raw = res.read()
    return (os.waitstatus_to_exitcode(status), json.loads(raw) if raw else None,
            out.read().decode(), err.read().decode())


def cli_as(uid, env, *args):
    """`flux-annotate ARGS` (the CLI's main()) as `uid`: (status, stdout, stderr)."""
    from flux_annot import cli  # noqa: F401 - imported here: see below
    from flux_annot.flux import flux_client
    from flux_annot.flux.flux_bindings import import_flux

    # Flux's bindings import cffi and yaml from this Python's site-packages,
    # which may live where uid cannot read (/root): import them first.
    saved = os.environ.copy()
    try:
        os.environ["PATH"] = env["PATH"]
        import_flux()
    finally:
        os.environ.clear()
        os.environ.update(saved)

    rc, _, out, err = as_user(uid, env, lambda: cli.main(list(args)))
    return rc, out, err


@pytest.mark.skipif(not is_root(), reason="dropping to another uid (nobody) needs root")
def test_a_guest_on_a_leaf_rank_sees_and_changes_only_what_is_its_own(inst, mirror):
    jobid = submit(inst, "--urgency=0", "sleep", "300")
    try:
        run_cli(inst, 0, "memo", str(jobid), "secret=owner-only")
        wait_for("the memo in Flux", lambda: memo_events(inst, jobid))
        memos = memo_events(inst, jobid)
        sent = mirror.stats()["flux"]["memos_sent"]
        env = user_env(inst, 2)

        rc, out, err = cli_as(NOBODY, env, "list", "-a", "-A", "--json")
        assert rc == 0, err
        jobs = {j["id"]: j for j in json.loads(out)["jobs"]}
        assert jobs[jobid]["userid"] == os.getuid()
        assert "user" not in (jobs[jobid]["annotations"] or {})  # another user's memos

        rc, out, err = cli_as(NOBODY, env, "get", str(jobid))
        assert rc == 0 and "user" not in (json.loads(out) or {}), err

        rc, out, err = cli_as(NOBODY, env, "memo", str(jobid), "x=1")
        assert rc == 1 and err.count("\n") == 1 and "Traceback" not in err, err
        assert "own jobs" in err  # the service's sentence (EPERM)

        rc, out, err = cli_as(NOBODY, env, "set", str(jobid), "user.x=1")
        assert rc == 1 and "Traceback" not in err, err

        # nothing reached Flux
        assert mirror.stats()["flux"]["memos_sent"] == sent
        assert memo_events(inst, jobid) == memos
        assert inst.jobs()[jobid]["annotations"]["user"] == {"secret": "owner-only"}

        # the same refusal through the Python API, with its errno
        def as_guest():
            from flux_annot import AnnotError, Client

            with Client() as c:
                try:
                    c.memo(jobid, {"x": 1})
                except AnnotError as e:
                    return [type(c).__name__, e.errno, str(e)]
            return "accepted"

        rc, got, _, err = as_user(NOBODY, env, as_guest)
        assert got[0] == "FluxClient" and got[1] == errno.EPERM and "own jobs" in got[2], (got, err)
    finally:
        inst.flux("cancel", str(jobid), check=False)


# --- no service, restarts --------------------------------------------------------


def test_no_service_is_one_line_naming_the_instance():
    inst = FluxInstance(flux_prefix(), size=2).start()
    try:
        for args in (["list"], ["memo", "1234", "a=1"], ["watch"], ["stats"]):
            r = run_cli(inst, 1, *args, check=False)
            assert r.returncode == 1, (args, r.stdout, r.stderr)
            assert r.stderr == (f"flux-annotate: {args[0]}: no flux-annot service in the Flux "
                                f"instance at {inst.rank_uri(1)} (start one with: "
                                "flux-annotate serve --flux)\n")
        # top says so before taking the screen
        r = run_cli(inst, 1, "top", check=False)
        assert r.returncode != 0 and "Traceback" not in r.stderr
    finally:
        inst.cleanup()


def test_the_mirror_restarted_under_a_running_watch_on_a_leaf_rank(tmp_path, monkeypatch):
    from flux_annot.views.live import LiveModel, LiveThread

    inst = FluxInstance(flux_prefix(), size=SIZE).start()
    m = Mirror(inst, tmp_path / "m.db").start()
    w = live = None
    try:
        m.wait_synced()
        wait_for("the annot service", lambda: _served(inst))
        jobid = submit(inst, "--urgency=0", "sleep", "300")
        w = Proc(["watch", "-o", "{seq} {id.dec} {event} {user.n}"], user_env(inst, LEAF))
        # and the driver of top and the dashboard, in this process, on the leaf
        monkeypatch.setenv("PATH", user_env(inst, LEAF)["PATH"])
        model = LiveModel()
        live = LiveThread(model, None, flux_uri=inst.rank_uri(LEAF), retry=0.2).start()
        w.wait_line("the heading", lambda l: l.startswith("SEQ"))
        wait_for("the live model", lambda: model.status == "live")
        time.sleep(0.5)
        run_cli(inst, 0, "memo", str(jobid), "n=1")
        first = w.wait_line("n=1", lambda l: l.endswith(f"{jobid} annotations 1"))

        assert m.stop() == 0
        w.wait_line("watch saying it waits", lambda l: "waiting" in l, stream="err")
        inst.flux("job", "memo", str(jobid), "n=2")  # made while no mirror runs
        m.start()
        w.wait_line("watch resuming", lambda l: "back" in l, stream="err")
        second = w.wait_line("n=2, made while the mirror was down",
                             lambda l: l.endswith(f"{jobid} annotations 2"))
        run_cli(inst, 0, "memo", str(jobid), "n=3")
        third = w.wait_line("n=3", lambda l: l.endswith(f"{jobid} annotations 3"))

        # killed (no end of stream) and restarted at once: the stream's
        # probe sees another service (its `started`) and resumes there
        m.proc.kill()
        m.proc.wait()
        m.proc = None
        m.start()
        wait_for("the annot service again", lambda: _served(inst))
        run_cli(inst, 0, "memo", str(jobid), "n=4")
        w.wait_line("watch noticing the killed mirror", lambda l: "went away" in l, stream="err")
        fourth = w.wait_line("n=4", lambda l: l.endswith(f"{jobid} annotations 4"))
        seqs = [int(x.split()[0]) for x in (first, second, third, fourth)]
        assert seqs == sorted(seqs) and len(set(seqs)) == 4
        assert w.p.poll() is None  # still following
        lines = [l for l in w.out[1:] if l.split()[1] == str(jobid)]
        assert len(lines) == len(set(lines))  # nothing shown twice

        # the live model went through both restarts to the same state
        wait_for("the live model to have n=4",
                 lambda: (model.jobs.get(jobid) is not None
                          and model.jobs[jobid].annotations == {"user": {"n": 4}}), 60)
        assert model.status == "live" and model.seq == m.stats()["seq"]
    finally:
        if live is not None:
            live.stop()
        if w is not None:
            w.stop()
        m.cleanup()
        inst.cleanup()


def test_no_flux_on_path_is_one_sentence(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "FLUX_ANNOT_SOCKET")}
    env["PATH"] = BIN + os.pathsep + "/usr/bin:/bin"
    env["FLUX_URI"] = f"local://{tmp_path}/local-0"
    probe = subprocess.run([sys.executable, "-c", "import flux"], env=env, capture_output=True)
    if probe.returncode == 0:
        pytest.skip("this Python imports Flux's bindings by itself: nothing to find")
    if any(os.access(os.path.join(d, "flux"), os.X_OK) for d in ("/usr/bin", "/bin")):
        pytest.skip("a flux command is installed in /usr/bin")
    r = subprocess.run([sys.executable, "-m", "flux_annot", "list"], env=env,
                       capture_output=True, text=True, timeout=60, cwd="/")
    assert r.returncode == 1
    assert r.stderr.count("\n") == 1 and "no `flux` command on PATH" in r.stderr
    assert env["FLUX_URI"] in r.stderr


# --- top ----------------------------------------------------------------------------


def test_top_in_tmux_on_a_leaf_rank_shows_what_list_shows(inst, mirror):
    from test_top import FMT, Tmux, table

    def rows():
        out = run_cli(inst, LEAF, "list", "-n", "-o", FMT).stdout
        return sorted(line.rstrip() for line in out.splitlines())

    held = [submit(inst, "--urgency=0", "sleep", "300") for _ in range(2)]
    running = submit(inst, "sleep", "300")
    term = Tmux()
    try:
        inst.flux("job", "memo", str(held[0]), "note=first")
        inst.flux("job", "wait-event", str(running), "start")
        want = wait_for("the mirror to have the jobs", lambda: (lambda r: r if len(r) == 3 else None)(rows()))
        env = user_env(inst, LEAF)
        term.start("", "-o", FMT, env={"PATH": env["PATH"], "FLUX_URI": env["FLUX_URI"],
                                       "PYTHONPATH": ""})
        lines = term.wait(lambda ls: sorted(table(ls)) == want, "the screen to match list")
        assert inst.rank_uri(LEAF) in lines[0]  # the header names the broker it goes through
        # a change made on rank 0 reaches the screen on rank 3
        run_cli(inst, 0, "memo", str(held[1]), "note=from-rank-0")
        want = rows()
        lines = term.wait(lambda ls: sorted(table(ls)) == want, "the memo on the screen")
        assert any("from-rank-0" in row for row in table(lines))
        term.keys("q")
        term.wait(lambda ls: any(line.startswith("EXIT=0") for line in ls), "top to quit")
    finally:
        term.close()
        inst.flux("cancel", *map(str, held + [running]), check=False)


# --- the dashboard --------------------------------------------------------------------


def test_the_dashboard_on_a_leaf_rank_streams_the_instance(inst, mirror):
    import re

    from dashproc import SSEReader

    jobid = submit(inst, "--urgency=0", "sleep", "300")
    d = subprocess.Popen([sys.executable, "-m", "flux_annot", "dashboard"], env=user_env(inst, LEAF),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd="/")
    page = None
    try:
        run_cli(inst, 0, "memo", str(jobid), "stage=1")
        line = d.stdout.readline().decode()
        url = re.search(r"http://127\.0\.0\.1:(\d+)/\?token=(\S+)", line)
        assert url, (line, d.stderr.read1().decode() if d.poll() is not None else "")
        page = SSEReader("127.0.0.1", int(url.group(1)), url.group(2))
        def until(what, cond, timeout=30):
            deadline = time.monotonic() + timeout
            frames = []
            while time.monotonic() < deadline:
                ev, data = page.next()
                frames.append((ev, data[:200]))
                if cond(ev, json.loads(data)):
                    return json.loads(data)
            raise AssertionError(f"no {what} in {frames}")

        # the page may come before the dashboard's own snapshot: the next one has the job
        snap = until("snapshot with the job", lambda ev, d: ev == "snapshot" and any(
            j[0] == str(jobid) for j in d["jobs"]))
        row = [j for j in snap["jobs"] if j[0] == str(jobid)][0]
        assert row[1:] == [os.getuid(), "SCHED", {"user": {"stage": 1}}]
        run_cli(inst, 0, "memo", str(jobid), "stage=2")  # made on rank 0
        until("the memo's batch", lambda ev, d: ev == "batch" and [
            str(jobid), {"user": {"stage": 2}}] in d.get("annotations", []))
    finally:
        if page is not None:
            page.close()
        d.terminate()
        d.wait(20)
        d.stdout.close()
        d.stderr.close()
        inst.flux("cancel", str(jobid), check=False)
