"""The guided calibration walk through the real server: a manager starts it, the calibration
phone joins with the code, the manager taps "I am here" in each zone while the boxes send the
phone's windows (simulated by the lab's `field` channel: unknown offsets and exponents); the
learned values approach the channel's truth, reach the engine, show on the page, survive a
restart of the service, and a reset takes them back."""

from __future__ import annotations

import asyncio
import json
import re
import time
from typing import Any

import numpy as np
import pytest

from lab.channel import TIERS, Channel
from store_server.eid import compute_eid
from store_server.services.store import StoreServices
from tests.server.conftest import Harness, Scanner, batch_body, bearer, wait_until
from tests.server.test_manager import PASSWORD, session
from tests.support import wait_until as wait_for

# The PostgreSQL variants run in CI's own step (pytest -m pg_step), outside the default
# run's time budget: the walk is neither privacy- nor security-critical.
pytestmark = pytest.mark.own_pg_step

BATCHES = "/api/scanner/v1/batches"


@pytest.fixture
def server(engine_server: Harness) -> Harness:
    """The walk on each storage engine (SQLite, and PostgreSQL where it runs)."""
    return engine_server


ADVERTS_PER_WINDOW = 5  # the app advertises fast while calibrating
HAND_M = 1.2
ROUNDS = 17  # one window per box and round: the step is full after 15 (+1 skipped)


def _window(eid: bytes, rssi: float) -> dict[str, Any]:
    now = time.time()
    return {
        "id_type": "eid",
        "id": eid.hex(),
        "start": now - 1.0,
        "end": now,
        "count": ADVERTS_PER_WINDOW,
        "rssi_max": round(rssi) + 2,
        "rssi_median": rssi,
        "tx_power": None,
    }


def _rms_error(
    engine: Any, b: int, inside: Any, reported: Any, offset: float, exponent: float
) -> float:
    """RMS difference (dB) between what the engine's model with (offset, exponent) expects box
    ``b`` to report over the shop's cells and what it really reports on average."""
    grid = engine.grid
    model = (
        engine.settings.reference_rssi_dbm
        - 10.0 * exponent * grid.log_distance[b][inside]
        - grid.attenuation_db[b][inside]
    )
    return float(np.sqrt(np.mean((model - offset - reported) ** 2)))


async def _walk_status(server: Harness, cookie: dict[str, str]) -> dict[str, Any] | None:
    resp = await server.client.get("/manager/calibration/walk", headers=cookie)
    assert resp.status == 200
    body: dict[str, Any] = await resp.json()
    return body["walk"]


