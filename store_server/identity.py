"""Rotating identities: Eddystone-EID computation and the server-side EID resolver.

Pure module: no I/O, and every time-dependent function takes the server time explicitly.
The only randomness is :func:`new_identity_key`.

Eddystone-EID (``eid-computation.md`` of the Eddystone specification):

* temporary key ``TK = AES-128-ECB(IK, 0x00*11 | 0xFF | 0x00 0x00 | (T >> 16) as BE16)``;
* ``EID = AES-128-ECB(TK, 0x00*11 | K | (T with its K low bits cleared) as BE32)[:8]``;

where ``T`` is the beacon's 32-bit seconds counter and ``K`` the rotation exponent. The app's
counter differs from the server clock by an offset recorded at enrollment
(``clock_offset_s = app_counter - server_now``).

Window arithmetic inside the resolver uses *unwrapped* window indices
``j = floor(server_now + clock_offset_s) >> K`` (Python integers, never wrapped) and only
reduces to the 32-bit counter (``(j << K) mod 2**32``) when computing the EID, so the
counter's wrap-around after 2**32 s needs no special case.
"""

from __future__ import annotations

import functools
import heapq
import logging
import math
import secrets
import struct
from array import array
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import cast

import numpy as np
import numpy.typing as npt

from store_server import aes_lanes
from store_server.aes import derived as _aes_derived
from store_server.aes import ecb as _aes_ecb

logger = logging.getLogger(__name__)

IDENTITY_KEY_BYTES = 16
"""AES-128 identity key length fixed by the Eddystone-EID specification."""

EID_BYTES = 8
"""The EID is the leading 64 bits of the AES output (specification)."""

MAX_ROTATION_EXPONENT = 15
"""The specification limits K to 0..15 (rotation every 1 s to about 9 h)."""

DEFAULT_ROTATION_EXPONENT = 9
"""New ID every 512 s: short enough that a passer-by cannot be followed across visits or
across the day, long enough that a scanner's allowlist changes only a few times an hour."""

COUNTER_MODULUS = 2**32
"""The beacon time counter is a 32-bit seconds counter (specification)."""

TEMPORARY_KEY_SHIFT = 16
"""The temporary key depends on the top 16 bits of the counter: it changes every 65,536 s."""

DEFAULT_SKEW_WINDOWS = 1
"""Accept the current window and one on each side: tolerates clock drift and a beacon that
rolls over slightly before or after the server, while keeping forged-replay windows short."""

HISTORY_VERSIONS = 120
"""Deltas kept for the allowlist: two minutes of one-second advances, which covers a scanner's
30 s long poll plus a few retries; a scanner further behind gets a full list instead."""

TEMPORARY_KEY_CACHE_SIZE = 4096
"""Bound of the temporary-key cache used by the standalone compute_eid (the resolver keeps
each subject's temporary key in its own state instead)."""

_TK_BLOCK = struct.Struct(">11xB2xH")
"""Temporary-key input block: 11 zero bytes, salt 0xFF, 2 zero bytes, BE16 top of counter."""

_TK_SALT = 0xFF
"""Salt byte of the temporary-key input block (specification)."""

_EID_BLOCK = struct.Struct(">11xBI")
"""EID input block: 11 zero bytes, K, BE32 counter with its K low bits cleared."""

_EID_BLOCKS_3 = struct.Struct(">" + "11xBI" * 3)
"""Three consecutive EID input blocks (the default span: skew 1) packed in one call."""

_COUNTER_MASK = COUNTER_MODULUS - 1
"""Reduces an unwrapped counter value to the app's 32-bit counter."""

_AES_BLOCK_BYTES = 16
"""AES block size: each EID input block yields one 16-byte output block."""

MAX_CLOCK_OFFSET_S = 2.0**34
"""Largest accepted |app counter - server time|: the counter is 32-bit and server time stays
below 2**34 s until the year 2514, so any larger offset is corrupt input."""

LANES_MIN_RECORDS = 256
"""From this many records a bulk build computes EIDs column-wise (numpy): below it, numpy's
per-call overhead costs more than one OpenSSL key setup per record."""

BUILD_CHUNK = 1 << 17
"""Records whose EIDs a bulk build computes and appends per pass: the whole-column
temporaries of a pass (about 100 bytes a record, plus the result's copy) stay ~15 MB."""

LANES_CHUNK = 32_768
"""Records per column-wise chunk: keeps the ~60 intermediate columns (round keys, state) in
a few MB, near the CPU caches, and the peak memory of a million-record build small."""

_EXACT_CLOCK = 2.0**52
"""Beyond this many seconds, ``now + offset`` is no longer exact to the second in float64 on
the column-wise path (apps' counters are 32-bit, so this is only ever hostile input)."""

MAX_DELTA_EIDS = 100_000
"""A change touching more EIDs than this (bulk load, mass re-key) is not kept as a delta:
a full list is cheaper for scanners than a huge delta, and history memory stays bounded."""


class IdentityError(ValueError):
    """Invalid identity input (key length, rotation exponent, counter range, record)."""


@dataclass(frozen=True, slots=True)
class IdentityRecord:
    """What the resolver needs about one enrolled app. ``subject`` is an opaque customer id."""

    subject: str
    identity_key: bytes = field(repr=False)
    k: int
    clock_offset_s: float


@dataclass(frozen=True, slots=True)
class IdentityColumns:
    """Many identities as columns: the bulk-load form (no object per identity).

    ``keys`` holds the 16-byte identity keys back to back, in the order of ``subjects``;
    ``ks`` the rotation exponents and ``offsets`` the clock offsets, one per subject.
    """

    subjects: list[str]
    keys: bytes | bytearray = field(repr=False)
    ks: array[int]
    offsets: array[float]

    def __len__(self) -> int:
        return len(self.subjects)

    @classmethod
    def of(cls, records: Iterable[IdentityRecord]) -> IdentityColumns:
        """The columns of ``records``, each validated (IdentityError names the problem).

        An iterator is never materialised: each record is read once and may be dropped.
        """
        subjects: list[str] = []
        keys = bytearray()
        ks = array("B")
        offsets = array("d")
        put_subject = subjects.append
        put_k = ks.append
        put_offset = offsets.append
        for record in records:
            key = record.identity_key
            subject = record.subject
            k = record.k
            offset = record.clock_offset_s
            if not (
                type(key) is bytes
                and len(key) == IDENTITY_KEY_BYTES
                and type(k) is int
                and 0 <= k <= MAX_ROTATION_EXPONENT
                and type(subject) is str
                and subject
                and (type(offset) is float or type(offset) is int)
                and -MAX_CLOCK_OFFSET_S <= offset <= MAX_CLOCK_OFFSET_S
            ):
                _check_record(record)  # the slow checks, which name the problem
            put_subject(subject)
            keys += key
            put_k(k)
            put_offset(offset)
        return cls(subjects, keys, ks, offsets)

    def slice(self, start: int, stop: int) -> IdentityColumns:
        """Rows ``start..stop-1`` (e.g. a worker process's chunk of a bulk build)."""
        return IdentityColumns(
            self.subjects[start:stop],
            self.keys[start * IDENTITY_KEY_BYTES : stop * IDENTITY_KEY_BYTES],
            self.ks[start:stop],
            self.offsets[start:stop],
        )

    def window_eids(self, now: float, skew: int) -> WindowEids:
        """:func:`window_eids` of these rows (checked first)."""
        self.check()
        return _window_eids_columns(self.keys, self.ks, self.offsets, now, skew)

    def check(self) -> None:
        """IdentityError naming the first bad row, if any (column-wise: C speed)."""
        count = len(self.subjects)
        if not isinstance(self.ks, array) or self.ks.typecode != "B" or len(self.ks) != count:
            raise IdentityError("ks must be an array('B') with one exponent per subject")
        if (
            not isinstance(self.offsets, array)
            or self.offsets.typecode != "d"
            or len(self.offsets) != count
        ):
            raise IdentityError("offsets must be an array('d') with one offset per subject")
        if not isinstance(self.keys, bytes | bytearray) or len(self.keys) != (
            count * IDENTITY_KEY_BYTES
        ):
            raise IdentityError("keys must be 16 bytes per subject")
        if count == 0:
            return
        if set(map(type, self.subjects)) != {str} or not all(self.subjects):
            bad = next(i for i, s in enumerate(self.subjects) if type(s) is not str or not s)
            raise IdentityError(f"row {bad}: subject must be a non-empty string")
        if max(self.ks) > MAX_ROTATION_EXPONENT:
            bad = next(i for i, k in enumerate(self.ks) if k > MAX_ROTATION_EXPONENT)
            raise IdentityError(f"row {bad}: rotation exponent must be an integer in 0..15")
        offsets = np.frombuffer(self.offsets, dtype=np.float64)
        ok = np.abs(offsets) <= MAX_CLOCK_OFFSET_S  # False for NaN too
        if not ok.all():
            bad = int(np.flatnonzero(~ok)[0])
            raise IdentityError(f"row {bad}: clock offset must be finite and within ±2**34 s")


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


