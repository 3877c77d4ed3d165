"""Test helpers for a real Flux instance (flux-core built by `.ci/run`):
`flux start --test-size=1` instances and `flux-annotate serve --flux`.

The Flux installation comes from $FLUX_ANNOT_TEST_FLUX_PREFIX. Without it
the tests that need Flux skip with that reason, except in CI (CI=true),
where they fail: CI builds Flux and must run them.
"""

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

from flux_annot.wire.client import Client
from flux_annot.ids import parse_jobid

PREFIX = os.environ.get("FLUX_ANNOT_TEST_FLUX_PREFIX")


def flux_prefix():
    """The Flux prefix, or skip (fail in CI) saying what is missing."""
    if PREFIX and os.access(os.path.join(PREFIX, "bin", "flux"), os.X_OK):
        return PREFIX
    why = (
        "needs a Flux installation: set FLUX_ANNOT_TEST_FLUX_PREFIX to a flux-core "
        "install prefix (.ci/run builds one)"
        + (f" ({PREFIX}/bin/flux is missing)" if PREFIX else "")
    )
    if os.environ.get("CI"):
        pytest.fail(why)
    pytest.skip(why)


FLUXION = os.environ.get("FLUX_ANNOT_TEST_FLUXION_PREFIX")
_FLUXION_MODULES = ("sched-fluxion-resource.so", "sched-fluxion-qmanager.so")


def fluxion_prefix():
    """The Fluxion (flux-sched) prefix, or skip (fail in CI) saying what is missing."""
    mods = os.path.join(FLUXION or "", "lib", "flux", "modules")
    if FLUXION and all(os.path.exists(os.path.join(mods, m)) for m in _FLUXION_MODULES):
        return FLUXION
    why = (
        "needs Fluxion: set FLUX_ANNOT_TEST_FLUXION_PREFIX to a flux-sched install prefix "
        "(.ci/run builds one)" + (f" (no Fluxion modules in {mods})" if FLUXION else "")
    )
    if os.environ.get("CI"):
        pytest.fail(why)
    pytest.skip(why)


def resource_toml(cores):
    """A resource.toml declaring `cores` cores on this host (flux-config-resource(5))."""
    import socket

    return (
        "[resource]\nnoverify = true\n\n[[resource.config]]\n"
        f'hosts = "{socket.gethostname()}"\ncores = "0-{cores - 1}"\n'
    )


def load_fluxion(inst, fluxion, policy="conservative"):
    """Replace sched-simple by Fluxion in `inst` (its README's recipe)."""
    mods = os.path.join(fluxion, "lib", "flux", "modules")
    inst.flux("module", "remove", "sched-simple")
    inst.flux("module", "load", os.path.join(mods, _FLUXION_MODULES[0]))
    inst.flux("module", "load", os.path.join(mods, _FLUXION_MODULES[1]), f"queue-policy={policy}")


def flux_pythonpath(prefix):
    lib = os.path.join(prefix, "lib", "flux")
    found = sorted(d for d in os.listdir(lib) if d.startswith("python3"))
    return os.path.join(lib, found[-1])


