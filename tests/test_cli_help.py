"""`flux-annotate COMMAND --help` shows how to use the command: an example."""

import argparse
import subprocess
import sys

import pytest

from flux_annot import cli


def commands():
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sorted(sub.choices)


def test_every_command_is_covered():
    # the usual commands are all there (a new one is picked up by commands())
    assert {"serve", "set", "memo", "get", "list", "watch", "stats", "submit", "state",
            "sched", "alloc", "deny", "cancel", "demo"} <= set(commands())


@pytest.mark.parametrize("command", commands())
def test_help_shows_an_example(command, capsys):
    assert cli.main([command, "--help"]) == 0
    out = capsys.readouterr().out
    assert f"usage: flux-annotate {command}" in out
    tail = out.split("\nexample", 1)
    assert len(tail) == 2, f"{command} --help has no example:\n{out}"
    lines = [ln.strip() for ln in tail[1].splitlines()[1:] if ln.strip()]
    # each example line is a command line of this very command, laid out as written
    assert lines and all(f"flux-annotate {command}" in ln for ln in lines), lines


def test_help_as_a_person_runs_it():
    out = subprocess.run([sys.executable, "-m", "flux_annot", "memo", "--help"],
                         capture_output=True, text=True, check=True).stdout
    assert "flux-annotate memo 1234 step=3 label=warmup" in out