# --------------------------------------------------------------------------------------------
# EID computation


def _check_key(identity_key: bytes) -> None:
    if not isinstance(identity_key, bytes) or len(identity_key) != IDENTITY_KEY_BYTES:
        raise IdentityError("identity key must be 16 bytes")


def _check_k(k: int) -> None:
    if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k <= MAX_ROTATION_EXPONENT:
        raise IdentityError("rotation exponent must be an integer in 0..15")


def temporary_key_block(beacon_time: int) -> bytes:
    """The 16-byte block encrypted with the identity key to get the temporary key."""
    return _TK_BLOCK.pack(_TK_SALT, beacon_time >> TEMPORARY_KEY_SHIFT)


def eid_block(k: int, beacon_time: int) -> bytes:
    """The 16-byte block encrypted with the temporary key to get the EID."""
    return _EID_BLOCK.pack(k, window_start(beacon_time, k))


@functools.lru_cache(maxsize=TEMPORARY_KEY_CACHE_SIZE)
def _temporary_key(identity_key: bytes, tk_slot: int) -> bytes:
    return _aes_ecb(identity_key, _TK_BLOCK.pack(_TK_SALT, tk_slot))


def temporary_key(identity_key: bytes, beacon_time: int) -> bytes:
    """The temporary key for a counter value (cached per identity key and ``T >> 16``)."""
    _check_key(identity_key)
    _check_counter(beacon_time)
    return _temporary_key(identity_key, beacon_time >> TEMPORARY_KEY_SHIFT)


def _check_counter(beacon_time: int) -> None:
    if (
        isinstance(beacon_time, bool)
        or not isinstance(beacon_time, int)
        or not 0 <= beacon_time < COUNTER_MODULUS
    ):
        raise IdentityError("beacon time must be an integer in 0..2**32-1")


def compute_eid(identity_key: bytes, k: int, beacon_time: int) -> bytes:
    """The 8-byte Eddystone-EID broadcast at counter value ``beacon_time`` with exponent ``k``."""
    _check_key(identity_key)
    _check_k(k)
    _check_counter(beacon_time)
    tk = _temporary_key(identity_key, beacon_time >> TEMPORARY_KEY_SHIFT)
    return _aes_ecb(tk, eid_block(k, beacon_time))[:EID_BYTES]


def new_identity_key() -> bytes:
    """A fresh random 128-bit identity key (the module's only randomness)."""
    return secrets.token_bytes(IDENTITY_KEY_BYTES)


# --------------------------------------------------------------------------------------------
# Time


def clock_offset(app_counter: int, server_now: float) -> float:
    """The offset recorded at enrollment: ``app_counter - server_now``."""
    _check_counter(app_counter)
    return app_counter - server_now


def beacon_time(server_now: float, clock_offset_s: float) -> int:
    """The app's 32-bit seconds counter at server time ``server_now``."""
    return math.floor(server_now + clock_offset_s) % COUNTER_MODULUS


def window_start(beacon_time: int, k: int) -> int:
    """The counter value that starts the rotation window holding ``beacon_time``."""
    return beacon_time & ~((1 << k) - 1)


def window_index(server_now: float, k: int, clock_offset_s: float) -> int:
    """Unwrapped index of the rotation window current at ``server_now`` (not reduced mod 2**32)."""
    return math.floor(server_now + clock_offset_s) >> k


def window_bounds_server_time(window: int, k: int, clock_offset_s: float) -> tuple[float, float]:
    """Server-time ``[start, end)`` of unwrapped window ``window`` of an app."""
    return (window << k) - clock_offset_s, ((window + 1) << k) - clock_offset_s


def eid_at(record: IdentityRecord, server_now: float) -> bytes:
    """The EID the app of ``record`` broadcasts at ``server_now`` (for simulators and tests)."""
    return compute_eid(
        record.identity_key, record.k, beacon_time(server_now, record.clock_offset_s)
    )


def _check_record(record: IdentityRecord) -> None:
    _check_key(record.identity_key)
    _check_k(record.k)
    if not isinstance(record.subject, str) or not record.subject:
        raise IdentityError("subject must be a non-empty string")
    offset = record.clock_offset_s
    if isinstance(offset, bool) or not isinstance(offset, int | float):
        raise IdentityError("clock offset must be a number")
    if not abs(offset) <= MAX_CLOCK_OFFSET_S:  # NaN fails too
        raise IdentityError("clock offset must be finite and within ±2**34 s")


# --------------------------------------------------------------------------------------------
# Resolver


_NO_BASE = -(2**62)
"""Sentinel base window of a free slot (no EIDs); far below any real window index."""

_EMPTY = 0
"""A free cell of the EID table (cells hold EID positions plus one)."""

_MAX_LOAD = 0.5
"""Highest fill of the EID table before it doubles: linear probing then needs about 1.5
probes for a hit and 2.5 for a miss, at 4 bytes per cell (8 bytes per EID held)."""

PLACE_CHUNK = 1 << 18
"""EID positions placed in the table per column-wise pass: the pass's index and probe
columns (about 40 bytes a position) stay ~10 MB, where a million-subject load placing its
3 million EIDs at once held ~120 MB of them."""

_MIN_CELLS = 64
"""Smallest EID table: a few hundred bytes."""

_PROBE_WINDOW = 8
"""resolve_many reads this many cells after the home cell at once for the keys whose home
cell holds another EID; only keys in longer clusters are probed further, in Python."""
_PROBE_STEPS = np.arange(1, _PROBE_WINDOW + 1, dtype=np.intp)


