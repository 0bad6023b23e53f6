"""Rotating identities through the real app: re-enrollment, key secrecy, check-in, CLI."""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from typing import Any

import pytest

from store_server import cli
from store_server.eid import compute_eid
from tests.server.conftest import (
    WAIT_TIMEOUT_S,
    Harness,
    Scanner,
    batch_body,
    bearer,
    error_of,
    wait_until,
)


@pytest.fixture
def server(engine_server: Harness) -> Harness:
    """Every test of this module runs on SQLite and on PostgreSQL (tests/pg.py)."""
    return engine_server


ALLOWLIST = "/api/scanner/v1/allowlist"
ROTATE = "/api/v1/enroll/rotate"


async def _enroll(server: Harness) -> dict[str, Any]:
    resp = await server.client.post("/api/v1/enroll", json={"language": "en"})
    assert resp.status == 201
    data: dict[str, Any] = await resp.json()
    return data


async def _allowlist(server: Harness, scanner: Scanner, query: str = "") -> dict[str, Any]:
    resp = await server.signed(scanner, "GET", ALLOWLIST + query)
    assert resp.status == 200
    data: dict[str, Any] = await resp.json()
    return data


# -- re-enrollment -----------------------------------------------------------------------------


async def test_rotate_issues_a_new_key_and_drops_old_eids_everywhere(server: Harness) -> None:
    scanner = await server.add_scanner("s-entrance")
    enrolled = await _enroll(server)
    token = enrolled["token"]
    assert (await server.grant(token, "greeting")).status == 201
    before = await _allowlist(server, scanner)
    old_ids = {e["id"] for e in before["entries"]}
    assert len(old_ids) == 3
    beacon_t = enrolled["beacon_time"]
    old_key = bytes.fromhex(enrolled["identity_key"])
    assert compute_eid(old_key, enrolled["rotation_exponent"], beacon_t).hex() in old_ids

    # A scanner is long-polling when the customer re-enrolls.
    condition = server.service.coordinator.allowlist_changed
    poll = asyncio.create_task(_allowlist(server, scanner, f"?since={before['version']}&wait=30"))
    await wait_until(lambda: len(condition._waiters) > 0)
    resp = await server.client.post(ROTATE, json={}, headers=bearer(token))
    assert resp.status == 200
    rotated = await resp.json()
    assert set(rotated) == {"identity_key", "rotation_exponent", "beacon_time"}
    new_key = bytes.fromhex(rotated["identity_key"])
    assert new_key != old_key
    # Answered by the rotation, not by the end of its 30 s hold (WAIT_TIMEOUT_S is shorter).
    delta = await asyncio.wait_for(poll, WAIT_TIMEOUT_S)
    assert delta["full"] is False
    assert delta["version"] > before["version"]
    assert set(delta["removed"]) == old_ids
    new_ids = {e["id"] for e in delta["entries"]}
    assert len(new_ids) == 3
    assert not new_ids & old_ids
    assert (
        compute_eid(new_key, rotated["rotation_exponent"], rotated["beacon_time"]).hex() in new_ids
    )

    # The old EIDs never resolve again; the new ones do.
    now = time.time()
    resolver = server.service.coordinator.resolver
    for eid in old_ids:
        assert resolver.resolve(bytes.fromhex(eid), now) is None
    customer_id = enrolled["customer_id"]
    assert any(resolver.resolve(bytes.fromhex(eid), now) == customer_id for eid in new_ids)
    # The stored (wrapped) key changed too: a restart would not resurrect the old one.
    rows = await server.rows(
        "SELECT key_wrapped FROM identities WHERE customer_id = ?", [customer_id]
    )
    assert len(rows) == 1
    full = await _allowlist(server, scanner)
    assert {e["id"] for e in full["entries"]} == new_ids


