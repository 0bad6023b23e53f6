"""Legacy static iBeacon ids: off by default; served and resolved only when the store offers
them, the customer enabled one and has an active consent."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from scanner.allowlist import Allowlist, AllowlistUpdate
from scanner.frames import IBeaconFrame
from tests.server.conftest import (
    WAIT_TIMEOUT_S,
    Harness,
    Scanner,
    batch_body,
    bearer,
    engine_settings,
    error_of,
    running_server,
    wait_until,
)

ALLOWLIST = "/api/scanner/v1/allowlist"
PREFERENCES = "/api/v1/preferences"


@pytest.fixture
async def legacy_server(
    tmp_path: Path, engine: str, request: pytest.FixtureRequest
) -> AsyncIterator[Harness]:
    """The `server` fixture of conftest.py with the store setting legacy_ibeacon = true, on
    each engine."""
    settings = engine_settings(engine, request)
    async with running_server(tmp_path, legacy_ibeacon=True, **settings) as harness:
        yield harness


async def _allowlist(server: Harness, scanner: Scanner, query: str = "") -> dict[str, Any]:
    resp = await server.signed(scanner, "GET", ALLOWLIST + query)
    assert resp.status == 200
    data: dict[str, Any] = await resp.json()
    return data


def _ibeacon_window(ident: str) -> dict[str, Any]:
    now = time.time()
    return {
        "id_type": "ibeacon",
        "id": ident,
        "start": now - 1,
        "end": now,
        "count": 3,
        "rssi_max": -50,
        "rssi_median": -52.0,
        "tx_power": -59,
    }


async def _post_window(server: Harness, scanner: Scanner, ident: str) -> None:
    body = batch_body(scanner.scanner_id, windows=[_ibeacon_window(ident)])
    resp = await server.signed(scanner, "POST", "/api/scanner/v1/batches", body)
    assert resp.status == 200


async def test_off_by_default(server: Harness) -> None:
    token = await server.enroll()
    assert (await server.grant(token, "greeting")).status == 201
    resp = await server.client.get(PREFERENCES, headers=bearer(token))
    assert resp.status == 200
    prefs = await resp.json()
    assert prefs["legacy_ibeacon"] is False
    assert prefs["ibeacon_id"] is None
    assert prefs["trackable"] is False
    resp = await server.client.put(
        PREFERENCES, json={"legacy_ibeacon": True}, headers=bearer(token)
    )
    assert resp.status == 403
    assert (await error_of(resp))["code"] == "legacy_ibeacon_disabled"
    rows = await server.rows("SELECT legacy_ibeacon, ibeacon_id FROM customers")
    assert rows == [{"legacy_ibeacon": 0, "ibeacon_id": None}]
    # Even an id planted in the database is neither served nor resolved.
    ident = "0b0e5e2d-6f4c-4a43-9d2e-1c6f7b2a9e10:1:2"
    await server.service.db.run(
        lambda db: db.execute("UPDATE customers SET legacy_ibeacon = 1, ibeacon_id = ?", [ident])
    )
    scanner = await server.add_scanner("s-entrance")
    assert all(e["id_type"] == "eid" for e in (await _allowlist(server, scanner))["entries"])
    await _post_window(server, scanner, ident)
    assert server.service.scanners.frames_resolved == 0
    assert len(server.service.coordinator.engine) == 0


async def test_enabled_static_id_is_served_resolved_and_withdrawn(
    legacy_server: Harness,
) -> None:
    server = legacy_server
    scanner = await server.add_scanner("s-entrance")
    token = await server.enroll()
    # Enabled without consent: stored and shown, but not served to scanners.
    resp = await server.client.put(
        PREFERENCES, json={"legacy_ibeacon": True}, headers=bearer(token)
    )
    assert resp.status == 200
    prefs = await resp.json()
    ident = prefs["ibeacon_id"]
    assert isinstance(ident, str)
    assert prefs["legacy_ibeacon"] is True
    assert prefs["trackable"] is True
    assert "follow" in prefs["legacy_ibeacon_notice"]["en"]
    assert (await (await server.client.get(PREFERENCES, headers=bearer(token))).json()) == prefs
    before = await _allowlist(server, scanner)
    assert before["entries"] == []

    # Consent: the static id joins the allowlist, in the scanner's own format.
    poll = asyncio.create_task(_allowlist(server, scanner, f"?since={before['version']}&wait=30"))
    condition = server.service.coordinator.allowlist_changed
    await wait_until(lambda: len(condition._waiters) > 0)
    assert (await server.grant(token, "greeting")).status == 201
    delta = await asyncio.wait_for(poll, WAIT_TIMEOUT_S)
    statics = [e for e in delta["entries"] if e["id_type"] == "ibeacon"]
    assert [e["id"] for e in statics] == [ident]
    edge = Allowlist(legacy_ibeacon=True)
    edge.apply(AllowlistUpdate.from_wire(await _allowlist(server, scanner)), time.time())
    uuid_part, major, minor = ident.split(":")
    frame = IBeaconFrame(uuid_part, int(major), int(minor), -59)
    assert edge.match(frame, time.time()) is not None

    # A sighting of the static id resolves to the customer.
    await _post_window(server, scanner, ident)
    assert server.service.scanners.frames_resolved == 1
    assert len(server.service.coordinator.engine) == 1

    # Withdrawal removes it from every scanner's list at once.
    version = (await _allowlist(server, scanner))["version"]
    poll = asyncio.create_task(_allowlist(server, scanner, f"?since={version}&wait=30"))
    await wait_until(lambda: len(condition._waiters) > 0)
    resp = await server.client.post("/api/v1/consents/withdraw", headers=bearer(token))
    assert resp.status == 200
    delta = await asyncio.wait_for(poll, WAIT_TIMEOUT_S)
    assert ident in delta["removed"]
    assert all(e["id_type"] == "eid" for e in (await _allowlist(server, scanner))["entries"])
    await _post_window(server, scanner, ident)
    assert server.service.scanners.frames_resolved == 1
    assert server.service.scanners.frames_unresolved == 1


async def test_disabling_forgets_the_id(legacy_server: Harness) -> None:
    server = legacy_server
    scanner = await server.add_scanner("s-entrance")
    token = await server.enroll()
    assert (await server.grant(token, "greeting")).status == 201
    on = await (
        await server.client.put(PREFERENCES, json={"legacy_ibeacon": True}, headers=bearer(token))
    ).json()
    ident = on["ibeacon_id"]
    assert ident in {e["id"] for e in (await _allowlist(server, scanner))["entries"]}
    # Enabling again keeps the id the app broadcasts.
    again = await (
        await server.client.put(PREFERENCES, json={"legacy_ibeacon": True}, headers=bearer(token))
    ).json()
    assert again["ibeacon_id"] == ident
    version = (await _allowlist(server, scanner))["version"]
    off = await (
        await server.client.put(PREFERENCES, json={"legacy_ibeacon": False}, headers=bearer(token))
    ).json()
    assert off["legacy_ibeacon"] is False
    assert off["ibeacon_id"] is None
    assert off["legacy_ibeacon_notice"] is None
    delta = await _allowlist(server, scanner, f"?since={version}")
    assert delta["full"] is False
    assert delta["removed"] == [ident]
    # Re-enabling assigns a new id: the old one cannot be linked to the customer any more.
    back = await (
        await server.client.put(PREFERENCES, json={"legacy_ibeacon": True}, headers=bearer(token))
    ).json()
    assert back["ibeacon_id"] != ident


async def test_erasure_removes_the_static_id_at_once(legacy_server: Harness) -> None:
    server = legacy_server
    scanner = await server.add_scanner("s-entrance")
    token = await server.enroll()
    assert (await server.grant(token, "greeting")).status == 201
    on = await (
        await server.client.put(PREFERENCES, json={"legacy_ibeacon": True}, headers=bearer(token))
    ).json()
    ident = on["ibeacon_id"]
    version = (await _allowlist(server, scanner))["version"]
    assert ident in {e["id"] for e in (await _allowlist(server, scanner))["entries"]}

    resp = await server.client.delete("/api/v1/me", headers=bearer(token))
    assert resp.status == 200
    delta = await _allowlist(server, scanner, f"?since={version}")
    assert ident in delta["removed"]
    assert ident not in {e["id"] for e in (await _allowlist(server, scanner))["entries"]}
    # A sighting of the old static id resolves to nobody.
    await _post_window(server, scanner, ident)
    assert server.service.scanners.frames_resolved == 0
    assert server.service.scanners.frames_unresolved == 1
    assert len(server.service.coordinator.engine) == 0