class _EidTable:
    """Open-addressing hash table (linear probing) from EID to its position in ``eids``.

    A cell holds ``position + 1`` of an EID in the resolver's flat ``eids`` array (0: free)
    and the key is read back from that array: 4 bytes per cell and no Python object per EID,
    where a dict would hold a 64-bit ``int`` key (40 bytes) plus a 24-byte entry. EIDs are
    AES outputs, uniformly distributed, so their low bits are the hash. Deletion shifts the
    rest of the cluster back (no tombstones, so the table never needs a clean-up pass).
    Invariant: while a position is in the table, ``eids[position]`` is not modified.
    """

    __slots__ = ("_cells", "_eids", "_mask", "_used")

    def __init__(self, eids: array[int]) -> None:
        self._eids = eids
        self._cells = array("I", bytes(4 * _MIN_CELLS))
        self._mask = _MIN_CELLS - 1
        self._used = 0

    def __len__(self) -> int:
        return self._used

    def find(self, eid: int) -> int:
        """Position of ``eid`` in ``eids``, or -1."""
        cells = self._cells
        eids = self._eids
        mask = self._mask
        i = eid & mask
        while True:
            cell = cells[i]
            if cell == _EMPTY:
                return -1
            if eids[cell - 1] == eid:
                return cell - 1
            i = (i + 1) & mask

    def reserve(self, count: int) -> None:
        """Make room for ``count`` more positions without growing while they are added."""
        need = self._used + count
        size = len(self._cells)
        if need <= size * _MAX_LOAD:
            return
        while need > size * _MAX_LOAD:
            size *= 2
        self._rehash(size)

    def add(self, position: int) -> None:
        """Insert ``position`` (its EID is ``eids[position]``, which must not be held yet)."""
        if self._used + 1 > len(self._cells) * _MAX_LOAD:
            self._rehash(len(self._cells) * 2)
        cells = self._cells
        mask = self._mask
        i = self._eids[position] & mask
        while cells[i] != _EMPTY:
            i = (i + 1) & mask
        cells[i] = position + 1
        self._used += 1

    def add_range(self, start: int, stop: int) -> None:
        """Insert positions ``start..stop-1`` (the bulk load)."""
        self.reserve(stop - start)
        if stop - start >= LANES_MIN_RECORDS:
            for chunk in range(start, stop, PLACE_CHUNK):
                end = min(chunk + PLACE_CHUNK, stop)
                self._place_many(np.arange(chunk + 1, end + 1, dtype=np.uint32), self._used == 0)
                self._used += end - chunk
            return
        cells = self._cells
        mask = self._mask
        eids = self._eids
        for position in range(start, stop):
            i = eids[position] & mask
            while cells[i]:
                i = (i + 1) & mask
            cells[i] = position + 1
        self._used += stop - start

    def remove(self, position: int) -> bool:
        """Delete ``position`` (looked up by ``eids[position]``); False if it is not held."""
        cells = self._cells
        eids = self._eids
        mask = self._mask
        wanted = position + 1
        i = eids[position] & mask
        while True:
            cell = cells[i]
            if cell == _EMPTY:
                return False
            if cell == wanted:
                break
            i = (i + 1) & mask
        # Backward-shift deletion: move later members of the cluster whose home is not in
        # (hole, their cell] into the hole, until a free cell ends the cluster.
        j = i
        while True:
            j = (j + 1) & mask
            cell = cells[j]
            if cell == _EMPTY:
                break
            home = eids[cell - 1] & mask
            if (j - home) & mask >= (j - i) & mask:
                cells[i] = cell
                i = j
        cells[i] = _EMPTY
        self._used -= 1
        return True

    def _place_many(self, held: npt.NDArray[np.uint32], empty: bool) -> None:
        """Put cell values ``held`` (positions + 1, not in the table) into free cells, column-wise.

        Linear probing in rounds: every pending value looks at its current cell; among those
        that find it free, one per cell takes it (a scatter, then a read-back tells which);
        all the others step to the next cell. A value only ever steps past occupied cells, so
        the table ends exactly as if the values had been inserted one by one in some order,
        and :meth:`find` and :meth:`remove` hold. Rounds: the longest probe sequence (a few
        dozen at half load); work: the total probe length.
        """
        cells = np.frombuffer(self._cells, dtype=np.uint32)  # a writable view, not a copy
        keys = np.frombuffer(self._eids, dtype=np.uint64)
        mask = np.uint64(self._mask)
        cell = (keys[held.astype(np.int64) - 1] & mask).astype(np.int64)
        pending = held
        while pending.size:
            # In an empty table (``empty``), the first round need not look: all cells are free.
            free = np.ones(pending.size, dtype=bool) if empty else cells[cell] == _EMPTY
            empty = False
            trying = cell[free]
            values = pending[free]
            cells[trying] = values
            won = cells[trying] == values
            keep = np.ones(pending.size, dtype=bool)
            keep[np.flatnonzero(free)[won]] = False
            pending = pending[keep]
            cell = (cell[keep] + 1) & self._mask

    def _rehash(self, size: int) -> None:
        old = self._cells
        self._cells = cells = array("I", bytes(4 * size))
        self._mask = mask = size - 1
        if self._used >= LANES_MIN_RECORDS:
            held = np.frombuffer(old, dtype=np.uint32)
            empty = True
            for chunk in range(0, len(held), PLACE_CHUNK):
                part = held[chunk : chunk + PLACE_CHUNK]
                self._place_many(part[part != _EMPTY], empty)
                empty = False
            return
        eids = self._eids
        for cell in old:
            if cell:
                i = eids[cell - 1] & mask
                while cells[i]:
                    i = (i + 1) & mask
                cells[i] = cell


@dataclass(frozen=True, slots=True)
class _Change:
    """One version's change of the EID set, as 64-bit EID integers (no per-item objects)."""

    version: int
    added: tuple[int, ...]
    removed: tuple[int, ...]


def _eid_bytes(eid: int) -> bytes:
    return eid.to_bytes(EID_BYTES, "big")


