"""Store beacon values and proof checking (pure: no I/O, time passed in explicitly).

A box broadcasts an iBeacon: the chain's UUID, the store's number as major, and a minor that
changes every slot as a keyed function of the store beacon key, the store, the box and the
slot. A phone that heard it posts the values; the server accepts them only for the current or
the previous slot of one of the store's boxes, so a recording replayed later is worthless.

The minor is 16 bits: a guess matches one of n boxes with probability 2n/65536 per try, so the
server must limit proof attempts per customer (docs/api.md, "Store beacon").
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import math
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

# Five minutes: short enough that a recording is stale within 10 minutes (current + previous
# slot), long enough that a box's clock (NTP) and a phone's delivery delay fit in a slot.
SLOT_S = 300
# Domain separation: this key's HMACs mean only "store beacon minor, version 1".
DOMAIN = b"bulle-store-beacon-v1"
# 128 bits: below that a key could be searched from recorded minors.
MIN_KEY_BYTES = 16
# An iBeacon major and minor are 16-bit unsigned integers.
MAX_MAJOR = 0xFFFF
# Slots older than the accepted two that are still named "stale" (not "unknown") in a
# refusal: one hour, to tell a replay from a forgery in the logs.
STALE_LOOKBACK_SLOTS = 12
# A box id is sent with a 2-byte length prefix.
MAX_BOX_ID_BYTES = 0xFFFF


@dataclass(frozen=True, slots=True)
class StoreBeacon:
    """The three values of an iBeacon a box broadcasts (or a phone heard)."""

    uuid: uuid.UUID
    major: int
    minor: int


class Refusal(enum.Enum):
    """Why a proof is refused (the value is the stable code the server may answer with)."""

    WRONG_CHAIN = "beacon_wrong_chain"
    """The UUID is not this chain's."""
    WRONG_STORE = "beacon_wrong_store"
    """The major is another store's."""
    STALE = "beacon_stale"
    """The minor is a box's, but of a slot older than the previous one (a replay)."""
    UNKNOWN_MINOR = "beacon_unknown_minor"
    """No box of this store broadcast this minor lately (forged, or a clock far off)."""


@dataclass(frozen=True, slots=True)
class ProofMatch:
    """An accepted proof: the box that broadcast it, and in which slot."""

    box_id: str
    slot: int
    current: bool
    """True for the current slot, False for the previous one."""


@dataclass(frozen=True, slots=True)
class ProofRefused:
    """A refused proof, with its reason."""

    reason: Refusal


def slot_of(now: float) -> int:
    """The slot number of unix time ``now``: floor(now / SLOT_S)."""
    if not math.isfinite(now):
        raise ValueError("now must be a finite number")
    return math.floor(now / SLOT_S)


def next_slot_at(now: float) -> float:
    """Unix time at which the slot after ``now``'s starts (when a box changes its minor)."""
    return float((slot_of(now) + 1) * SLOT_S)


def _check_key(key: bytes) -> None:
    if len(key) < MIN_KEY_BYTES:
        raise ValueError(f"a store beacon key has at least {MIN_KEY_BYTES} bytes")


def _check_major(major: int) -> None:
    if not 0 <= major <= MAX_MAJOR:
        raise ValueError(f"major must be between 0 and {MAX_MAJOR}, got {major}")


def _message(major: int, box_id: str, slot: int) -> bytes:
    box = box_id.encode("utf-8")
    if not box or len(box) > MAX_BOX_ID_BYTES:
        raise ValueError("a box id has 1 to 65535 bytes in UTF-8")
    if slot < 0:
        raise ValueError("slot must not be negative")
    return b"".join(
        (
            DOMAIN,
            major.to_bytes(2, "big"),
            len(box).to_bytes(2, "big"),
            box,
            slot.to_bytes(8, "big"),
        )
    )


def _minor_bytes(key: bytes, major: int, box_id: str, slot: int) -> bytes:
    return hmac.new(key, _message(major, box_id, slot), hashlib.sha256).digest()[:2]


def minor_for(key: bytes, major: int, box_id: str, slot: int) -> int:
    """The minor box ``box_id`` of store ``major`` broadcasts during ``slot``.

    The first two bytes (big-endian) of HMAC-SHA256(key, DOMAIN || major (2 bytes) ||
    len(box id) (2 bytes) || box id (UTF-8) || slot (8 bytes)), all integers big-endian.
    """
    _check_key(key)
    _check_major(major)
    return int.from_bytes(_minor_bytes(key, major, box_id, slot), "big")


def advertised_now(
    key: bytes, chain_uuid: uuid.UUID, major: int, box_id: str, now: float
) -> StoreBeacon:
    """The iBeacon box ``box_id`` broadcasts at unix time ``now``."""
    return StoreBeacon(chain_uuid, major, minor_for(key, major, box_id, slot_of(now)))


def match_proof(
    key: bytes,
    major: int,
    box_ids: Iterable[str],
    heard: StoreBeacon,
    now: float,
    *,
    chain_uuid: uuid.UUID | None = None,
) -> ProofMatch | ProofRefused:
    """Which box of store ``major`` broadcast ``heard`` in the current or previous slot.

    ``key`` and ``major`` are the store's, ``box_ids`` its boxes, ``now`` the server's time;
    with ``chain_uuid`` the UUID heard must be the chain's. Every candidate (box, slot) is
    compared in constant time and all are computed, so the answer's timing says nothing about
    which box or slot matched. When two boxes share a minor in a slot (a 1 in 65536 chance per
    pair), the current slot wins, then the first box id in sorted order.
    """
    _check_key(key)
    _check_major(major)
    if chain_uuid is not None and not hmac.compare_digest(heard.uuid.bytes, chain_uuid.bytes):
        return ProofRefused(Refusal.WRONG_CHAIN)
    if heard.major != major:
        return ProofRefused(Refusal.WRONG_STORE)
    if not 0 <= heard.minor <= MAX_MAJOR:
        return ProofRefused(Refusal.UNKNOWN_MINOR)
    wanted = heard.minor.to_bytes(2, "big")
    current = slot_of(now)
    boxes = sorted(set(box_ids))
    found: ProofMatch | None = None
    stale = False
    for age in range(STALE_LOOKBACK_SLOTS + 2):
        slot = current - age
        if slot < 0:
            break
        for box in boxes:
            if hmac.compare_digest(_minor_bytes(key, major, box, slot), wanted):
                if age > 1:
                    stale = True
                elif found is None:
                    found = ProofMatch(box, slot, current=age == 0)
    if found is not None:
        return found
    return ProofRefused(Refusal.STALE if stale else Refusal.UNKNOWN_MINOR)


def key_from_text(text: str) -> bytes:
    """A store beacon key from its file's text: hexadecimal on the first line.

    Raises ValueError (without the key's text) when it is not hex or is too short.
    """
    lines = text.strip().splitlines()
    try:
        key = bytes.fromhex(lines[0].strip()) if lines else b""
    except ValueError:
        raise ValueError("a store beacon key is hexadecimal text") from None
    if len(key) < MIN_KEY_BYTES:
        raise ValueError(
            f"a store beacon key has at least {MIN_KEY_BYTES} bytes"
            f" ({2 * MIN_KEY_BYTES} hex digits)"
        )
    return key
