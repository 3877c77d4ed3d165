"""Test helpers for `flux-annotate dashboard`: the dashboard as a real
subprocess (its printed URL and token), raw HTTP, and headless Chromium
through Selenium with Debian's `chromium` and `chromedriver` (never a
downloaded browser or driver: Selenium Manager is kept offline)."""

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.parse

from serverproc import ServerProc, read_line, stop_process

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


class _Forked:
    """A forked child as much like a Popen as DashboardProc needs."""

    def __init__(self, pid, stdout, stderr):
        self.pid = pid
        self.stdout = stdout
        self.stderr = stderr
        self.returncode = None

    def poll(self):
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout=None):
        deadline = time.monotonic() + (timeout if timeout is not None else 1e9)
        while self.poll() is None:
            if time.monotonic() > deadline:
                raise subprocess.TimeoutExpired("dashboard", timeout)
            time.sleep(0.05)
        return self.returncode

    def send_signal(self, sig):
        if self.returncode is None:
            os.kill(self.pid, sig)

    def kill(self):
        self.send_signal(signal.SIGKILL)


def _fork_dashboard(uid, argv):
    """The dashboard run by `uid` in a forked child (the venv's interpreter
    may not be executable by that uid; a fork needs no exec)."""
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never return into pytest
        code = 1
        try:
            os.dup2(out_w, 1)
            os.dup2(err_w, 2)
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            from flux_annot.cli import main

            sys.stdout = os.fdopen(1, "w", buffering=1)
            sys.stderr = os.fdopen(2, "w", buffering=1)
            code = main(argv)
        finally:
            os._exit(code or 0)
    os.close(out_w)
    os.close(err_w)
    return _Forked(pid, os.fdopen(out_r, "rb"), os.fdopen(err_r, "rb"))


class DashboardProc:
    """`python -m flux_annot dashboard --socket P` and the URL it prints
    (with `user`: the same run by that uid, in a forked child)."""

    def __init__(self, socket_path, extra=(), user=None):
        self.socket_path = socket_path
        self.extra = list(extra)
        self.user = user
        self.proc = None
        self.url = None

    def start(self, timeout=30):
        cmd = [sys.executable, "-m", "flux_annot", "dashboard", "--socket", self.socket_path]
        cmd += self.extra
        if self.user is not None:
            self.proc = _fork_dashboard(self.user, cmd[3:])
        else:
            self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        line = read_line(self.proc, timeout, "the dashboard")
        m = re.search(r"(http://\S+)", line.decode())
        assert m, line
        self.url = m.group(1)
        parts = urllib.parse.urlsplit(self.url)
        self.host, self.port = parts.hostname, parts.port
        self.token = urllib.parse.parse_qs(parts.query)["token"][0]
        self.base = f"http://{self.host}:{self.port}"
        return self

    def stop(self, timeout=20):
        if self.proc is None:
            return None
        rc, self.stderr = stop_process(self.proc, signal.SIGTERM, timeout)
        self.proc = None
        return rc

    rss_kib = ServerProc.rss_kib


def http_raw(host, port, data, timeout=10):
    """Send raw bytes, return everything the server answers until it closes
    (or the timeout: then what arrived so far)."""
    s = socket.create_connection((host, port), timeout=timeout)
    try:
        s.sendall(data)
        chunks = []
        while True:
            try:
                b = s.recv(65536)
            except socket.timeout:
                break
            if not b:
                break
            chunks.append(b)
        return b"".join(chunks)
    finally:
        s.close()


def status_of(response):
    """HTTP status code of a raw response."""
    m = re.match(rb"HTTP/1\.[01] (\d{3})", response)
    return int(m.group(1)) if m else None


def get(host, port, path, headers=(), timeout=10):
    hdr = "".join(f"{k}: {v}\r\n" for k, v in headers)
    req = f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n{hdr}\r\n"
    return http_raw(host, port, req.encode(), timeout)


class SSEReader:
    """A page's event stream read by hand: frames as (event, data) pairs."""

    def __init__(self, host, port, token, rcvbuf=None, timeout=20):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect((host, port))
        self.sock.sendall(
            f"GET /events?token={token} HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Accept: text/event-stream\r\n\r\n".encode()
        )
        self.buf = bytearray()
        self.headers = None

    def _fill(self):
        b = self.sock.recv(1 << 20)
        if not b:
            raise EOFError("the dashboard closed the stream")
        self.buf += b

    def next(self):
        """The next frame as (event, data text); chunked encoding undone."""
        if self.headers is None:
            while b"\r\n\r\n" not in self.buf:
                self._fill()
            head, rest = bytes(self.buf).split(b"\r\n\r\n", 1)
            self.headers, self.buf = head, bytearray(rest)
            self.body = bytearray()
        while True:
            # aiohttp streams with chunked transfer encoding
            pos = 0
            buf = self.buf
            while True:
                eol = buf.find(b"\r\n", pos)
                if eol < 0:
                    break
                size = int(buf[pos:eol], 16)
                if len(buf) < eol + 2 + size + 2:
                    break
                self.body += buf[eol + 2:eol + 2 + size]
                pos = eol + 2 + size + 2
            del buf[:pos]
            end = self.body.find(b"\n\n")
            if end >= 0:
                frame = bytes(self.body[:end])
                del self.body[:end + 2]
                event, data = "message", []
                for line in frame.decode().split("\n"):
                    if line.startswith("event: "):
                        event = line[7:]
                    elif line.startswith("data: "):
                        data.append(line[6:])
                if data:
                    return event, "\n".join(data)
                continue
            self._fill()

    def close(self):
        self.sock.close()


def chrome(width=1400, height=1100):
    """Headless Chromium from Debian through Selenium, offline."""
    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must never download anything
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                f"--window-size={width},{height}", "--no-first-run", "--disable-extensions",
                "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--disable-default-apps", "--lang=en-US"):
        opts.add_argument(arg)
    return webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)


def wait_for(fn, timeout=60, interval=0.1, what="condition"):
    """Poll fn() until it returns a true value; return it (bounded wait)."""
    deadline = time.monotonic() + timeout
    while True:
        v = fn()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(interval)


# The page's tables as a person reads them: one list of cell texts per row,
# the row's job id (decimal) first.
JS_TABLE = """
return Array.from(document.querySelectorAll(arguments[0] + ' tbody tr')).map(
  tr => [tr.dataset.id].concat(Array.from(tr.cells).map(c => c.textContent)));
"""
JS_SEQ = "return document.body.dataset.seq ? Number(document.body.dataset.seq) : -1;"