class EidResolver:
    """EID -> subject table for every identity added, with a versioned allowlist.

    Holds, for each subject, the EIDs of its current rotation window and ``skew_windows``
    neighbours on each side. Callers add only customers with an active consent at this store,
    call :meth:`advance` regularly (every second is plenty) and resolve sightings with
    :meth:`resolve`, which is one probe sequence in a flat hash table plus integer
    arithmetic: no cryptography.
    An EID is accepted at ``now`` only while its window is within ``skew_windows`` of the
    app's current window, i.e. in server time ``[not_before, not_after)`` with
    ``not_before = start of window (j - skew)`` and ``not_after = end of window (j + skew)``;
    that check is exact even if :meth:`advance` runs late.

    Layout (sized for a million subjects): each subject has an integer slot; its subject
    string, identity key (16 bytes in one ``bytearray``), rotation exponent (``array('B')``),
    clock offset (``array('d')``), first held window (``base``) and EIDs live in parallel
    lists/arrays indexed by slot, so there is no per-subject Python object besides the
    subject string: the :class:`IdentityRecord` given to :meth:`upsert_many` is not kept.
    EIDs are 64-bit integers in one ``array('Q')``: the EID of window ``j`` of slot ``s`` sits
    at position ``s * span + j % span`` (``span = 2*skew + 1``), so a position gives both the
    subject and the window without storing them. The EID -> position index is an
    :class:`_EidTable` (4-byte cells, no Python object per EID).
    """

    def __init__(self, skew_windows: int = DEFAULT_SKEW_WINDOWS) -> None:
        if isinstance(skew_windows, bool) or not isinstance(skew_windows, int):
            raise IdentityError("skew_windows must be an integer")
        if skew_windows < 0:
            raise IdentityError("skew_windows must be >= 0")
        self._skew = skew_windows
        self._span = 2 * skew_windows + 1
        self._subjects: list[str | None] = []  # None: a free slot
        self._keys = bytearray()  # IDENTITY_KEY_BYTES per slot
        self._ks = array("B")
        self._offsets = array("d")
        self._bases = array("q")
        self._eids = array("Q")
        self._table = _EidTable(self._eids)  # reads the EIDs from self._eids
        self._slot_of: dict[str, int] = {}
        self._free: list[int] = []
        # Slots due for recomputation, bucketed by the whole second (ceiling) at which their
        # window changes; the heap orders the bucket keys. Stale entries are skipped lazily.
        # Buckets are array('q'): 8 bytes a slot, no int object per entry (~30 MB at 1M).
        self._buckets: dict[int, array[int]] = {}
        self._bucket_heap: list[int] = []
        self._history: deque[_Change] = deque(maxlen=HISTORY_VERSIONS)
        self.version = 0
        self.removals = 0
        """Number of subjects removed so far: names taken from the resolver before an await are
        all still held if it has not moved since (callers skip re-checking them one by one)."""
        self.eid_computations = 0
        """Number of EIDs computed so far (observability; lets tests check incrementality)."""

    @property
    def skew_windows(self) -> int:
        return self._skew

    def __len__(self) -> int:
        return len(self._slot_of)

    def __contains__(self, subject: object) -> bool:
        return subject in self._slot_of

    def subjects(self) -> list[str]:
        """The subjects currently resolvable (a copy: safe to mutate the resolver after)."""
        return list(self._slot_of)

    # ---- queries ---------------------------------------------------------------------------

    def _find(self, key: int) -> tuple[int, int] | None:
        """(slot, window) of a held EID, or None."""
        position = self._table.find(key)
        if position < 0:
            return None
        slot, residue = divmod(position, self._span)
        base = self._bases[slot]
        return slot, base + (residue - base) % self._span

    def resolve(self, eid: bytes, now: float) -> str | None:
        """The subject broadcasting ``eid`` if it is accepted at ``now``, else None."""
        if len(eid) != EID_BYTES:
            return None
        return self.resolve_int(int.from_bytes(eid, "big"), now)

    def resolve_int(self, key: int, now: float) -> str | None:
        """:meth:`resolve` of an EID given as its big-endian integer (no bytes object).

        Any other integer (negative, 2**64 or more) is simply not found.
        """
        # The hot path: _EidTable.find inlined.
        table = self._table
        cells = table._cells
        eids = self._eids
        mask = table._mask
        i = key & mask
        while True:
            cell = cells[i]
            if cell == _EMPTY:
                return None
            if eids[cell - 1] == key:
                break
            i = (i + 1) & mask
        slot, residue = divmod(cell - 1, self._span)
        base = self._bases[slot]
        window = base + (residue - base) % self._span
        current = math.floor(now + self._offsets[slot]) >> self._ks[slot]
        if abs(current - window) > self._skew:
            return None
        return self._subjects[slot]

    def entries(self, now: float) -> list[AllowlistItem]:
        """Every EID accepted at ``now`` with the server time at which it stops being accepted."""
        skew = self._skew
        span = self._span
        eids = self._eids
        bases = self._bases
        ks = self._ks
        offsets = self._offsets
        items: list[AllowlistItem] = []
        append = items.append
        for slot in self._slot_of.values():
            k = ks[slot]
            offset = offsets[slot]
            current = math.floor(now + offset) >> k
            base = bases[slot]
            for window in range(base, base + span):
                if abs(current - window) <= skew:
                    eid = eids[slot * span + window % span]
                    append(AllowlistItem(_eid_bytes(eid), ((window + skew + 1) << k) - offset))
        return items

    def changes_since(self, version: int) -> AllowlistDelta | None:
        """Merged changes after ``version``; None if they are no longer kept (send a full list).

        ``added`` holds the EIDs added since ``version`` that are still in the table (with
        their current ``not_after``); ``removed`` every EID dropped since then and not re-added.
        """
        if version == self.version:
            return AllowlistDelta(self.version, (), ())
        if version > self.version or version < 0:
            return None
        if not self._history or self._history[0].version > version + 1:
            return None
        added: dict[int, None] = {}
        removed: dict[int, None] = {}
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
        skew = self._skew
        for eid in added:
            found = self._find(eid)
            if found is None:
                continue
            slot, window = found
            items.append(
                AllowlistItem(
                    _eid_bytes(eid), ((window + skew + 1) << self._ks[slot]) - self._offsets[slot]
                )
            )
        return AllowlistDelta(self.version, tuple(items), tuple(map(_eid_bytes, removed)))

    # ---- changes ---------------------------------------------------------------------------

    def upsert(self, record: IdentityRecord, now: float) -> None:
        """Add a subject, or re-key it (its previous EIDs stop resolving at once)."""
        self.upsert_many((record,), now)

    def upsert_many(
        self,
        records: Iterable[IdentityRecord],
        now: float,
        *,
        computed: WindowEids | None = None,
    ) -> None:
        """Add or re-key many subjects as one change (one version bump): the bulk-load path.

        Every record is validated before anything changes. ``computed`` may carry
        ``window_eids(records, now, skew)`` made beforehand (e.g. by worker processes); it is
        used when every record is new to the resolver, and ignored otherwise.
        """
        columns = IdentityColumns.of(records)  # validated: no need for check()
        self._upsert_columns(
            columns.subjects, columns.keys, columns.ks, columns.offsets, now, computed
        )

    def upsert_columns(
        self, columns: IdentityColumns, now: float, *, computed: WindowEids | None = None
    ) -> None:
        """:meth:`upsert_many` for identities given as columns (validated column-wise).

        The fast bulk load: no Python object per identity is made or read.
        """
        columns.check()
        self._upsert_columns(
            columns.subjects, columns.keys, columns.ks, columns.offsets, now, computed
        )

    def _upsert_columns(
        self,
        subjects: list[str],
        keys: bytes | bytearray,
        ks: array[int],
        offsets: array[float],
        now: float,
        computed: WindowEids | None,
    ) -> None:
        count = len(subjects)
        added: list[int] = []
        removed: list[int] = []
        slot_of = self._slot_of
        first = len(self._subjects)
        fresh: list[int] = []  # batch positions of the new subjects
        fresh_slots: list[int] = []
        slots: Sequence[int] = []
        again: list[int] = []  # batch positions of subjects held already
        reused: list[int] = []
        index = (
            None if self._free else dict(zip(subjects, range(first, first + count), strict=True))
        )
        if index is not None and len(index) == count and slot_of.keys().isdisjoint(index):
            # All new and distinct (the bulk load): index them in C, no per-record loop.
            if slot_of:
                slot_of.update(index)
            else:
                self._slot_of = slot_of = index
            del index
            slots = range(first, first + count)  # no int object per slot
            if count * self._span > MAX_DELTA_EIDS:
                # Grown by insertion, the subject index sits in a table up to 4x its size:
                # a copy is sized for its entries (about -40 MB at 1M subjects). Made before
                # the build, so the two copies are not alive at the build's peak.
                self._slot_of = slot_of = dict(slot_of)
            self._build(subjects, keys, ks, offsets, slots, now, computed)
        else:
            del index
            for i, subject in enumerate(subjects):
                if subject in slot_of:
                    again.append(i)  # held already, or twice in this batch: re-key after
                elif self._free:
                    slot = self._free.pop()  # reuse a removed subject's slot
                    self._store(slot, subject, keys, ks, offsets, i)
                    slot_of[subject] = slot
                    reused.append(slot)
                else:
                    slot = first + len(fresh)
                    slot_of[subject] = slot
                    fresh_slots.append(slot)
                    fresh.append(i)
            slots = fresh_slots
            if fresh:
                self._build(
                    [subjects[i] for i in fresh],
                    bytearray().join(
                        keys[i * IDENTITY_KEY_BYTES : (i + 1) * IDENTITY_KEY_BYTES] for i in fresh
                    ),
                    array("B", [ks[i] for i in fresh]),
                    array("d", [offsets[i] for i in fresh]),
                    slots,
                    now,
                    None,
                )
        bulk = 0
        if slots:
            if len(slots) * self._span > MAX_DELTA_EIDS:
                bulk = len(slots) * self._span  # no delta will be kept: skip listing EIDs
                if fresh:  # the bulk path above made its copy already
                    self._slot_of = slot_of = dict(slot_of)
            else:
                added.extend(self._eids[first * self._span :])
        for slot in reused:
            self._place(slot, now, removed, added)
        for i in again:
            slot = slot_of[subjects[i]]
            at = i * IDENTITY_KEY_BYTES
            held = slot * IDENTITY_KEY_BYTES
            if (
                self._keys[held : held + IDENTITY_KEY_BYTES] == keys[at : at + IDENTITY_KEY_BYTES]
                and self._ks[slot] == ks[i]
                and self._offsets[slot] == offsets[i]
            ):
                continue
            self._drop(slot, removed)
            self._store(slot, subjects[i], keys, ks, offsets, i)
            self._place(slot, now, removed, added)
        self._commit(added, removed, bulk)

    def remove(self, subject: str) -> bool:
        """Forget a subject and all its EIDs; False if it was not there."""
        slot = self._slot_of.pop(subject, None)
        if slot is None:
            return False
        self.removals += 1
        removed: list[int] = []
        self._drop(slot, removed)
        self._subjects[slot] = None
        at = slot * IDENTITY_KEY_BYTES
        self._keys[at : at + IDENTITY_KEY_BYTES] = bytes(IDENTITY_KEY_BYTES)  # no key left over
        self._free.append(slot)
        self._commit([], removed)
        return True

    def touch(self) -> int:
        """Bump the version with no EID change; returns it.

        For something served alongside the EIDs under the same version (the legacy static
        ids of the service): deltas stay continuous, this version just adds no EID.
        """
        self.version += 1
        self._history.append(_Change(self.version, (), ()))
        return self.version

    def advance(self, now: float) -> bool:
        """Recompute the subjects whose window changed by ``now``; True if the EID set changed."""
        heap = self._bucket_heap
        subjects = self._subjects
        bases = self._bases
        ks = self._ks
        offsets = self._offsets
        skew = self._skew
        added: list[int] = []
        removed: list[int] = []
        due: list[int] = []
        while heap and heap[0] <= now:
            key = heapq.heappop(heap)
            for slot in self._buckets.pop(key, ()):
                if subjects[slot] is None:
                    continue  # removed since it was scheduled
                if _due(bases[slot], skew, ks[slot], offsets[slot]) != key:
                    continue  # re-keyed or already rescheduled under another key
                due.append(slot)
        if len(due) >= LANES_MIN_RECORDS:
            self._place_slots(due, now, removed, added)
        else:
            for slot in due:
                self._place(slot, now, removed, added)
        return self._commit(added, removed)

    # ---- internals -------------------------------------------------------------------------

    def _build(
        self,
        subjects: list[str],
        keys: bytes | bytearray,
        ks: array[int],
        offsets: array[float],
        slots: Sequence[int],
        now: float,
        computed: WindowEids | None,
    ) -> None:
        """Bulk path for subjects not yet held: new slots at the end, tables filled at once.

        ``slots`` are the new slots (``len(self._subjects)`` onwards), already in
        ``_slot_of``; the other arguments are the subjects' columns. The AES work is
        :func:`window_eids` (or ``computed``, its result made elsewhere, e.g. in worker
        processes); the rest appends to flat arrays and indexes the new positions.
        """
        span = self._span
        first = slots[0]
        if computed is not None and not (
            computed.matches(len(subjects), now, self._skew)
            and _spot_check(computed, keys, ks, offsets)
        ):
            computed = None
        if computed is not None:
            self._eids.frombytes(computed.eids)
            self._bases.frombytes(computed.bases)
            self._schedule(first, computed.dues)
        else:
            # Computed and appended BUILD_CHUNK records at a time: the column temporaries of
            # the AES work (about 100 bytes a record) stay a few MB whatever the batch size.
            for start in range(0, len(subjects), BUILD_CHUNK):
                stop = min(start + BUILD_CHUNK, len(subjects))
                part = _window_eids_columns(
                    keys[start * IDENTITY_KEY_BYTES : stop * IDENTITY_KEY_BYTES],
                    ks[start:stop],
                    offsets[start:stop],
                    now,
                    self._skew,
                )
                self._eids.frombytes(part.eids)
                self._bases.frombytes(part.bases)
                self._schedule(first + start, part.dues)
                del part
        self._subjects.extend(subjects)
        self._keys += keys
        self._ks.extend(ks)
        self._offsets.extend(offsets)
        self._table.add_range(first * span, len(self._eids))
        self.eid_computations += span * len(subjects)

    def _schedule(self, first: int, dues: bytes) -> None:
        """Bucket slots ``first, first + 1, ...`` by their due seconds (int64 ``dues``)."""
        buckets = self._buckets
        heap = self._bucket_heap
        column = np.frombuffer(dues, dtype=np.int64)
        if not column.size:
            return
        # Group equal seconds column-wise: a sort, then one array per distinct second.
        order = np.argsort(column, kind="stable")
        ordered = column[order]
        cuts = np.flatnonzero(ordered[1:] != ordered[:-1]) + 1
        starts = np.concatenate(([0], cuts)).tolist()
        ends = [*starts[1:], len(ordered)]
        slots = (order + first).astype(np.int64)
        for due, start, end in zip(ordered[starts].tolist(), starts, ends, strict=True):
            bucket = buckets.get(due)
            if bucket is None:
                buckets[due] = bucket = array("q")
                heapq.heappush(heap, due)
            bucket.frombytes(slots[start:end].tobytes())

    def _store(
        self,
        slot: int,
        subject: str,
        keys: bytes | bytearray,
        ks: array[int],
        offsets: array[float],
        i: int,
    ) -> None:
        """Copy position ``i`` of a batch's columns into an existing ``slot``."""
        self._subjects[slot] = subject
        at = slot * IDENTITY_KEY_BYTES
        self._keys[at : at + IDENTITY_KEY_BYTES] = keys[
            i * IDENTITY_KEY_BYTES : (i + 1) * IDENTITY_KEY_BYTES
        ]
        self._ks[slot] = ks[i]
        self._offsets[slot] = offsets[i]

    def _commit(self, added: list[int], removed: list[int], unlisted: int = 0) -> bool:
        """Bump the version for a change; ``unlisted`` counts EIDs added but not listed."""
        if not added and not removed and not unlisted:
            return False
        self.version += 1
        if unlisted + len(added) + len(removed) > MAX_DELTA_EIDS:
            # A bulk load or mass change: scanners behind it are better served by a full list.
            self._history.clear()
            return True
        added_eids = set(added)
        self._history.append(
            _Change(
                self.version,
                tuple(added),
                tuple(eid for eid in removed if eid not in added_eids),
            )
        )
        return True

    def _drop(self, slot: int, removed: list[int]) -> None:
        """Remove the EIDs held for ``slot`` from the tables (the slot keeps its record)."""
        base = self._bases[slot]
        if base == _NO_BASE:
            return
        span = self._span
        eids = self._eids
        table = self._table
        for position in range(slot * span, (slot + 1) * span):
            if table.remove(position):
                removed.append(eids[position])
        self._bases[slot] = _NO_BASE

    def _plan(self, slot: int, now: float, removed: list[int]) -> tuple[int, int, range]:
        """(new base, old base, windows to compute) to bring ``slot`` to the windows around
        ``now``, reusing the EIDs still in range (the slot is dropped if none is)."""
        base = (math.floor(now + self._offsets[slot]) >> self._ks[slot]) - self._skew
        old = self._bases[slot]
        if old != _NO_BASE and 0 <= base - old < self._span:
            # The usual advance: slide by `shift` windows, compute only the new ones.
            return base, old, range(old + self._span, base + self._span)
        self._drop(slot, removed)
        return base, old, range(base, base + self._span)

    def _place(self, slot: int, now: float, removed: list[int], added: list[int]) -> None:
        """Bring ``slot`` to the windows around ``now``, reusing EIDs still in range."""
        base, old, windows = self._plan(slot, now, removed)
        new: list[int] = []
        if windows:
            at = slot * IDENTITY_KEY_BYTES
            new = _compute(bytes(self._keys[at : at + IDENTITY_KEY_BYTES]), self._ks[slot], windows)
        self._apply(slot, base, old, windows, new, removed, added)

    def _place_slots(
        self, slots: list[int], now: float, removed: list[int], added: list[int]
    ) -> None:
        """:meth:`_place` for many slots, their new EIDs computed column-wise in one pass."""
        plans = [self._plan(slot, now, removed) for slot in slots]
        owners = [slot for slot, (_, _, windows) in zip(slots, plans, strict=True) for _ in windows]
        wanted = [window for _, _, windows in plans for window in windows]
        new = _window_eids_of(self._keys, self._ks, owners, wanted)
        at = 0
        for slot, (base, old, windows) in zip(slots, plans, strict=True):
            self._apply(slot, base, old, windows, new[at : at + len(windows)], removed, added)
            at += len(windows)

    def _apply(
        self,
        slot: int,
        base: int,
        old: int,
        windows: range,
        new: list[int],
        removed: list[int],
        added: list[int],
    ) -> None:
        """Store ``new`` (the EIDs of ``windows``) for ``slot`` and schedule its next change."""
        span = self._span
        table = self._table
        eids = self._eids
        if windows:
            self.eid_computations += len(new)
            at = slot * span
            for window, eid in zip(windows, new, strict=True):
                position = at + window % span
                if old != _NO_BASE and table.remove(position):
                    removed.append(eids[position])
                eids[position] = eid
                table.add(position)
            added.extend(new)
        self._bases[slot] = base
        due = _due(base, self._skew, self._ks[slot], self._offsets[slot])
        bucket = self._buckets.get(due)
        if bucket is None:
            self._buckets[due] = array("q", (slot,))
            heapq.heappush(self._bucket_heap, due)
        else:
            bucket.append(slot)

    # ---- column-wise queries ---------------------------------------------------------------

    def resolve_many(
        self, keys: npt.NDArray[np.uint64], times: npt.NDArray[np.float64]
    ) -> npt.NDArray[np.int64]:
        """:meth:`resolve_int` of many EIDs at once: the slot of each subject, or -1.

        ``keys[i]`` is an EID as its big-endian integer, accepted at server time ``times[i]``
        under the same rule as :meth:`resolve_int` (its window within ``skew_windows`` of the
        app's current window). The table is probed column-wise on zero-copy views of its
        cells and EIDs: the home cell of every key, then the next _PROBE_WINDOW cells of the
        keys whose home holds another EID, in one 2-D read (a fixed number of array calls per
        batch, whatever the clusters). A slot number names the subject through
        :meth:`subjects_of` until the resolver next changes.
        """
        keys = np.asarray(keys, dtype=np.uint64)
        times = np.asarray(times, dtype=np.float64)
        if keys.shape != times.shape or keys.ndim != 1:
            raise IdentityError("keys and times must be two 1-D arrays of the same length")
        if not len(self._eids) or not keys.size:
            return np.full(keys.shape, -1, dtype=np.int64)
        table = self._table
        # Views, not copies, and local: they must be gone before the arrays next grow. The
        # cells are read as int32 (they hold EID positions + 1, far below 2**31).
        cells = np.frombuffer(table._cells, dtype=np.int32)
        eids = np.frombuffer(self._eids, dtype=np.uint64)
        mask = table._mask
        # First round on every key: positions of the hits, -1 elsewhere (a free cell, 0, reads
        # eids[-1]: any value, the `free` test decides).
        at = (keys & np.uint64(mask)).astype(np.intp)
        cell = cells[at].astype(np.int64)
        cell -= 1  # position + 1 -> position; a free cell becomes -1
        free = cell < 0
        hit = eids[cell] == keys
        hit &= ~free
        found = np.where(hit, cell, -1)
        going = np.flatnonzero(~(hit | free))
        if going.size:
            # The keys still probing (their home cell holds another EID) read the next
            # _PROBE_WINDOW cells at once: a held EID sits before the first free cell after
            # its home (backward-shift deletion leaves no hole in a cluster) and is held once.
            later = (at[going, None] + _PROBE_STEPS) & mask
            cell = cells[later].astype(np.int64)
            cell -= 1
            held = cell >= 0
            match = eids[cell] == keys[going, None]
            match &= held
            position = np.where(match, cell, -1).max(axis=1)
            found[going] = position
            # Clusters longer than the window (rare): the rest of the probe in Python.
            rest = going[(position < 0) & held.all(axis=1)]
            if rest.size:
                find = table.find
                for index, key in zip(rest.tolist(), keys[rest].tolist(), strict=True):
                    found[index] = find(key)
        del cells, eids, cell
        # Window check: each position names (slot, window); the window must be within skew of
        # the app's current window at the key's time. All keys hit: no indexing by hits.
        hits = None if np.minimum.reduce(found) >= 0 else np.flatnonzero(found >= 0)
        if hits is not None and not hits.size:
            return found
        positions = found if hits is None else found[hits]
        span = self._span
        slots, residues = np.divmod(positions, span)
        bases = np.frombuffer(self._bases, dtype=np.int64)[slots]
        window = bases + (residues - bases) % span
        offsets = np.frombuffer(self._offsets, dtype=np.float64)[slots]
        ks = np.frombuffer(self._ks, dtype=np.uint8)[slots].astype(np.int64)
        at_times = times if hits is None else times[hits]
        current = np.right_shift(np.floor(at_times + offsets).astype(np.int64), ks)
        current -= window
        refused = np.abs(current, out=current) > self._skew
        slots[refused] = -1
        if hits is None:
            return slots
        found[hits] = slots
        return found

    def subjects_of(self, slots: Iterable[int]) -> list[str]:
        """The subject of each slot accepted by :meth:`resolve_many` (IdentityError for -1)."""
        subjects = self._subjects
        try:
            found = [subjects[slot] if slot >= 0 else None for slot in slots]
        except IndexError:
            raise IdentityError("not a slot of this resolver") from None
        if None in found:
            raise IdentityError("not a held slot")
        return cast("list[str]", found)

    def slot_of(self, subject: str) -> int | None:
        """The slot of a held subject (as :meth:`resolve_many` returns it), or None."""
        return self._slot_of.get(subject)


