"""The consent log's notifications on a real PostgreSQL: a commit wakes a listening server, a
restart of the database is noticed and the listener comes back by itself."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import psycopg
import pytest

from store_server.storage.notify import NOTIFY_DDL, ConsentListener
from store_server.storage.pg_cluster import Cluster, throwaway_cluster

pytestmark = pytest.mark.postgres

# Bound on every wait below: far above a healthy delay, so only a real failure trips it.
WAIT_S = 30.0


@pytest.fixture(scope="module")
def own_cluster() -> Iterator[Cluster]:
    """A cluster of this test's own: it is stopped and started under the listener."""
    with throwaway_cluster() as cluster:
        yield cluster


async def _until(event: asyncio.Event) -> None:
    await asyncio.wait_for(event.wait(), WAIT_S)


async def test_a_commit_wakes_the_listener_and_a_restart_is_survived(
    own_cluster: Cluster,
) -> None:
    url = own_cluster.create_database("chain")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE consent_log (seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
            " subject_ref TEXT NOT NULL)"
        )
        conn.execute(NOTIFY_DDL)
    woken, up, down = asyncio.Event(), asyncio.Event(), asyncio.Event()
    payloads: list[bool] = []

    def wake() -> None:
        payloads.append(True)
        woken.set()

    def connected(is_up: bool) -> None:
        (up if is_up else down).set()

    listener = ConsentListener(url)
    task = asyncio.create_task(listener.run(wake, connected))
    try:
        await _until(up)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("INSERT INTO consent_log (subject_ref) VALUES ('x')")
        await _until(woken)
        # An uncommitted insert notifies nobody.
        woken.clear()
        with psycopg.connect(url) as conn:
            conn.execute("INSERT INTO consent_log (subject_ref) VALUES ('y')")
            conn.rollback()
        # The database goes away (a crash), then comes back.
        up.clear()
        await asyncio.to_thread(own_cluster.stop, "immediate")
        await _until(down)
        assert not woken.is_set()
        await asyncio.to_thread(own_cluster.start)
        await _until(up)
        assert listener.reconnects == 1
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("INSERT INTO consent_log (subject_ref) VALUES ('z')")
        await _until(woken)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_the_notification_carries_only_the_sequence_number(own_cluster: Cluster) -> None:
    url = own_cluster.create_database("chain_payload")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE consent_log (seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
            " subject_ref TEXT NOT NULL)"
        )
        conn.execute(NOTIFY_DDL)
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as listen:
        await listen.execute("LISTEN bulle_consent")
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("INSERT INTO consent_log (subject_ref) VALUES ('pseudonym')")
        got = [n async for n in listen.notifies(timeout=WAIT_S, stop_after=1)]
    assert [n.payload for n in got] == ["1"]
