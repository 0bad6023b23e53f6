"""The proof of a proof-of-presence check-in (pure, no I/O, time passed in).

A customer's app woken by its operating system near the shop's boxes posts the store beacons it
ranged (UUID, major, minor, the RSSI it measured and when). The check-in counts only if one of
them is a minor that a box of this store broadcast in the current or the previous slot
(:func:`store_beacon.match_proof`); it then lands in that box's zone. Otherwise the check-in is
refused with a named reason and nothing about the customer is recorded.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from store_beacon import (
    MIN_KEY_BYTES,
    SLOT_S,
    ProofMatch,
    Refusal,
    StoreBeacon,
    key_from_text,
    match_proof,
)
from store_server.config import ServerConfig
from store_server.errors import ConfigError
from store_server.presence import PresenceEngine, PresenceEvent

__all__ = [
    "BeaconSettings",
    "ProofAccepted",
    "ProofRejected",
    "Sighting",
    "beacon_settings",
    "check_proof",
    "proof_events",
]

# A sighting the app says is older than the current and previous slots (two slots) cannot be
# fresh: its minor has changed since, whatever it is. Refused as "expired" before any HMAC.
MAX_SIGHTING_AGE_S = 2 * SLOT_S
# A phone's clock may run ahead of the server's; beyond a minute the sighting's time is wrong.
MAX_SIGHTING_AHEAD_S = 60.0

EXPIRED = "beacon_expired"
"""The app itself says it saw the beacon before the previous slot began."""

# When several sightings are refused, the answer names the most telling reason: a beacon of
# another chain or store first (the app ranged the wrong region), then the times.
_REFUSAL_ORDER = (
    Refusal.WRONG_CHAIN.value,
    Refusal.WRONG_STORE.value,
    EXPIRED,
    Refusal.STALE.value,
    Refusal.UNKNOWN_MINOR.value,
)

MESSAGES = {
    Refusal.WRONG_CHAIN.value: "this beacon's UUID is not this chain's",
    Refusal.WRONG_STORE.value: "this beacon is another store's (major)",
    EXPIRED: "this beacon was seen before the previous slot: range again",
    Refusal.STALE.value: "this minor is no longer broadcast here (a past slot)",
    Refusal.UNKNOWN_MINOR.value: "no box of this store broadcast this minor",
}
"""One sentence per refusal code, for the error answer (the same for every customer)."""


@dataclass(frozen=True, slots=True)
class BeaconSettings:
    """The store's beacon: its key (a secret, never shown), the chain's UUID, its major."""

    key: bytes = field(repr=False)
    chain_uuid: uuid.UUID
    major: int


@dataclass(frozen=True, slots=True)
class Sighting:
    """One store beacon as the app ranged it: values, RSSI (dBm), time (unix s, phone clock)."""

    uuid: uuid.UUID
    major: int
    minor: int
    rssi: int
    seen_at: float


@dataclass(frozen=True, slots=True)
class ProofAccepted:
    """The valid sightings: the box of the strongest and its zone, and every valid box's RSSI
    (the strongest reading of each box), for the presence engine."""

    box_id: str
    zone: str
    rssi: int
    current_slot: bool
    readings: tuple[tuple[str, int], ...]


@dataclass(frozen=True, slots=True)
class ProofRejected:
    """Why no sighting proves presence: a stable code and one sentence."""

    code: str

    @property
    def message(self) -> str:
        return MESSAGES[self.code]


def beacon_settings(config: ServerConfig) -> BeaconSettings | None:
    """The store beacon settings, or None when this store has no key (proofs are refused).

    ConfigError names the setting; it never quotes the key.
    """
    text = config.store_beacon_key.strip()
    if not text:
        return None
    where = "store_beacon_key_file" if config.store_beacon_key_file else "store_beacon_key"
    try:
        key = key_from_text(text)
    except ValueError:
        raise ConfigError(
            f"{where}: the store beacon key must be hexadecimal, at least {2 * MIN_KEY_BYTES}"
            " digits (store-server beacon-key makes one)",
            key=where,
        ) from None
    return BeaconSettings(key, uuid.UUID(config.store_beacon_uuid), config.store_beacon_major)


def check_proof(
    settings: BeaconSettings,
    box_zones: Mapping[str, str],
    sightings: Sequence[Sighting],
    now: float,
) -> ProofAccepted | ProofRejected:
    """The strongest sighting that a box of ``box_zones`` (box id -> zone) broadcast in the
    current or previous slot at server time ``now``, or the most telling refusal."""
    accepted: list[tuple[Sighting, ProofMatch]] = []
    refused: set[str] = set()
    boxes = sorted(box_zones)
    for sighting in sightings:
        if now - sighting.seen_at > MAX_SIGHTING_AGE_S:
            refused.add(EXPIRED)
            continue
        heard = StoreBeacon(sighting.uuid, sighting.major, sighting.minor)
        result = match_proof(
            settings.key, settings.major, boxes, heard, now, chain_uuid=settings.chain_uuid
        )
        if isinstance(result, ProofMatch):
            accepted.append((sighting, result))
        else:
            refused.add(result.reason.value)
    if accepted:
        sighting, match = max(accepted, key=lambda pair: (pair[0].rssi, pair[1].current))
        best: dict[str, int] = {}
        for valid, found in accepted:
            best[found.box_id] = max(valid.rssi, best.get(found.box_id, -128))
        zone = box_zones[match.box_id]
        return ProofAccepted(
            match.box_id, zone, sighting.rssi, match.current, tuple(sorted(best.items()))
        )
    return ProofRejected(_most_telling(refused))


def proof_events(
    engine: PresenceEngine, subject: str, proof: ProofAccepted, now: float
) -> list[PresenceEvent]:
    """Feed the engine a consenting customer's accepted proof; the events it decides.

    Each valid box's RSSI, as the phone measured it, is a one-reading window of that box (the
    radio path is the same both ways): the engine's filter, which knows the walls, the window
    and the doors, decides whether the phone is inside, as for a phone the boxes hear. Once the
    customer has arrived, the proof also holds them present like a check-in
    (``check_in_present_s``), since a background app cannot range for long. Every event about
    ``subject`` is marked ``beacon_proof``.
    """
    for box_id, rssi in proof.readings:
        engine.observe_many(box_id, [subject], [now], [float(rssi)], [1], box_window=False)
    events = engine.decide_arrivals([subject], now)
    if engine.zone_of(subject) is not None:
        events += engine.check_in(subject, now)  # arrived already: holds presence, no event
    return [replace(e, via="beacon_proof") if e.subject == subject else e for e in events]


def _most_telling(codes: Iterable[str]) -> str:
    present = set(codes)
    for code in _REFUSAL_ORDER:
        if code in present:
            return code
    return Refusal.UNKNOWN_MINOR.value
