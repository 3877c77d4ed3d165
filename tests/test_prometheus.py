"""A real Prometheus server (Debian's `prometheus` package, installed by
.ci/run) scraping `serve --metrics` every 500 ms: its query API returns
the series, and they move with the load (docs/operations.md)."""

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request

import pytest

from flux_annot.wire.client import Client
from metricsproc import Serve

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Prometheus:
    """`prometheus` on a free loopback port, scraping one target, its TSDB
    in a temporary directory."""

    def __init__(self, tmp, target):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        cfg = tmp / "prometheus.yml"
        cfg.write_text(
            "global:\n  scrape_interval: 500ms\n  scrape_timeout: 400ms\n"
            "scrape_configs:\n  - job_name: flux-annot\n"
            f"    static_configs:\n      - targets: ['{target}']\n"
        )
        self.log = open(tmp / "prometheus.log", "wb")
        self.proc = subprocess.Popen(
            [PROMETHEUS, f"--config.file={cfg}", f"--storage.tsdb.path={tmp / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def get(self, path):
        with urllib.request.urlopen(self.base + path, timeout=10) as r:
            return r.read().decode()

    def wait_ready(self, timeout=120):
        deadline = time.monotonic() + timeout
        while True:
            assert self.proc.poll() is None, "prometheus exited"
            try:
                if "Ready" in self.get("/-/ready"):
                    return
            except OSError:
                pass
            assert time.monotonic() < deadline, "prometheus did not become ready"
            time.sleep(0.2)

    def query(self, expr):
        """[(labels, value)] of an instant query through /api/v1/query."""
        body = json.loads(self.get("/api/v1/query?" + urllib.parse.urlencode({"query": expr})))
        assert body["status"] == "success", body
        return [(r["metric"], float(r["value"][1])) for r in body["data"]["result"]]

    def wait_value(self, expr, want, timeout=60):
        """Poll until the query's single value satisfies want(v); returns it."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            res = self.query(expr)
            if len(res) == 1:
                last = res[0][1]
                if want(last):
                    return last
            time.sleep(0.25)
        pytest.fail(f"{expr}: last value {last!r}")

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


@pytest.fixture
def prometheus_bin():
    if not os.access(PROMETHEUS, os.X_OK):
        why = "needs Debian's prometheus package (.ci/run installs it)"
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)
    return PROMETHEUS


def test_prometheus_scrapes_and_the_series_move_with_load(prometheus_bin, tmp_path):
    s = Serve(store=tmp_path / "annot.db", extra=["--metrics", "127.0.0.1:0"]).start()
    prom = None
    try:
        target = s.url.split("//", 1)[1].split("/", 1)[0]
        prom = Prometheus(tmp_path, target)
        prom.wait_ready()
        assert prom.wait_value('up{job="flux-annot"}', lambda v: v == 1) == 1
        assert prom.wait_value("flux_annot_store_up", lambda v: v == 1) == 1
        annotate = 'flux_annot_requests_total{topic="job-manager.annotate"}'
        assert prom.wait_value(annotate, lambda v: v >= 0) == 0
        uid = os.getuid()
        with Client(s.socket) as c:
            for j in range(1, 11):
                c.submit(j, uid)
            n = c.annotate_pipelined(list(range(1, 11)) * 50,
                                     [{"workflow": {"step": k}} for k in range(500)],
                                     volatile=True)
            assert n == 500
            assert prom.wait_value(annotate, lambda v: v == 500) == 500
            assert prom.wait_value('flux_annot_requests_total{topic="job-manager.submit"}',
                                   lambda v: v == 10) == 10
            assert prom.wait_value('flux_annot_jobs{state="SCHED"}', lambda v: v == 10) == 10
            assert prom.wait_value("flux_annot_commit_duration_seconds_count",
                                   lambda v: v >= 1) >= 1
            assert prom.wait_value("rate(flux_annot_published_entries_total[5s])",
                                   lambda v: v > 0) > 0
            # the load goes on: the series moves again
            c.annotate_pipelined(list(range(1, 11)) * 30,
                                 [{"workflow": {"step": k}} for k in range(300)], volatile=True)
            assert prom.wait_value(annotate, lambda v: v == 800) == 800
            with pytest.raises(Exception):
                c.get(12345)
            assert prom.wait_value('flux_annot_rejections_total{reason="unknown_job"}',
                                   lambda v: v == 1) == 1
        # a histogram quantile Prometheus computes from our buckets
        q = prom.query("histogram_quantile(0.5, flux_annot_commit_duration_seconds_bucket)")
        assert len(q) == 1 and 0 < q[0][1] <= 10
    finally:
        if prom is not None:
            prom.stop()
        s.cleanup()
