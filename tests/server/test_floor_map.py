"""The manager's floor map: its geometry (pure), the page and its live counts (real server)."""

from __future__ import annotations

import json

import pytest

from store_server.floor_map import MAP_MARGIN_M, box_health, floor_map, zone_counts
from tests.server.conftest import Harness, bearer
from tests.server.presence_helpers import load
from tests.server.test_manager import MANAGER, PASSWORD, STAFF, session, text

# The PostgreSQL variants run in CI's own step (pytest -m pg_step), outside the default
# run's time budget: neither privacy- nor security-critical (README, Testing).
pytestmark = pytest.mark.own_pg_step


def test_the_street_is_at_the_bottom_and_everything_fits() -> None:
    floor = load()
    drawn = floor_map(floor)
    # 12 x 8 m shop, pavement down to y = -3: the map is the shop, the pavement and margins.
    assert drawn.view_box == f"0 0 {12 + 2 * MAP_MARGIN_M:g} {8 + 3 + 2 * MAP_MARGIN_M:g}"
    box = {b.id: b for b in drawn.boxes}["s-entrance"]  # at (6, 1.2), near the front
    assert (box.x, box.y) == (6 + MAP_MARGIN_M, pytest.approx(MAP_MARGIN_M + 8 - 1.2))
    [door] = drawn.doors
    assert door.y1 == door.y2 == MAP_MARGIN_M + 8  # the front line, above the pavement
    assert drawn.pavement[1] == MAP_MARGIN_M + 8 + 0.5
    assert [z.id for z in drawn.zones] == [z.id for z in floor.zones]
    corner = floor_map(load("store-corner.toml"))
    assert corner.walls
    assert len(corner.outline.split()) > 4  # the L shape, not a rectangle


def test_box_health_follows_the_scanners_page() -> None:
    now = 1000.0
    assert box_health(None, now, 45) == "unregistered"
    assert box_health({"revoked_at": 5.0, "last_seen_at": now}, now, 45) == "revoked"
    assert box_health({"revoked_at": None, "last_seen_at": None}, now, 45) == "stale"
    assert box_health({"revoked_at": None, "last_seen_at": now - 46}, now, 45) == "stale"
    fresh = {"revoked_at": None, "last_seen_at": now - 5, "heartbeat": {"adapter": "powered"}}
    assert box_health(fresh, now, 45) == "active"
    node = {**fresh, "heartbeat": {"node": {"connected": False, "host": "n"}}}
    assert box_health(node, now, 45) == "node_down"


def test_zone_counts_list_every_zone() -> None:
    assert zone_counts(["a", "b", "a", None, "elsewhere"], ["a", "b", "c"]) == {
        "a": 2,
        "b": 1,
        "c": 0,
    }


async def test_the_map_page_and_its_live_counts(engine_server: Harness) -> None:
    server = engine_server  # on both engines: scanners, a check-in, the box states
    await server.add_staff(MANAGER, PASSWORD, "manager")
    await server.add_staff(STAFF, PASSWORD, "staff")
    await server.add_scanner("s-parts")
    cookie = await session(server, MANAGER)
    page = await text(await server.client.get("/manager/floor?lang=en", headers=cookie))
    assert "Coffee machines" in page
    assert "Machines à café" not in page
    assert 'data-box="s-parts" data-state="stale"' in page
    assert 'data-box="s-machines" data-state="unregistered"' in page

    live = await server.client.get("/manager/floor/live", headers=cookie)
    assert live.status == 200
    assert live.headers["Cache-Control"] == "no-store"
    before = await live.json()
    assert before["zones"] == {"entrance": 0, "machines": 0, "parts": 0, "checkout": 0}

    token = await server.enroll()
    assert (await server.grant(token, "greeting")).status == 201
    resp = await server.client.post(
        "/api/v1/check-in", json={"zone": "parts"}, headers=bearer(token)
    )
    assert await resp.json() == {"checked_in": True}
    after = await (await server.client.get("/manager/floor/live", headers=cookie)).json()
    assert after["zones"]["parts"] == 1
    # Counts and box states only: nothing that names a customer.
    [customer] = await server.rows("SELECT id FROM customers")
    assert customer["id"] not in json.dumps(after)
    assert set(after) == {"zones", "boxes"}

    staff = await session(server, STAFF)
    for path in ("/manager/floor", "/manager/floor/live", "/manager/calibration"):
        resp = await server.client.get(path, headers=staff, allow_redirects=False)
        assert resp.status == 403, path
    resp = await server.client.get("/manager/floor/live", allow_redirects=False)
    assert resp.status == 303  # to the sign-in page
