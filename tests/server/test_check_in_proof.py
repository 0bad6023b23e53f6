"""Proof-of-presence check-in (POST /api/v1/check-in/proof) on the real app and database.

Accepted only for a minor a box of this store broadcast in the current or previous slot; every
refusal is a 403 with a named code and leaves nothing about the customer: no visit, decision,
card or app message in the database, no log line naming them, no state in the engine.
"""

from __future__ import annotations

import logging
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from store_beacon import SLOT_S, minor_for, slot_of
from store_server.checkin_proof import beacon_settings
from store_server.config import ServerConfig, load_config
from store_server.errors import ConfigError
from tests.server.conftest import Harness, Serve, bearer, error_of

# The PostgreSQL variants run in CI's own step (pytest -m pg_step), outside the default
# run's time budget: neither privacy- nor security-critical (README, Testing).
pytestmark = pytest.mark.own_pg_step

CHAIN_UUID = uuid.UUID("6f1e2d3c-1b2a-4c5d-8e9f-00000000b011")
MAJOR = 4242
KEY = secrets.token_bytes(32)
BOXES = ("s-entrance", "s-machines", "s-parts", "s-checkout")
# Tables that hold anything about a customer's presence.
PRESENCE_TABLES = ("visits", "decisions", "cards", "messages", "access_log")


@pytest.fixture
async def proof_server(serve: Serve) -> AsyncIterator[Harness]:
    """On each engine (the proofs' visits, decisions and cards are stored)."""
    async with serve(
        store_beacon_key=KEY.hex(),
        store_beacon_uuid=str(CHAIN_UUID),
        store_beacon_major=MAJOR,
        proof_rate_limit="1000/minute",
    ) as harness:
        yield harness


def sighting(
    box: str = "s-parts",
    *,
    now: float | None = None,
    slot_delta: int = 0,
    major: int = MAJOR,
    chain: uuid.UUID = CHAIN_UUID,
    minor: int | None = None,
    rssi: int = -62,
    seen_at: float | None = None,
) -> dict[str, Any]:
    t = time.time() if now is None else now
    value = minor if minor is not None else minor_for(KEY, MAJOR, box, slot_of(t) + slot_delta)
    return {
        "uuid": str(chain).upper(),  # iOS prints UUIDs in upper case
        "major": major,
        "minor": value,
        "rssi": rssi,
        "seen_at": t if seen_at is None else seen_at,
    }


def forged_minor(now: float) -> int:
    """A minor that no box broadcast in the last hour."""
    used = {
        minor_for(KEY, MAJOR, box, slot_of(now) - age) for box in BOXES for age in range(-1, 15)
    }
    return next(m for m in range(0x10000) if m not in used)


async def consenting(server: Harness, purpose: str = "greeting") -> tuple[str, str]:
    token = await server.enroll()
    assert (await server.grant(token, purpose)).status == 201
    customer_id = await server.service.customers.customer_for_token(token)
    return token, customer_id


async def presence_rows(server: Harness) -> dict[str, list[dict[str, Any]]]:
    return {table: await server.rows(f"SELECT * FROM {table}") for table in PRESENCE_TABLES}


async def test_a_valid_proof_checks_in_at_the_box_zone_and_is_marked(proof_server: Harness) -> None:
    token, customer_id = await consenting(proof_server)
    resp = await proof_server.client.post(
        "/api/v1/check-in/proof",
        json={"beacons": [sighting("s-entrance", rssi=-80), sighting("s-parts", rssi=-58)]},
        headers=bearer(token),
    )
    assert resp.status == 200, await resp.text()
    assert await resp.json() == {"checked_in": True, "via": "beacon_proof", "zone": "parts"}
    visits = await proof_server.rows("SELECT customer_id, zone, via FROM visits")
    assert visits == [{"customer_id": customer_id, "zone": "parts", "via": "beacon_proof"}]
    cards = await proof_server.rows("SELECT kind FROM cards")
    assert [c["kind"] for c in cards] == ["greeting"]
    assert proof_server.service.coordinator.engine.zone_of(customer_id) == "parts"
    # "My data" names how the visit came, in the customer's words.
    data = await (await proof_server.client.get("/api/v1/me", headers=bearer(token))).json()
    assert [v["via"] for v in data["visits"]] == ["beacon_proof"]