def _window_eids_of(
    keys: bytearray, ks: array[int], slots: list[int], windows: list[int]
) -> list[int]:
    """EID of (unwrapped) window ``windows[i]`` of slot ``slots[i]``, column-wise."""
    if not slots:
        return []
    picked = np.array(slots, dtype=np.intp)
    # A view of the resolver's key column, dropped before returning: the bytearray cannot
    # grow while a view of it is alive.
    key_view = np.frombuffer(keys, dtype=np.uint8).reshape(-1, IDENTITY_KEY_BYTES)
    key_rows = key_view[picked]
    del key_view
    k = np.frombuffer(ks, dtype=np.uint8)[picked].astype(np.int64)
    base = np.array(windows, dtype=np.int64)
    out = np.empty(len(slots), dtype=np.uint64)
    for start in range(0, len(slots), LANES_CHUNK):
        stop = start + LANES_CHUNK
        out[start:stop] = _lanes_chunk(key_rows[start:stop], k[start:stop], base[start:stop], 1)[
            :, 0
        ]
    return out.tolist()


def _due(base: int, skew: int, k: int, clock_offset_s: float) -> int:
    """Whole server second (ceiling) at which the app leaves window ``base + skew``."""
    return math.ceil(((base + skew + 1) << k) - clock_offset_s)


