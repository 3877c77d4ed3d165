"""Test helpers for the socket server: a real server subprocess, raw frames,
and running a function as another uid in a forked child."""

import json
import os
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import traceback

from flux_annot.wire import protocol

NOBODY = 65534


def read_line(proc, timeout, what):
    """The first line `proc` prints on stdout (bytes), within `timeout` s."""
    out = proc.stdout
    deadline = time.monotonic() + timeout
    line = b""
    while not line.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([out], [], [], left)[0]:
            proc.kill()
            raise RuntimeError(f"{what} did not become ready")
        ch = os.read(out.fileno(), 1)
        if not ch:
            err = proc.stderr.read().decode(errors="replace")
            raise RuntimeError(f"{what} exited at start: {err}")
        line += ch
    return line


def stop_process(proc, sig=signal.SIGTERM, timeout=20):
    """Signal proc, wait (SIGKILL after `timeout` s); (exit status, stderr text)."""
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        rc = proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        rc = proc.wait()
    err = proc.stderr.read().decode(errors="replace")
    proc.stdout.close()
    proc.stderr.close()
    return rc, err


class ServerProc:
    """`python -m flux_annot.wire.server` on a socket in a fresh 0755 directory
    under /tmp (pytest's tmp_path is 0700: guests could not reach it)."""

    def __init__(self, store=":memory:", config=None):
        self.dir = tempfile.mkdtemp(prefix="fa-sock-", dir="/tmp")
        os.chmod(self.dir, 0o755)
        self.path = os.path.join(self.dir, "run", "socket")
        self.store = str(store)
        self.config = config
        self.proc = None

    def start(self, timeout=30):
        cmd = [sys.executable, "-m", "flux_annot.wire.server", "--socket", self.path]
        cmd += ["--store", self.store]
        if self.config:
            cmd += ["--config", str(self.config)]
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=False
        )
        line = read_line(self.proc, timeout, "server")
        assert line.startswith(b"ready "), line
        return self

    def stop(self, sig=signal.SIGTERM, timeout=20):
        """Signal the server and return its exit status."""
        if self.proc is None:
            return None
        rc, self.stderr = stop_process(self.proc, sig, timeout)
        self.proc = None
        return rc

    def cleanup(self):
        self.stop(signal.SIGKILL)
        shutil.rmtree(self.dir, ignore_errors=True)

    def rss_kib(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0


class Raw:
    """A raw socket speaking frames, for malformed input."""

    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(20)
        self.sock.connect(path)
        self.reader = protocol.FrameReader()
        self.frames = []

    def send_body(self, body):
        self.sock.sendall(struct.pack(">I", len(body)) + body)

    def send(self, topic, matchtag, payload):
        self.sock.sendall(protocol.request(topic, matchtag, payload))

    def recv(self):
        """Next response as a dict, or None when the server closed."""
        while not self.frames:
            data = self.sock.recv(65536)
            if not data:
                return None
            self.frames += self.reader.feed(data)
        return json.loads(self.frames.pop(0))

    def close(self):
        self.sock.close()


def run_as(uid, fn, gid=None):
    """Run fn() in a forked child with uid/gid dropped; return its JSON-able
    result, or {"exception": [errno, message, class]} if it raised."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never return into pytest
        try:
            os.close(r)
            os.setgroups([])
            os.setgid(uid if gid is None else gid)
            os.setuid(uid)
            try:
                result = {"value": fn()}
            except Exception as e:
                result = {
                    "exception": [getattr(e, "errno", None), str(e), type(e).__name__],
                    "tb": traceback.format_exc(),
                }
            os.write(w, json.dumps(result).encode())
        finally:
            os._exit(0)
    os.close(w)
    chunks = []
    while True:
        b = os.read(r, 65536)
        if not b:
            break
        chunks.append(b)
    os.close(r)
    os.waitpid(pid, 0)
    return json.loads(b"".join(chunks) or b'{"exception": [null, "child died", ""]}')


def is_root():
    return os.geteuid() == 0


def kill9(server):
    server.proc.send_signal(signal.SIGKILL)
    server.proc.wait()
