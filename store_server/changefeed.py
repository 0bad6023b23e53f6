"""The consent change feed and the consent view's freshness (pure: no I/O, `now` passed in).

In chain mode many store servers share one database; a withdrawal or an erasure made through
any of them must reach all the others. Each server follows the consent log by its sequence
number: it remembers the last entry it applied, reads what came after (woken by a database
notification that carries only a sequence number, and on a short poll in case a notification
was missed), and applies it in log order. This module holds the two decisions of that loop:

- :class:`FeedCursor` and :func:`plan`: from the entries read after the cursor, what to apply,
  in order, and the cursor to keep. Sequence numbers may have holes (a transaction that took a
  number and rolled back, or one that has not committed yet): a hole is read again for
  ``HOLE_GRACE_S`` before it is given up, so an entry that commits late is not skipped.
- :class:`ConsentView`: whether this server's view of consents is fresh enough to show a new
  card or hand out an allowlist (fail closed). The view is fresh only after a catch-up that
  started less than ``bound_s`` ago completed and was applied; losing the database makes it
  stale at once, and after a reconnection nothing is fresh again until a catch-up that started
  after the reconnection has been applied: pending withdrawals are applied before any card.

The I/O around it (reading the log, listening for notifications, applying through
``Coordinator.forget``) is in :mod:`store_server.services.consent_feed`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

# An entry whose sequence number is missing from what was read is read again for this long: a
# transaction that took the number and commits later (a slow writer) then still reaches every
# server. A number still missing after it belongs to a rolled-back transaction.
HOLE_GRACE_S = 30.0
# At most this many holes are remembered; a burst of rollbacks beyond it gives up the oldest.
MAX_HOLES = 1000

Action = Literal["grant", "renew", "withdraw", "erase"]
Leaving = Literal["withdrawn", "erased"]
ViewState = Literal["fresh", "stale", "down", "recovering"]
"""fresh: cards and allowlists allowed. stale: the last catch-up is older than the bound.
down: the database cannot be reached. recovering: reached again, catching up."""


@dataclass(frozen=True, slots=True)
class FeedEntry:
    """One consent-log entry as the feed reads it: no purpose text, no channel."""

    seq: int
    subject_ref: str
    action: Action
    at: float


@dataclass(frozen=True, slots=True)
class FeedCursor:
    """Where a server is in the consent log: every entry up to `seq` was applied, except the
    `holes` (sequence number -> when it was first seen missing)."""

    seq: int
    holes: Mapping[int, float] = field(default_factory=dict)

    @property
    def read_after(self) -> int:
        """Read the entries after this sequence number: the cursor, or below its oldest hole."""
        return min(self.holes) - 1 if self.holes else self.seq


@dataclass(frozen=True, slots=True)
class Plan:
    """What to apply from one read, in log order, and the cursor after it."""

    cursor: FeedCursor
    leaving: tuple[tuple[str, Leaving], ...]
    """Subjects (pseudonyms) whose consent was withdrawn or who were erased, in log order, each
    once (an erasure wins over a withdrawal of the same subject)."""
    granted_since: float | None
    """The earliest time of a new grant or renewal: customers granted since then may need
    admitting. None: no grant in this read."""


def plan(cursor: FeedCursor, entries: Iterable[FeedEntry], now: float) -> Plan:
    """Decide what to apply from `entries` (read after ``cursor.read_after``) at `now`.

    Entries already applied (at or below the cursor and not a hole) are skipped; entries above
    the cursor that leave a gap open holes; holes older than HOLE_GRACE_S are given up.
    """
    holes = dict(cursor.holes)
    seq = cursor.seq
    leaving: dict[str, Leaving] = {}
    granted_since: float | None = None
    for entry in sorted(entries, key=lambda e: e.seq):
        if entry.seq <= seq:
            if holes.pop(entry.seq, None) is None:
                continue  # already applied
        else:
            for missing in range(seq + 1, entry.seq):
                holes.setdefault(missing, now)
            seq = entry.seq
        if entry.action in ("withdraw", "erase"):
            reason: Leaving = "erased" if entry.action == "erase" else "withdrawn"
            if leaving.get(entry.subject_ref) != "erased":
                leaving.pop(entry.subject_ref, None)  # keep log order: the latest entry last
                leaving[entry.subject_ref] = reason
        elif granted_since is None or entry.at < granted_since:
            granted_since = entry.at
    kept = {n: t for n, t in holes.items() if now - t < HOLE_GRACE_S}
    if len(kept) > MAX_HOLES:
        kept = dict(sorted(kept.items())[-MAX_HOLES:])
    return Plan(FeedCursor(seq, kept), tuple(leaving.items()), granted_since)


@dataclass(frozen=True, slots=True)
class ViewStatus:
    """The consent view at one instant, as metrics and the health endpoint report it."""

    state: ViewState
    age_s: float | None
    """Seconds since the start of the last applied catch-up (None: never caught up)."""

    @property
    def fresh(self) -> bool:
        return self.state == "fresh"


class ConsentView:
    """Whether this server may act on its view of consents (fail closed), from explicit times.

    Times are on one monotonic clock of the caller's choosing. The rules, in order:

    1. the database was lost (:meth:`lost`) and no catch-up started after that completed:
       ``down`` (or ``recovering`` once it answers again, :meth:`reconnected`);
    2. no catch-up was ever applied, or the last one started more than ``bound_s`` ago:
       ``stale``;
    3. otherwise ``fresh``.
    """

    def __init__(self, bound_s: float) -> None:
        if bound_s <= 0:
            raise ValueError("bound_s must be positive")
        self.bound_s = bound_s
        self._caught_up_at: float | None = None  # start time of the last applied catch-up
        self._lost_at: float | None = None  # when the database was lost, until recovered
        self._reconnected = False

    def caught_up(self, started_at: float) -> None:
        """A catch-up that started at `started_at` read the log to its head and was applied."""
        if self._lost_at is not None:
            if started_at <= self._lost_at:
                return  # it began before the loss: it proves nothing about what came after
            self._lost_at = None
            self._reconnected = False
        if self._caught_up_at is None or started_at > self._caught_up_at:
            self._caught_up_at = started_at

    def lost(self, now: float) -> None:
        """The database could not be reached (a read failed, the listening connection broke)."""
        self._lost_at = now
        self._reconnected = False

    def reconnected(self) -> None:
        """The database answers again; fresh only after the next catch-up is applied."""
        if self._lost_at is not None:
            self._reconnected = True

    def status(self, now: float) -> ViewStatus:
        age = None if self._caught_up_at is None else max(0.0, now - self._caught_up_at)
        if self._lost_at is not None:
            return ViewStatus("recovering" if self._reconnected else "down", age)
        if age is None or age > self.bound_s:
            return ViewStatus("stale", age)
        return ViewStatus("fresh", age)

    def fresh(self, now: float) -> bool:
        return self.status(now).fresh
