"""End to end with the boxes' real advertising code: BlueZ (mocked, private D-Bus) -> phone ->
proof check-in -> card on the live board of the real server.

Each box of the demo store runs ``scanner.bluez_advertising.StoreBeaconAdvertiser`` in turn on
the mocked adapter; what the phone hears is the iBeacon BlueZ read back from the box over real
D-Bus (``BluezMock.registered_ibeacons``), not a value computed by the test. The phone then
walks in (tests/test_beacon_check_in.py) and checks in with those beacons.
"""

from __future__ import annotations

import asyncio
import secrets
import time
import uuid
from pathlib import Path

import pytest

from scanner.bluez_advertising import ADVERTISEMENT_PATH, BeaconSettings, StoreBeaconAdvertiser
from store_beacon import StoreBeacon
from tests.server.conftest import running_server
from tests.support import wait_until
from tests.test_beacon_check_in import (
    CHAIN,
    MAJOR,
    STAFF_PASSWORD,
    WALK_IN,
    _session,
    consenting_phone,
    walk,
)
from tests.test_end_to_end import Board

from .conftest import BluezMock

pytestmark = pytest.mark.bluez

# D-Bus round trips through a mock process on a loaded 2-core machine.
LIMIT_S = 30.0


def parse_ibeacon(data: bytes) -> StoreBeacon:
    """Apple manufacturer data of an iBeacon: 02 15, UUID, major, minor, measured power."""
    assert data[:2] == b"\x02\x15"
    assert len(data) == 23
    return StoreBeacon(
        uuid.UUID(bytes=data[2:18]),
        int.from_bytes(data[18:20], "big"),
        int.from_bytes(data[20:22], "big"),
    )


async def broadcast_of(bluez: BluezMock, box_id: str, key: bytes, now: float) -> StoreBeacon:
    """Run the box's advertiser until BlueZ holds its advertisement; what BlueZ read."""
    settings = BeaconSettings("hci0", box_id, CHAIN, MAJOR, key, -59)
    advertiser = StoreBeaconAdvertiser(settings, clock=lambda: now)
    stop = asyncio.Event()
    task = asyncio.create_task(advertiser.run(stop))
    try:

        async def held() -> bytes | None:
            found = await asyncio.to_thread(bluez.registered_ibeacons)
            return found.get(ADVERTISEMENT_PATH)

        data = await wait_until(held, LIMIT_S, f"{box_id}'s advertisement on BlueZ")
    finally:
        stop.set()
        await asyncio.wait_for(task, LIMIT_S)
    return parse_ibeacon(data)


async def test_boxes_on_bluez_to_a_card_through_the_reference_phone(
    bluez: BluezMock, tmp_path: Path
) -> None:
    key = secrets.token_bytes(32)
    start = time.time()
    async with (
        running_server(
            tmp_path,
            store_beacon_key=key.hex(),
            store_beacon_uuid=str(CHAIN),
            store_beacon_major=MAJOR,
        ) as server,
        _session(server) as http,
    ):
        floor = server.service.floor
        # The walk lasts under 30 s: the slot's minors stay valid (current, then previous).
        on_air = {box.id: await broadcast_of(bluez, box.id, key, start) for box in floor.scanners}
        assert len({b.minor for b in on_air.values()}) == len(on_air)
        await server.add_staff("demo", STAFF_PASSWORD)
        board = Board()
        await board.open(str(server.client.make_url("")).rstrip("/"), STAFF_PASSWORD)
        try:
            phone = await consenting_phone(server, http)
            await walk(phone, server, lambda box_id, t: on_air[box_id], WALK_IN)
            assert phone.checked_in, (phone.app.refusal, phone.timeline)

            async def card() -> bool:
                return any(c.get("text") == "Hello Léa" for c in board.cards.values())

            await wait_until(card, 10.0, "the card on the live board")
            visits = await server.rows("SELECT via FROM visits")
            assert visits == [{"via": "beacon_proof"}]
        finally:
            await board.close()
