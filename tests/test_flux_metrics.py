"""A Flux mirror's metrics and readiness against a real `flux start`
instance (docs/operations.md): ready once synchronised enough to serve,
the Flux connection and lag as series, a lost and returning broker seen
in the metrics and in one log line each."""

import re
import socket
import urllib.request

from fluxinst import FluxInstance, Mirror, flux_prefix, submit, wait_for
from metricsproc import samples, value
from test_operations import documented_metrics, rule_metrics


def scrape(m):
    url = re.search(r"metrics on (\S+)", m.stderr_text()).group(1)
    with urllib.request.urlopen(url, timeout=30) as r:
        return samples(r.read().decode())


def test_a_mirrors_metrics_follow_its_flux_instance(tmp_path):
    inst = FluxInstance(flux_prefix()).start()
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify"))
    notify.settimeout(60)
    m = Mirror(inst, tmp_path / "m.db", extra=["--metrics", "127.0.0.1:0"])
    m.env["NOTIFY_SOCKET"] = str(tmp_path / "notify")
    try:
        m.start()
        assert notify.recv(4096).decode().split("\n")[0] == "READY=1"
        m.wait_synced()
        snap = scrape(m)
        assert value(snap, "flux_annot_flux_connected") == 1
        assert value(snap, "flux_annot_flux_synced") == 1
        held = submit(inst, "--urgency=0", "sleep", "300")
        wait_for("the held job in the mirror",
                 lambda: value(scrape(m), "flux_annot_jobs", state="SCHED") == 1)
        r = m.cli("memo", str(held), "step=2")  # a user's memo, sent to Flux
        assert r.returncode == 0
        submit(inst, "sleep", "0.1")
        wait_for("the job to end in the mirror",
                 lambda: value(scrape(m), "flux_annot_jobs", state="INACTIVE") == 1)
        snap = scrape(m)
        lag = value(snap, "flux_annot_flux_lag_seconds")
        assert 0 <= lag < 30
        assert value(snap, "flux_annot_flux_events_total") >= 5  # submit ... clean
        assert value(snap, "flux_annot_flux_memos_sent_total") == 1
        assert value(snap, "flux_annot_requests_total", topic="job-manager.memo") == 1
        # requests through the broker count under their topic there (annot.M)
        code = ("import flux, errno\n"
                "h = flux.Flux()\n"
                "h.rpc('annot.stats', {}).get()\n"
                "h.rpc('annot.getattr', {'id': %d}).get()\n"
                "try:\n    h.rpc('annot.nope', {}).get()\n"
                "except OSError as e:\n    assert e.errno == errno.ENOSYS\n" % held)
        inst.flux("python", "-c", code)
        snap = scrape(m)
        assert value(snap, "flux_annot_requests_total", topic="annot.stats") == 1
        assert value(snap, "flux_annot_requests_total", topic="annot.getattr") == 1
        assert value(snap, "flux_annot_requests_total", topic="unknown") == 1
        assert value(snap, "flux_annot_requests_total", topic="job-manager.getattr") == 0
        assert value(snap, "flux_annot_requests_total", topic="job-manager.stats") >= 1  # ours
        names = {re.sub(r"_(bucket|count|sum|total)$", "", n) for n, _ in snap}
        standalone, mirror, _accuracy = documented_metrics()
        for name in standalone | mirror | rule_metrics():
            assert re.sub(r"_total$", "", name) in names, name
        # the broker dies: the series says so, one log line
        inst.kill()
        wait_for("flux_annot_flux_connected 0",
                 lambda: value(scrape(m), "flux_annot_flux_connected") == 0)
        assert value(scrape(m), "flux_annot_store_up") == 1  # it keeps serving
        inst.start()
        wait_for("flux_annot_flux_connected 1",
                 lambda: value(scrape(m), "flux_annot_flux_connected") == 1)
        assert value(scrape(m), "flux_annot_flux_disconnects_total") == 1, m.stderr_text()
        assert m.stop() == 0
        log = m.stderr_text()
        assert log.count("lost the Flux instance") == 1, log
        assert len(re.findall(r"connected to the Flux instance at \S+ again after", log)) == 1
        assert "Traceback" not in log
    finally:
        notify.close()
        m.cleanup()
        inst.cleanup()
