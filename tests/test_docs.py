"""The user reference in docs/ says what the code does.

Checked here where a drift would mislead a reader: every configuration key
with its default, every error number, every CLI command.
"""

import argparse
import ast
import errno
import re
from pathlib import Path

import pytest

from flux_annot import cli
from flux_annot.service import config

DOCS = Path(__file__).resolve().parents[1] / "docs"


def _rows(text):
    """First two cells of every markdown table row."""
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and len(cells) >= 2:
            yield cells


def _number(cell):
    return float(re.match(r"`([-\d.]+)`", cell).group(1))


@pytest.mark.parametrize("section", sorted(config.DEFAULTS))
def test_configuration_documents_every_key_and_default(section):
    table = {cells[0].strip("`"): cells[1] for cells in _rows((DOCS / "configuration.md").read_text())}
    for key, default in config.DEFAULTS[section].items():
        name = f"{section}.{key}"
        assert name in table, f"docs/configuration.md has no row for {name}"
        if isinstance(default, list):  # accuracy.horizons
            assert table[name] == f"`{default}`".replace("'", '"'), (name, table[name], default)
            continue
        if isinstance(default, str):
            assert table[name] == f'`"{default}"`', (name, table[name], default)
        else:
            assert _number(table[name]) == default, (name, table[name], default)


def test_configuration_documents_the_default_namespaces():
    text = (DOCS / "configuration.md").read_text()
    for ns, rules in config.DEFAULT_NAMESPACES.items():
        block = re.search(rf"\[namespace\.{ns}\][^\n]*\nwrite = (\[.*?\])\nread = (\[.*?\])", text)
        assert block, f"docs/configuration.md lacks [namespace.{ns}]"
        assert ast.literal_eval(block.group(1)) == rules["write"]
        assert ast.literal_eval(block.group(2)) == rules["read"]


def test_protocol_error_numbers_are_linux_errnos():
    rows = [c for c in _rows((DOCS / "protocol.md").read_text()) if c[0].isdigit()]
    assert len(rows) >= 15
    for cells in rows:
        assert getattr(errno, cells[1]) == int(cells[0]), cells[:2]


def test_cli_page_names_every_command():
    text = (DOCS / "cli.md").read_text()
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for command in sub.choices:
        assert f"`{command}" in text, f"docs/cli.md does not mention {command}"
