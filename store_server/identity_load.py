"""Loading consenting customers' identities: read, unwrap, and (for many) compute their EIDs.

A few identities (a consent granted since the last refresh) are read in the database thread
and given to the resolver. Many (a start-up) are read, unwrapped and turned into EIDs in
worker processes, each on its own read-only connection, while the server already serves:
:class:`BackgroundBuild` hands the results to the resolver in slices, between requests.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from multiprocessing.pool import Pool
from pathlib import Path
from typing import Any

from store_server.eid import MAX_CLOCK_OFFSET_S, MAX_ROTATION_EXPONENT, IdentityRecord
from store_server.keywrap import KeyUnwrapper, KeyWrapError
from store_server.resolver import BuiltWindows, EidResolver, build_windows
from store_server.storage import customers
from store_server.storage.database import Handle, connect_reader

logger = logging.getLogger(__name__)

BUILD_WORKERS = max(1, min(2, os.cpu_count() or 1))
"""Worker processes of a start-up build: two halve the AES work of a large store where the
machine has two cores; more would only compete with the server's own thread."""

BUILD_CHUNK = 10_000
"""Identities per worker task: each part comes back (about 1 MB) and is installed while the
workers build the next, so the server never holds more than a few parts in transit."""


def identity_aad(subject: str) -> bytes:
    """Associated data binding a wrapped identity key to its customer."""
    return f"bulle/identity/{subject}".encode()


@dataclass(slots=True)
class LoadedIdentities:
    """Identities unwrapped from their stored rows, and the customers whose row did not load.

    A row that does not unwrap (tampered, or another master key) or holds an impossible
    exponent or clock offset is left out and its customer listed in ``unreadable``: that
    customer is simply not recognised, and everyone else still is.
    """

    unwrap: KeyUnwrapper = field(repr=False)
    records: list[IdentityRecord] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)

    def add(self, subject: str, blob: bytes, k: int, offset: float) -> None:
        """Add one stored identity, or list it in ``unreadable``."""
        try:
            key = self.unwrap(blob, identity_aad(subject))
        except KeyWrapError:
            self.unreadable.append(subject)
            return
        if (
            type(k) is not int
            or not 0 <= k <= MAX_ROTATION_EXPONENT
            or not isinstance(offset, int | float)
            or not abs(offset) <= MAX_CLOCK_OFFSET_S  # NaN fails too
        ):
            self.unreadable.append(subject)
            return
        self.records.append(IdentityRecord(subject, key, k, float(offset)))


def read_identities(
    db: Handle, master_key: bytes, customer_ids: Iterable[str], *, scan: bool
) -> LoadedIdentities:
    """The stored identities of these customers, unwrapped (run in a database reader thread).

    ``scan``: read the whole identities table once and keep the wanted rows (many
    customers: about ten times faster than looking each up); otherwise look them up by id.
    """
    loaded = LoadedIdentities(KeyUnwrapper(master_key))
    wanted = {customer_id: customer_id for customer_id in customer_ids}  # the callers' strings
    if scan:
        for batch in customers.identity_batches(db):
            for customer_id, blob, k, offset in batch:
                subject = wanted.get(customer_id)
                if subject is not None:
                    loaded.add(subject, blob, k, offset)
    else:
        for row in customers.identity_rows(db, list(wanted)):
            customer_id = row["customer_id"]
            loaded.add(
                wanted.get(customer_id, customer_id),
                row["key_wrapped"],
                row["k"],
                row["clock_offset_s"],
            )
    return loaded


def build_in_worker(
    db_path: str, master_key: bytes, customer_ids: list[str], now: float, skew: int
) -> tuple[BuiltWindows, list[str]]:
    """Worker-process entry point: read, unwrap and compute the EIDs of these customers.

    Opens its own read-only connection and looks the customers up by id; returns the built
    windows and the customers whose stored identity did not load.
    """
    db = connect_reader(Path(db_path))
    try:
        loaded = read_identities(db, master_key, customer_ids, scan=False)
    finally:
        db.conn.close()
    return build_windows(loaded.records, now, skew), loaded.unreadable


class BackgroundBuild:
    """A start-up build of many identities in worker processes, installed as results come.

    ``on_done(installed, unreadable, seconds)`` runs in the event loop once every part is in
    the resolver. :meth:`close` stops the workers (the server shutting down meanwhile).
    """

    def __init__(
        self,
        resolver: EidResolver,
        *,
        db_path: Path,
        master_key: bytes,
        on_progress: Callable[[], Any],
        workers: int = BUILD_WORKERS,
    ) -> None:
        self._resolver = resolver
        self._db_path = str(db_path)
        self._master_key = master_key
        self._on_progress = on_progress
        self._workers = workers
        self._pool: Pool | None = None

    async def run(self, customer_ids: list[str], now: float) -> tuple[int, list[str]]:
        """Build and install; returns (identities installed, customers that did not load)."""
        started = time.perf_counter()
        chunks = [
            customer_ids[i : i + BUILD_CHUNK] for i in range(0, len(customer_ids), BUILD_CHUNK)
        ]
        workers = max(1, min(self._workers, len(chunks)))
        self._pool = pool = multiprocessing.get_context("spawn").Pool(workers)
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[tuple[BuiltWindows, list[str]]]] = []
        for chunk in chunks:
            future: asyncio.Future[tuple[BuiltWindows, list[str]]] = loop.create_future()
            pool.apply_async(
                build_in_worker,
                (self._db_path, self._master_key, chunk, now, self._resolver.skew_windows),
                callback=_settle(loop, future),
                error_callback=_fail(loop, future),
            )
            futures.append(future)
        del chunks
        installed = 0
        unreadable: list[str] = []
        try:
            for next_done in asyncio.as_completed(futures):
                built, bad = await next_done
                unreadable += bad
                installed += self._resolver.install(built)
                del built
                await self._on_progress()
        finally:
            self.close()
        logger.info(
            "built the EIDs of %d identities in %d worker processes in %.2f s",
            installed,
            workers,
            time.perf_counter() - started,
        )
        return installed, unreadable

    def close(self) -> None:
        """Stop the worker processes (idempotent)."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.terminate()
            pool.join()


def _settle(loop: asyncio.AbstractEventLoop, future: asyncio.Future[Any]) -> Callable[[Any], None]:
    """A pool callback (run in the pool's thread) that resolves ``future`` in its loop."""

    def set_result(result: Any) -> None:
        if not future.done():
            future.set_result(result)

    def callback(result: Any) -> None:
        loop.call_soon_threadsafe(set_result, result)

    return callback


def _fail(
    loop: asyncio.AbstractEventLoop, future: asyncio.Future[Any]
) -> Callable[[BaseException], None]:
    """A pool error callback that fails ``future`` in its loop."""

    def set_exception(error: BaseException) -> None:
        if not future.done():
            future.set_exception(error)

    def callback(error: BaseException) -> None:
        loop.call_soon_threadsafe(set_exception, error)

    return callback
