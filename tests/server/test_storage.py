"""The storage adapter on real SQLite files and real PostgreSQL databases: a SQLite database
made by the first release still opens (its rows kept, the later migrations applied), and, on
both engines, reads do not queue behind the writer and see every write that returned."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
import time
from pathlib import Path

import psycopg
import pytest
import sqlite_utils
from psycopg_pool import PoolTimeout

from store_server.consent import ConsentText
from store_server.storage import consents, customers, visits
from store_server.storage.database import (
    Database,
    Handle,
    Target,
    batches,
    connect,
    executemany,
    immediate,
    one,
)
from store_server.storage.migrations import migrations
from store_server.storage.pg import PgTarget
from store_server.storage.pg_cluster import Cluster

# Long enough for a read on a loaded 2-core machine, short enough to fail fast.
WAIT_TIMEOUT_S = 10.0
TEXT = ConsentText("greeting", 1, "Bonjour", "Hello")


def _first_release_database(path: Path) -> None:
    """The schema of the first release (only ``m001_initial``) with a consenting customer."""
    db = sqlite_utils.Database(sqlite3.connect(str(path), isolation_level=None))
    migrations.apply(db, stop_before="m002_consent_store")
    db.execute(
        "INSERT INTO customers (id, token_hash, created_at, pickup_code)"
        " VALUES ('c_old', 'h', 1.0, 'ABC234')"
    )
    db.execute(
        "INSERT INTO consent_texts (hash, purpose, version, text_fr, text_en) VALUES (?,?,?,?,?)",
        [TEXT.hash, TEXT.purpose, TEXT.version, TEXT.text_fr, TEXT.text_en],
    )
    db.execute(
        "INSERT INTO consents (customer_id, purpose, scope, text_hash, granted_at, expires_at)"
        " VALUES ('c_old', 'greeting', 'store', ?, 1.0, 1e12)",
        [TEXT.hash],
    )
    db.conn.close()


def test_a_first_release_database_opens_with_its_rows(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "old.sqlite"
    _first_release_database(path)
    caplog.set_level(logging.INFO, logger="store_server.storage.migrations")
    for opening in range(2):  # opening again applies nothing twice
        caplog.clear()
        db = connect(path)
        said = [r.getMessage() for r in caplog.records]
        if opening == 0:  # the operator sees what delays the first start of an upgrade
            assert said[0].startswith("applying ")
            assert "m009_consent_per_store" in said[0]
            assert "m001_initial" not in said[0]
            assert said[1].startswith("schema migrations applied in ")
        else:
            assert said == []
        try:
            applied = [m.name for m in migrations.applied(db)]
            assert applied == [m.name for m in migrations._migrations]
            row = one(db, "SELECT legacy_ibeacon, ibeacon_id FROM customers WHERE id = 'c_old'")
            assert row == {"legacy_ibeacon": 0, "ibeacon_id": None}
            assert "scanner_calibration" in db.table_names()
            assert "consents_active" in {i.name for i in db.table("consents").indexes}
            # A consent from before store ids were recorded counts nowhere (a chain's server
            # never claims it) until a single shop's server claims it for its store.
            if db.execute("SELECT store_id FROM consents").fetchone()[0] is None:
                assert consents.consenting_customer_ids(db, 2.0, "any-store") == []
                assert visits.claim_unowned(db, "any-store") == 1
            assert consents.consenting_customer_ids(db, 2.0, "any-store") == ["c_old"]
            assert consents.consenting_customer_ids(db, 2.0, "other-store") == []
            assert customers.customer_by_token(db, "no such token") is None
        finally:
            db.conn.close()


async def test_reads_do_not_wait_for_the_writer(db_target: Target) -> None:
    db = Database(db_target)
    held = threading.Event()
    release = threading.Event()

    def slow_write(handle: Handle) -> None:
        held.set()
        release.wait(WAIT_TIMEOUT_S)  # the writer thread is busy until released

    try:
        await db.write(lambda handle: consents.ensure_consent_texts(handle, [TEXT]))
        writing = asyncio.ensure_future(db.write(slow_write))
        assert await asyncio.to_thread(held.wait, WAIT_TIMEOUT_S)
        started = time.monotonic()
        async with asyncio.timeout(WAIT_TIMEOUT_S):
            texts = await db.read(consents.current_consent_texts)
        assert [t["hash"] for t in texts] == [TEXT.hash]
        assert not writing.done()  # answered while the writer was still held
        release.set()
        await writing
        assert time.monotonic() - started < WAIT_TIMEOUT_S
    finally:
        release.set()
        db.close()


async def test_a_read_sees_every_write_that_returned_before_it(db_target: Target) -> None:
    db = Database(db_target)
    try:
        await db.write(lambda handle: consents.ensure_consent_texts(handle, [TEXT]))
        for i in range(20):
            created = await db.write(
                lambda handle, i=i: customers.create_customer(
                    handle,
                    key_wrapped_for=lambda _: b"k" * 40,
                    k=9,
                    clock_offset_s=0.0,
                    language="fr",
                    now=float(i),
                )
            )
            found = await db.read(
                lambda handle, c=created: customers.customer_by_token(handle, c.token)
            )
            assert found == created.customer_id
    finally:
        db.close()


async def test_a_read_runs_in_a_read_only_transaction(db_target: Target) -> None:
    db = Database(db_target)
    try:
        with pytest.raises((sqlite3.OperationalError, psycopg.errors.ReadOnlySqlTransaction)):
            await db.read(lambda handle: consents.ensure_consent_texts(handle, [TEXT]))
        assert await db.read(consents.current_consent_texts) == []
    finally:
        db.close()


@pytest.mark.postgres
async def test_the_pools_reconnect_after_postgres_restarts(
    pg_cluster: Cluster, pg_url: str
) -> None:
    """A PostgreSQL restart breaks the pooled connections: each is checked as it is taken and
    replaced, so the first write and the first read after the restart work."""
    db = Database(PgTarget(pg_url))
    try:
        await db.write(lambda handle: consents.ensure_consent_texts(handle, [TEXT]))
        assert await db.read(consents.current_consent_texts)
        await asyncio.to_thread(pg_cluster.stop, "fast")
        await asyncio.to_thread(pg_cluster.start)
        texts = await db.write(consents.current_consent_texts)
        assert [t["hash"] for t in texts] == [TEXT.hash]
        assert await db.read(consents.current_consent_texts) == texts
    finally:
        db.close()


# The outage of the test below: longer than psycopg_pool's first four tries after a failure
# (1, 2 and 4 s apart: the last at 7 s), shorter than its fifth (8 s later, at 15 s ± 10 %).
OUTAGE_S = 9.0
# How soon after PostgreSQL is back both pools must serve again: the bounded tries come about
# a second apart, the rest is slack for a loaded machine. The doubling delay took 4.5 s or more.
BACK_WITHIN_S = 4.0


async def _first_success(db: Database, op: str) -> float:
    """Run a query through `op` ("read" or "write") until it works, as a live server keeps
    doing during an outage; the time.monotonic() it first worked."""
    run = db.read if op == "read" else db.write
    deadline = time.monotonic() + OUTAGE_S + WAIT_TIMEOUT_S * 3
    while True:
        try:
            await run(consents.current_consent_texts)
        except (psycopg.OperationalError, PoolTimeout):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)  # a poll interval
        else:
            return time.monotonic()


@pytest.mark.postgres
@pytest.mark.own_pg_step  # its 9 s outage: in CI's own PostgreSQL step (pytest -m pg_step)
async def test_the_pools_serve_again_soon_after_a_long_outage(
    pg_cluster: Cluster, pg_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """After an outage longer than psycopg_pool's first reconnection delays, reads and writes
    work again within a few seconds of PostgreSQL's return, not when the doubling delay ends
    (issue 18: every store back to normal within 10 s of the database's return); the tries,
    about one a second, do not flood the log."""
    caplog.set_level(logging.WARNING, logger="psycopg.pool")
    db = Database(PgTarget(pg_url))
    try:
        await db.write(lambda handle: consents.ensure_consent_texts(handle, [TEXT]))
        assert await db.read(consents.current_consent_texts)
        await asyncio.to_thread(pg_cluster.stop, "fast")
        # Reads and writes keep coming during the outage: both pools find their connection
        # broken at once and keep trying to reconnect.
        pollers = [asyncio.create_task(_first_success(db, op)) for op in ("read", "write")]
        await asyncio.sleep(OUTAGE_S)  # the outage itself
        assert not any(p.done() for p in pollers)
        await asyncio.to_thread(pg_cluster.start)
        back = time.monotonic()
        read_at, write_at = await asyncio.gather(*pollers)
        assert read_at - back < BACK_WITHIN_S, read_at - back
        assert write_at - back < BACK_WITHIN_S, write_at - back
    finally:
        db.close()
    failed_tries = [r for r in caplog.records if r.getMessage().startswith("error connecting")]
    # At most one per pool (none if another test's outage was logged within the minute).
    assert len(failed_tries) <= 2, [r.getMessage() for r in failed_tries]


def test_batches_stream_a_large_result_on_each_engine(handle: Handle) -> None:
    """`database.batches` yields every row, `size` at a time, inside or outside a transaction
    (PostgreSQL: a server-side cursor, which needs one)."""
    handle.execute("CREATE TABLE numbers (n INTEGER)")
    executemany(handle, "INSERT INTO numbers (n) VALUES (?)", [(i,) for i in range(1050)])
    chunks = list(batches(handle, "SELECT n FROM numbers WHERE n >= ? ORDER BY n", 100, [50]))
    assert [len(c) for c in chunks] == [100] * 10
    assert [row[0] for chunk in chunks for row in chunk] == list(range(50, 1050))
    with immediate(handle):
        assert sum(len(c) for c in batches(handle, "SELECT n FROM numbers", 500)) == 1050
