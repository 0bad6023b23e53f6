"""Every setting and every command is documented, and every command answers --help."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from scanner.cli import build_parser as scanner_parser
from store_server.cli import build_parser as server_parser
from store_server.config import config_keys

ROOT = Path(__file__).resolve().parent.parent
OPERATIONS = (ROOT / "docs" / "operations.md").read_text("utf-8")


def _commands(
    parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()
) -> list[tuple[str, ...]]:
    found: list[tuple[str, ...]] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found.append((*prefix, name))
                found.extend(_commands(sub, (*prefix, name)))
    return found


SERVER_COMMANDS = _commands(server_parser())
SCANNER_COMMANDS = _commands(scanner_parser())


def test_command_lists_are_not_empty() -> None:
    assert ("serve",) in SERVER_COMMANDS
    assert ("user", "add") in SERVER_COMMANDS
    assert ("run",) in SCANNER_COMMANDS


@pytest.mark.parametrize("key", config_keys())
def test_every_server_setting_is_documented(key: str) -> None:
    assert f"| `{key}` |" in OPERATIONS, f"server setting {key} missing from docs/operations.md"


@pytest.mark.parametrize("command", SERVER_COMMANDS, ids=" ".join)
def test_every_server_command_is_documented(command: tuple[str, ...]) -> None:
    assert f"store-server {' '.join(command)}" in OPERATIONS


@pytest.mark.parametrize("command", SCANNER_COMMANDS, ids=" ".join)
def test_every_scanner_command_is_documented(command: tuple[str, ...]) -> None:
    assert f"beacon-scanner {' '.join(command)}" in OPERATIONS


@pytest.mark.parametrize("command", SERVER_COMMANDS, ids=" ".join)
def test_every_server_command_has_help(
    command: tuple[str, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        server_parser().parse_args([*command, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: store-server " + " ".join(command))