async def test_the_previous_slot_is_still_accepted(proof_server: Harness) -> None:
    token, _ = await consenting(proof_server)
    resp = await proof_server.client.post(
        "/api/v1/check-in/proof",
        json={"beacons": [sighting("s-machines", slot_delta=-1)]},
        headers=bearer(token),
    )
    assert resp.status == 200
    assert (await resp.json())["zone"] == "machines"


async def test_a_tap_is_still_possible_and_marked_as_a_tap(proof_server: Harness) -> None:
    token, _ = await consenting(proof_server)
    resp = await proof_server.client.post("/api/v1/check-in", json={}, headers=bearer(token))
    assert await resp.json() == {"checked_in": True}
    assert [v["via"] for v in await proof_server.rows("SELECT via FROM visits")] == ["check_in"]


async def test_after_check_in_mode_greets_on_a_proof(proof_server: Harness) -> None:
    token, _ = await consenting(proof_server)
    await proof_server.client.put(
        "/api/v1/preferences", json={"greet_mode": "after_check_in"}, headers=bearer(token)
    )
    resp = await proof_server.client.post(
        "/api/v1/check-in/proof", json={"beacons": [sighting()]}, headers=bearer(token)
    )
    assert resp.status == 200
    assert [c["kind"] for c in await proof_server.rows("SELECT kind FROM cards")] == ["greeting"]


