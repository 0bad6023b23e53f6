"""The consent change feed (I/O): follow the shared consent log, apply what other servers wrote.

In chain mode every store server reads the consent log after the last entry it applied, and
applies withdrawals and erasures through :meth:`Coordinator.forget` (cards retracted on this
store's boards, EIDs out of this store's allowlists) and new grants through
:meth:`Coordinator.admit`. What to apply and in which order is decided by the pure
:func:`store_server.changefeed.plan`; whether the server may act on its view of consents by
:class:`store_server.changefeed.ConsentView` (fail closed).

A read happens when a wake-up source says the log moved (PostgreSQL: a notification carrying
only the new entry's sequence number, :mod:`store_server.services.pg_listen`), and every
``POLL_S`` anyway: a missed notification delays a withdrawal by one poll at most, never loses
it, and each read that reaches the log's head keeps the view fresh. After the database comes
back, the first catch-up is applied before the view is fresh again, so pending withdrawals
reach the boards and the allowlists before any new card.

The log names subjects by their keyed pseudonym only; the feed maps a pseudonym back to a
customer held in this server's memory (:class:`SubjectIndex`), so no customer identifier ever
travels in a notification.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import sqlite3
import time
from collections.abc import Callable, Iterable
from typing import Protocol, cast

from store_server.changefeed import (
    Action,
    ConsentView,
    FeedCursor,
    FeedEntry,
    Plan,
    ViewStatus,
    plan,
)
from store_server.services.coordinator import Coordinator
from store_server.storage import consents, visits

logger = logging.getLogger(__name__)

# Read the log this often even without a wake-up: the bound on a missed notification's delay,
# and the heartbeat that keeps the view fresh (ten reads within the default 30 s bound).
POLL_S = 3.0
# Entries read at once; a server far behind reads again at once until it reaches the head.
READ_LIMIT = 5000
# Pseudonyms computed per slice of the start-up index (one HMAC each: a few ms a slice).
INDEX_SLICE = 2000
# After a failed read, wait this long before the next attempt (the database is likely down).
RETRY_S = 1.0
CLOSE_TIMEOUT_S = 5.0
"""How long a stop waits for the feed's tasks once cancelled: psycopg's async code has been
known to swallow a cancellation (a LISTEN connection whose peer went quiet), and a server must
stop anyway."""


class WakeupSource(Protocol):
    """Something that says "the consent log may have moved" (PostgreSQL LISTEN)."""

    async def run(
        self, wake: Callable[[], None], connected: Callable[[bool], None]
    ) -> None:  # pragma: no cover - protocol
        """Call `wake` on every notification, `connected(False)` when the connection is lost
        and `connected(True)` once it is back (then a catch-up must follow); run until
        cancelled."""
        ...


def is_unavailable(exc: BaseException) -> bool:
    """Whether `exc` means the database cannot be reached right now (not a bug in a query):
    SQLite's or psycopg's OperationalError (connection lost, disk I/O, locked), or the
    connection pool's timeout."""
    if isinstance(exc, sqlite3.OperationalError | ConnectionError | TimeoutError):
        return True
    return any(
        cls.__module__.split(".")[0] in ("psycopg", "psycopg_pool")
        and cls.__name__ in ("OperationalError", "PoolTimeout")
        for cls in type(exc).__mro__
    )


class SubjectIndex:
    """Pseudonym -> customer, for the customers this server holds in memory.

    Built lazily: a pseudonym not found indexes the held customers not indexed yet (one HMAC
    each), and forgets those no longer held. A pseudonym of nobody held here is nothing to do.
    """

    def __init__(self, coordinator: Coordinator) -> None:
        self._c = coordinator
        self._by_ref: dict[str, str] = {}
        self._ref_of: dict[str, str] = {}
        coordinator.on_forget.append(self.discard)
        coordinator.on_admit.append(self.add)

    def add(self, customer: str) -> None:
        """Index one customer now (admitted on a grant): a withdrawal soon after finds them
        without indexing everyone held."""
        if customer not in self._ref_of:
            ref = self._c.subject_ref(customer)
            self._ref_of[customer] = ref
            self._by_ref[ref] = customer

    async def build(self) -> None:
        """Index everyone held, a slice at a time between other work (after start-up), so
        the first withdrawal does not pay for 100,000 pseudonyms at once."""
        held = list(self.held())
        for first in range(0, len(held), INDEX_SLICE):
            for customer in held[first : first + INDEX_SLICE]:
                if customer in self._c.resolver:  # not forgotten meanwhile
                    self.add(customer)
            await asyncio.sleep(0)

    def __len__(self) -> int:
        return len(self._by_ref)

    def holds(self, customer: str) -> bool:
        return customer in self._ref_of

    def discard(self, customer: str) -> None:
        """The customer was forgotten: their pseudonym goes too."""
        ref = self._ref_of.pop(customer, None)
        if ref is not None:
            self._by_ref.pop(ref, None)

    def held(self) -> set[str]:
        c = self._c
        return {*c.resolver.subjects(), *c.static.customers(), *c.unreadable, *c.shown}

    def lookup(self, refs: Iterable[str]) -> dict[str, str]:
        wanted = list(refs)
        if any(ref not in self._by_ref for ref in wanted):
            self._reindex()
        return {ref: self._by_ref[ref] for ref in wanted if ref in self._by_ref}

    def _reindex(self) -> None:
        held = self.held()
        for gone in [c for c in self._ref_of if c not in held]:
            self._by_ref.pop(self._ref_of.pop(gone), None)
        for customer in held:
            if customer not in self._ref_of:
                ref = self._c.subject_ref(customer)
                self._ref_of[customer] = ref
                self._by_ref[ref] = customer