async def test_withdrawal_reaches_every_scanner(server: Harness) -> None:
    scanners = [await server.add_scanner(f"s-{i}") for i in range(3)]
    enrolled = await _enroll(server)
    token = enrolled["token"]
    assert (await server.grant(token, "greeting")).status == 201
    full = await _allowlist(server, scanners[0])
    ids = {e["id"] for e in full["entries"]}
    assert len(ids) == 3
    condition = server.service.coordinator.allowlist_changed
    polls = [
        asyncio.create_task(_allowlist(server, s, f"?since={full['version']}&wait=30"))
        for s in scanners
    ]
    await wait_until(lambda: len(condition._waiters) == len(scanners))
    resp = await server.client.post("/api/v1/consents/withdraw", headers=bearer(token))
    assert resp.status == 200
    # Every poll is answered by the withdrawal, not by the end of its 30 s hold.
    deltas = await asyncio.wait_for(asyncio.gather(*polls), WAIT_TIMEOUT_S)
    for delta in deltas:
        assert delta["full"] is False
        assert set(delta["removed"]) == ids
        assert delta["entries"] == []
    now = time.time()
    for eid in ids:
        assert server.service.coordinator.resolver.resolve(bytes.fromhex(eid), now) is None
    assert enrolled["customer_id"] not in server.service.coordinator.resolver


async def test_rotate_without_consent_changes_no_allowlist(server: Harness) -> None:
    scanner = await server.add_scanner("s-entrance")
    enrolled = await _enroll(server)
    version = (await _allowlist(server, scanner))["version"]
    resp = await server.client.post(
        ROTATE, json={"app_counter": 1000}, headers=bearer(enrolled["token"])
    )
    assert resp.status == 200
    data = await resp.json()
    assert 1000 <= data["beacon_time"] <= 1000 + 5
    assert (await _allowlist(server, scanner))["version"] == version
    assert enrolled["customer_id"] not in server.service.coordinator.resolver


async def test_rotate_requires_the_app_token_and_validates(server: Harness) -> None:
    resp = await server.client.post(ROTATE, json={})
    assert resp.status == 401
    assert (await error_of(resp))["code"] == "unauthenticated"
    token = (await _enroll(server))["token"]
    resp = await server.client.post(ROTATE, json={"app_counter": 2**32}, headers=bearer(token))
    assert resp.status == 422
    assert (await error_of(resp))["field"] == "app_counter"