RefusalCase = Callable[[float], dict[str, Any]]
REFUSALS: dict[str, tuple[RefusalCase, str]] = {
    "past_slot": (lambda now: sighting(now=now, slot_delta=-3), "beacon_stale"),
    "seen_in_a_past_slot": (
        lambda now: sighting(now=now, seen_at=now - 2 * SLOT_S - 30),
        "beacon_expired",
    ),
    "other_store": (lambda now: sighting(now=now, major=MAJOR + 1), "beacon_wrong_store"),
    "other_chain": (
        lambda now: sighting(now=now, chain=uuid.UUID(int=CHAIN_UUID.int ^ 1)),
        "beacon_wrong_chain",
    ),
    "forged_minor": (
        lambda now: sighting(now=now, minor=forged_minor(now)),
        "beacon_unknown_minor",
    ),
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
async def test_refused_proofs_record_nothing(
    proof_server: Harness, case: str, caplog: pytest.LogCaptureFixture
) -> None:
    make, code = REFUSALS[case]
    token, customer_id = await consenting(proof_server)
    caplog.set_level(logging.DEBUG)
    resp = await proof_server.client.post(
        "/api/v1/check-in/proof", json={"beacons": [make(time.time())]}, headers=bearer(token)
    )
    assert resp.status == 403
    assert (await error_of(resp))["code"] == code
    assert await presence_rows(proof_server) == {table: [] for table in PRESENCE_TABLES}
    assert len(proof_server.service.coordinator.engine) == 0
    assert customer_id not in proof_server.service.coordinator.check_ins
    assert customer_id not in caplog.text
    assert token not in caplog.text
    assert any(code in r.getMessage() for r in caplog.records)  # counted, without a name


async def test_a_replay_after_the_slot_is_refused(proof_server: Harness) -> None:
    """A proof accepted now, posted again (by anyone) two slots later: stale, nothing new."""
    token, customer_id = await consenting(proof_server)
    recorded = sighting("s-checkout")
    first = await proof_server.client.post(
        "/api/v1/check-in/proof", json={"beacons": [recorded]}, headers=bearer(token)
    )
    assert first.status == 200
    before = await presence_rows(proof_server)
    later = time.time() + 2 * SLOT_S
    proof_server.service.customers.clock = lambda: later
    replayed = {**recorded, "seen_at": later}
    other_token, other_id = await consenting(proof_server)
    for who in (token, other_token):
        resp = await proof_server.client.post(
            "/api/v1/check-in/proof", json={"beacons": [replayed]}, headers=bearer(who)
        )
        assert resp.status == 403
        assert (await error_of(resp))["code"] == "beacon_stale"
    assert await presence_rows(proof_server) == before
    assert proof_server.service.coordinator.engine.zone_of(other_id) is None
    assert customer_id != other_id


async def test_no_consent_greets_nobody_and_records_nothing(proof_server: Harness) -> None:
    token = await proof_server.enroll()
    resp = await proof_server.client.post(
        "/api/v1/check-in/proof", json={"beacons": [sighting()]}, headers=bearer(token)
    )
    assert resp.status == 200
    assert await resp.json() == {"checked_in": False, "reason": "no_consent"}
    assert await presence_rows(proof_server) == {table: [] for table in PRESENCE_TABLES}
    assert len(proof_server.service.coordinator.engine) == 0


async def test_a_sighting_from_the_future_is_invalid(proof_server: Harness) -> None:
    token, _ = await consenting(proof_server)
    resp = await proof_server.client.post(
        "/api/v1/check-in/proof",
        json={"beacons": [sighting(seen_at=time.time() + 600)]},
        headers=bearer(token),
    )
    assert resp.status == 422
    assert (await error_of(resp))["field"] == "seen_at"


async def test_proof_attempts_are_rate_limited(serve: Serve) -> None:
    """A forger cannot try the 65,536 minors: refused guesses use up the allowance, and a
    valid proof beyond it is refused too (429), with nothing recorded."""
    async with serve(
        store_beacon_key=KEY.hex(),
        store_beacon_uuid=str(CHAIN_UUID),
        store_beacon_major=MAJOR,
        proof_rate_limit="5/minute",
    ) as server:
        token, _ = await consenting(server)
        now = time.time()
        statuses = []
        for guess in range(5):
            resp = await server.client.post(
                "/api/v1/check-in/proof",
                json={"beacons": [sighting(minor=(forged_minor(now) + guess * 7919) % 0x10000)]},
                headers=bearer(token),
            )
            statuses.append(resp.status)
        assert set(statuses) <= {403, 200}
        resp = await server.client.post(
            "/api/v1/check-in/proof", json={"beacons": [sighting()]}, headers=bearer(token)
        )
        assert resp.status == 429
        assert (await error_of(resp))["code"] == "rate_limited"
        if 200 not in statuses:
            assert await server.rows("SELECT * FROM visits") == []


async def test_without_a_key_proofs_are_off_and_the_app_is_told(serve: Serve) -> None:
    async with serve() as server:
        token, _ = await consenting(server)
        info = await (await server.client.get("/api/v1/store-beacon")).json()
        assert info == {"enabled": False}
        resp = await server.client.post(
            "/api/v1/check-in/proof", json={"beacons": [sighting()]}, headers=bearer(token)
        )
        assert resp.status == 403
        assert (await error_of(resp))["code"] == "beacon_proof_off"


async def test_the_app_learns_the_region_to_monitor(proof_server: Harness) -> None:
    info = await (await proof_server.client.get("/api/v1/store-beacon")).json()
    assert info == {"enabled": True, "uuid": str(CHAIN_UUID), "major": MAJOR, "slot_s": SLOT_S}


def test_settings_need_a_uuid_and_never_quote_the_key() -> None:
    secret = "zz" + KEY.hex()
    with pytest.raises(ConfigError) as missing:
        load_config(f'store_beacon_key = "{KEY.hex()}"', {})
    assert missing.value.key == "store_beacon_uuid"
    config = ServerConfig(store_beacon_key=secret, store_beacon_uuid=str(CHAIN_UUID))
    with pytest.raises(ConfigError) as bad:
        beacon_settings(config)
    assert secret not in str(bad.value)
    assert secret not in repr(config)
    with pytest.raises(ConfigError):
        load_config(f'store_beacon_uuid = "{CHAIN_UUID}"\nstore_beacon_major = 70000', {})
    with pytest.raises(ConfigError):
        load_config('store_beacon_uuid = "not-a-uuid"', {})
    good = beacon_settings(
        ServerConfig(store_beacon_key=KEY.hex(), store_beacon_uuid=str(CHAIN_UUID))
    )
    assert good is not None
    assert KEY.hex() not in repr(good)


async def test_a_faint_window_box_alone_is_not_a_check_in(proof_server: Harness) -> None:
    """The entrance box heard faintly (as from the pavement through the window): the engine
    does not take the phone for inside; nothing is recorded and the app is told to range on."""
    token, customer_id = await consenting(proof_server)
    resp = await proof_server.client.post(
        "/api/v1/check-in/proof",
        json={"beacons": [sighting("s-entrance", rssi=-78)]},
        headers=bearer(token),
    )
    assert resp.status == 200
    assert await resp.json() == {"checked_in": False, "reason": "not_inside"}
    assert await presence_rows(proof_server) == {table: [] for table in PRESENCE_TABLES}
    assert proof_server.service.coordinator.engine.zone_of(customer_id) is None