async def test_a_guided_walk_learns_the_boxes_and_feeds_the_engine(server: Harness) -> None:
    service = server.service
    floor = service.floor
    engine = service.coordinator.engine
    rng = np.random.default_rng(7)
    channel = Channel(floor, TIERS["field"], rng)
    truth = {
        spec.id: (float(channel.offset_db[b]), float(channel.exponent[b]))
        for b, spec in enumerate(floor.scanners)
    }
    scanners: dict[str, Scanner] = {}
    for spec in floor.scanners:
        scanners[spec.id] = await server.add_scanner(spec.id)
    await server.add_staff("margot", PASSWORD, "manager")
    cookie = await session(server, "margot")

    resp = await server.client.post("/api/v1/enroll", json={"language": "fr"})
    enrolled = await resp.json()
    token = enrolled["token"]
    assert (await server.grant(token, "greeting")).status == 201
    eid = compute_eid(
        bytes.fromhex(enrolled["identity_key"]),
        enrolled["rotation_exponent"],
        enrolled["beacon_time"],
    )

    # The manager starts the walk; the page shows the code; the phone joins with it.
    resp = await server.client.post(
        "/manager/calibration/walk", headers=cookie, allow_redirects=False
    )
    assert resp.status == 303
    page = await (await server.client.get("/manager/calibration", headers=cookie)).text()
    match = re.search(r'id="walk-code"[^>]*>(\d+)<', page)
    assert match is not None
    join = "/api/v1/calibration/join"
    wrong = await server.client.post(join, json={"code": "x"}, headers=bearer(token))
    assert await wrong.json() == {"joined": False}
    resp = await server.client.post(join, json={"code": match.group(1)}, headers=bearer(token))
    assert resp.status == 200
    assert await resp.json() == {"joined": True}
    status = await _walk_status(server, cookie)
    assert status is not None
    assert status["joined"]

    before = {box: (engine.calibration()[box], engine.exponents()[box]) for box in truth}
    for zone in floor.zones:
        resp = await server.client.post(
            "/manager/calibration/walk/here",
            data={"zone": zone.id},
            headers=cookie,
            allow_redirects=False,
        )
        assert resp.status == 303
        cx, cy = zone.centroid()
        means = {
            spec.id: channel.mean_rssi(b, np.array([cx]), np.array([cy]), np.array([HAND_M]))
            for b, spec in enumerate(floor.scanners)
        }
        for _ in range(ROUNDS):
            for b, spec in enumerate(floor.scanners):
                readings = channel.readings(
                    np.repeat(means[spec.id], ADVERTS_PER_WINDOW),
                    np.zeros(ADVERTS_PER_WINDOW),
                    np.zeros(ADVERTS_PER_WINDOW),
                    b,
                    rng,
                )
                readings = readings[~np.isnan(readings)]
                if not readings.size:
                    continue
                body = batch_body(spec.id, windows=[_window(eid, float(np.median(readings)))])
                resp = await server.signed(scanners[spec.id], "POST", BATCHES, body)
                assert resp.status == 200
        status = await _walk_status(server, cookie)
        assert status is not None
        assert zone.id in status["done_zones"], status
        assert status["zone"] is None  # full: the manager may walk on

    def learned() -> bool:
        fits = {b.box_id: b.learned for b in service.calibration.boxes()}
        return all(f is not None and f.usable and f.samples >= 40 for f in fits.values())

    await wait_until(learned)
    resp = await server.client.post(
        "/manager/calibration/walk/end", headers=cookie, allow_redirects=False
    )
    assert resp.status == 303
    assert await _walk_status(server, cookie) is None

    # Offset and exponent trade off against each other over the few distances a walk gives:
    # what must approach the truth is what the engine expects each box to report across the
    # shop's floor (the channel's mean, before noise).
    grid = engine.grid
    xs, ys = grid.x[grid.inside], grid.y[grid.inside]
    for b, (box, (offset, exponent)) in enumerate(truth.items()):
        fit = next(r.learned for r in service.calibration.boxes() if r.box_id == box)
        assert fit is not None
        # The engine uses exactly what was learned.
        assert engine.calibration()[box] == fit.rssi_offset_db
        assert engine.exponents()[box] == fit.path_loss_exponent
        reported = channel.mean_rssi(b, xs, ys, np.full(xs.shape, HAND_M)) - offset
        errors = {
            name: _rms_error(engine, b, grid.inside, reported, o, n)
            for name, (o, n) in {
                "default": before[box],
                "learned": (fit.rssi_offset_db, fit.path_loss_exponent),
            }.items()
        }
        assert errors["learned"] < 2.5, (box, fit, offset, exponent, errors)
        assert errors["learned"] < errors["default"], (box, errors)
        assert abs(fit.path_loss_exponent - exponent) < 0.8, (box, fit, exponent)

    # Stored: the page shows them, and a fresh service reads them back and applies them.
    page = await (await server.client.get("/manager/calibration", headers=cookie)).text()
    for box in truth:
        assert f'data-scanner="{box}"' in page
    rows = await server.rows("SELECT scanner_id, usable FROM calibration_fits ORDER BY 1")
    assert [r["scanner_id"] for r in rows] == sorted(truth)
    assert all(r["usable"] for r in rows)
    assert await server.rows("SELECT * FROM calibration_samples WHERE source != 'walk'") == []
    # The last windows' samples are stored at the next tick: wait for them before reading back.
    learner = service.coordinator.calibration

    async def all_stored() -> bool:
        found = await server.rows("SELECT scanner_id FROM calibration_samples")
        return all(
            sum(r["scanner_id"] == box for r in found) == len(learner.samples(box)) for box in truth
        )

    await wait_for(all_stored, 10.0, "every sample stored")
    stored = json.dumps(await server.rows("SELECT * FROM calibration_samples"))
    assert enrolled["customer_id"] not in stored
    assert eid.hex() not in stored
    fresh = StoreServices(
        config=server.config,
        floor=floor,
        db=service.db,
        master_key=bytes.fromhex(server.master_key),
        consent_texts=[],
    )
    await fresh.calibration.prepare()
    assert fresh.coordinator.engine.exponents() == engine.exponents()
    assert fresh.coordinator.engine.calibration() == engine.calibration()
    assert len(fresh.coordinator.calibration.samples("s-parts")) == len(
        service.coordinator.calibration.samples("s-parts")
    )

    # A reset (confirmed in a form) takes one box back to the store file and the default.
    resp = await server.client.post(
        "/manager/calibration/reset",
        data={"scanner_id": "s-parts"},
        headers=cookie,
        allow_redirects=False,
    )
    assert resp.status == 303
    assert engine.calibration()["s-parts"] == floor.scanner("s-parts").rssi_offset_db
    assert engine.exponents()["s-parts"] == engine.settings.path_loss_exponent
    assert await server.rows("SELECT 1 FROM calibration_samples WHERE scanner_id = 's-parts'") == []
    assert len(await server.rows("SELECT 1 FROM calibration_fits")) == len(truth) - 1
    resp = await server.client.post(
        "/manager/calibration/reset", headers=cookie, allow_redirects=False
    )
    assert resp.status == 303
    assert await server.rows("SELECT 1 FROM calibration_fits") == []
    assert engine.exponents() == dict.fromkeys(truth, engine.settings.path_loss_exponent)


