"""Boxes hearing each other's store beacon: which box of this store sent a window (pure).

A box that broadcasts the store beacon (docs/api.md, "Store beacon") is heard by the other boxes
of the shop; they report it in their batches as ``store_beacon`` windows whose ``id`` is the raw
beacon, ``<uuid>:<major>:<minor>``. The listening box cannot tell who sent it (the minor is an
HMAC under the store beacon key, which changes every slot); the server can: the minor is the one
a box of this store broadcasts in the window's slot or the previous one (as for a phone's proof,
so that a box whose clock is a little behind still counts).

The minors of every box for a slot are computed once and kept for a few slots, so a window costs
a dict lookup, not one HMAC per box and slot: a shop of 20 boxes hears 380 pairs a second. The
lookup needs no constant-time comparison: the window comes in a signed batch from a registered
box, not from someone guessing. A minor two boxes share in those slots (16 bits: a few times a
year in a shop of 20 boxes) names neither. No I/O, time passed in.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Literal

from store_beacon import MAX_MAJOR, minor_for, slot_of

__all__ = ["ID_TYPE", "BoxBeacons", "Heard", "Outcome", "parse_beacon_id"]

ID_TYPE: Final = "store_beacon"
"""A window's ``id_type`` for a store beacon heard by a box (docs/api.md)."""

# Slots whose minors are kept: the current and previous of a window's time, and those of a
# batch that waited in a box's outbox across a boundary.
CACHED_SLOTS: Final = 4
# Largest minor (16 bits).
MAX_MINOR: Final = 0xFFFF

_BEACON_ID = re.compile(
    r"([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}):(0|[1-9][0-9]{0,4}):(0|[1-9][0-9]{0,4})"
)

Outcome = Literal["heard", "other_store", "unknown_minor", "ambiguous", "malformed"]
"""What a store beacon window turned out to be: ``heard`` (a box of this store), ``other_store``
(another chain's UUID or another store's major: a neighbour's box through the wall),
``unknown_minor`` (no box of this store in those slots: a box's clock far off, or a forgery),
``ambiguous`` (two boxes' minor), ``malformed`` (not ``<uuid>:<major>:<minor>``)."""


@dataclass(frozen=True, slots=True)
class Heard:
    """The box that broadcast a store beacon window (``box_id`` None unless ``heard``)."""

    outcome: Outcome
    box_id: str | None = None


def parse_beacon_id(ident: str) -> tuple[uuid.UUID, int, int] | None:
    """``<uuid>:<major>:<minor>`` (lower-case canonical UUID, decimal numbers), or None."""
    found = _BEACON_ID.fullmatch(ident)
    if found is None:
        return None
    major, minor = int(found[2]), int(found[3])
    if major > MAX_MAJOR or minor > MAX_MINOR:
        return None
    return uuid.UUID(found[1]), major, minor


class BoxBeacons:
    """The store's boxes' minors by slot, and the box behind a heard store beacon."""

    __slots__ = ("_boxes", "_chain_uuid", "_key", "_major", "_slots")

    def __init__(self, key: bytes, chain_uuid: uuid.UUID, major: int, boxes: Sequence[str]) -> None:
        self._key = key
        self._chain_uuid = chain_uuid
        self._major = major
        self._boxes = tuple(sorted(set(boxes)))
        # slot -> minor -> the boxes broadcasting it during that slot
        self._slots: dict[int, dict[int, tuple[str, ...]]] = {}

    def _minors(self, slot: int) -> dict[int, tuple[str, ...]]:
        table = self._slots.get(slot)
        if table is None:
            table = {}
            for box in self._boxes:
                minor = minor_for(self._key, self._major, box, slot)
                table[minor] = (*table.get(minor, ()), box)
            if len(self._slots) >= CACHED_SLOTS:
                del self._slots[min(self._slots)]
            self._slots[slot] = table
        return table

    def speaker(self, ident: str, t: float) -> Heard:
        """The box of this store that broadcast ``ident`` at (box) time ``t``."""
        parsed = parse_beacon_id(ident)
        if parsed is None:
            return Heard("malformed")
        chain_uuid, major, minor = parsed
        if chain_uuid != self._chain_uuid or major != self._major:
            return Heard("other_store")
        slot = slot_of(t)
        found = set(self._minors(slot).get(minor, ()))
        if slot > 0:
            found.update(self._minors(slot - 1).get(minor, ()))
        if not found:
            return Heard("unknown_minor")
        if len(found) > 1:
            return Heard("ambiguous")
        return Heard("heard", found.pop())
