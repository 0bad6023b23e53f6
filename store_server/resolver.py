"""The EID resolver: which consenting customer broadcasts an EID, and the scanners' allowlist.

Pure module: no I/O; every time-dependent method takes the server time explicitly.

For each subject (a customer with an active consent at this store) the resolver holds the
EIDs of its current rotation window and ``skew_windows`` neighbours on each side, in a plain
dict EID -> subject. A heap of rotation times says when each subject's windows move on;
:meth:`EidResolver.advance` recomputes only those. Each change of the EID set bumps a
version and is kept as a delta for the scanners' allowlist (:meth:`changes_since`).

An EID is accepted at ``now`` only while its window is within ``skew_windows`` of the app's
current window; that check is exact even if :meth:`advance` runs late.

A chain's store server holds no identity key: its subjects come as temporary keys
(:class:`~store_server.tempkeys.TemporaryKeyRecord`, one key per 2**16 s slot), and a window
whose slot's key it does not hold has no EID (it resolves nothing, and is not listed).

Large start-ups compute the EIDs elsewhere (a worker process, :func:`build_windows`) while
the subjects are already known as *expected* (:meth:`EidResolver.expect`): they count as
consenting at once, and become resolvable when :meth:`EidResolver.install` receives them.
"""

from __future__ import annotations

import heapq
import math
from array import array
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from store_server.eid import (
    EID_BYTES,
    IDENTITY_KEY_BYTES,
    IdentityError,
    IdentityRecord,
    window_eids,
)
from store_server.tempkeys import MISSING, TemporaryKeyRecord, window_eids_from_keys

Record = IdentityRecord | TemporaryKeyRecord
"""A subject as the resolver takes it: an identity key, or temporary keys (chain mode)."""

DEFAULT_SKEW_WINDOWS = 1
"""Accept the current window and one on each side: tolerates clock drift and a beacon that
rolls over slightly before or after the server, while keeping forged-replay windows short."""

HISTORY_VERSIONS = 120
"""Deltas kept for the allowlist: two minutes of one-second advances, which covers a scanner's
30 s long poll plus a few retries; a scanner further behind gets a full list instead."""

MAX_DELTA_EIDS = 100_000
"""A change touching more EIDs than this (bulk load, mass re-key) is not kept as a delta:
a full list is cheaper for scanners than a huge delta, and history memory stays bounded."""


@dataclass(frozen=True, slots=True)
class AllowlistItem:
    """One accepted EID and the server time at which it stops being accepted."""

    eid: bytes
    not_after: float


@dataclass(frozen=True, slots=True)
class AllowlistDelta:
    """Changes of the EID set after a given version, up to ``version`` (the current one)."""

    version: int
    added: tuple[AllowlistItem, ...]
    removed: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class _Change:
    version: int
    added: tuple[bytes, ...]
    removed: tuple[bytes, ...]


class _Held:
    """One resolvable subject: its identity (or temporary keys) and held windows."""

    __slots__ = ("base", "eids", "k", "key", "offset", "tks")

    def __init__(
        self, key: bytes, k: int, offset: float, tks: dict[int, bytes] | None = None
    ) -> None:
        self.key = key
        self.k = k
        self.offset = offset
        self.tks = tks  # chain mode: temporary keys by unwrapped slot, and no identity key
        self.base = 0  # the first held window (unwrapped); eids[i] is window base + i
        self.eids: tuple[bytes, ...] = ()

    @classmethod
    def of(cls, record: Record) -> _Held:
        if isinstance(record, TemporaryKeyRecord):
            return cls(b"", record.k, float(record.clock_offset_s), record.by_slot())
        return cls(record.identity_key, record.k, float(record.clock_offset_s))

    def same_identity(self, record: Record) -> bool:
        if self.k != record.k or self.offset != record.clock_offset_s:
            return False
        if isinstance(record, TemporaryKeyRecord):
            return self.tks == record.by_slot()
        return self.tks is None and self.key == record.identity_key

    def current(self, now: float) -> int:
        return math.floor(now + self.offset) >> self.k

    def not_after(self, window: int, skew: int) -> float:
        """Server time at which window ``window`` stops being accepted."""
        return ((window + skew + 1) << self.k) - self.offset

    def due(self, skew: int) -> int:
        """Whole server second (ceiling) at which the app leaves window ``base + skew``."""
        return math.ceil(((self.base + skew + 1) << self.k) - self.offset)

    def compute(self, windows: range) -> list[bytes]:
        if self.tks is not None:
            # Temporary keys of slots before the first window are of no more use: dropped.
            first = (windows.start << self.k) >> 16
            for slot in [s for s in self.tks if s < first]:
                del self.tks[slot]
            return window_eids_from_keys(self.tks, self.k, windows)
        # The temporary key is computed once for the windows of its 2**16 s slot, not kept:
        # at 100,000 customers it would hold 5.6 MB for one AES call saved per rotation.
        eids, _ = window_eids(self.key, self.k, windows)
        return eids


