"""The database adapter: one writer thread, and read-only connections for reads.

Two engines run behind the same functions: SQLite (the default, one file per shop) and
PostgreSQL (a chain's shared database, ``database_url``). A `Handle` is what every storage
function takes first: a ``sqlite_utils.Database`` on SQLite, a `pg.PgHandle` on PostgreSQL;
both answer ``execute`` / ``query`` / ``executescript`` with ``?`` placeholders, and the
helpers here (`immediate`, `rows`, `one`, `executemany`, `lock`, `data_version`,
`truncate_wal`) hide what differs.

Writes run on one dedicated thread that owns the read-write connection (`Database.write`):
they are serialized in this process, and the event loop never waits on a disk flush. Writes
that must be atomic use `immediate()` (SQLite: BEGIN IMMEDIATE, which takes the write lock up
front, so a WAL reader never turns into a failing writer half-way; PostgreSQL: BEGIN, with
`lock` serializing what several store servers could race on). SQLite's ``synchronous=FULL``
and PostgreSQL's default ``synchronous_commit`` make every commit durable before it is
acknowledged.

Reads run on a small pool of threads (`Database.read`), inside one read transaction: a
function sees one consistent snapshot (SQLite: a read-only connection per thread, the WAL
letting reads proceed while the writer commits, the split datasette's ``Database`` makes;
PostgreSQL: pooled connections, ``REPEATABLE READ READ ONLY``). A read started after a write
returned sees that write.

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
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import sqlite_utils

from store_server.config import ServerConfig
from store_server.storage import pg
from store_server.storage.migrations import apply_migrations

if TYPE_CHECKING:  # imported when a PostgreSQL database is opened (see storage.pg)
    from psycopg_pool import ConnectionPool

logger = logging.getLogger(__name__)

T = TypeVar("T")


class Cursor(Protocol):
    """What ``Handle.execute`` returns (sqlite3's and psycopg's cursors alike)."""

    @property
    def rowcount(self) -> int: ...
    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...
    def fetchmany(self, size: int) -> list[Any]: ...
    def __iter__(self) -> Iterator[Any]: ...


class Handle(Protocol):
    """What every storage function takes first: a connection of either engine."""

    def execute(self, sql: str, params: Sequence[Any] = ..., /) -> Any: ...
    def executescript(self, script: str, /) -> Any: ...
    def query(self, sql: str, params: Sequence[Any] = ..., /) -> Iterable[dict[str, Any]]: ...


Target = Path | pg.PgTarget
"""Where the database is: a SQLite file, or a PostgreSQL database."""

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
# Seconds a thread waits for a pooled PostgreSQL connection before the operation fails.
POOL_TIMEOUT_S = 10.0
# psycopg_pool retries a failed connection with a delay doubling from 1 s, without a cap: its
# tries after a failure come at 1, 3, 7, 15, 31, 63 s, so a store came back up to a minute
# after a 60 s outage. A series of tries is cut after this long (``reconnect_timeout``) and a
# new one starts at once (`_reconnect_again`): tries never more than about a second apart.
RECONNECT_SERIES_S = 2.0
# psycopg_pool's warnings about a failed try are let through at most this often per pool:
# a try every second or so during an outage would flood the log.
RECONNECT_LOG_EVERY_S = 60.0


def target_of(config: ServerConfig, db_path: Path) -> Target:
    """The database the settings name: ``database_url`` if set, else the SQLite ``db_path``."""
    if config.database_url:
        return pg.PgTarget(config.database_url, config.database_password or None)
    return db_path


def is_pg(db: Handle) -> bool:
    return isinstance(db, pg.PgHandle)


def connect(path: Path) -> sqlite_utils.Database:
    """Open (creating if needed) the database with the settings of docs/operations.md."""
    path.parent.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    private_file(path)
    conn = sqlite3.connect(
        str(path), check_same_thread=False, isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000
    )
    db = sqlite_utils.Database(conn)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        # FULL: a commit is on disk before we acknowledge it (consent proof, acknowledged
        # batches).
        db.execute("PRAGMA synchronous=FULL")
        db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        db.execute("PRAGMA foreign_keys=ON")
        # Erased rows are overwritten with zeros, so nothing lingers in the file.
        db.execute("PRAGMA secure_delete=ON")
        apply_migrations(db)
    except BaseException:
        conn.close()  # a file that is not ours, or a newer schema: no connection left open
        raise
    return db


def private_file(path: Path) -> None:
    """Create `path` (and tighten an existing one and its -wal/-shm) to FILE_MODE."""
    os.close(os.open(path, os.O_CREAT | os.O_RDWR, FILE_MODE))
    for file in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        with contextlib.suppress(FileNotFoundError):
            os.chmod(file, FILE_MODE)


def connect_reader(path: Path) -> sqlite_utils.Database:
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
    """A write transaction (SQLite: it takes the write lock at BEGIN; see module docstring)."""
    db.execute("BEGIN" if is_pg(db) else "BEGIN IMMEDIATE")
    try:
        yield db
    except BaseException:
        with contextlib.suppress(Exception):  # a broken connection has no transaction left
            db.execute("ROLLBACK")
        raise
    else:
        db.execute("COMMIT")


def lock(db: Handle, name: str) -> None:
    """Serialize, until the transaction ends, with every other transaction locking `name`.

    SQLite's write transactions are already serialized (BEGIN IMMEDIATE); on PostgreSQL,
    several store servers write one database: this takes a transaction-scoped advisory lock
    (the consent log's chain, one customer's consent and cards).
    """
    if is_pg(db):
        db.execute("SELECT pg_advisory_xact_lock(hashtextextended(?, 0))", [name])


def customer_lock(customer_id: str) -> str:
    """The lock (`lock`) a customer's consent changes and new cards take: no store server
    inserts a card from a consent another one is withdrawing."""
    return f"bulle/customer/{customer_id}"


def rows(db: Handle, sql: str, params: Iterable[Any] = ()) -> list[dict[str, Any]]:
    return list(db.query(sql, list(params)))


def one(db: Handle, sql: str, params: Iterable[Any] = ()) -> dict[str, Any] | None:
    found = rows(db, sql, params)
    return found[0] if found else None


def batches(db: Handle, sql: str, size: int, params: Sequence[Any] = ()) -> Iterator[list[Any]]:
    """The rows of `sql` as tuples, `size` at a time, without holding them all at once.

    SQLite's cursor steps through the table; psycopg's ordinary cursor would fetch the whole
    result first, so PostgreSQL gets a server-side cursor (inside the caller's transaction:
    `Database.read` runs one, otherwise one is opened for it).
    """
    if isinstance(db, pg.PgHandle):
        from psycopg.pq import TransactionStatus

        with contextlib.ExitStack() as stack:
            if db.conn.info.transaction_status == TransactionStatus.IDLE:
                stack.enter_context(db.conn.transaction())  # a cursor lives in a transaction
            yield from _pg_batches(db, sql, size, params)
        return
    cursor = db.execute(sql, list(params))
    while chunk := cursor.fetchmany(size):
        yield chunk


def _pg_batches(db: pg.PgHandle, sql: str, size: int, params: Sequence[Any]) -> Iterator[list[Any]]:
    with db.conn.cursor(name="bulle_batches") as cursor:
        cursor.itersize = size
        query = pg.placeholders(sql) if params else sql
        cursor.execute(query.encode(), list(params) if params else None)
        while chunk := cursor.fetchmany(size):
            yield chunk


def executemany(db: Handle, sql: str, seq: Iterable[Sequence[Any]]) -> int:
    """Run `sql` once per parameter row; the rows changed in all."""
    if isinstance(db, pg.PgHandle):
        return int(db.executemany(sql, seq).rowcount)
    assert isinstance(db, sqlite_utils.Database)
    return int(db.conn.executemany(sql, list(seq)).rowcount)


def data_version(db: Handle) -> int:
    """A number that changes when another connection commits a change of consent.

    SQLite: ``PRAGMA data_version`` (any commit by another connection). PostgreSQL: the
    consent log's last sequence number (every grant, renewal, withdrawal and erasure appends
    to it; appends hold the log's lock until they commit, so sequence numbers commit in order
    and a later commit never hides behind a higher number already seen); one index probe. It
    counts this server's own changes too, which costs one needless re-read after them.
    """
    if is_pg(db):
        return int(db.execute("SELECT coalesce(max(seq), 0) FROM consent_log").fetchone()[0])
    return int(db.execute("PRAGMA data_version").fetchone()[0])


def truncate_wal(db: Handle) -> None:
    """SQLite: checkpoint and truncate the WAL, so rows deleted by a commit leave no copy
    there. PostgreSQL: nothing (its WAL and dead tuples are the operator's, docs/operations.md)."""
    if not is_pg(db):
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def connect_target(target: Target) -> Handle:
    """A read-write connection to `target`, the migrations applied."""
    if isinstance(target, pg.PgTarget):
        handle = pg.PgHandle(pg.connect(target))
        try:
            apply_migrations(handle)
        except BaseException:
            handle.conn.close()  # e.g. a role that may not migrate: no connection left open
            raise
        return handle
    return connect(target)


def connect_target_reader(target: Target) -> Handle:
    """A read-only connection to an existing database (worker processes, restore)."""
    if isinstance(target, pg.PgTarget):
        conn = pg.connect(target)
        conn.execute("SET default_transaction_read_only = on")
        return pg.PgHandle(conn)
    return connect_reader(target)


def close_handle(db: Handle) -> None:
    if isinstance(db, pg.PgHandle):
        db.conn.close()
    else:
        assert isinstance(db, sqlite_utils.Database)
        db.conn.close()


def _reconnect_again(pool: ConnectionPool[Any]) -> None:
    """psycopg_pool gave up a series of tries (`RECONNECT_SERIES_S`): start the next series now.

    Left alone, the pool waits for a client to ask before trying again, and a client already
    waiting is not served before its timeout. ``check()`` is the pool's public way to grow it
    back (it also checks the idle connections, none during an outage). Runs on a worker of the
    pool, which no longer runs it once the pool is closed.
    """
    logger.debug("database pool %s: still unreachable, trying again", pool.name)
    pool.check()


class _ReconnectLogFilter(logging.Filter):
    """Let through each of psycopg_pool's reconnection warnings once per pool every
    `RECONNECT_LOG_EVERY_S` (a failed try, a series given up); the rest as they come."""

    PREFIXES = ("error connecting in", "reconnection attempt in pool")

    def __init__(self) -> None:
        super().__init__()
        self._last: dict[tuple[str, str], float] = {}
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        msg = str(record.msg)
        if not msg.startswith(self.PREFIXES) or not isinstance(record.args, tuple):
            return True
        key = (msg, str(record.args[0]) if record.args else "")
        with self._lock:
            last = self._last.get(key)
            if last is not None and record.created - last < RECONNECT_LOG_EVERY_S:
                return False
            self._last[key] = record.created
        return True


_RECONNECT_LOG_FILTER = _ReconnectLogFilter()


def _quiet_reconnect_warnings() -> None:
    """Install `_ReconnectLogFilter` on psycopg_pool's logger (once: filters are a list)."""
    pool_logger = logging.getLogger("psycopg.pool")
    if _RECONNECT_LOG_FILTER not in pool_logger.filters:
        pool_logger.addFilter(_RECONNECT_LOG_FILTER)


class Database:
    """The writer thread and its connection, and the reader threads with theirs."""

    def __init__(self, target: Target, *, read_threads: int = READ_THREADS) -> None:
        self.target = target
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bulle-db")
        self._readers = ThreadPoolExecutor(
            max_workers=read_threads, thread_name_prefix="bulle-db-read"
        )
        self._local = threading.local()
        self._reader_dbs: list[Handle] = []
        self._reader_lock = threading.Lock()
        self._pool: ConnectionPool[Any] | None = None
        self._write_pool: ConnectionPool[Any] | None = None
        if isinstance(target, pg.PgTarget):
            from psycopg_pool import ConnectionPool

            # The writer's connection comes from a pool of one: a connection broken by a
            # database restart is replaced at the next write instead of failing every write.
            handle = self._executor.submit(connect_target, target).result()
            close_handle(handle)  # migrations applied; the pools connect on their own
            kwargs = target.connect_kwargs()
            # Each connection is checked as it is taken (one round trip): one broken by a
            # restart of PostgreSQL is replaced then, instead of failing the operation.
            check = ConnectionPool.check_connection
            _quiet_reconnect_warnings()
            self._write_pool = ConnectionPool(
                target.url,
                min_size=1,
                max_size=1,
                kwargs=kwargs,
                check=check,
                timeout=POOL_TIMEOUT_S,
                reconnect_timeout=RECONNECT_SERIES_S,
                reconnect_failed=_reconnect_again,
                name="bulle-writer",
                open=True,
            )
            self._pool = ConnectionPool(
                target.url,
                min_size=1,
                max_size=read_threads,
                kwargs=kwargs,
                check=check,
                timeout=POOL_TIMEOUT_S,
                reconnect_timeout=RECONNECT_SERIES_S,
                reconnect_failed=_reconnect_again,
                name="bulle-readers",
                open=True,
            )
            self._db: Handle | None = None
        else:
            self._db = self._executor.submit(connect, target).result()

    @property
    def path(self) -> Path:
        """The SQLite file (SQLite-only tools: backup, restore, file traces)."""
        if not isinstance(self.target, Path):
            raise TypeError("a PostgreSQL database has no file")
        return self.target

    @property
    def engine(self) -> str:
        return "postgres" if isinstance(self.target, pg.PgTarget) else "sqlite"

    def _write(self, fn: Callable[[Handle], T]) -> T:
        if self._write_pool is None:
            assert self._db is not None
            return fn(self._db)
        with self._write_pool.connection() as conn:
            return fn(pg.PgHandle(conn))

    async def write(self, fn: Callable[[Handle], T]) -> T:
        """Run `fn` on the writer thread with the read-write connection."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._write, fn)

    # Work on the writer's connection that is not a write but must see exactly what the
    # writer sees (``data_version``), and tools that read and write in one function.
    run = write

    async def read(self, fn: Callable[[Handle], T]) -> T:
        """Run `fn` on a reader thread, in one read transaction of a read-only connection."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._readers, self._read, fn)

    def write_sync(self, fn: Callable[[Handle], T]) -> T:
        """For CLI commands and start-up, outside the event loop."""
        return self._executor.submit(self._write, fn).result()

    run_sync = write_sync

    def read_sync(self, fn: Callable[[Handle], T]) -> T:
        """:meth:`read` outside the event loop."""
        return self._readers.submit(self._read, fn).result()

    def _read(self, fn: Callable[[Handle], T]) -> T:
        if self._pool is not None:
            with self._pool.connection() as conn:
                handle = pg.PgHandle(conn)
                handle.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                try:
                    return fn(handle)
                finally:
                    with contextlib.suppress(Exception):
                        handle.execute("ROLLBACK")
        db: Handle | None = getattr(self._local, "db", None)
        if db is None:
            assert isinstance(self.target, Path)
            db = connect_reader(self.target)
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
                close_handle(db)
            self._reader_dbs.clear()
        if self._pool is not None:
            self._pool.close()

        def _close() -> None:
            if self._write_pool is not None:
                self._write_pool.close()
            elif self._db is not None:
                truncate_wal(self._db)
                close_handle(self._db)

        try:
            self._executor.submit(_close).result()
        finally:
            self._executor.shutdown(wait=True)
