"""Helpers shared by the test suites (no fixtures here: plain functions)."""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import pytest

T = TypeVar("T")


def require_system_component(name: str, available: bool) -> None:
    """Skip when a system component is missing, except in CI where it must be there."""
    if available:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"{name} is required in CI but is not available")
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
