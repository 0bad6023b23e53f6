"""Group commit of scanner batch ids: the database adapter behind batch acknowledgements.

A batch is acknowledged only once its id is durably recorded (``synchronous=FULL``); with
many scanners posting at once, one transaction and one fsync serve every batch that arrived
while the previous commit was at the disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from dataclasses import dataclass

from store_server.storage import scanners
from store_server.storage.database import Database


@dataclass(slots=True)
class PendingBatch:
    """One batch id handed over for the next group, and the future its request waits on."""

    scanner_id: str
    batch_id: str
    accepted: int
    now: float
    registration: bytes | None
    done: asyncio.Future[tuple[bool, int]]


class BatchLog:
    """Commits batch ids for the scanners, many in one transaction (group commit).

    A batch is recorded by the first flush that starts after it was handed over; while one
    flush is at the database, the batches arriving meanwhile wait for the next one, which
    takes them all: one fsync'd commit (``synchronous=FULL``) per group instead of one per
    batch. Each caller is answered only once its own group has committed.
    """

    def __init__(self, db: Database) -> None:
        self._db = db
        self._pending: list[PendingBatch] = []
        self._flushing: asyncio.Task[None] | None = None

    @property
    def pending(self) -> int:
        """Batch ids waiting for the next group commit."""
        return len(self._pending)

    async def record(
        self,
        scanner_id: str,
        batch_id: str,
        accepted: int,
        now: float,
        registration: bytes | None = None,
    ) -> tuple[bool, int]:
        """(True, accepted) once recorded; (False, accepted recorded before) for a retry;
        (False, -1) when ``registration`` (a wrapped secret) is no longer the scanner's."""
        done: asyncio.Future[tuple[bool, int]] = asyncio.get_running_loop().create_future()
        self._pending.append(PendingBatch(scanner_id, batch_id, accepted, now, registration, done))
        if self._flushing is None:
            self._flushing = asyncio.create_task(self._flush(), name="bulle-batch-log")
        return await done

    async def close(self) -> None:
        """Let the flush in progress finish, so the batches it holds are answered."""
        task = self._flushing
        if task is not None:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.shield(task)

    async def _flush(self) -> None:
        try:
            while self._pending:
                group, self._pending = self._pending, []
                items = [
                    (p.scanner_id, p.batch_id, p.accepted, p.now, p.registration) for p in group
                ]
                try:
                    results = await self._db.write(
                        functools.partial(scanners.record_batches, items=items)
                    )
                except asyncio.CancelledError:
                    # Shutdown: no caller waits forever. A batch whose commit went through
                    # anyway is answered as a duplicate when its scanner sends it again.
                    for pending in [*group, *self._pending]:
                        pending.done.cancel()
                    self._pending = []
                    raise
                except Exception as exc:  # every caller of the group sees the failure
                    for pending in group:
                        if not pending.done.done():
                            pending.done.set_exception(exc)
                    continue
                for pending, result in zip(group, results, strict=True):
                    if not pending.done.done():  # its request may have been cancelled
                        pending.done.set_result(result)
        finally:
            self._flushing = None
