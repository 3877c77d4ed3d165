"""The operator's files stay true to the program (docs/operations.md): the
example systemd unit runs a command `serve` accepts, as the issue asks
(the instance owner, Type=notify, restart on failure, beside flux.service);
the alert rules pass promtool and name only metrics flux-annot exports;
every metric a scrape shows is documented, and every documented one is
shown (a Flux mirror's own: tests/test_flux_metrics.py)."""

import configparser
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from flux_annot import cli
from flux_annot.service.config import Config
from metricsproc import Serve

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "etc" / "flux-annot.service"
RULES = ROOT / "etc" / "flux-annot-alerts.yml"
OPS = ROOT / "docs" / "operations.md"


def unit():
    cp = configparser.ConfigParser(interpolation=None, strict=False)
    cp.optionxform = str
    cp.read_string(UNIT.read_text().replace("\\\n", " "))
    return cp


def test_the_unit_runs_serve_flux_as_the_instance_owner():
    u = unit()
    svc = u["Service"]
    assert svc["Type"] == "notify" and svc["NotifyAccess"] == "main"
    assert svc["User"] == "flux" and svc["Restart"] == "on-failure"
    assert "flux.service" in u["Unit"]["After"] and "BindsTo" not in u["Unit"]
    assert svc["Environment"].startswith("FLUX_URI=local:///run/flux/local") or any(
        line.startswith("Environment=FLUX_URI=") for line in UNIT.read_text().splitlines())
    argv = shlex.split(svc["ExecStart"])
    assert argv[0].endswith("/flux-annotate")
    args = cli.build_parser().parse_args(argv[1:])
    assert args.command == "serve" and args.flux
    assert args.socket.startswith("/run/" + svc["RuntimeDirectory"] + "/")
    assert args.store.startswith("/var/lib/" + svc["StateDirectory"] + "/")
    # the config it names, as the unit's comment shows it, is a valid config
    lines = UNIT.read_text().splitlines()
    at = next(i for i, line in enumerate(lines) if "annot.toml may hold" in line)
    snippet = "\n".join(line.lstrip("#").strip() for line in lines[at + 1:]
                        if line.startswith("#   "))
    import tomllib

    assert Config(tomllib.loads(snippet)).metrics.listen == "127.0.0.1:9464"


def documented_metrics():
    """Metric names in docs/operations.md's table, split into (standalone,
    mirror, estimate accuracy)."""
    text = OPS.read_text()
    table = text[text.index("### The metrics"):text.index("### Alerts")]
    mirror_at = table.index("**on a Flux mirror**")
    accuracy_at = table.index("**estimate accuracy**")
    find = re.compile(r"`(flux_annot_[a-z_]+)")
    return (set(find.findall(table[:mirror_at])),
            set(find.findall(table[mirror_at:accuracy_at])),
            set(find.findall(table[accuracy_at:])))


def exported_names(snap):
    """Family names of a scrape (histogram and counter suffixes removed)."""
    names = set()
    for name, _ in snap:
        names.add(re.sub(r"_(bucket|count|sum|total)$", "", name))
    return names


def rule_metrics():
    text = RULES.read_text()
    return set(re.findall(r"\b(flux_annot_[a-z_]+?)(?:_bucket|_total)?\b", text))


def test_metrics_are_documented_and_the_rules_name_real_ones(tmp_path):
    s = Serve(store=tmp_path / "annot.db", extra=["--metrics", "127.0.0.1:0"]).start()
    try:
        snap, _ = s.scrape()
    finally:
        s.cleanup()
    shown = {n for n in exported_names(snap) if n.startswith("flux_annot_")}
    standalone, mirror, accuracy = documented_metrics()
    documented = {re.sub(r"_total$", "", n) for n in standalone}
    # the accuracy families appear once there is something to say (no job
    # started yet: no error figures)
    assert documented <= shown <= documented | {re.sub(r"_total$", "", n) for n in accuracy}
    assert not {n for n in shown if n.startswith("flux_annot_flux_")} and mirror
    # the alert rules name metrics flux-annot exports (the mirror's: see mirror test)
    for name in rule_metrics():
        assert name in shown or name in {re.sub(r"_total$", "", m) for m in mirror}, name


@pytest.fixture
def promtool():
    path = shutil.which("promtool")
    if path is None:
        why = "needs promtool (Debian's prometheus package; .ci/run installs it)"
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)
    return path


def test_alert_rules_pass_promtool(promtool):
    r = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS: 8 rules found" in r.stdout


ALERT_TESTS = """
rule_files: [{rules}]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'flux_annot_store_up{{instance="h:9464",job="flux-annot"}}'
        values: '1 1 0 0 0 0 1 1'
      - series: 'flux_annot_flux_lag_seconds{{instance="h:9464",job="flux-annot"}}'
        values: '0.1 0.1 9 9 9 9 9 9 9 9 9'
      - series: 'flux_annot_requests_total{{instance="h:9464",job="flux-annot",topic="job-manager.memo"}}'
        values: '0+600x40'
      - series: 'flux_annot_rejections_total{{instance="h:9464",job="flux-annot",reason="rate"}}'
        values: '0x10 0+120x30'
      - series: 'flux_annot_rejections_total{{instance="h:9464",job="flux-annot",reason="unknown_job"}}'
        values: '0+6000x40'
    alert_rule_test:
      - eval_time: 2m
        alertname: FluxAnnotStoreDown
        exp_alerts: []
      - eval_time: 4m
        alertname: FluxAnnotStoreDown
        exp_alerts:
          - exp_labels: {{severity: critical, instance: "h:9464", job: flux-annot}}
            exp_annotations:
              summary: "flux-annot on h:9464 cannot commit to its store; durable changes are refused (journalctl -u flux-annot says why)"
      - eval_time: 7m
        alertname: FluxAnnotStoreDown
        exp_alerts: []
      - eval_time: 5m
        alertname: FluxAnnotMirrorLag
        exp_alerts: []
      - eval_time: 8m
        alertname: FluxAnnotMirrorLag
        exp_alerts:
          - exp_labels: {{severity: warning, instance: "h:9464", job: flux-annot}}
            exp_annotations:
              summary: "flux-annot on h:9464 publishes Flux's events 9s late"
      - eval_time: 10m
        alertname: FluxAnnotRejectionsRising
        exp_alerts: []
      - eval_time: 38m
        alertname: FluxAnnotRejectionsRising
        exp_alerts:
          - exp_labels: {{severity: warning, instance: "h:9464"}}
            exp_annotations:
              summary: "flux-annot on h:9464 refuses more than 10% of its requests (see flux_annot_rejections_total by reason)"
"""


def test_alerts_fire_on_store_down_mirror_lag_and_rising_rejections(promtool, tmp_path):
    # promtool's own rule tests: the alerts fire when they should, not before
    # (unknown job ids, 100 a second here, never make rejections "rise")
    tests = tmp_path / "alerts_test.yml"
    tests.write_text(ALERT_TESTS.format(rules=RULES))
    r = subprocess.run([promtool, "test", "rules", str(tests)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout
