"""Heartbeat body and watchdog decision (pure: no I/O, time passed in)."""

from __future__ import annotations

import importlib.metadata
from dataclasses import dataclass
from typing import Any

import scanner

# Distribution name used to look up the installed version.
DISTRIBUTION = "bulle"


def scanner_version() -> str:
    """Installed package version, falling back to scanner.__version__."""
    try:
        return importlib.metadata.version(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return scanner.__version__


@dataclass(slots=True)
class HealthCounters:
    """Running totals the daemon increments; the heartbeat reports rates over an interval."""

    frames_seen: int = 0
    frames_passed: int = 0
    watchdog_restarts: int = 0
    last_upload_at: float | None = None
    last_advert_at: float | None = None


@dataclass(frozen=True, slots=True)
class HealthSnapshot:
    """Counter values at one instant, to compute per-second rates between two heartbeats."""

    at: float
    frames_seen: int
    frames_passed: int


def snapshot(counters: HealthCounters, now: float) -> HealthSnapshot:
    return HealthSnapshot(
        at=now, frames_seen=counters.frames_seen, frames_passed=counters.frames_passed
    )


def heartbeat_body(
    *,
    store_id: str,
    scanner_id: str,
    counters: HealthCounters,
    previous: HealthSnapshot,
    now: float,
    outbox_depth: int,
    outbox_dropped: int,
    allowlist_version: int | None,
    readings_unusable: int = 0,
    adapter: str,
    version: str,
    node: dict[str, object] | None = None,
) -> dict[str, Any]:
    """The heartbeat object of docs/api.md; ``node`` only for a box that is an ESPHome node."""
    elapsed = now - previous.at
    seen = counters.frames_seen - previous.frames_seen
    passed = counters.frames_passed - previous.frames_passed
    body: dict[str, Any] = {
        "store_id": store_id,
        "scanner_id": scanner_id,
        "version": version,
        "adapter": adapter,
        "frames_seen_per_s": round(seen / elapsed, 3) if elapsed > 0 else 0.0,
        "frames_passed_per_s": round(passed / elapsed, 3) if elapsed > 0 else 0.0,
        "outbox_depth": outbox_depth,
        "outbox_dropped": outbox_dropped,
        "last_upload_at": counters.last_upload_at,
        "watchdog_restarts": counters.watchdog_restarts,
        "allowlist_version": allowlist_version,
        "sent_at": now,
        "readings_unusable": readings_unusable,
    }
    if node is not None:
        body["node"] = node
    return body


def should_restart(last_advert_at: float | None, now: float, timeout: float) -> bool:
    """True when scanning has been silent for longer than ``timeout`` seconds.

    ``last_advert_at`` is the time of the last advertisement, or of the scan start if none came.
    """
    if last_advert_at is None:
        return False
    return now - last_advert_at > timeout
