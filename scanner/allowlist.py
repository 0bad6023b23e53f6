"""The edge allowlist (pure, hot path): let through only identifiers the server vouches for.

The server sends the set of currently valid opaque identifiers (``GET /api/scanner/v1/allowlist``,
docs/api.md). ``Allowlist.match`` is called for every parsed advertisement; anything that is not an
allowlisted, unexpired Eddystone-EID (or, in legacy mode only, an allowlisted iBeacon; or another
box's store beacon, with the store's UUID and major, when the box listens for them) is dropped
in memory: only a per-frame-type counter moves, nothing of the frame is kept or logged.

EIDs are looked up by their raw 8 bytes, so a foreign frame costs one dict miss and no hex
conversion; the ``SightingKey`` of an entry is built once, when the entry arrives.
An entry is valid while ``now < not_after``.
"""

from __future__ import annotations

import logging
import math
import re
from collections import Counter
from dataclasses import dataclass
from typing import Final, TypeVar

from scanner.errors import AllowlistError
from scanner.frames import FRAME_TYPE_NAMES, EddystoneEIDFrame, Frame, IBeaconFrame

logger = logging.getLogger(__name__)

# id_type of an Eddystone-EID entry (docs/api.md).
ID_TYPE_EID: Final = "eid"
# id_type of a static iBeacon entry, honoured only in legacy mode (docs/api.md).
ID_TYPE_IBEACON: Final = "ibeacon"
# id_type of another box's store beacon heard by this box (docs/api.md): no customer's.
ID_TYPE_STORE_BEACON: Final = "store_beacon"
# Keys of store beacon minors kept at once: a shop's boxes times a few slots, far below this.
MAX_STORE_BEACON_KEYS: Final = 1024
# Counter key for advertisements that carried no parsable beacon frame.
UNPARSED: Final = "none"

_EID_ID = re.compile(r"[0-9a-f]{16}")
_IBEACON_ID = re.compile(
    r"([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}):(0|[1-9][0-9]{0,4}):(0|[1-9][0-9]{0,4})"
)
_K = TypeVar("_K")
# Largest iBeacon major / minor (16 bits).
_IBEACON_PART_MAX: Final = 0xFFFF


@dataclass(frozen=True, slots=True)
class SightingKey:
    """Opaque identifier of an allowlisted sighting, in its wire form (docs/api.md)."""

    id_type: str
    id: str


@dataclass(frozen=True, slots=True)
class AllowlistEntry:
    """One allowlisted identifier and the Unix time at which it stops being valid."""

    id_type: str
    id: str
    not_after: float


def _ibeacon_parts(ident: str) -> tuple[str, int, int] | None:
    found = _IBEACON_ID.fullmatch(ident)
    if found is None:
        return None
    major, minor = int(found[2]), int(found[3])
    if major > _IBEACON_PART_MAX or minor > _IBEACON_PART_MAX:
        return None
    return found[1], major, minor


def _check_id(where: str, id_type: str, ident: str) -> None:
    if id_type == ID_TYPE_EID:
        if _EID_ID.fullmatch(ident) is None:
            raise AllowlistError(f"{where}.id: an eid id must be 16 lower-case hex characters")
    elif id_type == ID_TYPE_IBEACON:
        if _ibeacon_parts(ident) is None:
            raise AllowlistError(f"{where}.id: an ibeacon id must be '<uuid>:<major>:<minor>'")
    else:
        raise AllowlistError(f"{where}.id_type: unknown id type {id_type!r}")


def _entry_from_wire(where: str, obj: object) -> AllowlistEntry:
    if not isinstance(obj, dict):
        raise AllowlistError(f"{where}: expected an object")
    id_type, ident, not_after = obj.get("id_type"), obj.get("id"), obj.get("not_after")
    if not isinstance(id_type, str):
        raise AllowlistError(f"{where}.id_type: expected a string")
    if not isinstance(ident, str):
        raise AllowlistError(f"{where}.id: expected a string")
    _check_id(where, id_type, ident)
    if (
        isinstance(not_after, bool)
        or not isinstance(not_after, int | float)
        or not math.isfinite(not_after)
    ):
        raise AllowlistError(f"{where}.not_after: expected a finite number")
    return AllowlistEntry(id_type, ident, float(not_after))


@dataclass(frozen=True, slots=True)
class AllowlistUpdate:
    """One answer of the allowlist endpoint: a full list or a delta."""

    version: int
    full: bool
    entries: tuple[AllowlistEntry, ...]
    removed: tuple[str, ...]
    # The server takes `store_beacon` windows (older servers refuse a batch holding one).
    box_beacons: bool = False

    @classmethod
    def from_wire(cls, obj: object) -> AllowlistUpdate:
        """Validate the decoded JSON of ``GET /api/scanner/v1/allowlist``; AllowlistError if bad.

        Unknown keys are ignored, so the server may add fields without breaking scanners.
        """
        if not isinstance(obj, dict):
            raise AllowlistError("allowlist: expected a JSON object")
        version, full = obj.get("version"), obj.get("full")
        if isinstance(version, bool) or not isinstance(version, int) or version < 0:
            raise AllowlistError("version: expected an integer >= 0")
        if not isinstance(full, bool):
            raise AllowlistError("full: expected a boolean")
        entries, removed = obj.get("entries"), obj.get("removed", [])
        if not isinstance(entries, list):
            raise AllowlistError("entries: expected a list")
        if not isinstance(removed, list):
            raise AllowlistError("removed: expected a list")
        box_beacons = obj.get("box_beacons", False)
        if not isinstance(box_beacons, bool):
            raise AllowlistError("box_beacons: expected a boolean")
        parsed = tuple(_entry_from_wire(f"entries[{i}]", e) for i, e in enumerate(entries))
        for i, ident in enumerate(removed):
            if not isinstance(ident, str):
                raise AllowlistError(f"removed[{i}]: expected a string")
            id_type = ID_TYPE_IBEACON if ":" in ident else ID_TYPE_EID
            _check_id(f"removed[{i}]", id_type, ident)
        return cls(version, full, parsed, tuple(removed), box_beacons)


