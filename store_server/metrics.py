"""Prometheus metrics of the store server, served on their own local-only listener.

The counters are incremented where things happen (batches and sightings in the scanner API,
refusals in the request middleware, tick durations in the service); the gauges are read at
scrape time from the running service (board connections and queues) and from the scanners'
last heartbeats. Nothing here names a customer: the only labels are scanner ids, error
codes and areas of the API.

The listener (``metrics_listen``, e.g. ``127.0.0.1:9464``) is a separate aiohttp site that
serves only ``GET /metrics``: the reverse proxy never forwards to it, and a non-loopback
address requires ``metrics_token`` (a bearer token), checked in constant time.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Iterable, Mapping
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

logger = logging.getLogger(__name__)

SCANNER_UP_S = 60.0
"""A scanner counts as up when it was heard from in the last minute: it long-polls the
allowlist and sends a heartbeat every 15 s, so a minute of silence is four missed heartbeats."""

TICK_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
"""The periodic tick runs every second: buckets from 1 ms to past the whole period."""

_HEARTBEAT_GAUGES = (
    ("outbox_depth", "bulle_scanner_outbox_depth", "Windows queued in the scanner's outbox"),
    (
        "outbox_dropped",
        "bulle_scanner_outbox_dropped",
        "Windows the scanner dropped since it started (outbox bounds)",
    ),
    (
        "watchdog_restarts",
        "bulle_scanner_watchdog_restarts",
        "Scans the scanner restarted since it started (no advertisement for a while)",
    ),
    (
        "frames_seen_per_s",
        "bulle_scanner_frames_seen_per_second",
        "Advertisements the scanner heard per second",
    ),
    (
        "readings_unusable",
        "bulle_scanner_readings_unusable",
        "Sightings left out since the scanner started (no RSSI reading)",
    ),
)


def area_of(path: str) -> str:
    """The API area of a request path, a bounded label (never the path itself)."""
    if path.startswith("/api/scanner/"):
        return "scanner"
    if path.startswith(("/api/v1/", "/app/")):
        return "customer"
    if path.startswith(("/manager", "/board", "/ws/", "/login", "/logout", "/staff")):
        return "staff"
    return "other"


class Metrics:
    """The registry of one application and its instruments."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.batches = Counter(
            "bulle_scanner_batches",
            "Scanner batches answered, by outcome (accepted, or duplicate of a committed one)",
            ["outcome"],
            registry=r,
        )
        self.sightings = Counter(
            "bulle_scanner_sightings",
            "Windows (one beacon heard by one scanner for one second) accepted",
            registry=r,
        )
        self.refusals = Counter(
            "bulle_requests_refused",
            "Requests answered with an error status, by API area and error code",
            ["area", "code"],
            registry=r,
        )
        self.box_beacons = Gauge(
            "bulle_box_beacon_windows",
            "Windows of a store beacon that a box heard from another box since start, by"
            " outcome (sample: used for calibration; not_sample: the pair gave one lately, or"
            " is through a wall; own; unknown_minor; ambiguous; other_store; no_key)",
            ["outcome"],
            registry=r,
        )
        self.tick_seconds = Histogram(
            "bulle_tick_seconds",
            "Duration of the periodic tick (presence, expiries, purge)",
            buckets=TICK_BUCKETS_S,
            registry=r,
        )
        self.board_connections = Gauge(
            "bulle_board_connections", "Staff boards connected (WebSocket)", registry=r
        )
        self.board_queue_max = Gauge(
            "bulle_board_queue_depth_max",
            "Messages waiting for the slowest board (dropped at 256)",
            registry=r,
        )
        self.identities = Gauge(
            "bulle_identities_loaded",
            "Consenting customers whose identifiers the resolver holds",
            registry=r,
        )
        self.pending = Gauge(
            "bulle_queue_depth",
            "Work waiting inside the server, by queue",
            ["queue"],
            registry=r,
        )
        self.scanners_registered = Gauge(
            "bulle_scanners_registered", "Scanners registered and not revoked", registry=r
        )
        self.scanner_up = Gauge(
            "bulle_scanner_up",
            f"1 when the scanner was heard from in the last {SCANNER_UP_S:.0f} s",
            ["scanner"],
            registry=r,
        )
        self.scanner_age = Gauge(
            "bulle_scanner_last_seen_age_seconds",
            "Seconds since the scanner's last request",
            ["scanner"],
            registry=r,
        )
        # Chain mode: the consent feed (docs/operations.md, "Chain mode").
        self.consent_view = Gauge(
            "bulle_consent_view_state",
            "1 for the consent view's current state (fresh, stale, down, recovering): only a"
            " fresh view shows new cards and hands out allowlists",
            ["state"],
            registry=r,
        )
        self.consent_view_age = Gauge(
            "bulle_consent_view_age_seconds",
            "Seconds since the start of the last catch-up with the consent log",
            registry=r,
        )
        self.consent_feed_seq = Gauge(
            "bulle_consent_feed_seq", "Last consent-log sequence number applied", registry=r
        )
        self.consent_feed_applied = Gauge(
            "bulle_consent_feed_applied",
            "Withdrawals and erasures read from the consent log since start",
            registry=r,
        )
        self.consent_feed_failures = Gauge(
            "bulle_consent_feed_failures",
            "Catch-ups with the consent log that failed since start (database out of reach)",
            registry=r,
        )
        self.consent_listener_up = Gauge(
            "bulle_consent_listener_connected",
            "1 while the LISTEN connection for consent notifications is up",
            registry=r,
        )
        self.heartbeat = {
            field: Gauge(name, doc, ["scanner"], registry=r)
            for field, name, doc in _HEARTBEAT_GAUGES
        }

    def refused(self, path: str, code: str) -> None:
        self.refusals.labels(area_of(path), code).inc()

    def set_scanners(self, rows: Iterable[Mapping[str, Any]], now: float) -> None:
        """Scanner health from the registrations and their last heartbeats."""
        for gauge in (self.scanner_up, self.scanner_age, *self.heartbeat.values()):
            gauge.clear()
        registered = 0
        for row in rows:
            if row.get("revoked_at") is not None:
                continue
            registered += 1
            scanner = str(row["id"])
            seen = row.get("last_seen_at")
            up = seen is not None and now - float(seen) <= SCANNER_UP_S
            self.scanner_up.labels(scanner).set(1 if up else 0)
            if seen is not None:
                self.scanner_age.labels(scanner).set(max(0.0, now - float(seen)))
            heartbeat = row.get("heartbeat") or {}
            for field, gauge in self.heartbeat.items():
                value = heartbeat.get(field)
                if isinstance(value, int | float):
                    gauge.labels(scanner).set(value)
        self.scanners_registered.set(registered)

    def set_consent_feed(
        self,
        *,
        state: str,
        age_s: float | None,
        seq: int,
        applied: int,
        failures: int,
        listening: bool | None,
    ) -> None:
        """The consent feed's figures (chain mode only)."""
        for name in ("fresh", "stale", "down", "recovering"):
            self.consent_view.labels(name).set(1 if name == state else 0)
        self.consent_view_age.set(age_s if age_s is not None else float("nan"))
        self.consent_feed_seq.set(seq)
        self.consent_feed_applied.set(applied)
        self.consent_feed_failures.set(failures)
        if listening is not None:
            self.consent_listener_up.set(1 if listening else 0)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


def metrics_app(
    render: Any,
    token: str,
) -> web.Application:
    """The metrics listener's application: ``GET /metrics`` only (``render`` builds the body)."""

    async def handle(request: web.Request) -> web.Response:
        if token:
            given = request.headers.get("Authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
                raise web.HTTPUnauthorized(headers={"WWW-Authenticate": "Bearer"})
        body = await render()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/metrics", handle)
    return app
