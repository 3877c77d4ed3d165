"""A real Flux instance and `flux-annotate serve --flux` for the benches
(bench_flux.py, bench_broker.py): start, wait, stop, the mirror's CPU."""

import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time

TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    """User + system CPU seconds of process `pid` so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def flux_pythonpath(prefix):
    lib = os.path.join(prefix, "lib", "flux")
    return os.path.join(lib, sorted(d for d in os.listdir(lib) if d.startswith("python3"))[-1])


class Instance:
    """`flux start --test-size=SIZE` in a run directory of its own, its
    initial program waiting on our pipe; `mirror()` starts the mirror."""

    def __init__(self, prefix, size=1, tag="flux"):
        self.prefix = prefix
        self.pypath = flux_pythonpath(prefix)
        self.base = tempfile.mkdtemp(prefix=f"fa-bench-{tag}-", dir="/tmp")
        self.rundir = os.path.join(self.base, "run")
        os.makedirs(self.rundir)
        self.uri = self.rank_uri(0)
        self.flux = os.path.join(prefix, "bin", "flux")
        env = dict(os.environ)
        env["PATH"] = os.path.join(prefix, "bin") + os.pathsep + env.get("PATH", "")
        env["FLUX_URI"] = self.uri
        env["PYTHONPATH"] = self.pypath + os.pathsep + env.get("PYTHONPATH", "")
        self.env = env
        self.mirror_proc = None
        self.proc = subprocess.Popen(
            ["timeout", "1800", self.flux, "start", f"--test-size={size}",
             f"--test-rundir={self.rundir}", "sh", "-c", "echo up; read x"],
            env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL, start_new_session=True,
        )
        if not select.select([self.proc.stdout], [], [], 60)[0] or not self.proc.stdout.readline():
            self.close()
            raise SystemExit("the Flux instance did not start")

    def rank_uri(self, rank):
        return f"local://{self.rundir}/local-{rank}"

    def mirror(self, extra=(), timeout=60):
        """Start `flux-annotate serve --flux` on a socket of ours and wait
        until it has read Flux's history; returns the socket path."""
        from flux_annot.wire.client import Client
        from flux_annot.errors import AnnotError

        sock = os.path.join(self.base, "socket")
        self.mirror_proc = p = subprocess.Popen(
            [sys.executable, "-m", "flux_annot", "serve", "--flux-uri", self.uri,
             "--socket", sock, "--store", os.path.join(self.base, "mirror.db"), *extra],
            env=self.env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + timeout
        while True:
            try:
                with Client(sock) as c:
                    if c.stats()["flux"]["synced"]:
                        return sock
            except (OSError, KeyError, AnnotError):
                pass
            if time.monotonic() > deadline or p.poll() is not None:
                raise SystemExit("the mirror did not start: "
                                 + p.stderr.read().decode(errors="replace"))
            time.sleep(0.1)

    def close(self):
        m = self.mirror_proc
        if m is not None and m.poll() is None:
            m.send_signal(signal.SIGTERM)
            try:
                m.wait(30)
            except subprocess.TimeoutExpired:
                m.kill()
        try:
            self.proc.stdin.close()
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        shutil.rmtree(self.base, ignore_errors=True)
