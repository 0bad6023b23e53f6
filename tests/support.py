"""Helpers shared by the test suites (no fixtures here: plain functions)."""

from __future__ import annotations

import asyncio
import functools
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

T = TypeVar("T")


CHROMIUM = Path("/usr/bin/chromium")
"""Debian's Chromium, driven by Playwright (its bundled browsers are not downloaded)."""


def _modules(*names: str) -> bool:
    return all(importlib.util.find_spec(name) is not None for name in names)


def _postgres_binaries() -> bool:
    if shutil.which("initdb") and shutil.which("pg_ctl"):
        return True
    # Debian keeps them out of PATH, one folder per major version.
    return any(Path("/usr/lib/postgresql").glob("*/bin/initdb"))


@dataclass(frozen=True, slots=True)
class Component:
    """A system component that the tests of one marker need."""

    what: str
    """What is missing, and the packages that bring it (README, Testing)."""
    available: Callable[[], bool]


COMPONENTS: dict[str, Component] = {
    "bluez": Component(
        "dbus-daemon, python-dbusmock and dbus-python (Debian: dbus-daemon libdbus-1-dev "
        "libglib2.0-dev pkg-config)",
        lambda: shutil.which("dbus-daemon") is not None and _modules("dbusmock", "dbus"),
    ),
    "browser": Component(
        "Chromium at /usr/bin/chromium (Debian: chromium fonts-dejavu-core)",
        lambda: CHROMIUM.exists() and _modules("playwright"),
    ),
    "postgres": Component(
        "the PostgreSQL server binaries initdb and pg_ctl (Debian: postgresql)",
        _postgres_binaries,
    ),
    "esphome": Component(
        "aioesphomeapi, the ESPHome native API client",
        lambda: _modules("aioesphomeapi"),
    ),
    "proxy": Component(
        "nginx, the reverse proxy of the install guide (Debian: nginx)",
        lambda: shutil.which("nginx") is not None or Path("/usr/sbin/nginx").is_file(),
    ),
    "systemd": Component(
        "systemd-analyze, to check the units of deploy/ (Debian: systemd)",
        lambda: shutil.which("systemd-analyze") is not None,
    ),
}
"""Marker name -> the component its tests need. Each marker is declared in pyproject.toml."""


def in_ci() -> bool:
    """CI sets CI=true: there every component must be present."""
    return os.environ.get("CI") == "true"


@functools.cache
def component_available(marker: str) -> bool:
    return COMPONENTS[marker].available()


def require_component(marker: str) -> None:
    """Skip when the component of ``marker`` is missing, except in CI where it must be there."""
    require_system_component(COMPONENTS[marker].what, component_available(marker))


def require_system_component(name: str, available: bool) -> None:
    """Skip when a system component is missing, except in CI where it must be there."""
    if available:
        return
    if in_ci():
        pytest.fail(f"{name} is required in CI (CI=true) but is not available")
    pytest.skip(f"{name} not available")


async def wait_until(
    probe: Callable[[], Awaitable[T | None]], limit_s: float, what: str, interval: float = 0.05
) -> T:
    """Poll `probe` until it returns something truthy; fail with `what` after `limit_s` s."""
    deadline = time.monotonic() + limit_s
    while True:
        value = await probe()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {limit_s} s waiting for {what}")
        await asyncio.sleep(interval)


def screenshot_dir() -> Path:
    """Where browser tests write their screenshots.

    `docs/images/` when BULLE_UPDATE_SCREENSHOTS=1 (to refresh the pictures in the docs),
    otherwise a temporary folder, so that a test run leaves the work tree clean.
    """
    if os.environ.get("BULLE_UPDATE_SCREENSHOTS") == "1":
        return Path(__file__).resolve().parent.parent / "docs" / "images"
    return Path(tempfile.gettempdir()) / "bulle-screenshots"


REPO_ROOT = Path(__file__).resolve().parents[1]


def run_bench(script: str, *args: str, timeout_s: float) -> dict[str, Any]:
    """Run ``bench/<script> --json ARGS`` in its own process, as a reader would; return the
    figures of its last line (the test fails with the end of its stderr if it fails)."""
    done = subprocess.run(
        [sys.executable, str(REPO_ROOT / "bench" / script), "--json", *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        cwd=REPO_ROOT,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    figures: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return figures