async def test_identity_keys_are_never_logged_nor_sent_to_scanners(
    server: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    scanner = await server.add_scanner("s-entrance")
    enrolled = await _enroll(server)
    token = enrolled["token"]
    assert (await server.grant(token, "greeting")).status == 201
    rotated = await (await server.client.post(ROTATE, json={}, headers=bearer(token))).json()
    keys = [bytes.fromhex(enrolled["identity_key"]), bytes.fromhex(rotated["identity_key"])]
    # Drive the scanner side too: a batch with the current EID, full list and a delta.
    eid = compute_eid(keys[1], rotated["rotation_exponent"], rotated["beacon_time"])
    now = time.time()
    window = {
        "id_type": "eid",
        "id": eid.hex(),
        "start": now - 1,
        "end": now,
        "count": 3,
        "rssi_max": -50,
        "rssi_median": -52.0,
        "tx_power": -20,
    }
    resp = await server.signed(
        scanner, "POST", "/api/scanner/v1/batches", batch_body("s-entrance", windows=[window])
    )
    assert resp.status == 200
    answers = [
        await (await server.signed(scanner, "GET", ALLOWLIST)).text(),
        await (await server.signed(scanner, "GET", ALLOWLIST + "?since=0")).text(),
    ]
    assert (
        server.service.scanners.frames_resolved == 1
    )  # the batch really went through the resolver
    spellings = [
        form
        for key in keys
        for form in (key.hex(), key.hex().upper(), base64.b64encode(key).decode(), repr(key))
    ]
    logged = caplog.text + "\n".join(r.getMessage() for r in caplog.records)
    for form in spellings:
        assert form not in logged
        for answer in answers:
            assert form not in answer
    # Keys are stored wrapped, never in clear.
    stored = await server.rows("SELECT key_wrapped FROM identities")
    for row in stored:
        for key in keys:
            assert key not in bytes(row["key_wrapped"])


# -- check-in ----------------------------------------------------------------------------------


async def test_check_in_greets_a_consenting_customer_without_any_sighting(
    server: Harness,
) -> None:
    token = (await _enroll(server))["token"]
    assert (await server.grant(token, "greeting")).status == 201
    resp = await server.client.put(
        "/api/v1/preferences",
        json={"display_name": "Sylvie", "name_form": "first_name", "language": "en"},
        headers=bearer(token),
    )
    assert resp.status == 200
    assert server.service.scanners.frames_resolved == 0
    assert await server.rows("SELECT * FROM cards") == []
    resp = await server.client.post(
        "/api/v1/check-in", json={"zone": "entrance"}, headers=bearer(token)
    )
    assert resp.status == 200
    assert await resp.json() == {"checked_in": True}
    cards = await server.rows("SELECT kind, state, payload FROM cards")
    assert [(c["kind"], c["state"]) for c in cards] == [("greeting", "open")]
    assert "Sylvie" in cards[0]["payload"]
    visits = await server.rows("SELECT via, zone FROM visits")
    assert visits == [{"via": "check_in", "zone": "entrance"}]
    assert server.service.scanners.frames_resolved == 0  # no beacon was involved
    assert server.service.coordinator.engine.zone_of((await _customer_ids(server))[0]) == "entrance"


async def test_check_in_without_consent_leaves_no_trace(server: Harness) -> None:
    token = (await _enroll(server))["token"]
    resp = await server.client.put(
        "/api/v1/preferences", json={"display_name": "Sylvie"}, headers=bearer(token)
    )
    assert resp.status == 200
    resp = await server.client.post(
        "/api/v1/check-in", json={"zone": "entrance"}, headers=bearer(token)
    )
    assert resp.status == 200
    assert await resp.json() == {"checked_in": False, "reason": "no_consent"}
    for table in ("cards", "visits", "decisions", "messages", "access_log"):
        assert await server.rows(f"SELECT * FROM {table}") == [], table
    assert len(server.service.coordinator.engine) == 0


async def test_check_in_after_withdrawal_is_useless(server: Harness) -> None:
    token = (await _enroll(server))["token"]
    assert (await server.grant(token, "greeting")).status == 201
    resp = await server.client.post("/api/v1/consents/withdraw", headers=bearer(token))
    assert resp.status == 200
    resp = await server.client.post("/api/v1/check-in", json={}, headers=bearer(token))
    assert await resp.json() == {"checked_in": False, "reason": "no_consent"}
    assert await server.rows("SELECT * FROM cards") == []


async def _customer_ids(server: Harness) -> list[str]:
    return [str(r["id"]) for r in await server.rows("SELECT id FROM customers")]


# -- reference tool ----------------------------------------------------------------------------


def test_eid_cli_prints_the_literal_vector(capsys: pytest.CaptureFixture[str]) -> None:
    # Published vector (independent implementation): IK 00112233..ff, K = 12, T = 1518080946.
    argv = ["eid", "--key", "00112233445566778899aabbccddeeff", "--k", "12"]
    assert cli.main([*argv, "--time", "1518080946"]) == 0
    assert capsys.readouterr().out == "7dd8169dae94258c\n"
    # Temporary-key roll-over at T = 65536 (K = 9), literal computed from the specification.
    key = "e2a5c2cfa7e9a2a5c1d3b4f6a8c0e1d2"
    assert cli.main(["eid", "--key", key, "--k", "9", "--time", "65536"]) == 0
    assert capsys.readouterr().out == "782d32ab735ad279\n"
    # K low bits cleared: the last second of the window gives the same EID.
    assert cli.main(["eid", "--key", key, "--k", "9", "--time", str(65536 + 511)]) == 0
    assert capsys.readouterr().out == "782d32ab735ad279\n"


def test_eid_cli_rejects_a_bad_key(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["eid", "--key", "zz", "--k", "9", "--time", "0"]) != 0
    assert "--key" in capsys.readouterr().err