def _compute(identity_key: bytes, k: int, windows: range) -> list[int]:
    """EIDs (as integers) of unwrapped ``windows``: one AES key setup per temporary key."""
    counters = [(window << k) & _COUNTER_MASK for window in windows]
    first = counters[0] >> TEMPORARY_KEY_SHIFT
    if first == counters[-1] >> TEMPORARY_KEY_SHIFT:
        # Windows are consecutive and span far less than 2**32 s: one temporary key.
        out = _aes_derived(
            identity_key,
            _TK_BLOCK.pack(_TK_SALT, first),
            b"".join([_EID_BLOCK.pack(k, c) for c in counters]),
        )
        return [
            int.from_bytes(out[i : i + EID_BYTES], "big")
            for i in range(0, len(out), _AES_BLOCK_BYTES)
        ]
    # The windows straddle a temporary-key roll-over (every 65,536 s): group by slot.
    slots = sorted({c >> TEMPORARY_KEY_SHIFT for c in counters})
    tks = _aes_ecb(identity_key, b"".join(_TK_BLOCK.pack(_TK_SALT, s) for s in slots))
    tk_of = {s: tks[i * _AES_BLOCK_BYTES : (i + 1) * _AES_BLOCK_BYTES] for i, s in enumerate(slots)}
    return [
        int.from_bytes(
            _aes_ecb(tk_of[c >> TEMPORARY_KEY_SHIFT], _EID_BLOCK.pack(k, c))[:EID_BYTES], "big"
        )
        for c in counters
    ]


