"""Loading consenting customers' identities: read, unwrap, and (for many) compute their EIDs.

A few identities (a consent granted since the last refresh) are read in the database thread
and given to the resolver. Many (a start-up) are read, unwrapped and turned into EIDs in the
background while the server already serves, a rowid range at a time: in a database reader
thread, or for a very large store in worker processes, each on its own read-only connection
(:class:`BackgroundBuild`); the resolver installs each part between requests.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import multiprocessing
import os
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from multiprocessing.pool import Pool
from typing import Any

from store_server.eid import MAX_CLOCK_OFFSET_S, MAX_ROTATION_EXPONENT, IdentityRecord
from store_server.keyseal import temporary_key_aad
from store_server.keywrap import KeyUnwrapper, KeyWrapError
from store_server.resolver import BuiltWindows, EidResolver, Record, build_windows
from store_server.storage import consents, customers, keys
from store_server.storage.database import Handle, Target, connect_target_reader
from store_server.tempkeys import TemporaryKey, TemporaryKeyRecord

logger = logging.getLogger(__name__)

BUILD_WORKERS = max(1, min(2, os.cpu_count() or 1))
"""Worker processes of a start-up build: two halve the AES work of a large store where the
machine has two cores; more would only compete with the server's own thread."""

BUILD_CHUNK = 10_000
"""Identity rows per worker task (a rowid range): each part comes back (about 1 MB) and is
installed while the workers build the next, so the server holds only a few parts in transit."""

READER_CHUNK = 1_000
"""Identity rows per part of a build in a reader thread: small parts keep the thread's buffers
small enough for the allocator to reuse (100,000 customers: 134 MB after start with parts of
1,000, 147 MB with parts of 10,000), and hold the event loop's turn for a few ms each."""


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
    records: list[Record] = field(default_factory=list)
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


def read_temporary_keys(
    db: Handle, tk_key: bytes, customer_ids: Iterable[str], now: float, *, scan: bool
) -> LoadedIdentities:
    """Chain mode: these customers' stored temporary keys still of use at ``now``, unwrapped,
    one record each (with no key at all for a customer the authority has not served yet:
    consenting, recognised once keys come). A key that does not unwrap leaves its customer
    in ``unreadable``. ``scan``: read every stored key once rather than by id."""
    loaded = LoadedIdentities(KeyUnwrapper(tk_key))
    wanted = {customer_id: customer_id for customer_id in customer_ids}
    rows = keys.all_temporary_keys(db, now) if scan else keys.temporary_keys_of(db, wanted, now)
    found: dict[str, list[keys.TemporaryKeyRow]] = {}
    for row in rows:
        if row.customer_id in wanted:
            found.setdefault(row.customer_id, []).append(row)
    for customer_id, subject in wanted.items():
        held = found.get(customer_id, [])
        try:
            tks = tuple(
                TemporaryKey(
                    row.slot,
                    loaded.unwrap(row.tk_wrapped, temporary_key_aad(customer_id, row.slot)),
                    row.not_after,
                )
                for row in held
            )
        except KeyWrapError:
            loaded.unreadable.append(subject)
            continue
        # Every key of a customer comes from one enrollment: k and the offset of the newest.
        newest = max(held, key=lambda row: row.slot, default=None)
        # No key yet: the longest rotation, so that the resolver does not move the customer's
        # (empty) windows on every second meanwhile.
        k = newest.k if newest is not None else MAX_ROTATION_EXPONENT
        offset = newest.clock_offset_s if newest is not None else 0.0
        record = TemporaryKeyRecord(subject, k, offset, tks)
        try:
            record.check()
        except ValueError:
            loaded.unreadable.append(subject)
            continue
        loaded.records.append(record)
    return loaded


@dataclass(slots=True)
class _WorkerState:
    """What a worker process keeps between its tasks (set up once by :func:`start_worker`)."""

    db: Handle
    unwrap: KeyUnwrapper = field(repr=False)
    consenting: set[str]
    now: float
    skew: int


_worker: _WorkerState | None = None
"""This worker process's state; None in the server's own process."""


def start_worker(target: Target, master_key: bytes, now: float, skew: int, store_id: str) -> None:
    """Pool initializer: a read-only connection, the unwrapper and who consents at ``now``."""
    global _worker
    db = connect_target_reader(target)
    consenting = set(consents.consenting_customer_ids(db, now, store_id))
    _worker = _WorkerState(db, KeyUnwrapper(master_key), consenting, now, skew)