class ConsentFeed:
    """Follows the consent log for one store server and keeps its consent view's freshness."""

    def __init__(
        self,
        coordinator: Coordinator,
        *,
        bound_s: float,
        wakeups: WakeupSource | None = None,
        poll_s: float = POLL_S,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._c = coordinator
        self.db = coordinator.db
        self.view = ConsentView(bound_s)
        self._wakeups = wakeups
        self._poll_s = poll_s
        self._mono = monotonic
        self._cursor = FeedCursor(0)
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.subjects = SubjectIndex(coordinator)
        self._lock = asyncio.Lock()
        # Observability: withdrawals and erasures read, catch-ups that failed.
        self.applied = 0
        self.failures = 0

    @property
    def listening(self) -> bool | None:
        """Whether the notification connection is up (None: no notifications, poll only)."""
        if self._wakeups is None:
            return None
        return bool(getattr(self._wakeups, "connected", False))

    @property
    def cursor(self) -> FeedCursor:
        return self._cursor

    def status(self) -> ViewStatus:
        return self.view.status(self._mono())

    def fresh(self) -> bool:
        return self.view.fresh(self._mono())

    async def begin(self) -> None:
        """Take the log's head as the starting point; call BEFORE the full consent read at
        start-up, so that whatever is logged after it is applied by the feed (again, at
        worst: applying is idempotent)."""
        started = self._mono()
        self._cursor = FeedCursor(await self.db.read(consents.consent_log_last_seq))
        self.view.caught_up(started)

    def start(self) -> None:
        self._tasks.append(asyncio.create_task(self._poll_loop(), name="bulle-consent-feed"))
        self._tasks.append(asyncio.create_task(self.subjects.build(), name="bulle-pseudonyms"))
        if self._wakeups is not None:
            self._tasks.append(
                asyncio.create_task(
                    self._wakeups.run(self.wake, self._connected), name="bulle-consent-listen"
                )
            )

    async def close(self, timeout_s: float = CLOSE_TIMEOUT_S) -> None:
        """Cancel the feed's tasks and wait for them, at most ``timeout_s``: one that does not
        end by then is left behind (logged), so that a stop never hangs on the database."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        if not tasks:
            return
        done, pending = await asyncio.wait(tasks, timeout=timeout_s)
        for task in done:
            with contextlib.suppress(asyncio.CancelledError):
                task.result()
        if pending:
            logger.warning(
                "consent feed: %d task(s) still running %.0f s after the stop, left behind: %s",
                len(pending),
                timeout_s,
                ", ".join(sorted(task.get_name() for task in pending)),
            )

    def wake(self) -> None:
        self._wake.set()

    def _connected(self, up: bool) -> None:
        if up:
            self.view.reconnected()
            self._wake.set()  # catch up at once: anything may have been missed meanwhile
        else:
            self.view.lost(self._mono())

    async def _poll_loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self._poll_s)
            self._wake.clear()
            try:
                await self.catch_up()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.failures += 1
                self.view.lost(self._mono())
                if is_unavailable(exc):
                    logger.warning("consent feed: database unavailable (%s)", type(exc).__name__)
                else:
                    logger.exception("consent feed: catch-up failed")
                await asyncio.sleep(RETRY_S)

    async def catch_up(self) -> int:
        """Read and apply everything logged after the cursor, to the head; entries applied.

        Raises if the database cannot be read (the caller marks the view lost).
        """
        async with self._lock:
            started = self._mono()
            total = 0
            while True:
                cursor = self._cursor
                found = await self.db.read(
                    functools.partial(
                        consents.consent_log_after, seq=cursor.read_after, limit=READ_LIMIT
                    )
                )
                entries = [
                    FeedEntry(
                        int(r["seq"]), str(r["subject_ref"]), cast(Action, r["action"]), r["at"]
                    )
                    for r in found
                ]
                step = plan(cursor, entries, started)
                await self._apply(step)
                self._cursor = step.cursor
                total += len(step.leaving)
                if len(found) < READ_LIMIT:
                    break
            self.view.caught_up(started)
            self.applied += total
            return total

    async def _apply(self, step: Plan) -> None:
        c = self._c
        now = c.clock()
        if step.leaving:
            found = self.subjects.lookup(ref for ref, _ in step.leaving)
            for ref, reason in step.leaving:
                customer = found.get(ref)
                if customer is None:
                    continue  # nobody this server holds
                await self._leave(customer, reason, now)
        if step.granted_since is not None:
            since = step.granted_since
            store_id = c.store_id
            # A withdrawal committed after this read is not undone by these admissions.
            with c.forgets_watched() as forgotten:
                granted = await self.db.read(
                    lambda db: consents.consenting_granted_since(db, since, now, store_id)
                )
                for customer in granted:
                    if customer not in c.resolver:
                        await c.admit(customer, now, forgotten)

    async def _leave(self, customer: str, reason: str, now: float) -> None:
        c = self._c
        store_id = c.store_id
        if reason == "withdrawn":
            active = await self.db.read(
                lambda db: consents.active_purposes_at(db, customer, store_id, now)
            )
            if active:
                # Another purpose remains: the customer stays, their cards still go (the
                # withdrawing server retracted them in the database).
                c.retract_shown(customer, "withdrawn")
                return
        retracted: tuple[str, ...] = ()
        if reason == "withdrawn":
            # Cards this server opened while the withdrawal was committing elsewhere.
            retracted = await self.db.write(lambda db: visits.retract_cards_of(db, customer, now))
        await c.forget(customer, "erased" if reason == "erased" else "withdrawn", retracted)
