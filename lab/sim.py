"""Simulated phones walking the store floor, as heard by each scanner (pure, seeded).

Shared by the demo (which feeds each scanner daemon what its radio would hear) and usable by the
accuracy lab. The caller injects how a phone computes its advertisement (``SimPhone.advert``),
so this module knows nothing of identity keys.

Addresses: a phone advertising an Eddystone-EID rotates its random static MAC address together
with its EID, otherwise the MAC would link successive EIDs. The simulation derives a random
static address (two top bits set) from the seed, the phone's handle and the index of the
address window (``address_rotation_s``, by default the EID period 2^9 s).
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from lab.radio import RadioModel
from store_server.floor import Floor, FloorError, Walk

__all__ = [
    "DEFAULT_ADDRESS_ROTATION_S",
    "SimAdvert",
    "SimPhone",
    "StoreSimulation",
]

# Phones rotate their address with the EID; the default EID rotation is 2^9 s.
DEFAULT_ADDRESS_ROTATION_S = 512.0


@dataclass(frozen=True, slots=True)
class SimPhone:
    """A phone following one of the floor's walks, ``phase_s`` seconds into it at t = 0."""

    handle: str
    walk_id: str
    phase_s: float
    advert: Callable[[float], bytes]


@dataclass(frozen=True, slots=True)
class SimAdvert:
    """One advertisement as a scanner hears it."""

    handle: str
    address: str
    rssi: int
    service_data_hex: str


class StoreSimulation:
    """Phones walking the floor; :meth:`step` says what every scanner hears at a given time."""

    def __init__(
        self,
        floor: Floor,
        radio: RadioModel,
        phones: Sequence[SimPhone],
        seed: int,
        address_rotation_s: float = DEFAULT_ADDRESS_ROTATION_S,
    ) -> None:
        if address_rotation_s <= 0.0:
            raise ValueError("address_rotation_s must be positive")
        self._floor = floor
        self._radio = radio
        self._seed = seed
        self._rng = random.Random(seed)
        self._rotation = address_rotation_s
        self._phones: dict[str, tuple[SimPhone, Walk]] = {}
        for phone in phones:
            if phone.handle in self._phones:
                raise ValueError(f"duplicate phone handle {phone.handle!r}")
            self._phones[phone.handle] = (phone, floor.walk(phone.walk_id))

    def position(self, handle: str, t: float) -> tuple[float, float] | None:
        """Where the phone is at ``t`` (``None`` when it is out of range)."""
        entry = self._phones.get(handle)
        if entry is None:
            raise FloorError(f"unknown phone {handle!r}")
        phone, walk = entry
        return self._floor.position_at(walk, t + phone.phase_s)

    def truth(self, handle: str, t: float) -> tuple[tuple[float, float] | None, str | None]:
        """Ground truth at ``t``: the phone's position and the zone it is really in."""
        position = self.position(handle, t)
        if position is None:
            return None, None
        return position, self._floor.zone_at(*position)

    def address(self, handle: str, t: float) -> str:
        """The phone's random static address during the address window holding ``t``."""
        window = math.floor(t / self._rotation)
        digest = hashlib.blake2b(f"{self._seed}:{handle}:{window}".encode(), digest_size=6).digest()
        raw = bytes([digest[0] | 0xC0]) + digest[1:]
        return ":".join(f"{b:02X}" for b in raw)

    def step(self, t: float) -> dict[str, list[SimAdvert]]:
        """For each scanner id, the advertisements it hears at ``t`` (one per phone in range)."""
        heard: dict[str, list[SimAdvert]] = {spec.id: [] for spec in self._floor.scanners}
        for handle, (phone, walk) in self._phones.items():
            position = self._floor.position_at(walk, t + phone.phase_s)
            if position is None:
                continue
            payload: bytes | None = None
            address = ""
            for spec in self._floor.scanners:
                rssi = self._radio.rssi(spec, position, self._rng)
                if rssi is None:
                    continue
                if payload is None:
                    payload = phone.advert(t)
                    address = self.address(handle, t)
                heard[spec.id].append(SimAdvert(handle, address, round(rssi), payload.hex()))
        return heard
