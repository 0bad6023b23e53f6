"""Outbox: bounds, drop-oldest, restart survival, batch id reuse, ack-only deletes."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from scanner.aggregate import WindowAggregate
from scanner.outbox import Outbox, OutboxError, OutboxWorker

T0 = 1_763_800_000.0


def win(i: int) -> WindowAggregate:
    return WindowAggregate(
        id_type="eid",
        id=f"{i:016x}",
        start=T0 + i,
        end=T0 + i + 1,
        count=1,
        rssi_max=-60,
        rssi_median=-60,
        tx_power=-20,
    )


def open_box(path: Path, **over: float) -> Outbox:
    bounds = {"max_rows": 1000, "max_bytes": 10_000_000, "max_age_s": 3600.0} | over
    return Outbox(
        path,
        max_rows=int(bounds["max_rows"]),
        max_bytes=int(bounds["max_bytes"]),
        max_age_s=float(bounds["max_age_s"]),
    )


def ids(box: Outbox, now: float) -> list[str]:
    batch = box.next_batch(10_000, now)
    return [] if batch is None else [w["id"] for w in batch.windows]


def test_row_bound_drops_oldest_and_counts(tmp_path: Path) -> None:
    box = open_box(tmp_path / "o.sqlite", max_rows=10)
    box.put([win(i) for i in range(25)], T0)
    assert box.depth() == 10
    assert box.dropped == 15
    assert ids(box, T0) == [f"{i:016x}" for i in range(15, 25)]


def test_byte_bound_drops_oldest(tmp_path: Path) -> None:
    box = open_box(tmp_path / "o.sqlite")
    box.put([win(0)], T0)
    one = box.size_bytes()
    box.close()
    box = open_box(tmp_path / "o.sqlite", max_bytes=one * 3 + 1)
    box.put([win(i) for i in range(1, 8)], T0)
    assert box.depth() == 3
    assert box.size_bytes() <= one * 3 + 1
    assert ids(box, T0) == [f"{i:016x}" for i in range(5, 8)]
    assert box.dropped == 5


def test_age_bound(tmp_path: Path) -> None:
    box = open_box(tmp_path / "o.sqlite", max_age_s=100.0)
    box.put([win(1)], T0)
    box.put([win(2)], T0 + 50)
    assert box.next_batch(10, T0 + 120) is not None
    assert box.depth() == 1
    assert box.dropped == 1


def test_batch_id_reused_until_ack_and_survives_restart(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite"
    box = open_box(path, max_rows=5)
    box.put([win(i) for i in range(4)], T0)
    first = box.next_batch(3, T0)
    assert first is not None
    assert len(first.windows) == 3
    again = box.next_batch(3, T0)
    assert again is not None
    assert again.batch_id == first.batch_id
    box.put([win(9)], T0)
    box.close()

    box = open_box(path, max_rows=5)
    after_restart = box.next_batch(3, T0)
    assert after_restart is not None
    assert after_restart.batch_id == first.batch_id
    assert after_restart.windows == first.windows
    assert box.ack(first.batch_id) == 3
    assert box.depth() == 2
    nxt = box.next_batch(3, T0)
    assert nxt is not None
    assert nxt.batch_id != first.batch_id
    assert [w["id"] for w in nxt.windows] == [f"{3:016x}", f"{9:016x}"]


def test_only_ack_deletes(tmp_path: Path) -> None:
    box = open_box(tmp_path / "o.sqlite")
    box.put([win(i) for i in range(3)], T0)
    for _ in range(5):
        assert box.next_batch(10, T0) is not None
    assert box.depth() == 3
    assert box.ack("not-a-batch") == 0
    assert box.depth() == 3


def test_dropped_counter_persists(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite"
    box = open_box(path, max_rows=2)
    box.put([win(i) for i in range(5)], T0)
    box.close()
    box = open_box(path, max_rows=2)
    assert box.dropped == 3
    box.put([win(7)], T0)
    assert box.dropped == 4


def test_empty_outbox_has_no_batch(tmp_path: Path) -> None:
    box = open_box(tmp_path / "o.sqlite")
    assert box.next_batch(10, T0) is None
    assert box.depth() == 0


def test_discard_deletes_a_refused_batch_and_counts_it(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite"
    box = open_box(path)
    box.put([win(i) for i in range(5)], T0)
    batch = box.next_batch(3, T0)
    assert batch is not None
    assert box.discard(batch.batch_id) == 3
    assert box.stats() == (2, 3)
    assert box.discard(batch.batch_id) == 0
    box.close()
    box = open_box(path)
    assert box.stats() == (2, 3)
    box.close()


async def test_worker_owns_the_connection_off_the_loop_thread(tmp_path: Path) -> None:
    worker = OutboxWorker(tmp_path / "o.sqlite", max_rows=1000, max_bytes=10**7, max_age_s=3600)
    try:
        owner = worker.run_sync(lambda box: threading.current_thread())
        assert owner is not threading.current_thread()
        await worker.put([win(i) for i in range(4)], T0)
        batch = await worker.next_batch(3, T0)
        assert batch is not None
        assert [w["id"] for w in batch.windows] == [f"{i:016x}" for i in range(3)]
        assert await worker.ack(batch.batch_id) == 3
        assert await worker.stats() == (1, 0)
    finally:
        await worker.aclose()
    with pytest.raises(OutboxError):
        await worker.stats()


async def test_worker_completes_a_write_whose_caller_was_cancelled(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite"
    worker = OutboxWorker(path, max_rows=1000, max_bytes=10**7, max_age_s=3600)
    put = asyncio.create_task(worker.put([win(i) for i in range(50)], T0))
    await asyncio.sleep(0)  # the write is submitted to the worker thread
    put.cancel()
    await worker.aclose()  # runs after the submitted write
    box = open_box(path)
    assert box.depth() == 50
    box.close()


def test_worker_reports_an_unusable_path(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OutboxError, match="cannot open outbox"):
        OutboxWorker(blocker / "o.sqlite", max_rows=10, max_bytes=10**6, max_age_s=60)


def test_rows_dropped_while_their_batch_was_in_flight_are_not_counted_dropped(
    tmp_path: Path,
) -> None:
    """At the row bound, a put during an upload drops the oldest rows: the in-flight batch's.

    The server acknowledges the batch with them, so they were delivered, not dropped.
    """
    path = tmp_path / "o.sqlite"
    box = open_box(path, max_rows=10)
    box.put([win(i) for i in range(10)], T0)
    batch = box.next_batch(4, T0)
    assert batch is not None
    assert len(batch.windows) == 4
    box.put([win(i) for i in range(10, 13)], T0 + 1)  # in flight: drops rows 0-2, the batch's
    assert box.dropped == 3
    assert box.ack(batch.batch_id, sent=len(batch.windows)) == 1
    assert box.dropped == 0
    assert box.depth() == 9
    box.close()
    box = open_box(path, max_rows=10)
    assert box.dropped == 0  # persisted
    box.put([win(13)], T0 + 2)
    assert box.dropped == 0
    box.put([win(14)], T0 + 2)  # the bound again, nothing in flight: counted
    assert box.dropped == 1
    # Without the sent count (or with nothing dropped in flight) the counter is left alone.
    other = box.next_batch(2, T0 + 2)
    assert other is not None
    assert box.ack(other.batch_id) == 2
    assert box.dropped == 1
