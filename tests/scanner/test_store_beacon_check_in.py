"""End to end with the boxes' real advertising code: BlueZ (mocked, private D-Bus) -> phone ->
proof check-in -> card on the live board of the real server.

Each box of the demo store runs ``scanner.bluez_advertising.StoreBeaconAdvertiser`` in turn on
the mocked adapter; what the phone hears is the iBeacon BlueZ read back from the box over real
D-Bus (``BluezMock.registered_ibeacons``), not a value computed by the test. The phone then
walks in (tests/test_beacon_check_in.py) and checks in with those beacons. And another box's
real daemon (bleak on the mocked BlueZ) hears one box's beacon: a calibration sample.
"""

from __future__ import annotations

import asyncio
import secrets
import time
import uuid
from pathlib import Path

import pytest

from scanner.bluez_advertising import ADVERTISEMENT_PATH, BeaconSettings, StoreBeaconAdvertiser
from scanner.config import AdvertiseConfig, ScannerConfig
from scanner.daemon import Daemon
from store_beacon import StoreBeacon
from store_server.calibration_online import box_places
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
    return parse_ibeacon(await on_air(bluez, box_id, key, now))


async def on_air(bluez: BluezMock, box_id: str, key: bytes, now: float) -> bytes:
    """Run the box's advertiser until BlueZ holds its advertisement; the manufacturer data
    BlueZ read from it."""
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
    return bytes(data)


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


async def test_a_box_on_bluez_heard_by_another_box_calibrates_it(
    bluez: BluezMock, tmp_path: Path
) -> None:
    """One box's store beacon, as BlueZ read it from the box's advertiser, heard by another
    box's real daemon (bleak on the mocked BlueZ): the listener's batch carries it as a
    ``store_beacon`` window, and the server takes it as a calibration sample of the listener
    from the speaker, never as a customer."""
    key = secrets.token_bytes(32)
    start = time.time()
    async with running_server(
        tmp_path,
        store_beacon_key=key.hex(),
        store_beacon_uuid=str(CHAIN),
        store_beacon_major=MAJOR,
    ) as server:
        listener = await server.add_scanner("s-parts")
        # What the speaker's advertiser put on the air, as BlueZ read it over D-Bus.
        data = await on_air(bluez, "s-entrance", key, start)
        config = ScannerConfig(
            scanner_id=listener.scanner_id,
            store_id=server.service.store_id,
            server_url=str(server.client.make_url("")).rstrip("/"),
            secret=listener.secret,
            backend="bluez",
            adapter="hci0",
            outbox_path=str(tmp_path / "outbox.sqlite"),
            allowlist_wait_s=5.0,
            advertise=AdvertiseConfig(uuid=str(CHAIN), major=MAJOR),
        )
        daemon = Daemon(config, listener.secret)
        stop = asyncio.Event()
        task = asyncio.create_task(daemon.run(stop))
        path = None
        try:
            path = await asyncio.to_thread(
                bluez.add_device, "C0:FF:EE:00:0B:0E", -71, {}, "hci0", {0x004C: data}
            )
            learner = server.service.coordinator.calibration
            device = path

            async def sampled() -> bool:
                # The daemon scans once it has its allowlist: the box goes on advertising.
                await asyncio.to_thread(bluez.update_device, device, -71, {}, {0x004C: data})
                return bool(learner.samples("s-parts"))

            await wait_until(sampled, LIMIT_S, "the listener's calibration sample")
        finally:
            stop.set()
            await asyncio.wait_for(task, LIMIT_S)
            if path is not None:
                await asyncio.to_thread(bluez.remove_device, path)
        (sample,) = learner.samples("s-parts")
        service = server.service
        place = box_places(service.floor, service.coordinator.engine.grid)["s-parts"]["s-entrance"]
        assert (sample.source, sample.distance_m, sample.rssi_dbm) == ("box", place.distance_m, -71)
        assert server.service.scanners.box_beacon_windows["sample"] == 1
        assert daemon.allowlist.passed["store_beacon"] >= 1
        assert server.service.coordinator.engine.present() == {}
        assert await server.rows("SELECT * FROM visits") == []
