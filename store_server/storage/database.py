"""The database adapter: one writer thread, and read-only connections for reads.

Writes run on one dedicated thread that owns the read-write connection (`Database.write`):
they are serialized, and the event loop never waits on a disk flush. Writes that must be
atomic use `immediate()` (BEGIN IMMEDIATE: takes the write lock up front, so a WAL reader
never turns into a failing writer half-way); ``synchronous=FULL`` makes every commit durable
before it is acknowledged.

Reads run on a small pool of threads, each with its own read-only connection
(`Database.read`), inside one read transaction: a function sees one consistent snapshot,
and, the journal being a WAL, reads proceed while the writer commits instead of queueing
behind it (the split datasette's ``Database`` makes). A read started after a write returned
sees that write.

The functions of the other modules of this package take the connection handle first; the
services run them through `read` or `write` and never hold SQL themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeAlias, TypeVar

import sqlite_utils

from store_server.storage.migrations import migrations

logger = logging.getLogger(__name__)

T = TypeVar("T")

Handle: TypeAlias = sqlite_utils.Database
"""What every storage function takes first: a connection of this engine."""

# Wait this long for a lock held by another process (e.g. a CLI command) before failing.
BUSY_TIMEOUT_MS = 5000
# Reader threads: reads are short (a page, a customer's data); two let one long read (the
# start-up scan of the identities) not hold up the others, more would only contend.
READ_THREADS = 2
# The database holds customers' wrapped keys, consents and visits: owner read/write only.
# SQLite gives its -wal and -shm files the database file's permissions.
FILE_MODE = 0o600
# A directory the server creates for its database: owner only.
DIR_MODE = 0o700


def connect(path: Path) -> Handle:
    """Open (creating if needed) the database with the settings of docs/operations.md."""
    path.parent.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    private_file(path)
    conn = sqlite3.connect(
        str(path), check_same_thread=False, isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000
    )
    db = sqlite_utils.Database(conn)
    db.execute("PRAGMA journal_mode=WAL")
    # FULL: a commit is on disk before we acknowledge it (consent proof, acknowledged batches).
    db.execute("PRAGMA synchronous=FULL")
    db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    db.execute("PRAGMA foreign_keys=ON")
    # Erased rows are overwritten with zeros, so nothing lingers in the file.
    db.execute("PRAGMA secure_delete=ON")
    migrations.apply(db)
    return db


def private_file(path: Path) -> None:
    """Create `path` (and tighten an existing one and its -wal/-shm) to FILE_MODE."""
    os.close(os.open(path, os.O_CREAT | os.O_RDWR, FILE_MODE))
    for file in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        with contextlib.suppress(FileNotFoundError):
            os.chmod(file, FILE_MODE)


def connect_reader(path: Path) -> Handle:
    """A read-only connection to an existing database (opened by :func:`connect` first)."""
    conn = sqlite3.connect(
        f"{path.resolve().as_uri()}?mode=ro",
        uri=True,
        check_same_thread=False,
        isolation_level=None,
        timeout=BUSY_TIMEOUT_MS / 1000,
    )
    db = sqlite_utils.Database(conn)
    db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    db.execute("PRAGMA query_only=ON")
    return db


@contextlib.contextmanager
def immediate(db: Handle) -> Iterator[Handle]:
    """A write transaction that takes the write lock at BEGIN (see module docstring)."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
    except BaseException:
        db.execute("ROLLBACK")
        raise
    else:
        db.execute("COMMIT")


def rows(db: Handle, sql: str, params: Iterable[Any] = ()) -> list[dict[str, Any]]:
    return list(db.query(sql, list(params)))


def one(db: Handle, sql: str, params: Iterable[Any] = ()) -> dict[str, Any] | None:
    found = rows(db, sql, params)
    return found[0] if found else None


def data_version(db: Handle) -> int:
    """SQLite's ``PRAGMA data_version``: it changes when another connection commits."""
    return int(db.execute("PRAGMA data_version").fetchone()[0])


def truncate_wal(db: Handle) -> None:
    """Checkpoint and truncate the WAL, so rows deleted by a commit leave no copy there."""
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")


class Database:
    """The writer thread and its connection, and the reader threads with theirs."""

    def __init__(self, path: Path, *, read_threads: int = READ_THREADS) -> None:
        self.path = path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bulle-db")
        self._db: Handle = self._executor.submit(connect, path).result()
        self._readers = ThreadPoolExecutor(
            max_workers=read_threads, thread_name_prefix="bulle-db-read"
        )
        self._local = threading.local()
        self._reader_dbs: list[Handle] = []
        self._reader_lock = threading.Lock()

    async def write(self, fn: Callable[[Handle], T]) -> T:
        """Run `fn` on the writer thread with the read-write connection."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, fn, self._db)

    # Work on the writer's connection that is not a write but must see exactly what the
    # writer sees (``data_version``), and tools that read and write in one function.
    run = write

    async def read(self, fn: Callable[[Handle], T]) -> T:
        """Run `fn` on a reader thread, in one read transaction of a read-only connection."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._readers, self._read, fn)

    def write_sync(self, fn: Callable[[Handle], T]) -> T:
        """For CLI commands and start-up, outside the event loop."""
        return self._executor.submit(fn, self._db).result()

    run_sync = write_sync

    def read_sync(self, fn: Callable[[Handle], T]) -> T:
        """:meth:`read` outside the event loop."""
        return self._readers.submit(self._read, fn).result()

    def _read(self, fn: Callable[[Handle], T]) -> T:
        db: Handle | None = getattr(self._local, "db", None)
        if db is None:
            db = connect_reader(self.path)
            self._local.db = db
            with self._reader_lock:
                self._reader_dbs.append(db)
        db.execute("BEGIN")
        try:
            return fn(db)
        finally:
            db.execute("ROLLBACK")

    def close(self) -> None:
        self._readers.shutdown(wait=True)
        with self._reader_lock:
            for db in self._reader_dbs:
                db.conn.close()
            self._reader_dbs.clear()

        def _close(db: Handle) -> None:
            truncate_wal(db)
            db.conn.close()

        try:
            self._executor.submit(_close, self._db).result()
        finally:
            self._executor.shutdown(wait=True)
