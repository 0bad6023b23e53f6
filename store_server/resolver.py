"""The EID resolver: which consenting customer broadcasts an EID, and the scanners' allowlist.

Pure module: no I/O; every time-dependent method takes the server time explicitly.

For each subject (a customer with an active consent at this store) the resolver holds the
EIDs of its current rotation window and ``skew_windows`` neighbours on each side, in a plain
dict EID -> slot (the subject's place in flat arrays of keys, clocks and held EIDs). A heap
of rotation times says when each subject's windows move on; :meth:`EidResolver.advance`
recomputes only those. Each change of the EID set bumps a
version and is kept as a delta for the scanners' allowlist (:meth:`changes_since`).

An EID is accepted at ``now`` only while its window is within ``skew_windows`` of the app's
current window; that check is exact even if :meth:`advance` runs late.

A chain's store server holds no identity key: its subjects come as temporary keys
(:class:`~store_server.tempkeys.TemporaryKeyRecord`, one key per 2**16 s slot of the app's
counter), and a window whose period's key it does not hold has no EID (all zero bytes in the
arrays: it resolves nothing, and is not listed).

Large start-ups compute the EIDs elsewhere (a reader thread or a worker process,
:func:`build_windows`) while the subjects are already known as *expected*
(:meth:`EidResolver.expect`): they count as consenting at once, and become resolvable when
:meth:`EidResolver.install` receives them.
"""

from __future__ import annotations

import heapq
import math
from array import array
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from store_server.eid import (
    EID_BYTES,
    IDENTITY_KEY_BYTES,
    TEMPORARY_KEY_SHIFT,
    IdentityError,
    IdentityRecord,
    window_eids,
)
from store_server.tempkeys import TemporaryKeyRecord, window_eids_from_keys

Record = IdentityRecord | TemporaryKeyRecord
"""A subject as the resolver takes it: an identity key, or temporary keys (chain mode)."""

_NO_EID = bytes(EID_BYTES)
"""A held window without an EID (its period's temporary key is not held): never resolved
nor listed (a real EID of eight zero bytes, one chance in 2**64, would go unrecognised)."""

DEFAULT_SKEW_WINDOWS = 1
"""Accept the current window and one on each side: tolerates clock drift and a beacon that
rolls over slightly before or after the server, while keeping forged-replay windows short."""

HISTORY_VERSIONS = 120
"""Deltas kept for the allowlist: two minutes of one-second advances, which covers a scanner's
30 s long poll plus a few retries; a scanner further behind gets a full list instead."""

