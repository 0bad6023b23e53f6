"""The `store-server` command: checks that the server's dependencies are installed, then runs.

The distribution's required dependencies are the scanner's; the store server's come with the
`server` extra. Without them the command says so in one line (exit 2) instead of a traceback.
"""

from __future__ import annotations

import importlib.metadata
import re
import sys

DISTRIBUTION = "bulle"
"""The distribution that holds both programs (pyproject.toml)."""

EXTRA = "server"
"""The extra that brings the store server's dependencies."""

USAGE_ERROR = 2
"""Exit code of a mistake the operator can fix (the command-line convention)."""

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_EXTRA_MARKER = re.compile(r"""extra\s*==\s*["']([^"']+)["']""")


def missing_server_dependencies() -> list[str]:
    """Names of the `server` extra's distributions that are not installed."""
    try:
        requirements = importlib.metadata.requires(DISTRIBUTION) or []
    except importlib.metadata.PackageNotFoundError:
        return []  # run from a source tree without metadata: nothing to check against
    missing: list[str] = []
    for requirement in requirements:
        spec, _, marker = requirement.partition(";")
        extra = _EXTRA_MARKER.search(marker)
        name = _NAME.match(spec.strip())
        if extra is None or extra.group(1) != EXTRA or name is None:
            continue
        try:
            importlib.metadata.distribution(name.group(0))
        except importlib.metadata.PackageNotFoundError:
            missing.append(name.group(0))
    return missing


def main(argv: list[str] | None = None) -> int:
    missing = missing_server_dependencies()
    if missing:
        sys.stderr.write(
            f"store-server: the server's dependencies are not installed ({', '.join(missing)}); "
            f"install '{DISTRIBUTION}[{EXTRA}]' (this installation is a scanner's)\n"
        )
        return USAGE_ERROR
    from store_server.cli import main as cli_main

    return cli_main(argv)