@dataclass(frozen=True, slots=True)
class WindowEids:
    """The AES part of a bulk build for ``count`` records, as flat machine arrays.

    ``eids``: per record, ``2*skew + 1`` native-endian uint64 EIDs, position ``r`` holding the
    window with residue ``r``; ``bases``: per record, the first held window (int64);
    ``dues``: per record, the server second its window changes (int64). Plain bytes, so it
    pickles cheaply from a worker process.
    """

    count: int
    now: float
    skew: int
    eids: bytes
    bases: bytes
    dues: bytes

    def matches(self, count: int, now: float, skew: int) -> bool:
        return (self.count, self.now, self.skew) == (count, now, skew)

    @classmethod
    def concat(cls, parts: Iterable[WindowEids]) -> WindowEids:
        """Join the results of consecutive chunks of one record list."""
        chunks = list(parts)
        if not chunks or any(not c.matches(c.count, chunks[0].now, chunks[0].skew) for c in chunks):
            raise IdentityError("chunks of different builds")
        return cls(
            sum(c.count for c in chunks),
            chunks[0].now,
            chunks[0].skew,
            b"".join(c.eids for c in chunks),
            b"".join(c.bases for c in chunks),
            b"".join(c.dues for c in chunks),
        )


SPOT_CHECKS = 16
"""Records of a precomputed ``WindowEids`` recomputed before it is trusted: results made for
other records (of the same count, time and skew) are caught unless nearly all rows agree."""