@dataclass(frozen=True, slots=True)
class BuiltWindows:
    """The EIDs of many identities at ``now``, computed away from the resolver.

    Flat and picklable (a worker process returns it, about 100 bytes an identity): per
    identity, ``span`` EIDs of windows ``bases[i] .. bases[i] + span - 1`` back to back in
    ``eids``, 16-byte keys in ``keys``; exponents, offsets and bases as machine arrays.
    """

    now: float
    skew: int
    subjects: list[str]
    keys: bytes = field(repr=False)
    ks: bytes
    offsets: array[float]
    bases: array[int]
    eids: bytes = field(repr=False)

    def __len__(self) -> int:
        return len(self.subjects)


def build_windows(records: Iterable[IdentityRecord], now: float, skew: int) -> BuiltWindows:
    """The held windows of every record at ``now`` (the AES work of a bulk load).

    Independent of any resolver: it runs in a worker process on a large start-up. Invalid
    records raise IdentityError.
    """
    span = 2 * skew + 1
    subjects: list[str] = []
    keys: list[bytes] = []
    ks = bytearray()
    offsets = array("d")
    bases = array("q")
    eids: list[bytes] = []
    for record in records:
        record.check()
        base = (math.floor(now + record.clock_offset_s) >> record.k) - skew
        computed, _ = window_eids(record.identity_key, record.k, range(base, base + span))
        subjects.append(record.subject)
        keys.append(record.identity_key)
        ks.append(record.k)
        offsets.append(record.clock_offset_s)
        bases.append(base)
        eids.extend(computed)
    return BuiltWindows(
        now, skew, subjects, b"".join(keys), bytes(ks), offsets, bases, b"".join(eids)
    )


