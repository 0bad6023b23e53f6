"""The server's start-up load of consenting customers' identities, on a real SQLite file.

Both read paths (one scan of the identities table for many customers, look-ups by id for a
few) give a resolver that recognises every consenting customer's current EID; a tampered or
corrupt row is left out and logged once; a wrong master key is a clear configuration error.
Also: a consent withdrawn while a batch's id is being committed leaves no engine state.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from pathlib import Path
from typing import Any

import pytest

from store_server.app import load_consent_texts
from store_server.config import ServerConfig
from store_server.eid import IdentityRecord, clock_offset, eid_at
from store_server.errors import ConfigError
from store_server.keywrap import parse_master_key
from store_server.services import coordinator
from store_server.storage import consents as consent_store
from store_server.storage.database import Target
from store_server.storage.pg import PgTarget
from tests.server.test_consent_lifecycle import T0, Clock, Customer, Store
from tests.support import wait_until

pytestmark = pytest.mark.asyncio


async def _store_with(
    tmp_path: Path, consenting: int, others: int, target: Target | None = None
) -> tuple[Store, list[Customer]]:
    store = Store(tmp_path, Clock(T0), target)
    await store.setup()
    customers = [await store.enroll(f"c{i}") for i in range(consenting + others)]
    for customer in customers[:consenting]:
        await store.grant(customer, "greeting")
    return store, customers


def _recognised(store: Store, customers: list[Customer]) -> list[bool]:
    now = store.clock()
    return [
        store.service.coordinator.resolver.resolve(eid_at(c.record, now), now) == c.customer_id
        for c in customers
    ]


@pytest.mark.parametrize("chunk", [3, 1000], ids=["table-scan", "look-ups"])
async def test_restart_recognises_exactly_the_consenting(
    tmp_path: Path, db_target: Target, monkeypatch: pytest.MonkeyPatch, chunk: int
) -> None:
    monkeypatch.setattr(coordinator, "IDENTITY_CHUNK", chunk)
    store, customers = await _store_with(tmp_path, consenting=7, others=3, target=db_target)
    try:
        await store.restart()
        assert _recognised(store, customers) == [True] * 7 + [False] * 3
        assert len(store.service.coordinator.resolver) == 7
    finally:
        await store.close()


def _tamper(victim: str) -> Any:
    def change(db: Any) -> None:
        blob = db.execute(
            "SELECT key_wrapped FROM identities WHERE customer_id = ?", [victim]
        ).fetchone()[0]
        db.execute(
            "UPDATE identities SET key_wrapped = ? WHERE customer_id = ?",
            [blob[:-1] + bytes([blob[-1] ^ 1]), victim],
        )

    return change


@pytest.mark.parametrize("chunk", [3, 1000], ids=["table-scan", "look-ups"])
async def test_a_tampered_identity_is_left_out_logged_once_and_back_after_re_enrollment(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    chunk: int,
) -> None:
    monkeypatch.setattr(coordinator, "IDENTITY_CHUNK", chunk)
    store, customers = await _store_with(tmp_path, consenting=5, others=0)
    victim = customers[2].customer_id
    try:
        await store.service.db.run(_tamper(victim))
        with caplog.at_level(logging.ERROR, logger="store_server.services.coordinator"):
            await store.restart()
            assert _recognised(store, customers) == [True, True, False, True, True]
            # Later consent refreshes neither fail nor read (and log) the bad row again.
            for _ in range(3):  # full re-reads (the safety net), not only minute checks
                store.clock.t += coordinator.CONSENT_FULL_REFRESH_S + 1
                await store.service.tick(store.clock())
            assert _recognised(store, customers) == [True, True, False, True, True]
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(errors) == 1
        assert "1 stored identities could not be loaded" in errors[0].getMessage()
        assert victim not in caplog.text  # no customer identifier in the logs
        # Re-enrollment writes a new wrapped key: recognised again at once.
        answer = await store.service.customers.rotate_identity(victim, None)
        fresh = IdentityRecord(
            victim,
            bytes.fromhex(answer["identity_key"]),
            answer["rotation_exponent"],
            clock_offset(answer["beacon_time"], store.clock()),
        )
        now = store.clock()
        assert store.service.coordinator.resolver.resolve(eid_at(fresh, now), now) == victim
    finally:
        await store.close()


async def test_an_impossible_exponent_or_offset_leaves_only_that_row_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(coordinator, "IDENTITY_CHUNK", 3)
    store, customers = await _store_with(tmp_path, consenting=5, others=0)

    def corrupt(db: Any) -> None:
        db.execute("UPDATE identities SET k = 16 WHERE customer_id = ?", [customers[1].customer_id])
        db.execute(
            "UPDATE identities SET clock_offset_s = 1e12 WHERE customer_id = ?",
            [customers[3].customer_id],
        )

    try:
        await store.service.db.run(corrupt)
        await store.restart()
        assert _recognised(store, customers) == [True, False, True, False, True]
    finally:
        await store.close()


async def test_a_wrong_master_key_is_a_configuration_error(tmp_path: Path) -> None:
    store, _ = await _store_with(tmp_path, consenting=3, others=0)
    await store.service.stop()
    store.service.db.close()
    store.master_key = secrets.token_hex(32)
    store.config = ServerConfig(
        db_path=str(store.db_path),
        store_file=store.config.store_file,
        master_key=store.master_key,
        cookie_secure=False,
    )
    store.service = store._new_service()
    assert store.service.coordinator.master_key == parse_master_key(store.master_key)
    try:
        with pytest.raises(ConfigError, match="none of the 3 stored identities") as raised:
            await store.service.prepare()
        assert raised.value.key == "master_key"
    finally:
        await store.service.stop()
        store.service.db.close()


async def test_a_withdrawal_during_the_batch_commit_leaves_no_engine_state(
    tmp_path: Path, db_target: Target
) -> None:
    """Subjects are resolved before the batch id's commit and observed after it: a consent
    withdrawn in between must not bring the customer back into the presence engine."""
    store, customers = await _store_with(tmp_path, consenting=1, others=0, target=db_target)
    customer = customers[0]
    log = store.service.scanners._batches
    original = log.record
    entered = asyncio.Event()
    release = asyncio.Event()

    async def held_record(*args: Any, **kwargs: Any) -> Any:
        entered.set()
        await release.wait()
        return await original(*args, **kwargs)

    log.record = held_record  # type: ignore[method-assign]
    try:
        sighting = asyncio.create_task(store.sighting(customer))
        await asyncio.wait_for(entered.wait(), timeout=5)
        await store.service.customers.withdraw(customer.customer_id, ["greeting"], "app", "1.0")
        assert customer.customer_id not in store.service.coordinator.resolver
        release.set()
        await asyncio.wait_for(sighting, timeout=5)
        assert customer.customer_id not in store.service.coordinator.engine._subjects
        cards = await store.rows("SELECT * FROM cards")
        assert cards == []
    finally:
        release.set()
        await store.close()


async def test_minute_checks_read_consents_only_after_another_connection_wrote(
    tmp_path: Path, db_target: Target, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, customers = await _store_with(tmp_path, consenting=1, others=1, target=db_target)
    reads = {"n": 0}
    real = consent_store.consenting_customer_ids

    def counted(*args: Any, **kwargs: Any) -> Any:
        reads["n"] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(consent_store, "consenting_customer_ids", counted)
    other = store._new_service()  # a second connection to the same database file
    try:
        if isinstance(db_target, PgTarget):
            # PostgreSQL's change counter (the consent log's length) counts this server's own
            # grants above too: one re-read takes them in.
            store.clock.t += coordinator.CONSENT_REFRESH_S + 1
            await store.service.tick(store.clock())
            reads["n"] = 0
        for _ in range(3):  # nobody else wrote: the minute checks do not re-read
            store.clock.t += coordinator.CONSENT_REFRESH_S + 1
            await store.service.tick(store.clock())
        assert reads["n"] == 0
        # Another process grants a consent: picked up at the next minute check.
        text = next(t for t in load_consent_texts() if t.purpose == "greeting")
        await other.customers.grant(
            customers[1].customer_id, "greeting", text.hash, "store", "app", "1.0"
        )
        store.clock.t += coordinator.CONSENT_REFRESH_S + 1
        await store.service.tick(store.clock())
        assert reads["n"] == 1
        assert _recognised(store, customers) == [True, True]
        # And the quarter-hour safety net re-reads even when nothing changed.
        store.clock.t += coordinator.CONSENT_FULL_REFRESH_S + 1
        await store.service.tick(store.clock())
        assert reads["n"] == 2
    finally:
        other.db.close()
        await store.close()


@pytest.mark.parametrize("processes_from", [5, 1000], ids=["worker-processes", "reader-thread"])
async def test_a_large_start_up_serves_at_once_and_builds_eids_in_the_background(
    tmp_path: Path,
    db_target: Target,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    processes_from: int,
) -> None:
    monkeypatch.setattr(coordinator, "BUILD_IN_WORKERS_MIN", 5)
    monkeypatch.setattr(coordinator, "BUILD_PROCESSES_MIN", processes_from)
    store, customers = await _store_with(tmp_path, consenting=7, others=2, target=db_target)
    victim = customers[5].customer_id
    try:
        await store.service.db.run(_tamper(victim))
        with caplog.at_level(logging.ERROR, logger="store_server.services.coordinator"):
            await store.restart()
            # Ready: every consenting customer counts as such before any EID is built.
            resolver = store.service.coordinator.resolver
            assert [c.customer_id in resolver for c in customers] == [True] * 7 + [False] * 2
            answer = await store.service.customers.check_in(customers[0].customer_id, None)
            assert answer == {"checked_in": True}

            async def built() -> bool:
                return not store.service.coordinator.building

            await wait_until(built, 60, "the background build")
        assert resolver.expected == 0
        assert _recognised(store, customers) == [True] * 5 + [False] + [True] + [False] * 2
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert ["1 stored identities could not be loaded" in r.getMessage() for r in errors] == [
            True
        ]
        assert victim not in caplog.text
    finally:
        await store.close()


@pytest.mark.parametrize("processes_from", [2, 1000], ids=["worker-processes", "reader-thread"])
async def test_stopping_during_a_background_build_ends_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, processes_from: int
) -> None:
    monkeypatch.setattr(coordinator, "BUILD_IN_WORKERS_MIN", 2)
    monkeypatch.setattr(coordinator, "BUILD_PROCESSES_MIN", processes_from)
    store, _ = await _store_with(tmp_path, consenting=3, others=0)
    try:
        await store.restart()
        build = store.service.coordinator._build
        assert build is not None
    finally:
        await store.close()
    assert build._pool is None  # terminated and joined by stop()
    assert not store.service.coordinator.building