async def test_a_check_in_at_a_zone_gives_a_few_samples(server: Harness) -> None:
    learner = server.service.coordinator.calibration
    # The entrance box hears the parts zone from about 4 m (its own zone is too near it).
    scanner = await server.add_scanner("s-entrance")
    resp = await server.client.post("/api/v1/enroll", json={"language": "fr"})
    enrolled = await resp.json()
    token = enrolled["token"]
    assert (await server.grant(token, "greeting")).status == 201
    eid = compute_eid(
        bytes.fromhex(enrolled["identity_key"]),
        enrolled["rotation_exponent"],
        enrolled["beacon_time"],
    )
    resp = await server.client.post(
        "/api/v1/check-in", json={"zone": "parts"}, headers=bearer(token)
    )
    assert await resp.json() == {"checked_in": True}
    assert learner.listening
    for _ in range(5):
        body = batch_body("s-entrance", windows=[_window(eid, -75.0)])
        assert (await server.signed(scanner, "POST", BATCHES, body)).status == 200
    taken = learner.samples("s-entrance")
    assert len(taken) == 3
    assert {s.source for s in taken} == {"check_in"}

    async def stored() -> list[dict[str, Any]]:
        return await server.rows("SELECT source FROM calibration_samples")

    rows: list[dict[str, Any]] = []
    async with asyncio.timeout(10.0):  # the tick stores them within a second
        while len(rows) < 3:
            rows = await stored()
            await asyncio.sleep(0.05)
    assert rows == [{"source": "check_in"}] * 3
    # A fit from one place is shown, not used: the engine keeps its values.
    fit = learner.fit("s-entrance", time.time())
    assert fit is not None
    assert not fit.usable
    assert server.service.coordinator.engine.exponents()["s-entrance"] == 2.7
