"""End to end: a box's store beacon -> the reference phone client -> a card on the live board.

The real server on 127.0.0.1 (on each engine, the staff board's real WebSocket). The boxes
broadcast what ``store_beacon.advertised_now`` gives for the store's key (what a box's BlueZ
advertisement carries); a phone walks in from the pavement and its OS (the reference client's
``RegionMonitor``) hears each box with the demo's radio model. The phone's time runs a few
seconds ahead of the wall clock in steps of 0.25 s, without sleeping.
"""

from __future__ import annotations

import itertools
import random
import secrets
import time
import uuid
from collections.abc import Callable

import aiohttp
import pytest

from lab.beacon_app import AppState
from lab.phone_client import ReferencePhone, fetch_region
from lab.radio import RadioModel
from store_beacon import StoreBeacon, advertised_now
from store_server.floor import Floor
from tests.server.conftest import Harness, Serve, bearer, serve

__all__ = ["serve"]  # the fixture, imported so that this top-level module can use it
from tests.support import wait_until
from tests.test_end_to_end import Board

# The PostgreSQL variants run in CI's own step (pytest -m pg_step), outside the default
# run's time budget: neither privacy- nor security-critical (README, Testing).
pytestmark = pytest.mark.own_pg_step

CHAIN = uuid.UUID("6f1e2d3c-1b2a-4c5d-8e9f-00000000b011")
MAJOR = 7
STAFF_PASSWORD = "correct horse battery staple 42"
STEP_S = 0.25
# From the pavement, through the door, to the parts shelf.
WALK_IN = [(6.5, -4.0), (6.5, 0.0), (7.5, 2.0), (9.0, 4.0)]
SEED = 20


def _session(server: Harness) -> aiohttp.ClientSession:
    """The phone's own HTTP session to the server (the app's, not the test client's)."""
    return aiohttp.ClientSession(str(server.client.make_url("")))


# What each box broadcasts at a time: box id, unix time -> its iBeacon.
OnAir = Callable[[str, float], StoreBeacon]


def heard_at(
    floor: Floor,
    radio: RadioModel,
    on_air: OnAir,
    position: tuple[float, float],
    t: float,
    rng: random.Random,
) -> dict[str, tuple[uuid.UUID, int, int, int]]:
    """What a phone at ``position`` hears of every box at ``t`` (box id -> beacon, RSSI)."""
    heard = {}
    for box in floor.scanners:
        rssi = radio.rssi(box, position, rng)
        if rssi is not None:
            beacon = on_air(box.id, t)
            heard[box.id] = (beacon.uuid, beacon.major, beacon.minor, round(rssi))
    return heard


def computed(key: bytes) -> OnAir:
    """The boxes' beacons as store_beacon computes them (what their advertisements carry)."""
    return lambda box_id, t: advertised_now(key, CHAIN, MAJOR, box_id, t)


async def walk(
    phone: ReferencePhone,
    server: Harness,
    on_air: OnAir,
    path: list[tuple[float, float]],
    start: float | None = None,
) -> None:
    """The phone walks ``path`` at 1 m/s from now, one step per 0.25 s; the server's clock
    for check-ins follows the walk's (it runs ahead of the wall clock, without sleeping)."""
    floor = server.service.floor
    radio = RadioModel.for_floor(floor)
    rng = random.Random(SEED)  # the same radio noise on every run
    t = time.time() if start is None else start
    server.service.customers.clock = lambda: t
    for (x0, y0), (x1, y1) in itertools.pairwise(path):
        steps = max(1, round(((x1 - x0) ** 2 + (y1 - y0) ** 2) ** 0.5 / STEP_S))
        for k in range(steps):
            f = k / steps
            here = (x0 + (x1 - x0) * f, y0 + (y1 - y0) * f)
            await phone.step(t, heard_at(floor, radio, on_air, here, t, rng))
            t += STEP_S


async def consenting_phone(
    server: Harness, http: aiohttp.ClientSession, whole_chain: bool = False
) -> ReferencePhone:
    """An app enrolled and opted in to greetings through the API, as "Léa" in English."""
    token = await server.enroll("en")
    assert (await server.grant(token, "greeting")).status == 201
    await server.client.put(
        "/api/v1/preferences",
        json={"display_name": "Léa", "name_form": "first_name", "language": "en"},
        headers=bearer(token),
    )
    region = await fetch_region(http, whole_chain=whole_chain)
    assert region is not None
    return ReferencePhone(http, token, region)


async def test_an_iphone_walks_in_checks_in_with_the_beacon_and_gets_its_card(
    serve: Serve,
) -> None:
    key = secrets.token_bytes(32)
    async with (
        serve(
            store_beacon_key=key.hex(),
            store_beacon_uuid=str(CHAIN),
            store_beacon_major=MAJOR,
        ) as server,
        _session(server) as http,
    ):
        await server.add_staff("demo", STAFF_PASSWORD)
        board = Board()
        await board.open(str(server.client.make_url("")).rstrip("/"), STAFF_PASSWORD)
        try:
            phone = await consenting_phone(server, http)
            floor = server.service.floor
            # From the pavement, through the door, to the parts shelf.
            await walk(phone, server, computed(key), WALK_IN)
            assert phone.app.state is AppState.CHECKED_IN, (phone.app.refusal, phone.timeline)
            kinds = [k for _, k in phone.timeline if k != "ranged"]
            assert kinds[0] == "enter"
            assert kinds[-2:] == ["posted", "answered 200"]
            woken = phone.timeline[0][0]
            assert phone.app.checked_in_at is not None
            # From the pavement (4 m out at 1 m/s) to checked in: within the walk.
            assert phone.app.checked_in_at - woken < 10.0

            async def card() -> bool:
                return any(c.get("text") == "Hello Léa" for c in board.cards.values())

            await wait_until(card, 10.0, "Léa's card on the live board")
            visits = await server.rows("SELECT zone, via FROM visits")
            assert visits == [{"zone": phone.app.zone, "via": "beacon_proof"}]
            assert phone.app.zone in {z.id for z in floor.zones}
        finally:
            await board.close()


async def test_a_phone_passing_by_never_checks_in(serve: Serve) -> None:
    """On the pavement 2.5 m from the window the OS wakes the app and it posts its rounds,
    but the engine never takes the phone for inside: nothing is recorded."""
    key = secrets.token_bytes(32)
    async with (
        serve(
            store_beacon_key=key.hex(),
            store_beacon_uuid=str(CHAIN),
            store_beacon_major=MAJOR,
        ) as server,
        _session(server) as http,
    ):
        phone = await consenting_phone(server, http, whole_chain=True)
        await walk(phone, server, computed(key), [(-4.0, -2.5), (16.0, -2.5)])
        kinds = [k for _, k in phone.timeline]
        assert "enter" in kinds
        assert "posted" in kinds  # the test would prove nothing otherwise
        assert phone.app.state is not AppState.CHECKED_IN
        assert await server.rows("SELECT * FROM visits") == []
