"""The daemon end to end on the simulated backend against a verifying test server."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from scanner.aggregate import WindowAggregate
from scanner.allowlist import AllowlistUpdate
from scanner.config import ScannerConfig
from scanner.daemon import ALLOWLIST_LONG_POLL_S, Daemon
from scanner.frames import EDDYSTONE_SERVICE_UUID
from scanner.health import HealthCounters, heartbeat_body, should_restart, snapshot
from scanner.outbox import PendingBatch
from scanner.records import AdvertRecord, record_to_json
from scanner.uploader import ServerRejectedError, Uploader

from .conftest import SCANNER_ID, SECRET, STORE_ID, Api, wait_until

ALLOWED_EIDS = [bytes.fromhex("0123456789abcdef"), bytes.fromhex("00112233445566aa")]
# A byte string that only foreign advertisements carry.
CANARY = bytes.fromhex("c4a1a2f00dfeed42")


def eid_record(eid: bytes, rssi: int = -60, address: str = "C0:FF:EE:00:00:01") -> AdvertRecord:
    return AdvertRecord(
        t=None,
        address=address,
        rssi=rssi,
        service_data={EDDYSTONE_SERVICE_UUID: bytes([0x30, 0xEC]) + eid},
    )


def foreign_record(i: int) -> AdvertRecord:
    if i % 2:
        return eid_record(
            CANARY, rssi=-70, address=f"DE:AD:{i >> 8 & 0xFF:02X}:{i & 0xFF:02X}:00:01"
        )
    return AdvertRecord(
        t=None,
        address=f"DE:AD:BE:EF:{i >> 8 & 0xFF:02X}:{i & 0xFF:02X}",
        rssi=-80,
        manufacturer_data={0x004C: bytes.fromhex("0215") + CANARY * 2 + bytes(5)},
    )


def outbox_files_with_canary(db: Path) -> list[str]:
    """Names of the outbox database, -wal and -shm files that contain the canary."""
    needles = [CANARY, CANARY.hex().encode(), CANARY.hex().upper().encode()]
    found = []
    for suffix in ("", "-wal", "-shm"):
        f = Path(str(db) + suffix)
        if f.exists() and any(n in f.read_bytes() for n in needles):
            found.append(f.name)
    return found


def config(tmp_path: Path, api_url: str, **over: object) -> ScannerConfig:
    base: dict[str, object] = {
        "scanner_id": SCANNER_ID,
        "store_id": STORE_ID,
        "server_url": api_url,
        "secret": SECRET,
        "backend": "simulated",
        "window_s": 0.2,
        "upload_interval_s": 0.1,
        "heartbeat_interval_s": 0.2,
        "allowlist_wait_s": 0.2,
        "outbox_path": str(tmp_path / "outbox.sqlite"),
    }
    base.update(over)
    return ScannerConfig(**base)  # type: ignore[arg-type]


def allow(api: Api, eids: list[bytes], version: int) -> None:
    api.state.allowlist_entries = [
        {"id_type": "eid", "id": e.hex(), "not_after": time.time() + 3600} for e in eids
    ]
    api.state.allowlist_version = version


async def test_canary_foreign_adverts_leave_no_trace(
    api: Api, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    allow(api, ALLOWED_EIDS[:1], 5)
    stream = asyncio.StreamReader()
    daemon = Daemon(config(tmp_path, api.url), SECRET, stdin=stream)
    stop = asyncio.Event()
    task = asyncio.create_task(daemon.run(stop))
    await wait_until(lambda: len(daemon.allowlist) == 1)

    lines = []
    for i in range(10_000):
        lines.append(record_to_json(foreign_record(i)))
        if i % 100 == 0:
            lines.append(record_to_json(eid_record(ALLOWED_EIDS[0], rssi=-50 - i % 7)))
    assert len(lines) == 10_100
    stream.feed_data(("\n".join(lines) + "\n").encode())
    stream.feed_eof()  # end of input stops the daemon: flush, final upload, close
    await asyncio.wait_for(task, timeout=20)

    windows = api.state.windows()
    assert {w["id"] for w in windows} == {ALLOWED_EIDS[0].hex()}
    assert sum(w["count"] for w in windows) == 100
    assert daemon.counters.frames_seen == 10_100
    assert daemon.counters.frames_passed == 100

    assert outbox_files_with_canary(tmp_path / "outbox.sqlite") == []
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert CANARY.hex() not in text.lower()
    assert "DE:AD" not in text
    received = json.dumps(api.state.batches)
    assert CANARY.hex() not in received


async def test_allowlist_change_applied_quickly_and_heartbeat(api: Api, tmp_path: Path) -> None:
    allow(api, ALLOWED_EIDS[:1], 1)
    stream = asyncio.StreamReader()
    daemon = Daemon(config(tmp_path, api.url), SECRET, stdin=stream)
    stop = asyncio.Event()
    task = asyncio.create_task(daemon.run(stop))
    try:
        await wait_until(lambda: len(daemon.allowlist) == 1)
        allow(api, ALLOWED_EIDS, 2)
        # Applied from the parked long poll: well before that poll's own end would re-fetch it.
        await wait_until(lambda: len(daemon.allowlist) == 2, limit_s=ALLOWLIST_LONG_POLL_S / 2)
        # HCI's 127, "RSSI not available" (the replay input refuses it; a radio may send it):
        # left out of the windows and counted.
        daemon.on_advert(eid_record(ALLOWED_EIDS[0], rssi=127))
        stream.feed_data((record_to_json(eid_record(ALLOWED_EIDS[1])) + "\n").encode())
        await wait_until(lambda: len(api.state.windows()) == 1)
        await wait_until(lambda: any(b["readings_unusable"] == 1 for b in api.state.heartbeats))
        beat = api.state.heartbeats[-1]
        assert beat["adapter"] == "simulated"
        assert beat["scanner_id"] == SCANNER_ID
        assert beat["allowlist_version"] in (1, 2)
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=10)
    assert api.state.rejected == []


async def test_graceful_stop_flushes_open_windows(api: Api, tmp_path: Path) -> None:
    allow(api, ALLOWED_EIDS[:1], 1)
    stream = asyncio.StreamReader()
    # The daemon's clock held in the middle of a 30 s window (windows are aligned to the clock):
    # the window closes only when the daemon stops. On the wall clock it closed on its own when
    # the adverts came in its last moments.
    now = math.floor(time.time() / 30.0) * 30.0 + 15.0
    daemon = Daemon(
        config(tmp_path, api.url, window_s=30.0), SECRET, stdin=stream, clock=lambda: now
    )
    stop = asyncio.Event()
    task = asyncio.create_task(daemon.run(stop))
    await wait_until(lambda: len(daemon.allowlist) == 1)
    stream.feed_data((record_to_json(eid_record(ALLOWED_EIDS[0])) + "\n").encode() * 3)
    await wait_until(lambda: daemon.counters.frames_passed == 3)
    assert api.state.windows() == []  # the 30 s window is still open
    stop.set()
    await asyncio.wait_for(task, timeout=5)
    assert sum(w["count"] for w in api.state.windows()) == 3


async def test_server_down_for_an_hour(api: Api, tmp_path: Path) -> None:
    """An hour of 1 s windows for two customers with the server down, time driven explicitly."""
    now = [time.time()]
    cfg = config(tmp_path, api.url, window_s=1.0, outbox_max_rows=5000, batch_max_windows=500)
    daemon = Daemon(cfg, SECRET, stdin=asyncio.StreamReader(), clock=lambda: now[0])
    allow(api, ALLOWED_EIDS, 1)
    async with aiohttp.ClientSession() as session:
        up = Uploader(
            session, server_url=api.url, store_id=STORE_ID, scanner_id=SCANNER_ID, secret=SECRET
        )
        daemon.allowlist.apply(
            AllowlistUpdate.from_wire(
                {
                    "version": 1,
                    "full": True,
                    "entries": [
                        {"id_type": "eid", "id": e.hex(), "not_after": now[0] + 7200}
                        for e in ALLOWED_EIDS
                    ],
                    "removed": [],
                }
            ),
            now[0],
        )
        produced = 0
        failures = 0
        api.state.down = True
        for second in range(3600):
            for eid in ALLOWED_EIDS:
                daemon.on_advert(eid_record(eid, rssi=-55 - second % 9))
            now[0] += 1.0
            windows = daemon.aggregator.flush(now[0])
            produced += len(windows)
            await daemon.outbox.put(windows, now[0])
            depth, _ = await daemon.outbox.stats()
            assert depth <= 5000
            if second % 60 == 0:
                with pytest.raises(ServerRejectedError):
                    await daemon.upload_once(up)
                failures += 1
        assert produced == 7200
        assert failures == 60
        queued, dropped = await daemon.outbox.stats()
        assert queued == 5000
        assert dropped == produced - 5000

        api.state.down = False
        api.state.fail_next = 1  # the first retry after the outage fails once more
        with pytest.raises(ServerRejectedError):
            await daemon.upload_once(up)
        while await daemon.upload_once(up):
            pass
    windows = api.state.windows()
    assert len(windows) == queued
    keys = [(w["id"], w["start"]) for w in windows]
    assert len(set(keys)) == len(keys)  # exactly once
    assert await daemon.outbox.stats() == (0, produced - 5000)
    assert daemon.counters.last_upload_at == now[0]
    await daemon.outbox.aclose()


def test_heartbeat_rates_over_last_interval() -> None:
    counters = HealthCounters(frames_seen=100, frames_passed=4)
    before = snapshot(counters, 1000.0)
    counters.frames_seen += 150
    counters.frames_passed += 6
    counters.watchdog_restarts = 2
    body = heartbeat_body(
        store_id=STORE_ID,
        scanner_id=SCANNER_ID,
        counters=counters,
        previous=before,
        now=1010.0,
        outbox_depth=7,
        outbox_dropped=1,
        allowlist_version=42,
        adapter="powered",
        version="0.1.0",
    )
    assert body["frames_seen_per_s"] == 15.0
    assert body["frames_passed_per_s"] == 0.6
    assert (body["outbox_depth"], body["outbox_dropped"], body["watchdog_restarts"]) == (7, 1, 2)
    assert body["allowlist_version"] == 42
    assert body["sent_at"] == 1010.0


def test_watchdog_decision() -> None:
    assert not should_restart(None, 1000.0, 60.0)
    assert not should_restart(950.0, 1000.0, 60.0)
    assert not should_restart(940.0, 1000.0, 60.0)
    assert should_restart(939.0, 1000.0, 60.0)


@pytest.mark.parametrize(("status", "discarded"), [(400, True), (429, False), (503, False)])
async def test_refused_batch_is_dropped_and_counted_only_for_final_4xx(
    api: Api, tmp_path: Path, status: int, discarded: bool
) -> None:
    allow(api, ALLOWED_EIDS[:1], 1)
    api.state.refuse_status = status
    stream = asyncio.StreamReader()
    daemon = Daemon(config(tmp_path, api.url), SECRET, stdin=stream)
    stop = asyncio.Event()
    task = asyncio.create_task(daemon.run(stop))
    try:
        await wait_until(lambda: len(daemon.allowlist) == 1)
        stream.feed_data((record_to_json(eid_record(ALLOWED_EIDS[0])) + "\n").encode() * 3)
        if discarded:
            await wait_until(
                lambda: (
                    bool(api.state.heartbeats)
                    and api.state.heartbeats[-1]["outbox_dropped"] >= 1
                    and api.state.heartbeats[-1]["outbox_depth"] == 0
                )
            )
        else:
            # Retried, not discarded: still queued, nothing counted as dropped.
            await wait_until(
                lambda: (
                    api.state.batch_posts >= 2
                    and bool(api.state.heartbeats)
                    and api.state.heartbeats[-1]["outbox_depth"] >= 1
                )
            )
            assert api.state.heartbeats[-1]["outbox_dropped"] == 0
        api.state.refuse_status = None
        stream.feed_data((record_to_json(eid_record(ALLOWED_EIDS[0])) + "\n").encode() * 2)
        await wait_until(lambda: sum(w["count"] for w in api.state.windows()) >= 2)
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=10)
    delivered = sum(w["count"] for w in api.state.windows())
    # Refused for good: the first three sightings are gone (and were counted); otherwise they
    # were kept and delivered once the server accepted batches again.
    assert delivered == (2 if discarded else 5)


async def test_bad_credentials_logged_once_even_with_nothing_to_upload(
    api: Api, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="scanner")
    allow(api, ALLOWED_EIDS[:1], 1)
    api.state.secret = "the-server-knows-another-secret"
    daemon = Daemon(config(tmp_path, api.url), SECRET, stdin=asyncio.StreamReader())
    stop = asyncio.Event()
    task = asyncio.create_task(daemon.run(stop))
    try:
        # Several refused allowlist requests (first try, then backoff retries).
        await wait_until(lambda: api.state.rejected.count("bad_signature") >= 3)
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=10)
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    refused = [m for m in lines if m.startswith("bad credentials")]
    assert len(refused) == 1, lines
    assert "check scanner_id, secret and store_id" in refused[0]
    assert "\n" not in refused[0]


async def test_rows_dropped_by_a_put_during_their_upload_are_not_counted_dropped(
    api: Api, tmp_path: Path
) -> None:
    """A full outbox drains while windows keep coming: a put during an upload drops the
    oldest rows, those of the batch in flight, which the server then acknowledges."""
    now = time.time()
    cfg = config(tmp_path, api.url, window_s=1.0, outbox_max_rows=10, batch_max_windows=4)
    daemon = Daemon(cfg, SECRET, stdin=asyncio.StreamReader())
    first = [eid_window(i, now - 100 + i) for i in range(10)]
    later = [eid_window(i, now - 50 + i) for i in range(3)]
    await daemon.outbox.put(first, now - 90)

    class PutDuringUpload(Uploader):
        async def post_batch(self, batch: PendingBatch) -> dict[str, Any]:
            if later:  # the flush loop, while the first request is out
                await daemon.outbox.put([later.pop() for _ in range(len(later))][::-1], now)
            return await super().post_batch(batch)

    async with aiohttp.ClientSession() as session:
        up = PutDuringUpload(
            session, server_url=api.url, store_id=STORE_ID, scanner_id=SCANNER_ID, secret=SECRET
        )
        assert await daemon.upload_once(up)
        while await daemon.upload_once(up):
            pass
    delivered = api.state.windows()
    assert len(delivered) == 13  # the three rows dropped in flight reached the server
    assert await daemon.outbox.stats() == (0, 0)
    await daemon.outbox.aclose()


def eid_window(i: int, start: float) -> WindowAggregate:
    return WindowAggregate("eid", f"{i:016x}", start, start + 1, 1, -60, -60.0, -20)