def build_rows(
    db: Handle,
    unwrap: KeyUnwrapper,
    wanted: Callable[[str], bool],
    rowids: tuple[int, int],
    now: float,
    skew: int,
) -> tuple[BuiltWindows, list[str]]:
    """The EIDs of the ``wanted`` customers whose identity rowid is in ``rowids`` (inclusive).

    Returns the built windows and the customers whose stored identity did not load. The
    identities of customers not wanted (not consenting) are skipped unread: never unwrapped.
    """
    loaded = LoadedIdentities(unwrap)
    for customer_id, blob, k, offset in customers.identities_between(db, *rowids):
        if wanted(customer_id):
            loaded.add(customer_id, blob, k, offset)
    records = [r for r in loaded.records if isinstance(r, IdentityRecord)]
    return build_windows(records, now, skew), loaded.unreadable


def build_range(first: int, last: int) -> tuple[BuiltWindows, list[str]]:
    """Worker task: :func:`build_rows` for the customers who consented at the build's time."""
    state = _worker
    if state is None:
        raise RuntimeError("build_range runs in a worker started by start_worker")
    return build_rows(
        state.db, state.unwrap, state.consenting.__contains__, (first, last), state.now, state.skew
    )


Reader = Callable[[Callable[[Handle], Any]], Awaitable[Any]]
"""Runs a function on a database reader thread's connection (``Database.read``)."""


class BackgroundBuild:
    """A start-up build of many identities, installed in parts as they come.

    Rowid ranges of the identities table are built one after another in a database reader
    thread (``workers=0``: no second copy of anything, the server's own memory only), or in
    ``workers`` processes, each of which reads who consents at the build's time once (two
    cores for a very large store, at the price of a Python process each). ``on_progress``
    runs in the event loop after each part is installed. :meth:`close` stops the workers
    (the server shutting down meanwhile).
    """

    def __init__(
        self,
        resolver: EidResolver,
        *,
        target: Target,
        master_key: bytes,
        on_progress: Callable[[], Any],
        read: Reader,
        workers: int = BUILD_WORKERS,
    ) -> None:
        self._resolver = resolver
        self._target = target
        self._master_key = master_key
        self._on_progress = on_progress
        self._read = read
        self._workers = workers
        self._pool: Pool | None = None

    async def run(
        self, now: float, store_id: str, rowids: tuple[int, int]
    ) -> tuple[int, list[str]]:
        """Build and install the consenting customers' EIDs, the identities table read in
        ``rowids`` ranges (READER_CHUNK or BUILD_CHUNK rows); returns (identities installed,
        customers whose stored identity did not load). Only customers the resolver expects are
        installed."""
        started = time.perf_counter()
        low, high = rowids
        if self._workers <= 0:
            step = READER_CHUNK
            ranges = [(first, first + step - 1) for first in range(low, high + 1, step)]
            done = await self._run_in_reader(ranges, now)
            logger.info(
                "built the EIDs of %d identities in a reader thread in %.2f s",
                done[0],
                time.perf_counter() - started,
            )
            return done
        ranges = [(first, first + BUILD_CHUNK - 1) for first in range(low, high + 1, BUILD_CHUNK)]
        workers = max(1, min(self._workers, len(ranges)))
        self._pool = pool = multiprocessing.get_context("spawn").Pool(
            workers,
            initializer=start_worker,
            initargs=(self._target, self._master_key, now, self._resolver.skew_windows, store_id),
        )
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[tuple[BuiltWindows, list[str]]]] = []
        for first, last in ranges:
            future: asyncio.Future[tuple[BuiltWindows, list[str]]] = loop.create_future()
            pool.apply_async(
                build_range,
                (first, last),
                callback=_settle(loop, future),
                error_callback=_fail(loop, future),
            )
            futures.append(future)
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

    async def _run_in_reader(
        self, ranges: list[tuple[int, int]], now: float
    ) -> tuple[int, list[str]]:
        """Build the ranges one after another in a database reader thread."""
        resolver = self._resolver
        unwrap = KeyUnwrapper(self._master_key)
        installed = 0
        unreadable: list[str] = []
        for rowids in ranges:
            built, bad = await self._read(
                functools.partial(
                    build_rows,
                    unwrap=unwrap,
                    # Read from the thread: a subject taken out meanwhile is skipped at install.
                    wanted=resolver.is_expected,
                    rowids=rowids,
                    now=now,
                    skew=resolver.skew_windows,
                )
            )
            unreadable += bad
            installed += resolver.install(built)
            del built
            await self._on_progress()
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