def wait_for(what, fn, timeout=60.0, step=0.1):
    """Poll fn() until it returns a true value; fail naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(step)
    pytest.fail(f"timed out waiting for {what} (last: {last!r})")


class FluxInstance:
    """`flux start --test-size=SIZE` (default 1) in a run directory of our
    own, so that a restart in the same directory keeps the URI. With
    `access_guests`, other uids may connect to every rank's broker."""

    def __init__(self, prefix, rundir=None, access_guests=False, size=1, config_files=None):
        """config_files: {name: TOML text} for the instance's config folder
        (e.g. resource.toml declaring cores, flux-config-resource(5))."""
        self.prefix = prefix
        self.size = size
        self.access_guests = access_guests
        self.config_files = dict(config_files or {})
        self.base = tempfile.mkdtemp(prefix="fa-flux-", dir="/tmp")
        os.chmod(self.base, 0o755)
        self.rundir = rundir or os.path.join(self.base, "run")
        self.uri = f"local://{self.rundir}/local-0"
        self.proc = None
        self.env = dict(os.environ)
        self.env["PATH"] = os.path.join(prefix, "bin") + os.pathsep + self.env.get("PATH", "")
        self.env["FLUX_URI"] = self.uri

    def start(self, timeout=60):
        """Start the instance. Its initial program waits on our pipe: closing
        the pipe ends the program, and so the instance (`stop`)."""
        os.makedirs(self.rundir, exist_ok=True)
        cmd = [
            "timeout",
            "1200",
            os.path.join(self.prefix, "bin", "flux"),
            "start",
            f"--test-size={self.size}",
            f"--test-rundir={self.rundir}",
            "sh",
            "-c",
            "flux getattr broker.pid; read x",
        ]
        files = dict(self.config_files)
        if self.access_guests:  # other uids may connect (flux-config-access(5))
            files["access.toml"] = "[access]\nallow-guest-user = true\nallow-root-owner = true\n"
        if files:
            conf = os.path.join(self.base, "conf")
            os.makedirs(conf, exist_ok=True)
            for name, text in files.items():
                with open(os.path.join(conf, name), "w") as f:
                    f.write(text)
            cmd[5:5] = [f"--config-path={conf}"]
        self.proc = subprocess.Popen(
            cmd,
            env=self.env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        out = self.proc.stdout
        if not select.select([out], [], [], timeout)[0]:
            self.kill()
            pytest.fail("the Flux instance did not start")
        line = out.readline()
        if not line.strip().isdigit():
            self.kill()
            pytest.fail(f"the Flux instance did not start ({line!r})")
        self.broker = int(line)
        if self.access_guests:  # the local connectors' folder: guests must reach it
            os.chmod(self.rundir, 0o755)
        return self

    def rank_uri(self, rank):
        """FLUX_URI of rank `rank`'s broker (its local connector)."""
        return f"local://{self.rundir}/local-{rank}"

    def stop(self):
        """End the instance as its user would (the initial program exits)."""
        if self.proc is None:
            return
        try:
            self.proc.stdin.close()
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.kill()
            return
        self.proc.stdout.close()
        self.proc = None

    def kill(self):
        """The instance dies (SIGKILL): nothing is canceled or cleaned up."""
        if self.proc is None:
            return
        for pid in (self.broker, -self.proc.pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, TypeError):
                pass
        self.proc.wait()
        self.proc.stdin.close()
        self.proc.stdout.close()
        self.proc = None
        shutil.rmtree(self.rundir, ignore_errors=True)

    def cleanup(self):
        self.stop()
        shutil.rmtree(self.base, ignore_errors=True)

    def flux(self, *args, check=True):
        """Run `flux ARGS` in the instance; the CompletedProcess (text)."""
        r = subprocess.run(
            [os.path.join(self.prefix, "bin", "flux"), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
            stdin=subprocess.DEVNULL,
        )
        if check and r.returncode != 0:
            raise AssertionError(f"flux {' '.join(args)} failed: {r.stderr}")
        return r

    def jobs(self):
        """`flux jobs -a --json`: {id: job dict}."""
        out = self.flux("jobs", "-a", "--json").stdout
        return {j["id"]: j for j in json.loads(out)["jobs"]}


def submit(inst, *args):
    """`flux submit ARGS` → the job id as an integer."""
    return parse_jobid(inst.flux("submit", *args).stdout.strip())


class Mirror:
    """`flux-annotate serve --flux-uri URI` on a socket guests can reach."""

    def __init__(self, inst, store, extra=(), config=None):
        """config: TOML text for `serve --config` (None: the defaults)."""
        self.inst = inst
        self.extra = list(extra)  # more `serve` options (--metrics ...)
        self.dir = tempfile.mkdtemp(prefix="fa-msock-", dir="/tmp")
        os.chmod(self.dir, 0o755)
        self.socket = os.path.join(self.dir, "run", "socket")
        self.store = str(store)
        self.proc = None
        self.config = None
        if config is not None:
            self.config = os.path.join(self.dir, "config.toml")
            with open(self.config, "w") as f:
                f.write(config)
        self.env = dict(inst.env)
        pp = flux_pythonpath(inst.prefix)
        self.env["PYTHONPATH"] = pp + os.pathsep + self.env.get("PYTHONPATH", "")

    def start(self, timeout=60):
        cmd = [
            sys.executable,
            "-m",
            "flux_annot",
            "serve",
            "--flux-uri",
            self.inst.uri,
            "--socket",
            self.socket,
            "--store",
            self.store,
            *self.extra,
        ] + (["--config", self.config] if self.config else [])
        self.log = os.path.join(self.dir, "serve.log")  # a file: a full pipe would block it
        with open(self.log, "wb") as log:  # a new log for each start
            self.proc = subprocess.Popen(
                cmd, env=self.env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log
            )

        def serving():
            if self.proc.poll() is not None:
                pytest.fail(f"the mirror exited at start: {self.stderr_text()}")
            return "serving on" in self.stderr_text()

        wait_for("the mirror to listen", serving, timeout)
        return self

    def stderr_text(self):
        with open(self.log, encoding="utf-8", errors="replace") as f:
            return f.read()

    def wait_synced(self, timeout=60):
        def synced():
            st = self.stats()["flux"]
            return st if st["connected"] and st["synced"] else None

        return wait_for("the mirror to synchronise with Flux", synced, timeout)

    def client(self):
        return Client(self.socket)

    def stats(self):
        with self.client() as c:
            return c.stats()

    def cli(self, *args, check=True, input=None):
        r = subprocess.run(
            [sys.executable, "-m", "flux_annot", "--socket", self.socket, *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
            input=input,
        )
        if check and r.returncode != 0:
            raise AssertionError(f"flux-annotate {' '.join(args)} failed: {r.stderr}")
        return r

    def stop(self):
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        self.proc = None
        return rc

    def cleanup(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