class EidResolver:
    """EID -> subject for every identity added, with a versioned allowlist.

    Callers add only customers with an active consent at this store, call :meth:`advance`
    regularly (every second is plenty) and resolve sightings with :meth:`resolve`: one dict
    look-up and integer arithmetic, no cryptography.
    """

    def __init__(self, skew_windows: int = DEFAULT_SKEW_WINDOWS) -> None:
        if isinstance(skew_windows, bool) or not isinstance(skew_windows, int):
            raise IdentityError("skew_windows must be an integer")
        if skew_windows < 0:
            raise IdentityError("skew_windows must be >= 0")
        self._skew = skew_windows
        self._span = 2 * skew_windows + 1
        self._by_eid: dict[bytes, str] = {}
        self._held: dict[str, _Held] = {}
        # Consenting subjects whose EIDs are not installed yet, each mapped to itself: install
        # keeps this (long-lived) string and lets the built copy go with the rest of it.
        self._expected: dict[str, str] = {}
        # Subjects by the whole second at which their windows move on; the heap orders the
        # seconds. A removed or re-keyed subject leaves its bucket (see _drop).
        self._due: dict[int, list[str]] = {}
        self._heap: list[int] = []
        self._history: deque[_Change] = deque(maxlen=HISTORY_VERSIONS)
        self.version = 0
        self.removals = 0
        """Subjects removed so far: names taken from the resolver before an await are all
        still held if this has not moved since."""
        self.eid_computations = 0
        """EIDs computed so far (observability; lets tests check incrementality)."""

    @property
    def skew_windows(self) -> int:
        return self._skew

    def __len__(self) -> int:
        return len(self._held) + len(self._expected)

    def __contains__(self, subject: object) -> bool:
        return subject in self._held or subject in self._expected

    def subjects(self) -> list[str]:
        """Every subject, resolvable or expected (a copy)."""
        return [*self._held, *self._expected]

    def is_expected(self, subject: str) -> bool:
        """True if ``subject`` consents but its EIDs are not installed yet."""
        return subject in self._expected

    @property
    def expected(self) -> int:
        """Subjects known to consent whose EIDs are not installed yet."""
        return len(self._expected)

    # ---- queries ---------------------------------------------------------------------------

    def resolve(self, eid: bytes, now: float) -> str | None:
        """The subject broadcasting ``eid`` if it is accepted at ``now``, else None."""
        subject = self._by_eid.get(eid)
        if subject is None:
            return None
        held = self._held[subject]
        window = held.base + held.eids.index(eid)
        if abs(held.current(now) - window) > self._skew:
            return None
        return subject

    def entries(self, now: float) -> list[AllowlistItem]:
        """Every EID accepted at ``now`` with the server time at which it stops being accepted."""
        skew = self._skew
        items: list[AllowlistItem] = []
        for held in self._held.values():
            current = held.current(now)
            for window, eid in enumerate(held.eids, held.base):
                if eid is not MISSING and eid and abs(current - window) <= skew:
                    items.append(AllowlistItem(eid, held.not_after(window, skew)))
        return items

    def changes_since(self, version: int) -> AllowlistDelta | None:
        """Merged changes after ``version``; None if they are no longer kept (send a full list).

        ``added`` holds the EIDs added since ``version`` that are still held (with their
        current ``not_after``); ``removed`` every EID dropped since then and not re-added.
        """
        if version == self.version:
            return AllowlistDelta(self.version, (), ())
        if version > self.version or version < 0:
            return None
        if not self._history or self._history[0].version > version + 1:
            return None
        added: dict[bytes, None] = {}
        removed: dict[bytes, None] = {}
        for change in self._history:
            if change.version <= version:
                continue
            for eid in change.removed:
                added.pop(eid, None)
                removed[eid] = None
            for eid in change.added:
                removed.pop(eid, None)
                added[eid] = None
        items = []
        for eid in added:
            subject = self._by_eid.get(eid)
            if subject is None:
                continue
            held = self._held[subject]
            window = held.base + held.eids.index(eid)
            items.append(AllowlistItem(eid, held.not_after(window, self._skew)))
        return AllowlistDelta(self.version, tuple(items), tuple(removed))

    # ---- changes ---------------------------------------------------------------------------

    def upsert(self, record: Record, now: float) -> None:
        """Add a subject, or re-key it (its previous EIDs stop resolving at once)."""
        self.upsert_many((record,), now)

    def upsert_many(self, records: Iterable[Record], now: float) -> None:
        """Add or re-key many subjects as one change (one version bump).

        Every record is validated before anything changes.
        """
        batch = list(records)
        for record in batch:
            record.check()
        added: list[bytes] = []
        removed: list[bytes] = []
        for record in batch:
            held = self._held.get(record.subject)
            if held is not None:
                if held.same_identity(record):
                    continue
                self._drop(record.subject, held, removed)
            self._expected.pop(record.subject, None)
            held = _Held.of(record)
            self._held[record.subject] = held
            self._place(record.subject, held, now, removed, added)
        self._commit(added, removed)

    def expect(self, subjects: Iterable[str]) -> None:
        """Count these subjects as consenting now; their EIDs come later through :meth:`install`.

        Subjects already held are left as they are.
        """
        held = self._held
        self._expected.update((s, s) for s in subjects if s not in held)

    def install(self, built: BuiltWindows, start: int = 0, stop: int | None = None) -> int:
        """Make the expected subjects of ``built`` (rows ``start..stop-1``) resolvable.

        Returns how many were installed. Subjects no longer expected (removed, or upserted
        with a fresher identity meanwhile) are skipped. Windows that moved on since
        ``built.now`` move at the next :meth:`advance`.
        """
        if built.skew != self._skew:
            raise IdentityError("windows built for another skew")
        span = self._span
        expected = self._expected
        by_eid = self._by_eid
        added: list[bytes] = []
        installed = 0
        for i in range(start, len(built) if stop is None else min(stop, len(built))):
            subject = expected.pop(built.subjects[i], None)
            if subject is None:
                continue
            at = i * IDENTITY_KEY_BYTES
            held = _Held(built.keys[at : at + IDENTITY_KEY_BYTES], built.ks[i], built.offsets[i])
            held.base = built.bases[i]
            at = i * span * EID_BYTES
            held.eids = eids = tuple(
                built.eids[at + j * EID_BYTES : at + (j + 1) * EID_BYTES] for j in range(span)
            )
            self._held[subject] = held
            for eid in eids:
                by_eid[eid] = subject
            self._schedule(subject, held)
            if len(added) <= MAX_DELTA_EIDS:
                added.extend(eids)
            installed += 1
        if not expected:
            self._expected = {}  # a dict keeps its table once emptied: give it back
        self.eid_computations += installed * span
        self._commit(added, [], unlisted=installed * span - len(added))
        return installed

    def remove(self, subject: str) -> bool:
        """Forget a subject and all its EIDs; False if it was not there."""
        if subject in self._expected:
            del self._expected[subject]
            self.removals += 1
            return True
        held = self._held.pop(subject, None)
        if held is None:
            return False
        self.removals += 1
        removed: list[bytes] = []
        self._drop(subject, held, removed)
        held.key = b""  # nothing of the key left in this object
        held.tks = None
        self._commit([], removed)
        return True

    def touch(self) -> int:
        """Bump the version with no EID change; returns it.

        For something served alongside the EIDs under the same version (the legacy static
        ids): deltas stay continuous, this version just adds no EID.
        """
        self.version += 1
        self._history.append(_Change(self.version, (), ()))
        return self.version

    def advance(self, now: float) -> bool:
        """Move on the subjects whose window changed by ``now``; True if the EID set changed."""
        heap = self._heap
        added: list[bytes] = []
        removed: list[bytes] = []
        while heap and heap[0] <= now:
            second = heapq.heappop(heap)
            for subject in self._due.pop(second, ()):
                held = self._held.get(subject)
                if held is None or held.due(self._skew) != second:
                    continue  # removed, re-keyed or already moved on
                self._place(subject, held, now, removed, added)
        return self._commit(added, removed)

    # ---- internals -------------------------------------------------------------------------

    def _place(
        self, subject: str, held: _Held, now: float, removed: list[bytes], added: list[bytes]
    ) -> None:
        """Bring ``held`` to the windows around ``now``, reusing the EIDs still in range."""
        span = self._span
        base = held.current(now) - self._skew
        shift = base - held.base
        by_eid = self._by_eid
        if held.eids and shift == 0:
            self._schedule(subject, held)
            return
        if held.eids and 0 < shift < span:
            kept = held.eids[shift:]
            gone = held.eids[:shift]
            new = held.compute(range(held.base + span, base + span))
        else:
            kept = ()
            gone = held.eids
            new = held.compute(range(base, base + span))
        for eid in gone:
            if by_eid.get(eid) == subject:
                del by_eid[eid]
        removed.extend(e for e in gone if e)
        for eid in new:
            if eid:
                by_eid[eid] = subject
        added.extend(e for e in new if e)
        self.eid_computations += len(new)
        held.base = base
        held.eids = (*kept, *new)
        self._schedule(subject, held)

    def _drop(self, subject: str, held: _Held, removed: list[bytes]) -> None:
        """Take the subject's EIDs out (into ``removed``) and its name out of the schedule,
        so nothing of a removed subject stays behind until its rotation time."""
        bucket = self._due.get(held.due(self._skew)) if held.eids else None
        if bucket is not None and subject in bucket:
            bucket.remove(subject)
        by_eid = self._by_eid
        for eid in held.eids:
            if by_eid.get(eid) == subject:
                del by_eid[eid]
        removed.extend(e for e in held.eids if e)
        held.eids = ()

    def _schedule(self, subject: str, held: _Held) -> None:
        second = held.due(self._skew)
        bucket = self._due.get(second)
        if bucket is None:
            self._due[second] = [subject]
            heapq.heappush(self._heap, second)
        else:
            bucket.append(subject)

    def _commit(self, added: list[bytes], removed: list[bytes], unlisted: int = 0) -> bool:
        """Bump the version for a change; ``unlisted`` counts EIDs added but not listed."""
        if not added and not removed and not unlisted:
            return False
        self.version += 1
        if unlisted + len(added) + len(removed) > MAX_DELTA_EIDS:
            # A bulk load or mass change: scanners behind it are better served by a full list.
            self._history.clear()
            return True
        fresh = set(added)
        self._history.append(
            _Change(self.version, tuple(added), tuple(e for e in removed if e not in fresh))
        )
        return True
