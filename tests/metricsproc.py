"""Test helpers for `flux-annotate serve` run as an operator runs it: a
subprocess with its log in a file, its metrics URL read from that log,
scrapes parsed with prometheus_client's own parser."""

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

CMD = [sys.executable, "-m", "flux_annot"]


class Serve:
    """`flux-annotate serve --socket S --store F [extra]` in a 0755 directory
    under /tmp (guests can reach the socket); stderr in a file."""

    def __init__(self, store=":memory:", extra=(), env=None):
        self.dir = tempfile.mkdtemp(prefix="fa-ops-", dir="/tmp")
        os.chmod(self.dir, 0o755)
        self.socket = os.path.join(self.dir, "run", "socket")
        self.store = str(store)
        self.extra = list(extra)
        self.env = env
        self.proc = None
        self.log = os.path.join(self.dir, "serve.log")

    def start(self, timeout=60, wait=True):
        cmd = CMD + ["serve", "--socket", self.socket, "--store", self.store, *self.extra]
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=log, env=self.env)
        if wait:
            deadline = time.monotonic() + timeout
            while "serving on" not in self.stderr_text():
                if self.proc.poll() is not None:
                    raise RuntimeError(f"serve exited at start: {self.stderr_text()}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"serve did not start: {self.stderr_text()}")
                time.sleep(0.05)
            if "--metrics" in self.extra:
                while "metrics on" not in self.stderr_text():
                    time.sleep(0.05)
        return self

    def stderr_text(self):
        with open(self.log, encoding="utf-8", errors="replace") as f:
            return f.read()

    @property
    def url(self):
        m = re.search(r"metrics on (http://\S+)", self.stderr_text())
        return m.group(1) if m else None

    def scrape(self):
        """{sample name + sorted labels: value} of one scrape, and the families."""
        with urllib.request.urlopen(self.url, timeout=30) as r:
            text = r.read().decode()
        return samples(text), text

    def stop(self, sig=signal.SIGTERM, timeout=30):
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        self.proc = None
        return rc

    def cleanup(self):
        self.stop(signal.SIGKILL)
        shutil.rmtree(self.dir, ignore_errors=True)


def samples(text):
    """The samples of an exposition, parsed by prometheus_client:
    {(name, (("label", "value"), ...)): value}."""
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(snap, name, **labels):
    return snap[(name, tuple(sorted(labels.items())))]


def listening_tcp_ports(pid):
    """Ports on which process `pid` has a TCP socket in LISTEN state, from
    /proc/net/tcp and tcp6 matched to the process's socket inodes."""
    inodes = set()
    fd_dir = f"/proc/{pid}/fd"
    for fd in os.listdir(fd_dir):
        try:
            target = os.readlink(os.path.join(fd_dir, fd))
        except OSError:
            continue
        m = re.fullmatch(r"socket:\[(\d+)\]", target)
        if m:
            inodes.add(m.group(1))
    ports = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                lines = f.readlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == "0A" and inode in inodes:  # TCP_LISTEN
                ports.append(int(local.rsplit(":", 1)[1], 16))
    return ports
