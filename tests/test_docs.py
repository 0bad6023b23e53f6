"""Every setting and every command is documented, and every command answers --help; every test
marker is documented, and each one the default run leaves out has its own CI step."""

from __future__ import annotations

import argparse
import re
import shlex
import tomllib
from pathlib import Path

import pytest

from lab.accuracy import add_lab_arguments
from lab.run import PARTS
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


def _lab_options() -> list[str]:
    parser = argparse.ArgumentParser()
    add_lab_arguments(parser)
    return [
        option
        for action in parser._actions
        for option in action.option_strings
        if option.startswith("--") and option != "--help"
    ]


PRESENCE = (ROOT / "docs" / "presence.md").read_text("utf-8")


@pytest.mark.parametrize("option", _lab_options())
def test_every_lab_option_is_documented(option: str) -> None:
    usage = PRESENCE.split("## Accuracy lab", 1)[1].split("```", 2)[1]
    assert f"[{option}" in usage or f"{option} " in usage, f"lab option {option} not in its usage"


@pytest.mark.parametrize("part", PARTS)
def test_every_part_of_the_lab_is_documented(part: str) -> None:
    described = re.search(rf"`{part}`\s+\(", PRESENCE)
    assert described, f"lab part {part} not described in docs/presence.md"


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


def _guide_commands() -> list[tuple[str, list[str]]]:
    """Every `store-server ...` / `beacon-scanner ...` line of docs/operations.md's code blocks
    (at the start of a line or after `/bin/`: `sudo -u bulle /opt/bulle/bin/store-server`)."""
    found: list[tuple[str, list[str]]] = []
    block: str | None = None  # the language of the open code block, "" for a shell block
    for line in OPERATIONS.splitlines():
        if line.startswith("```"):
            block = line[3:].strip() if block is None else None
            continue
        if block != "":
            continue
        match = re.search(r"(?:^|/bin/)(store-server|beacon-scanner) (.*)$", line)
        if match is None:
            continue
        args = match.group(2).split("#", 1)[0].split(" <", 1)[0]
        found.append((match.group(1), shlex.split(args)))
    return found


GUIDE_COMMANDS = _guide_commands()


def test_the_guide_has_commands() -> None:
    programs = {program for program, _ in GUIDE_COMMANDS}
    assert programs == {"store-server", "beacon-scanner"}
    assert len(GUIDE_COMMANDS) >= 8


@pytest.mark.parametrize(
    ("program", "args"), GUIDE_COMMANDS, ids=[" ".join(a[:2]) for _, a in GUIDE_COMMANDS]
)
def test_every_command_of_the_guide_parses(program: str, args: list[str]) -> None:
    """The guide's command lines are valid for the programs' own parsers."""
    parser = server_parser() if program == "store-server" else scanner_parser()
    parsed = parser.parse_args(args)
    assert parsed is not None


def _testing_section() -> str:
    readme = (ROOT / "README.md").read_text("utf-8")
    return readme.split("\n## Testing\n", 1)[1].split("\n## ", 1)[0]


PYTEST_OPTIONS = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))["tool"]["pytest"][
    "ini_options"
]
MARKERS = [line.split(":", 1)[0] for line in PYTEST_OPTIONS["markers"]]
LEFT_OUT = re.findall(r"not (\w+)", PYTEST_OPTIONS["addopts"])


def test_the_default_run_leaves_out_some_markers() -> None:
    assert {"faults", "pg_step", "lab_bench"} <= set(LEFT_OUT) <= set(MARKERS)


@pytest.mark.parametrize("marker", MARKERS)
def test_every_marker_is_in_the_readme(marker: str) -> None:
    assert f"`{marker}`" in _testing_section()


@pytest.mark.parametrize("marker", LEFT_OUT)
def test_every_step_left_out_of_the_default_run_has_its_command_and_ci_step(marker: str) -> None:
    assert f"python3 -m uv run --locked pytest -m {marker}\n" in _testing_section()
    ci_steps = re.findall(r"^run_pytest(.*)$", (ROOT / ".ci" / "run").read_text("utf-8"), re.M)
    assert f" -m {marker}" in ci_steps
