"""Which service a client talks to (docs/cli.md "Which service",
flux_annot.wire.target): `--socket`, `$FLUX_ANNOT_SOCKET`, the Flux instance at
`--flux-uri`/`$FLUX_URI`, the default socket. The Flux side itself is
tested on a real instance in tests/test_broker_client.py."""

import json
import os
import subprocess
import sys

import pytest

from flux_annot.wire.target import resolve
from serverproc import ServerProc

BOGUS_URI = "local:///nonexistent/flux-annot-test/local-0"


def test_the_order_is_socket_env_socket_flux_default():
    env = {"FLUX_ANNOT_SOCKET": "/e.sock", "FLUX_URI": "local:///f", "XDG_RUNTIME_DIR": "/run/u"}
    assert (resolve("/s.sock", "local:///g", env).kind, resolve("/s.sock", "local:///g", env).address) == ("socket", "/s.sock")
    t = resolve(None, "local:///g", env)  # the env socket wins over a Flux instance, even a named one
    assert (t.kind, t.address) == ("socket", "/e.sock")
    del env["FLUX_ANNOT_SOCKET"]
    t = resolve(None, "local:///g", env)  # --flux-uri wins over $FLUX_URI
    assert (t.kind, t.address) == ("flux", "local:///g")
    t = resolve(None, None, env)
    assert (t.kind, t.address, t.describe()) == ("flux", "local:///f", "Flux local:///f")
    del env["FLUX_URI"]
    t = resolve(None, None, env)
    assert (t.kind, t.address) == ("socket", "/run/u/flux-annot/socket")
    assert resolve(None, None, {}).address == f"/tmp/flux-annot-{os.getuid()}/socket"
    # an empty variable is an unset one
    t = resolve("", None, {"FLUX_ANNOT_SOCKET": "", "FLUX_URI": ""})
    assert t.kind == "socket" and t.address == f"/tmp/flux-annot-{os.getuid()}/socket"


@pytest.fixture
def service():
    s = ServerProc().start()
    yield s
    s.cleanup()


def _cli(env, *args):
    return subprocess.run([sys.executable, "-m", "flux_annot", *args], env=env,
                          capture_output=True, text=True, timeout=60)


def test_a_socket_given_wins_over_flux_uri_in_the_cli(service):
    base = {k: v for k, v in os.environ.items() if k != "FLUX_ANNOT_SOCKET"}
    base["FLUX_URI"] = BOGUS_URI  # would fail if it were used
    r = _cli(base, "--socket", service.path, "stats")
    assert r.returncode == 0 and json.loads(r.stdout)["jobs_total"] == 0, r.stderr
    r = _cli(dict(base, FLUX_ANNOT_SOCKET=service.path), "--flux-uri", BOGUS_URI, "stats")
    assert r.returncode == 0, r.stderr
    # with no socket, the Flux instance is the one asked: an error naming it, one line
    r = _cli(base, "stats")
    assert r.returncode == 1 and BOGUS_URI in r.stderr and r.stderr.count("\n") == 1, r.stderr
    assert "Traceback" not in r.stderr
