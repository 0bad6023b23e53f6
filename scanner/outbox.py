"""Durable store-and-forward queue of window aggregates in its own SQLite file.

Bounded by rows, bytes and age; the oldest rows are dropped first and counted persistently.
A batch id is assigned to a set of rows once, persisted, and reused on every retry, so that
the server can deduplicate; rows are deleted only when the server acknowledges their batch,
or when it refuses the batch for good (then they are counted as dropped, like the bounds').

``Outbox`` is synchronous and bound to the thread that opened it. The daemon uses
``OutboxWorker``, which owns an ``Outbox`` on one worker thread, so that SQLite writes and their
fsyncs (``synchronous = FULL``) never block the event loop that runs bleak's callbacks.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sqlite3
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import sqlite_utils

from scanner.aggregate import WindowAggregate
from scanner.errors import ScannerError

logger = logging.getLogger(__name__)

T = TypeVar("T")

# How long a writer waits on a locked database before failing (a CLI may read concurrently).
BUSY_TIMEOUT_MS = 5000
# The outbox file and a directory created for it: owner only (it holds the sightings queued
# for the server).
FILE_MODE = 0o600
DIR_MODE = 0o700
# Key of the persistent dropped-rows counter in the meta table.
DROPPED_KEY = "dropped"


class OutboxError(ScannerError):
    """The outbox database cannot be opened or written."""


@dataclass(frozen=True, slots=True)
class PendingBatch:
    """Rows assigned to one batch id, in insertion order."""

    batch_id: str
    windows: list[dict[str, Any]]


class Outbox:
    """SQLite-backed queue; one instance owns the file (one writer)."""

    def __init__(
        self,
        path: str | Path,
        *,
        max_rows: int,
        max_bytes: int,
        max_age_s: float,
    ) -> None:
        self._max_rows = max_rows
        self._max_bytes = max_bytes
        self._max_age_s = max_age_s
        try:
            Path(path).parent.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
            # Owner only; SQLite gives the -wal and -shm files the same permissions.
            os.close(os.open(path, os.O_CREAT | os.O_RDWR, FILE_MODE))
            os.chmod(path, FILE_MODE)
            conn = sqlite3.connect(str(path), isolation_level=None)
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute("PRAGMA secure_delete = ON")
        except (OSError, sqlite3.Error) as exc:
            raise OutboxError(f"cannot open outbox {path}: {exc}") from exc
        self._conn = conn
        self._db = sqlite_utils.Database(conn)
        if "windows" not in self._db.table_names():
            windows = self._db.table("windows")
            windows.create(
                {"id": int, "created_at": float, "size": int, "body": str, "batch_id": str},
                pk="id",
                not_null={"created_at", "size", "body"},
            )
            windows.create_index(["batch_id"])
        if "meta" not in self._db.table_names():
            self._db.table("meta").create({"key": str, "value": int}, pk="key")
        self._dropped = self._read_dropped()

    def _read_dropped(self) -> int:
        row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (DROPPED_KEY,)).fetchone()
        return int(row[0]) if row else 0

    @property
    def dropped(self) -> int:
        """Rows dropped undelivered (bounds, or refused by the server) since the file exists."""
        return self._dropped

    def _count_dropped(self, n: int) -> None:
        """Add ``n`` (negative: rows delivered after all) to the persistent dropped counter."""
        self._dropped += n
        self._conn.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) "
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (DROPPED_KEY, self._dropped),
        )

    def depth(self) -> int:
        """Rows waiting for acknowledgement."""
        return int(self._conn.execute("SELECT count(*) FROM windows").fetchone()[0])

    def size_bytes(self) -> int:
        """Sum of stored window bodies."""
        return int(self._conn.execute("SELECT coalesce(sum(size), 0) FROM windows").fetchone()[0])

    def close(self) -> None:
        self._conn.close()

    def _begin(self) -> None:
        self._conn.execute("BEGIN IMMEDIATE")

    def put(self, windows: Sequence[WindowAggregate], now: float) -> None:
        """Queue aggregates, then enforce the bounds (oldest dropped first)."""
        if not windows:
            return
        rows = []
        for win in windows:
            body = json.dumps(win.to_wire(), separators=(",", ":"), sort_keys=True)
            rows.append((now, len(body.encode()), body))
        self._begin()
        try:
            self._conn.executemany(
                "INSERT INTO windows (created_at, size, body) VALUES (?, ?, ?)", rows
            )
            self._enforce_bounds(now)
            self._conn.execute("COMMIT")
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise

    def _enforce_bounds(self, now: float) -> None:
        dropped = self._conn.execute(
            "DELETE FROM windows WHERE created_at < ?", (now - self._max_age_s,)
        ).rowcount
        excess = self.depth() - self._max_rows
        if excess > 0:
            dropped += self._conn.execute(
                "DELETE FROM windows WHERE id IN (SELECT id FROM windows ORDER BY id LIMIT ?)",
                (excess,),
            ).rowcount
        total = self.size_bytes()
        if total > self._max_bytes:
            cut = self._conn.execute(
                "SELECT id FROM (SELECT id, sum(size) OVER (ORDER BY id DESC) AS kept "
                "FROM windows) WHERE kept > ? ORDER BY id DESC LIMIT 1",
                (self._max_bytes,),
            ).fetchone()
            if cut is not None:
                dropped += self._conn.execute(
                    "DELETE FROM windows WHERE id <= ?", (cut[0],)
                ).rowcount
        if dropped:
            self._count_dropped(dropped)
            logger.warning("outbox full or stale: dropped %d oldest windows", dropped)

    def next_batch(self, max_windows: int, now: float) -> PendingBatch | None:
        """The oldest pending batch (reused on retry), or a new one over the oldest rows."""
        self._begin()
        try:
            self._enforce_bounds(now)
            row = self._conn.execute(
                "SELECT batch_id FROM windows WHERE batch_id IS NOT NULL ORDER BY id LIMIT 1"
            ).fetchone()
            if row is not None:
                batch_id = str(row[0])
            else:
                ids = [
                    r[0]
                    for r in self._conn.execute(
                        "SELECT id FROM windows WHERE batch_id IS NULL ORDER BY id LIMIT ?",
                        (max_windows,),
                    )
                ]
                if not ids:
                    self._conn.execute("COMMIT")
                    return None
                batch_id = str(uuid.uuid4())
                self._conn.execute(
                    "UPDATE windows SET batch_id = ? WHERE id BETWEEN ? AND ? AND batch_id IS NULL",
                    (batch_id, ids[0], ids[-1]),
                )
            bodies = [
                json.loads(r[0])
                for r in self._conn.execute(
                    "SELECT body FROM windows WHERE batch_id = ? ORDER BY id", (batch_id,)
                )
            ]
            self._conn.execute("COMMIT")
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        if not bodies:
            return None
        return PendingBatch(batch_id=batch_id, windows=bodies)

    def ack(self, batch_id: str, sent: int | None = None) -> int:
        """Delete the rows of an acknowledged batch; returns how many were deleted.

        ``sent`` is how many windows the acknowledged request carried. Rows of the batch that
        the bounds dropped while it was in flight (a put at the row bound drops the oldest
        rows, the batch's own) were counted as dropped, yet the server has them: they are
        taken off the dropped counter again.
        """
        self._begin()
        try:
            n = int(
                self._conn.execute("DELETE FROM windows WHERE batch_id = ?", (batch_id,)).rowcount
            )
            if sent is not None and 0 < sent - n <= self._dropped:
                self._count_dropped(n - sent)
            self._conn.execute("COMMIT")
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        return n

    def discard(self, batch_id: str) -> int:
        """Delete the rows of a batch the server refused for good, counting them as dropped."""
        self._begin()
        try:
            n = int(
                self._conn.execute("DELETE FROM windows WHERE batch_id = ?", (batch_id,)).rowcount
            )
            if n:
                self._count_dropped(n)
            self._conn.execute("COMMIT")
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        return n

    def stats(self) -> tuple[int, int]:
        """(rows waiting for acknowledgement, rows dropped undelivered)."""
        return self.depth(), self._dropped


class OutboxWorker:
    """An ``Outbox`` owned by one worker thread; every call runs there, in submission order.

    Opening happens at construction (blocking the caller once, before scanning starts), so a
    bad path fails early with ``OutboxError``. Calls submitted before ``close`` still complete
    even if the awaiting task is cancelled, so a cancelled put or ack is never half-done.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        max_rows: int,
        max_bytes: int,
        max_age_s: float,
    ) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="scanner-outbox")
        try:
            self._box = self._executor.submit(
                Outbox, path, max_rows=max_rows, max_bytes=max_bytes, max_age_s=max_age_s
            ).result()
        except BaseException:
            self._executor.shutdown(wait=True)
            raise
        self._closed = False

    async def _run(self, fn: Callable[[], T]) -> T:
        if self._closed:
            raise OutboxError("the outbox is closed")
        # Shielded: cancelling the caller must not cancel a call still queued for the thread
        # (a concurrent future not yet started is cancellable), or a write would be lost.
        return await asyncio.shield(asyncio.get_running_loop().run_in_executor(self._executor, fn))

    async def put(self, windows: Sequence[WindowAggregate], now: float) -> None:
        """Queue aggregates (see ``Outbox.put``)."""
        if windows:
            items = list(windows)
            await self._run(lambda: self._box.put(items, now))

    async def next_batch(self, max_windows: int, now: float) -> PendingBatch | None:
        """The oldest pending batch (see ``Outbox.next_batch``)."""
        return await self._run(lambda: self._box.next_batch(max_windows, now))

    async def ack(self, batch_id: str, sent: int | None = None) -> int:
        """Delete an acknowledged batch (see ``Outbox.ack``)."""
        return await self._run(lambda: self._box.ack(batch_id, sent))

    async def discard(self, batch_id: str) -> int:
        """Delete a refused batch and count it as dropped."""
        return await self._run(lambda: self._box.discard(batch_id))

    async def stats(self) -> tuple[int, int]:
        """(depth, dropped)."""
        return await self._run(self._box.stats)

    def run_sync(self, fn: Callable[[Outbox], T]) -> T:
        """Run ``fn`` on the worker thread and wait (start-up, tests and tools; not on the loop)."""
        if self._closed:
            raise OutboxError("the outbox is closed")
        return self._executor.submit(fn, self._box).result()

    async def aclose(self) -> None:
        """``close`` without blocking the event loop."""
        await asyncio.to_thread(self.close)

    def close(self) -> None:
        """Close the database on its thread, after every call already submitted."""
        if self._closed:
            return
        self._closed = True
        try:
            self._executor.submit(self._box.close).result()
        finally:
            self._executor.shutdown(wait=True)
