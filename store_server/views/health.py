"""Health probes: ``/healthz`` (the process answers) and ``/readyz`` (it can do its work).

Both are plain JSON without authentication and say nothing about customers: a load balancer,
systemd's watchdog script or a monitoring check can call them every few seconds.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import msgspec
from aiohttp import web

from store_server.keys import SERVICE
from store_server.metrics import SCANNER_UP_S

routes = web.RouteTableDef()

DB_PROBE_TIMEOUT_S = 2.0
"""The database answers a trivial read within milliseconds; two seconds means it is stuck
(a disk that no longer answers, a lock held for too long)."""


TICK_STALE_S = 10.0
"""The periodic tick runs every second; ten seconds without one means it is stuck."""


def _json(data: object, status: int = 200) -> web.Response:
    return web.Response(
        body=msgspec.json.encode(data), status=status, content_type="application/json"
    )


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    """Live: the event loop answers. Restart the process when this fails."""
    return _json({"status": "ok"})


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    """Ready: database, resolver and scanners; 503 naming the failing check otherwise."""
    service = request.app[SERVICE]
    checks: dict[str, dict[str, Any]] = {}
    try:
        async with asyncio.timeout(DB_PROBE_TIMEOUT_S):
            await service.ping_writer()
            scanners = await service.scanners.scanner_rows()
        checks["database"] = {"ok": True}
    except Exception as exc:  # any failure of the probe is the answer, not a crash
        checks["database"] = {"ok": False, "error": type(exc).__name__}
        scanners = []
    tick_age = time.monotonic() - service.last_tick_at
    checks["resolver"] = {
        # The resolver moves to each new EID window in the periodic tick (every second).
        "ok": tick_age <= TICK_STALE_S,
        "identities": len(service.coordinator.resolver),
        # Of those, consenting customers whose EIDs are not resolvable yet (a start-up build).
        "building": service.coordinator.resolver.expected,
        "version": service.coordinator.resolver.version,
        "last_tick_s_ago": round(tick_age, 1),
    }
    now = time.time()
    active = [row for row in scanners if row.get("revoked_at") is None]
    seen = [
        row
        for row in active
        if row.get("last_seen_at") is not None and now - float(row["last_seen_at"]) <= SCANNER_UP_S
    ]
    checks["scanners"] = {
        # No scanner registered yet (a new install) is not a failure; all of them silent is.
        "ok": bool(seen) or not active,
        "registered": len(active),
        "seen_last_minute": len(seen),
    }
    if service.feed is not None:
        # Chain mode: only a fresh view of consents shows cards and hands out allowlists.
        status = service.feed.status()
        checks["consent_view"] = {
            "ok": status.fresh,
            "state": status.state,
            "age_s": None if status.age_s is None else round(status.age_s, 1),
        }
    ready = all(check["ok"] for check in checks.values())
    return _json(
        {"status": "ready" if ready else "not_ready", "checks": checks}, 200 if ready else 503
    )