_NO_IDENTITY = 0xFF
"""A slot's exponent while it holds no identity (expected or free): above any valid K."""

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

    Independent of any resolver: it runs in a reader thread or a worker process on a large
    start-up. Invalid records raise IdentityError.
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

    Each subject has a slot (a small integer, reused after a removal); what the resolver holds
    of it lives at that slot in flat arrays: its identity key, exponent, clock offset, first
    held window and held EIDs back to back. Only the EID dict, the subject dict and the
    subjects' names are Python objects per subject (about 300 bytes each at 100,000 customers
    where one object per field took twice that).
    """

    def __init__(self, skew_windows: int = DEFAULT_SKEW_WINDOWS) -> None:
        if isinstance(skew_windows, bool) or not isinstance(skew_windows, int):
            raise IdentityError("skew_windows must be an integer")
        if skew_windows < 0:
            raise IdentityError("skew_windows must be >= 0")
        self._skew = skew_windows
        self._span = 2 * skew_windows + 1
        self._stride = self._span * EID_BYTES
        self._by_eid: dict[bytes, int] = {}  # EID -> slot
        self._slots: dict[str, int] = {}  # subject (held or expected) -> slot
        self._names: list[str | None] = []  # slot -> subject (None: free)
        self._free: list[int] = []  # free slots, reused first
        self._expected = 0  # subjects whose EIDs are not installed yet
        # Per slot: identity key, exponent (_NO_IDENTITY: expected or free), clock offset,
        # first held window (unwrapped; EID j of the slot is window base + j), held EIDs.
        self._keys = bytearray()
        self._ks = bytearray()
        self._offsets = array("d")
        self._bases = array("q")
        self._eids = bytearray()
        # Chain mode: per slot, the subject's temporary keys by unwrapped period (no identity
        # key: its bytes in _keys stay zero).
        self._tks: dict[int, dict[int, bytes]] = {}
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
        return len(self._slots)

    def __contains__(self, subject: object) -> bool:
        return subject in self._slots

    def subjects(self) -> list[str]:
        """Every subject, resolvable or expected (a copy)."""
        return list(self._slots)

    def is_expected(self, subject: str) -> bool:
        """True if ``subject`` consents but its EIDs are not installed yet."""
        slot = self._slots.get(subject)
        return slot is not None and self._ks[slot] == _NO_IDENTITY

    @property
    def expected(self) -> int:
        """Subjects known to consent whose EIDs are not installed yet."""
        return self._expected

    # ---- queries ---------------------------------------------------------------------------

    def resolve(self, eid: bytes, now: float) -> str | None:
        """The subject broadcasting ``eid`` if it is accepted at ``now``, else None."""
        slot = self._by_eid.get(eid)
        if slot is None:
            return None
        if abs(self._current(slot, now) - self._window_of(slot, eid)) > self._skew:
            return None
        return self._names[slot]

    def entries(self, now: float) -> list[AllowlistItem]:
        """Every EID accepted at ``now`` with the server time at which it stops being accepted."""
        return list(self.iter_entries(now))

    def iter_entries(self, now: float) -> Iterator[AllowlistItem]:
        """:meth:`entries` one at a time (a full allowlist of a large store, encoded in parts).

        Do not change the resolver while iterating."""
        skew = self._skew
        eids = self._eids
        for slot in self._slots.values():
            if self._ks[slot] == _NO_IDENTITY:
                continue
            current = self._current(slot, now)
            at = slot * self._stride
            for j in range(self._span):
                window = self._bases[slot] + j
                if abs(current - window) <= skew:
                    eid = bytes(eids[at + j * EID_BYTES : at + (j + 1) * EID_BYTES])
                    if eid != _NO_EID:
                        yield AllowlistItem(eid, self._not_after(slot, window))

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
            slot = self._by_eid.get(eid)
            if slot is None:
                continue
            items.append(AllowlistItem(eid, self._not_after(slot, self._window_of(slot, eid))))
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
            subject = record.subject
            slot = self._slots.get(subject)
            if slot is None:
                slot = self._new_slot(subject)
            elif self._ks[slot] == _NO_IDENTITY:
                self._expected -= 1
            elif self._same_identity(slot, record):
                continue
            else:
                self._drop(self._names[slot] or subject, slot, removed)
            at = slot * IDENTITY_KEY_BYTES
            if isinstance(record, TemporaryKeyRecord):
                self._keys[at : at + IDENTITY_KEY_BYTES] = bytes(IDENTITY_KEY_BYTES)
                self._tks[slot] = record.by_slot()
            else:
                self._keys[at : at + IDENTITY_KEY_BYTES] = record.identity_key
                self._tks.pop(slot, None)
            self._ks[slot] = record.k
            self._offsets[slot] = float(record.clock_offset_s)
            self._place(slot, now, removed, added, fresh=True)
        self._commit(added, removed)

    def expect(self, subjects: Iterable[str]) -> None:
        """Count these subjects as consenting now; their EIDs come later through :meth:`install`.

        Subjects already held are left as they are.
        """
        slots = self._slots
        new = [s for s in subjects if s not in slots]
        # The arrays grow once for all of them (a start-up: 100,000 at once), not a step each.
        grow = len(new) - len(self._free)
        if grow > 0:
            top = len(self._names)
            self._names += [None] * grow
            self._keys += bytes(IDENTITY_KEY_BYTES * grow)
            self._ks += bytes([_NO_IDENTITY]) * grow
            self._offsets.frombytes(bytes(8 * grow))
            self._bases.frombytes(bytes(8 * grow))
            self._eids += bytes(self._stride * grow)
            self._free += range(top + grow - 1, top - 1, -1)  # popped from the end: in order
        for subject in new:
            if subject not in slots:  # not a repeat
                self._new_slot(subject)
                self._expected += 1

    def install(self, built: BuiltWindows, start: int = 0, stop: int | None = None) -> int:
        """Make the expected subjects of ``built`` (rows ``start..stop-1``) resolvable.

        Returns how many were installed. Subjects no longer expected (removed, or upserted
        with a fresher identity meanwhile) are skipped. Windows that moved on since
        ``built.now`` move at the next :meth:`advance`.
        """
        if built.skew != self._skew:
            raise IdentityError("windows built for another skew")
        span = self._span
        stride = self._stride
        slots = self._slots
        ks = self._ks
        by_eid = self._by_eid
        keys = memoryview(built.keys)
        eids = memoryview(built.eids)
        added: list[bytes] = []
        installed = 0
        for i in range(start, len(built) if stop is None else min(stop, len(built))):
            slot = slots.get(built.subjects[i])
            if slot is None or ks[slot] != _NO_IDENTITY:
                continue
            at = slot * IDENTITY_KEY_BYTES
            self._keys[at : at + IDENTITY_KEY_BYTES] = keys[
                i * IDENTITY_KEY_BYTES : (i + 1) * IDENTITY_KEY_BYTES
            ]
            ks[slot] = built.ks[i]
            self._offsets[slot] = built.offsets[i]
            self._bases[slot] = built.bases[i]
            at = slot * stride
            self._eids[at : at + stride] = eids[i * stride : (i + 1) * stride]
            for j in range(span):
                eid = built.eids[(i * span + j) * EID_BYTES : (i * span + j + 1) * EID_BYTES]
                by_eid[eid] = slot
                if len(added) <= MAX_DELTA_EIDS:
                    added.append(eid)
            self._schedule(slot)
            installed += 1
        self._expected -= installed
        self.eid_computations += installed * span
        self._commit(added, [], unlisted=installed * span - len(added))
        return installed

    def remove(self, subject: str) -> bool:
        """Forget a subject and all its EIDs; False if it was not there."""
        slot = self._slots.get(subject)
        if slot is None:
            return False
        self.removals += 1
        removed: list[bytes] = []
        if self._ks[slot] == _NO_IDENTITY:
            self._expected -= 1
        else:
            self._drop(self._names[slot] or subject, slot, removed)
        del self._slots[subject]
        # Nothing of the subject left in the slot: name, key, EIDs.
        self._names[slot] = None
        at = slot * IDENTITY_KEY_BYTES
        self._keys[at : at + IDENTITY_KEY_BYTES] = bytes(IDENTITY_KEY_BYTES)
        self._tks.pop(slot, None)
        self._ks[slot] = _NO_IDENTITY
        self._free.append(slot)
        if removed:
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
                slot = self._slots.get(subject)
                if slot is None or self._ks[slot] == _NO_IDENTITY or self._due_at(slot) != second:
                    continue  # removed, re-keyed or already moved on
                self._place(slot, now, removed, added)
        return self._commit(added, removed)

    # ---- internals -------------------------------------------------------------------------

    def _new_slot(self, subject: str) -> int:
        """Give a new subject a free or new slot, counted as having no identity yet."""
        if self._free:
            slot = self._free.pop()
        else:
            slot = len(self._names)
            self._names.append(None)
            self._keys += bytes(IDENTITY_KEY_BYTES)
            self._ks.append(_NO_IDENTITY)
            self._offsets.append(0.0)
            self._bases.append(0)
            self._eids += bytes(self._stride)
        self._names[slot] = subject
        self._slots[subject] = slot
        return slot

    def _same_identity(self, slot: int, record: Record) -> bool:
        if self._ks[slot] != record.k or self._offsets[slot] != record.clock_offset_s:
            return False
        if isinstance(record, TemporaryKeyRecord):
            return self._tks.get(slot) == record.by_slot()
        at = slot * IDENTITY_KEY_BYTES
        return slot not in self._tks and self._keys[at : at + IDENTITY_KEY_BYTES] == (
            record.identity_key
        )

    def _compute(self, slot: int, key: bytes, k: int, windows: range) -> list[bytes]:
        """The EIDs of ``windows``: from the identity key, or (chain mode) from the temporary
        keys held, _NO_EID where a period's key is not held."""
        tks = self._tks.get(slot)
        if tks is None:
            eids, _ = window_eids(key, k, windows)
            return eids
        first = (windows.start << k) >> TEMPORARY_KEY_SHIFT
        for period in [p for p in tks if p < first]:
            del tks[period]  # of no more use: dropped
        return [eid or _NO_EID for eid in window_eids_from_keys(tks, k, windows)]

    def _current(self, slot: int, now: float) -> int:
        """The app's current window at server time ``now``."""
        return math.floor(now + self._offsets[slot]) >> self._ks[slot]

    def _window_of(self, slot: int, eid: bytes) -> int:
        """The window of ``eid``, one of the slot's held EIDs."""
        at = slot * self._stride
        eids = self._eids
        for j in range(self._span):
            if eids[at + j * EID_BYTES : at + (j + 1) * EID_BYTES] == eid:
                return self._bases[slot] + j
        raise AssertionError("an EID in the dict is held by its slot")

    def _not_after(self, slot: int, window: int) -> float:
        """Server time at which window ``window`` stops being accepted."""
        return ((window + self._skew + 1) << self._ks[slot]) - self._offsets[slot]

    def _due_at(self, slot: int) -> int:
        """Whole server second (ceiling) at which the app leaves window ``base + skew``."""
        k = self._ks[slot]
        return math.ceil(((self._bases[slot] + self._skew + 1) << k) - self._offsets[slot])

    def _held_eids(self, slot: int, first: int = 0, stop: int | None = None) -> list[bytes]:
        at = slot * self._stride
        eids = self._eids
        return [
            bytes(eids[at + j * EID_BYTES : at + (j + 1) * EID_BYTES])
            for j in range(first, self._span if stop is None else stop)
        ]

    def _place(
        self, slot: int, now: float, removed: list[bytes], added: list[bytes], fresh: bool = False
    ) -> None:
        """Bring the slot to the windows around ``now``, reusing the EIDs still in range;
        ``fresh``: it holds no EID yet (a new or re-keyed identity)."""
        span = self._span
        base = self._current(slot, now) - self._skew
        held = self._bases[slot]
        shift = base - held
        by_eid = self._by_eid
        at = slot * IDENTITY_KEY_BYTES
        key = bytes(self._keys[at : at + IDENTITY_KEY_BYTES])
        k = self._ks[slot]
        if not fresh and shift == 0:
            self._schedule(slot)
            return
        if not fresh and 0 < shift < span:
            gone = self._held_eids(slot, 0, shift)
            kept = self._held_eids(slot, shift)
            new = self._compute(slot, key, k, range(held + span, base + span))
        else:
            gone = [] if fresh else self._held_eids(slot)
            kept = []
            new = self._compute(slot, key, k, range(base, base + span))
        for eid in gone:
            if by_eid.get(eid) == slot:
                del by_eid[eid]
        removed.extend(eid for eid in gone if eid != _NO_EID)
        for eid in new:
            if eid != _NO_EID:
                by_eid[eid] = slot
                added.append(eid)
        self.eid_computations += len(new)
        self._bases[slot] = base
        at = slot * self._stride
        self._eids[at : at + self._stride] = b"".join([*kept, *new])
        self._schedule(slot)

    def _drop(self, subject: str, slot: int, removed: list[bytes]) -> None:
        """Take the slot's EIDs out (into ``removed``) and its subject out of the schedule,
        so nothing of a removed subject stays behind until its rotation time."""
        bucket = self._due.get(self._due_at(slot))
        if bucket is not None and subject in bucket:
            bucket.remove(subject)
        by_eid = self._by_eid
        gone = self._held_eids(slot)
        for eid in gone:
            if by_eid.get(eid) == slot:
                del by_eid[eid]
        removed.extend(eid for eid in gone if eid != _NO_EID)
        at = slot * self._stride
        self._eids[at : at + self._stride] = bytes(self._stride)

    def _schedule(self, slot: int) -> None:
        subject = self._names[slot]
        assert subject is not None
        second = self._due_at(slot)
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
