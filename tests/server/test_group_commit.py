"""Group commit of batch ids (``batch_log.BatchLog`` over ``scanners.record_batches``), on a real
SQLite file and a real PostgreSQL database: duplicates inside one group, a failed transaction
reaching each of its callers, and no answer (nor any engine state) before the batch id is
committed."""

from __future__ import annotations

import asyncio
import secrets
import threading
from pathlib import Path
from typing import Any

import pytest

from store_server.ingest import Batch, Window
from store_server.storage import database
from store_server.storage import scanners as scanner_store
from store_server.storage.database import Handle, Target
from tests.server.test_consent_lifecycle import INTERIOR_SCANNER, STORE_ID, T0, Clock, Store
from tests.support import wait_until

pytestmark = pytest.mark.asyncio


def _batch(batch_id: str, t: float) -> Batch:
    window = Window(
        id_type="eid",
        id="0123456789abcdef",  # resolves to nobody: only the batch bookkeeping is exercised
        start=t - 1,
        end=t,
        count=1,
        rssi_max=-50,
        rssi_median=-50,
    )
    return Batch(batch_id, STORE_ID, INTERIOR_SCANNER, [window])


async def _recorded(store: Store, batch_ids: list[str]) -> set[str]:
    marks = ",".join("?" * len(batch_ids))
    rows = await store.rows(
        f"SELECT batch_id FROM scanner_batches WHERE batch_id IN ({marks})",
        batch_ids,
    )
    return {row["batch_id"] for row in rows}


