"""The demo's iPhones: customers whose phone broadcasts nothing and checks in with a proof.

The demo store's boxes broadcast the store beacon (the chain's UUID, the store's major, a minor
rotating every 5 minutes: ``store_beacon.advertised_now`` with the demo's key, what a box's
BlueZ advertisement carries). Each iPhone customer walks the floor; what their phone hears of
each box comes from the demo's radio model (the same path loss as phone to box), and the
reference client (:class:`lab.phone_client.ReferencePhone`) is woken on region entry, ranges
and posts its proof to the demo's server, as an iOS app would.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass, field

import aiohttp

from lab.phone_client import ReferencePhone, fetch_region
from lab.radio import RadioModel
from store_beacon import advertised_now
from store_server.floor import Floor, Walk

__all__ = ["DEMO_BEACON_MAJOR", "DEMO_CHAIN_UUID", "DemoIphones"]

# The demo chain's iBeacon UUID and the demo store's number.
DEMO_CHAIN_UUID = uuid.UUID("6f1e2d3c-1b2a-4c5d-8e9f-00000000b011")
DEMO_BEACON_MAJOR = 1


@dataclass(slots=True)
class _Walker:
    handle: str
    walk: Walk
    wall_start: float
    phone: ReferencePhone


@dataclass(slots=True)
class DemoIphones:
    """The iPhone customers of the live rounds, stepped with the demo's clock."""

    floor: Floor
    radio: RadioModel
    key: bytes = field(repr=False)
    seed: int
    walkers: dict[str, _Walker] = field(default_factory=dict)
    _rng: random.Random = field(init=False)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    async def add(
        self, http: aiohttp.ClientSession, handle: str, walk_id: str, token: str, wall_start: float
    ) -> ReferencePhone:
        """An iPhone whose app is enrolled with ``token`` starts walking at ``wall_start``."""
        region = await fetch_region(http)
        if region is None:
            raise RuntimeError("the demo server has no store beacon")
        phone = ReferencePhone(http, token, region)
        self.walkers[handle] = _Walker(handle, self.floor.walk(walk_id), wall_start, phone)
        return phone

    def remove(self, handles: set[str]) -> None:
        for handle in handles:
            self.walkers.pop(handle, None)

    async def step(self, now: float) -> None:
        """What each phone hears of each box at ``now``, through its OS to the app."""
        for walker in list(self.walkers.values()):
            position = self.floor.position_at(walker.walk, now - walker.wall_start)
            heard: dict[str, tuple[uuid.UUID, int, int, int]] = {}
            if position is not None:
                for box in self.floor.scanners:
                    rssi = self.radio.rssi(box, position, self._rng)
                    if rssi is None:
                        continue
                    beacon = advertised_now(
                        self.key, DEMO_CHAIN_UUID, DEMO_BEACON_MAJOR, box.id, now
                    )
                    heard[box.id] = (beacon.uuid, beacon.major, beacon.minor, round(rssi))
            await walker.phone.step(now, heard)
