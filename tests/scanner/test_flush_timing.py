"""The flush loop wakes at the window grid: a finished window is queued and sent at once."""

from __future__ import annotations

import asyncio
import math
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scanner.config import ScannerConfig
from scanner.daemon import FLUSH_GRACE_S, Daemon, next_flush_delay
from scanner.frames import EDDYSTONE_SERVICE_UUID
from scanner.records import AdvertRecord, record_to_json

from .conftest import SCANNER_ID, SECRET, STORE_ID, Api, wait_until

EID = bytes.fromhex("0123456789abcdef")
# A window as long as production's, so a flush on a free-running 1 s timer started half-way
# through a window would lag by half a window.
WINDOW_S = 1.0
# "At once" is checked on conditions, not on a wall-clock lag (a loaded machine may wake the
# loop late): the flush loop asks to wake exactly at the window's end plus the grace, and the
# window arrives long before the upload interval, so the flush's kick sent it.
UPLOAD_INTERVAL_S = 30.0


@given(
    now=st.floats(min_value=0.0, max_value=4e9, allow_nan=False),
    window_s=st.sampled_from([0.2, 0.5, 1.0, 2.0]),
)
def test_next_flush_delay_lands_just_after_a_boundary(now: float, window_s: float) -> None:
    delay = next_flush_delay(now, window_s)
    assert 0.0 < delay <= window_s + FLUSH_GRACE_S
    wake = now + delay - FLUSH_GRACE_S
    # The wake-up is a boundary plus the grace (to float precision at epoch magnitudes).
    assert abs(wake - round(wake / window_s) * window_s) < 1e-6 * max(1.0, now)
    # ...and the first one not passed yet: no boundary's flush is skipped.
    assert wake - window_s < now - FLUSH_GRACE_S + 1e-6 * max(1.0, now)


def test_next_flush_delay_examples() -> None:
    assert math.isclose(next_flush_delay(100.5, 1.0), 0.5 + FLUSH_GRACE_S)
    assert math.isclose(next_flush_delay(101.0, 1.0), FLUSH_GRACE_S)
    # Inside the grace of the boundary just passed: that flush is still due.
    assert math.isclose(next_flush_delay(101.005, 1.0), FLUSH_GRACE_S - 0.005)
    assert math.isclose(next_flush_delay(101.0 + FLUSH_GRACE_S, 1.0), 1.0)


async def test_window_is_sent_right_after_it_ends(
    api: Api, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    api.state.allowlist_entries = [
        {"id_type": "eid", "id": EID.hex(), "not_after": time.time() + 3600}
    ]
    api.state.allowlist_version = 1
    # The daemon's clock is half a window out of phase with its start, the worst case for a
    # timer that sleeps window_s from the start.
    offset = 0.5 * WINDOW_S - (time.time() % WINDOW_S)

    def clock() -> float:
        return time.time() + offset

    config = ScannerConfig(
        scanner_id=SCANNER_ID,
        store_id=STORE_ID,
        server_url=api.url,
        secret=SECRET,
        backend="simulated",
        window_s=WINDOW_S,
        upload_interval_s=UPLOAD_INTERVAL_S,  # only the flush's kick can send it sooner
        heartbeat_interval_s=30.0,
        allowlist_wait_s=2.0,
        outbox_path=str(tmp_path / "outbox.sqlite"),
    )
    wakes: list[float] = []

    def recorded_delay(now: float, window_s: float) -> float:
        delay = next_flush_delay(now, window_s)
        wakes.append(now + delay)
        return delay

    monkeypatch.setattr("scanner.daemon.next_flush_delay", recorded_delay)
    stream = asyncio.StreamReader()
    daemon = Daemon(config, SECRET, stdin=stream, clock=clock)
    stop = asyncio.Event()
    task = asyncio.create_task(daemon.run(stop))
    try:
        await wait_until(lambda: len(daemon.allowlist) == 1)
        record = AdvertRecord(
            t=None,
            address="C0:FF:EE:00:00:01",
            rssi=-60,
            service_data={EDDYSTONE_SERVICE_UUID: bytes([0x30, 0xEC]) + EID},
        )
        stream.feed_data((record_to_json(record) + "\n").encode())
        await wait_until(lambda: len(api.state.windows()) == 1, limit_s=UPLOAD_INTERVAL_S / 3)
        window = api.state.windows()[0]
        # The flush loop scheduled a wake-up exactly at the window's end plus the grace.
        due = float(window["end"]) + FLUSH_GRACE_S
        assert any(math.isclose(wake, due, abs_tol=1e-6) for wake in wakes), (due, wakes)
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=10)
