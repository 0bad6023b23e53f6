"""The running scanner daemon against the real store server (both packages, tests only).

Requirement pinned here: an allowlist change on the server reaches the scanner within 1 s
(the daemon long-polls ``GET /api/scanner/v1/allowlist``; a withdrawal bumps the version and
wakes the poll). The bound is a requirement, checked generously, not a benchmark.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from scanner.config import ScannerConfig
from scanner.daemon import ALLOWLIST_LONG_POLL_S, Daemon
from scanner.frames import EDDYSTONE_SERVICE_UUID
from scanner.records import AdvertRecord, record_to_json
from store_server.eid import beacon_time, clock_offset, compute_eid
from tests.server.conftest import STORE_ID, Harness, bearer, engine_server

from .conftest import wait_until

__all__ = ["engine_server"]  # the fixture, imported so that this module can use it

# The PostgreSQL variants run in CI's own step (pytest -m pg_step), outside the default
# run's time budget: neither privacy- nor security-critical (README, Testing).
pytestmark = pytest.mark.own_pg_step

SCANNER_ID = "s-entrance"
# The change must come through the parked long poll (the test waits for it to be parked), so
# well before the poll's own end; the under-1 s target is measured by
# bench/consent/bench_withdrawal.py, not asserted on a shared machine.
PROPAGATION_BOUND_S = ALLOWLIST_LONG_POLL_S / 2


def parked_polls(harness: Harness) -> int:
    """Long polls waiting on the server's allowlist condition (asyncio.Condition waiters)."""
    waiters = harness.service.coordinator.allowlist_changed._waiters
    return len(waiters)


def eid_line(eid: bytes) -> bytes:
    rec = AdvertRecord(
        t=None,
        address="C0:FF:EE:00:00:01",
        rssi=-58,
        service_data={EDDYSTONE_SERVICE_UUID: bytes([0x30, 0xEC]) + eid},
    )
    return (record_to_json(rec) + "\n").encode()


async def test_withdrawal_reaches_running_scanner_within_a_second(
    engine_server: Harness, tmp_path: Path
) -> None:
    """On both engines: the withdrawal is stored, then the allowlist shrinks."""
    server = engine_server
    scanner = await server.add_scanner(SCANNER_ID)
    resp = await server.client.post("/api/v1/enroll", json={"app_counter": 123_456_789})
    enrolled = await resp.json()
    assert (await server.grant(enrolled["token"], "greeting")).status == 201

    now = time.time()
    offset = clock_offset(enrolled["beacon_time"], now)
    key = bytes.fromhex(enrolled["identity_key"])
    eid = compute_eid(key, enrolled["rotation_exponent"], beacon_time(now, offset))

    cfg = ScannerConfig(
        scanner_id=scanner.scanner_id,
        store_id=STORE_ID,
        server_url=str(server.client.make_url("")).rstrip("/"),
        secret=scanner.secret,
        backend="simulated",
        window_s=0.2,
        upload_interval_s=0.1,
        allowlist_wait_s=5.0,
        outbox_path=str(tmp_path / "outbox.sqlite"),
    )
    stream = asyncio.StreamReader()
    daemon = Daemon(cfg, scanner.secret, stdin=stream)
    stop = asyncio.Event()
    task = asyncio.create_task(daemon.run(stop))
    try:
        await wait_until(lambda: len(daemon.allowlist) == 3)  # current window and neighbours
        version_before = daemon.allowlist.version
        # The pipeline works end to end before the withdrawal: the sighting is resolved.
        stream.feed_data(eid_line(eid))
        await wait_until(lambda: server.service.scanners.frames_resolved >= 1)
        assert daemon.counters.frames_passed == 1
        # The daemon's long poll is parked at the server before the change.
        await wait_until(lambda: parked_polls(server) >= 1)

        resp = await server.client.post(
            "/api/v1/consents/withdraw", headers=bearer(enrolled["token"])
        )
        assert resp.status == 200
        await wait_until(lambda: len(daemon.allowlist) == 0, limit_s=PROPAGATION_BOUND_S)
        assert daemon.allowlist.version > version_before

        # The running scanner now drops the customer's frames in memory.
        stream.feed_data(eid_line(eid) * 5)
        await wait_until(lambda: daemon.counters.frames_seen == 6)
        assert daemon.counters.frames_passed == 1
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=10)
    assert server.service.scanners.frames_resolved == 1