class Allowlist:
    """The scanner's current allowlist, with drop/pass counters per frame type."""

    __slots__ = (
        "_eids",
        "_ibeacons",
        "_store_beacon",
        "_store_keys",
        "box_beacons",
        "dropped",
        "legacy_ibeacon",
        "passed",
        "version",
    )

    def __init__(
        self, legacy_ibeacon: bool = False, store_beacon: tuple[str, int] | None = None
    ) -> None:
        """``store_beacon``: the store's (UUID, major): an iBeacon with both is another box of
        the store, passed as a ``store_beacon`` window whatever the list holds (it carries no
        customer's identifier; the server knows which box's minor it is), once the server
        said in an allowlist answer that it takes them (``box_beacons``): a server of an
        earlier release refuses a batch holding one, and with it the customers' windows."""
        self.legacy_ibeacon = legacy_ibeacon
        self._store_beacon = store_beacon
        self.box_beacons = False
        self._store_keys: dict[int, SightingKey] = {}
        self.version = 0
        self.dropped: Counter[str] = Counter()
        self.passed: Counter[str] = Counter()
        # raw EID bytes -> (not_after, entry's key)
        self._eids: dict[bytes, tuple[float, SightingKey]] = {}
        # (uuid, major, minor) -> (not_after, entry's key)
        self._ibeacons: dict[tuple[str, int, int], tuple[float, SightingKey]] = {}

    def __len__(self) -> int:
        return len(self._eids) + len(self._ibeacons)

    def entries(self) -> tuple[AllowlistEntry, ...]:
        """Current entries, sorted by (id_type, id): for status pages and tests."""
        rows = [
            AllowlistEntry(key.id_type, key.id, not_after)
            for not_after, key in (*self._eids.values(), *self._ibeacons.values())
        ]
        return tuple(sorted(rows, key=lambda e: (e.id_type, e.id)))

    def _add(self, entry: AllowlistEntry) -> None:
        key = SightingKey(entry.id_type, entry.id)
        if entry.id_type == ID_TYPE_EID:
            self._eids[bytes.fromhex(entry.id)] = (entry.not_after, key)
        else:
            parts = _ibeacon_parts(entry.id)
            if parts is not None:
                self._ibeacons[parts] = (entry.not_after, key)

    def _remove(self, ident: str) -> None:
        if ":" in ident:
            parts = _ibeacon_parts(ident)
            if parts is not None:
                self._ibeacons.pop(parts, None)
        elif _EID_ID.fullmatch(ident) is not None:
            self._eids.pop(bytes.fromhex(ident), None)

    def apply(self, update: AllowlistUpdate, now: float) -> None:
        """Apply a full list (replaces) or a delta (adds/replaces, then removes).

        A delta older than the current version is ignored; a full list always applies (a
        restarted server may start its versions again). An entry already expired at ``now`` is
        not added and removes any current entry with the same id.
        """
        if not update.full and update.version < self.version:
            logger.debug(
                "ignoring allowlist delta %s older than version %s", update.version, self.version
            )
            return
        if update.full:
            self._eids.clear()
            self._ibeacons.clear()
        for entry in update.entries:
            if entry.not_after > now:
                self._add(entry)
            else:
                # An already expired replacement is the newest word on that id: drop it.
                self._remove(entry.id)
        for ident in update.removed:
            self._remove(ident)
        self.version = update.version
        self.box_beacons = update.box_beacons

    def expire(self, now: float) -> int:
        """Drop every entry whose ``not_after`` has passed; return how many were dropped."""
        return _expire_table(self._eids, now) + _expire_table(self._ibeacons, now)

    def match(self, frame: Frame | None, now: float) -> SightingKey | None:
        """Key of an allowlisted, unexpired frame; otherwise count the drop and return None."""
        if isinstance(frame, EddystoneEIDFrame):
            hit = self._eids.get(frame.eid)
            if hit is not None and now < hit[0]:
                self.passed["eddystone_eid"] += 1
                return hit[1]
            self.dropped["eddystone_eid"] += 1
            return None
        if isinstance(frame, IBeaconFrame) and self._store_beacon == (frame.uuid, frame.major):
            if not self.box_beacons:
                self.dropped[ID_TYPE_STORE_BEACON] += 1
                return None
            self.passed[ID_TYPE_STORE_BEACON] += 1
            return self._store_key(frame)
        if self.legacy_ibeacon and isinstance(frame, IBeaconFrame):
            hit = self._ibeacons.get((frame.uuid, frame.major, frame.minor))
            if hit is not None and now < hit[0]:
                self.passed["ibeacon"] += 1
                return hit[1]
        self.dropped[FRAME_TYPE_NAMES.get(type(frame), UNPARSED)] += 1
        return None

    def _store_key(self, frame: IBeaconFrame) -> SightingKey:
        key = self._store_keys.get(frame.minor)
        if key is None:
            if len(self._store_keys) >= MAX_STORE_BEACON_KEYS:
                self._store_keys.clear()
            key = SightingKey(ID_TYPE_STORE_BEACON, f"{frame.uuid}:{frame.major}:{frame.minor}")
            self._store_keys[frame.minor] = key
        return key


def _expire_table(table: dict[_K, tuple[float, SightingKey]], now: float) -> int:
    stale = [k for k, (not_after, _) in table.items() if not_after <= now]
    for k in stale:
        del table[k]
    return len(stale)