class HeldCommits:
    """Makes scanner_store.record_batches wait (in the database thread) until released."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        real = scanner_store.record_batches

        def held(db: Any, items: Any) -> Any:  # runs in the database thread
            self.entered.set()
            if not self.release.wait(timeout=10):
                raise RuntimeError("the test never released the commit")
            return real(db, items)

        monkeypatch.setattr(scanner_store, "record_batches", held)

    async def started(self) -> None:
        async def committing() -> bool:
            return self.entered.is_set()

        await wait_until(committing, 5, "a batch commit to start")


async def test_the_same_batch_twice_in_one_group_is_recorded_once(
    tmp_path: Path, db_target: Target
) -> None:
    store = Store(tmp_path, Clock(T0), db_target)
    await store.setup()
    try:
        a, b, c = (secrets.token_hex(8) for _ in range(3))
        answers = await asyncio.gather(
            *(
                store.service.scanners.ingest(INTERIOR_SCANNER, STORE_ID, _batch(batch_id, T0))
                for batch_id in (a, a, b, c, b)
            )
        )
        assert [answer["duplicate"] for answer in answers] == [False, True, False, False, True]
        assert await _recorded(store, [a, b, c]) == {a, b, c}
    finally:
        await store.close()


async def test_a_failed_commit_fails_its_callers_and_acknowledges_nothing_it_lost(
    tmp_path: Path, db_target: Target, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = Store(tmp_path, Clock(T0), db_target)
    await store.setup()
    real = scanner_store.record_batches
    calls = {"n": 0}

    def failing_once(db: Any, items: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("disk full")
        return real(db, items)

    monkeypatch.setattr(scanner_store, "record_batches", failing_once)
    try:
        ids = [secrets.token_hex(8) for _ in range(4)]
        outcomes = await asyncio.gather(
            *(
                store.service.scanners.ingest(INTERIOR_SCANNER, STORE_ID, _batch(i, T0))
                for i in ids
            ),
            return_exceptions=True,
        )
        failed = [i for i, o in zip(ids, outcomes, strict=True) if isinstance(o, BaseException)]
        acknowledged = [i for i, o in zip(ids, outcomes, strict=True) if isinstance(o, dict)]
        assert failed  # the first group's transaction failed: its callers got the error
        assert all(isinstance(o, RuntimeError) for o in outcomes if isinstance(o, BaseException))
        # Acknowledged exactly when recorded: nothing answered 200 was lost.
        assert await _recorded(store, ids) == set(acknowledged)
        # The log keeps working; a retry of a failed batch is recorded, not a duplicate.
        retry = await store.service.scanners.ingest(
            INTERIOR_SCANNER, STORE_ID, _batch(failed[0], T0)
        )
        assert retry["duplicate"] is False
        assert failed[0] in await _recorded(store, [failed[0]])
    finally:
        await store.close()


async def test_no_answer_and_no_engine_state_before_the_commit(
    tmp_path: Path, db_target: Target, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = Store(tmp_path, Clock(T0), db_target)
    await store.setup()
    customer = await store.enroll("held")
    await store.grant(customer, "greeting")
    held = HeldCommits(monkeypatch)
    try:
        sighting = asyncio.create_task(store.sighting(customer))
        await held.started()
        await asyncio.sleep(0.05)  # let the event loop run anything that would not wait
        assert not sighting.done()
        assert customer.customer_id not in store.service.coordinator.engine._subjects
        held.release.set()
        await asyncio.wait_for(sighting, timeout=5)
        assert customer.customer_id in store.service.coordinator.engine._subjects
    finally:
        held.release.set()
        await store.close()


async def test_a_cancelled_flush_leaves_no_caller_waiting(
    tmp_path: Path, db_target: Target, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = Store(tmp_path, Clock(T0), db_target)
    await store.setup()
    held = HeldCommits(monkeypatch)
    try:
        first = asyncio.create_task(
            store.service.scanners.ingest(
                INTERIOR_SCANNER, STORE_ID, _batch(secrets.token_hex(8), T0)
            )
        )
        await held.started()
        second = asyncio.create_task(
            store.service.scanners.ingest(
                INTERIOR_SCANNER, STORE_ID, _batch(secrets.token_hex(8), T0)
            )
        )
        await asyncio.sleep(0)  # the second batch is handed over, waiting for the next group
        flushing = store.service.scanners._batches._flushing
        assert flushing is not None
        flushing.cancel()
        for task in (first, second):
            with pytest.raises(asyncio.CancelledError):
                await asyncio.wait_for(task, timeout=5)
    finally:
        held.release.set()
        await store.close()


async def test_record_batches_answers_each_item_of_a_mixed_group(handle: Handle) -> None:
    """New ids in one statement; a retry, a repeat inside the group, a revoked scanner and a
    replaced secret each get their own answer, and nothing of a refused item is kept (on
    each engine)."""
    db = handle
    scanner_store.add_scanner(db, "s-a", STORE_ID, b"secret-a", T0)
    scanner_store.add_scanner(db, "s-b", STORE_ID, b"secret-b", T0)
    scanner_store.add_scanner(db, "s-gone", STORE_ID, b"secret-g", T0)
    scanner_store.revoke_scanner(db, "s-gone", T0)
    # All new: one statement, every item recorded.
    assert scanner_store.record_batches(
        db, [("s-a", "old-1", 7, T0, b"secret-a"), ("s-b", "new-0", 3, T0, None)]
    ) == [(True, 7), (True, 3)]
    items: list[tuple[str, str, int, float, bytes | None]] = [
        ("s-a", "new-1", 5, T0 + 1, b"secret-a"),
        ("s-a", "old-1", 9, T0 + 1, b"secret-a"),  # a retry: the first answer stands
        ("s-b", "new-2", 4, T0 + 2, b"replaced"),  # not the scanner's secret any more
        ("s-gone", "new-3", 2, T0 + 2, b"secret-g"),  # revoked
        ("s-a", "new-1", 5, T0 + 3, b"secret-a"),  # twice in one group
        ("s-b", "new-4", 1, T0 + 4, None),  # no registration to check
    ]
    assert scanner_store.record_batches(db, items) == [
        (True, 5),
        (False, 7),
        (False, -1),
        (False, -1),
        (False, 5),
        (True, 1),
    ]
    kept = {
        (row["scanner_id"], row["batch_id"]): row["accepted"]
        for row in database.rows(db, "SELECT scanner_id, batch_id, accepted FROM scanner_batches")
    }
    assert kept == {
        ("s-a", "old-1"): 7,
        ("s-b", "new-0"): 3,
        ("s-a", "new-1"): 5,
        ("s-b", "new-4"): 1,
    }
    seen = {
        row["id"]: row["last_seen_at"]
        for row in database.rows(db, "SELECT id, last_seen_at FROM scanners")
    }
    assert seen == {"s-a": T0 + 3, "s-b": T0 + 4, "s-gone": None}