def _spot_check(
    computed: WindowEids, keys: bytes | bytearray, ks: array[int], offsets: array[float]
) -> bool:
    """True if ``computed`` agrees with the records at up to SPOT_CHECKS spread positions."""
    count = computed.count
    if not count:
        return True
    span = 2 * computed.skew + 1
    picks = sorted({i * (count - 1) // max(SPOT_CHECKS - 1, 1) for i in range(SPOT_CHECKS)})
    sample = _window_eids_scalar(
        b"".join(bytes(keys[i * IDENTITY_KEY_BYTES : (i + 1) * IDENTITY_KEY_BYTES]) for i in picks),
        array("B", [ks[i] for i in picks]),
        array("d", [offsets[i] for i in picks]),
        computed.now,
        computed.skew,
    )
    width = 8 * span
    return all(
        computed.eids[i * width : (i + 1) * width] == sample.eids[j * width : (j + 1) * width]
        and computed.bases[i * 8 : (i + 1) * 8] == sample.bases[j * 8 : (j + 1) * 8]
        for j, i in enumerate(picks)
    )


def window_eids(records: Sequence[IdentityRecord], now: float, skew: int) -> WindowEids:
    """EIDs of the windows ``current - skew .. current + skew`` of every record, at ``now``.

    The AES-heavy half of a bulk build, independent of any resolver state: it can run in
    worker processes on chunks of the records (see :meth:`EidResolver.upsert_many`).
    """
    return _window_eids_columns(
        b"".join([record.identity_key for record in records]),
        array("B", [record.k for record in records]),
        array("d", [record.clock_offset_s for record in records]),
        now,
        skew,
    )


def _window_eids_columns(
    keys: bytes | bytearray, ks: array[int], offsets: array[float], now: float, skew: int
) -> WindowEids:
    """:func:`window_eids` over the columns of the records (keys joined, 16 bytes each).

    Large batches go column-wise through numpy (:func:`_window_eids_lanes`); a handful of
    records is cheaper one by one through OpenSSL (:func:`_window_eids_scalar`). Both give
    identical results (tested).
    """
    if len(ks) >= LANES_MIN_RECORDS:
        return _window_eids_lanes(keys, ks, offsets, now, skew)
    return _window_eids_scalar(keys, ks, offsets, now, skew)


def _window_eids_scalar(
    keys: bytes | bytearray, ks: array[int], offsets: array[float], now: float, skew: int
) -> WindowEids:
    """:func:`_window_eids_columns` one record at a time (two AES key setups each)."""
    span = 2 * skew + 1
    eids = array("Q")
    bases = array("q")
    dues = array("q")
    put_eids = eids.extend
    put_base = bases.append
    put_due = dues.append
    derived = _aes_derived
    tk_pack = _TK_BLOCK.pack
    eid_pack = _EID_BLOCK.pack
    unpack = struct.Struct(">" + "Q8x" * span).unpack
    floor = math.floor
    ceil = math.ceil
    pack_three = _EID_BLOCKS_3.pack
    key_at = 0
    for k, offset in zip(ks, offsets, strict=True):
        key = bytes(keys[key_at : key_at + IDENTITY_KEY_BYTES])
        key_at += IDENTITY_KEY_BYTES
        base = (floor(now + offset) >> k) - skew
        first = (base << k) & _COUNTER_MASK
        last = first + ((span - 1) << k)
        tk_slot = first >> TEMPORARY_KEY_SHIFT
        if last >> TEMPORARY_KEY_SHIFT != tk_slot:
            # Straddles a temporary-key roll-over or the counter wrap: the general path.
            new = tuple(_compute(key, k, range(base, base + span)))
        else:
            if span == 3:  # the default skew of 1, spelled out: one pack call
                step = 1 << k
                blocks = pack_three(k, first, k, first + step, k, last)
            else:
                blocks = b"".join([eid_pack(k, first + (i << k)) for i in range(span)])
            new = unpack(derived(key, tk_pack(_TK_SALT, tk_slot), blocks))
        cut = -base % span
        put_eids(new[cut:] + new[:cut])
        put_base(base)
        put_due(ceil(((base + skew + 1) << k) - offset))
    return WindowEids(len(ks), now, skew, eids.tobytes(), bases.tobytes(), dues.tobytes())


def _window_eids_lanes(
    keys: bytes | bytearray, ks: array[int], offsets: array[float], now: float, skew: int
) -> WindowEids:
    """:func:`_window_eids_columns` column-wise: one numpy lane per record, in chunks.

    The same arithmetic as the scalar path, on int64/float64 columns: window indices from
    ``floor(now + offset) >> k``, counters reduced mod 2**32, one temporary key per record
    (one per window for the records whose windows straddle a temporary-key roll-over), EIDs
    as the first 8 bytes of the AES output, big-endian. Records whose clock is too far out
    for exact float64/int64 arithmetic (never a real app) take the scalar path.
    """
    count = len(ks)
    span = 2 * skew + 1
    k = np.frombuffer(ks, dtype=np.uint8).astype(np.int64)
    offset = np.frombuffer(offsets, dtype=np.float64)
    clock = now + offset
    exact = np.abs(clock) < _EXACT_CLOCK
    current = np.floor(np.where(exact, clock, 0.0)).astype(np.int64) >> k
    base = current - skew
    dues = np.ceil(((base + (skew + 1)) << k).astype(np.float64) - offset).astype(np.int64)
    eids = np.empty((count, span), dtype=np.uint64)
    key_rows = np.frombuffer(bytes(keys), dtype=np.uint8).reshape(count, IDENTITY_KEY_BYTES)
    for start in range(0, count, LANES_CHUNK):
        stop = min(start + LANES_CHUNK, count)
        eids[start:stop] = _lanes_chunk(key_rows[start:stop], k[start:stop], base[start:stop], span)
    slow = np.flatnonzero(~exact)
    if slow.size:
        picked = slow.tolist()
        part = _window_eids_scalar(
            b"".join(
                bytes(keys[i * IDENTITY_KEY_BYTES : (i + 1) * IDENTITY_KEY_BYTES]) for i in picked
            ),
            array("B", [ks[i] for i in picked]),
            array("d", [offsets[i] for i in picked]),
            now,
            skew,
        )
        eids[slow] = np.frombuffer(part.eids, dtype=np.uint64).reshape(-1, span)
        base[slow] = np.frombuffer(part.bases, dtype=np.int64)
        dues[slow] = np.frombuffer(part.dues, dtype=np.int64)
    return WindowEids(count, now, skew, eids.tobytes(), base.tobytes(), dues.tobytes())


def _lanes_chunk(
    key_rows: npt.NDArray[np.uint8],
    k: npt.NDArray[np.int64],
    base: npt.NDArray[np.int64],
    span: int,
) -> npt.NDArray[np.uint64]:
    """EIDs of windows ``base .. base + span - 1`` of each lane, laid out by window residue."""
    lanes = len(k)
    windows = base[np.newaxis, :] + np.arange(span, dtype=np.int64)[:, np.newaxis]
    counters = ((windows << k) & _COUNTER_MASK).astype(np.uint32)  # (span, lanes)
    tk_slots = counters >> np.uint32(TEMPORARY_KEY_SHIFT)
    ik_round_keys = aes_lanes.expand_keys(aes_lanes.words_of(key_rows))
    zero = np.zeros(lanes, dtype=np.uint32)
    salt = np.full(lanes, _TK_SALT, dtype=np.uint32)
    k_words = k.astype(np.uint32)
    # Every lane as if all its windows used one temporary key (that of the first window):
    # true of all but the few lanes whose span straddles a roll-over, redone below.
    tk = aes_lanes.encrypt(ik_round_keys, (zero, zero, salt, tk_slots[0]))
    tk_round_keys = aes_lanes.expand_keys((tk[0], tk[1], tk[2], tk[3]))
    out = _eid_words(tk_round_keys, k_words, counters)
    many = np.flatnonzero(np.any(tk_slots != tk_slots[0], axis=0))
    if many.size:
        # A roll-over inside the span: one temporary key per (window, lane), same formula.
        ik_many = [w[many] for w in ik_round_keys]
        zeros = np.zeros((span, many.size), dtype=np.uint32)
        salts = np.full((span, many.size), _TK_SALT, dtype=np.uint32)
        tk = aes_lanes.encrypt(ik_many, (zeros, zeros, salts, tk_slots[:, many]))
        tk_round_keys = aes_lanes.expand_keys((tk[0], tk[1], tk[2], tk[3]))
        out[:, many] = _eid_words(tk_round_keys, k_words[many], counters[:, many])
    # Position r of a lane holds window w with w % span == r (as the scalar path lays out).
    residue = (np.arange(span, dtype=np.int64)[:, np.newaxis] - base[np.newaxis, :]) % span
    return np.take_along_axis(out, residue, axis=0).T


def _eid_words(
    tk_round_keys: list[aes_lanes.Words],
    k_words: aes_lanes.Words,
    counters: aes_lanes.Words,
) -> npt.NDArray[np.uint64]:
    """First 8 bytes (big-endian) of ``AES(TK, 0*11 | K | counter)`` for each window row."""
    shape = counters.shape
    zeros = np.zeros(shape, dtype=np.uint32)
    k_rows = np.broadcast_to(k_words, shape)
    high, low = aes_lanes.encrypt(
        tk_round_keys, (zeros, zeros, np.ascontiguousarray(k_rows), counters), out_words=2
    )
    return (high.astype(np.uint64) << np.uint64(32)) | low.astype(np.uint64)
