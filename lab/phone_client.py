"""The reference phone client over HTTP: an opted-in app that checks in with a store beacon.

It performs :class:`lab.beacon_app.BeaconCheckInApp` against a real store server through the
public customer API, exactly as an iOS or Android app must (docs/customer-app.md): it learns
the region from ``GET /api/v1/store-beacon``, lets its OS (:class:`lab.beacon_app.RegionMonitor`)
wake it on region entry, ranges, and posts ``POST /api/v1/check-in/proof``. Used by the demo
(the iPhone customer) and the end-to-end tests. Enrollment and consent go through the same API
beforehand (``POST /api/v1/enroll``, ``POST /api/v1/consents``), as for any app.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from lab.beacon_app import (
    Action,
    AppState,
    BeaconCheckInApp,
    PostProof,
    RangedBeacon,
    Region,
    RegionMonitor,
)

__all__ = ["ReferencePhone", "fetch_region"]

logger = logging.getLogger(__name__)

PROOF_PATH = "/api/v1/check-in/proof"


async def fetch_region(http: aiohttp.ClientSession, *, whole_chain: bool = False) -> Region | None:
    """The region to monitor from ``GET /api/v1/store-beacon`` (None: the store has none).

    ``whole_chain``: monitor the chain's UUID alone (one region for every shop; iOS allows an
    app 20 monitored regions), otherwise the UUID and this store's major.
    """
    async with http.get("/api/v1/store-beacon") as resp:
        resp.raise_for_status()
        info = await resp.json()
    if not info.get("enabled"):
        return None
    return Region(uuid.UUID(info["uuid"]), None if whole_chain else int(info["major"]))


@dataclass(slots=True)
class ReferencePhone:
    """One phone running the app: its OS, its app state, its app token.

    Call :meth:`step` with what the phone hears at each moment (box id -> (uuid, major, minor,
    rssi)) and the phone's time ``t``; ``timeline`` records when the OS woke the app, each
    ranging round, each post and its answer.
    """

    http: aiohttp.ClientSession
    token: str
    region: Region
    app: BeaconCheckInApp = field(init=False)
    monitor: RegionMonitor = field(init=False)
    timeline: list[tuple[float, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.app = BeaconCheckInApp(self.region)
        self.monitor = RegionMonitor(self.region)

    @property
    def checked_in(self) -> bool:
        return self.app.state is AppState.CHECKED_IN

    async def step(self, t: float, heard: Mapping[str, tuple[uuid.UUID, int, int, int]]) -> None:
        for kind, ranged in self.monitor.heard(t, heard):
            self.timeline.append((t, kind))
            if kind == "enter":
                actions = self.app.region_entered(t)
            elif kind == "exit":
                actions = self.app.region_exited(t)
            else:
                actions = self.app.ranged(ranged or [], t)
            await self._perform(actions, t)

    async def _perform(self, actions: Iterable[Action], t: float) -> None:
        for action in list(actions):
            self.monitor.perform([action])
            if isinstance(action, PostProof):
                self.timeline.append((t, "posted"))
                status, body = await self._post(action.body)
                self.timeline.append((t, f"answered {status}"))
                await self._perform(self.app.answered(status, body, t), t)

    async def _post(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        headers = {"Authorization": f"Bearer {self.token}"}
        async with self.http.post(PROOF_PATH, json=body, headers=headers) as resp:
            answer: dict[str, Any] = await resp.json()
            return resp.status, answer


def ranged_now(beacons: Iterable[tuple[uuid.UUID, int, int, int]]) -> list[RangedBeacon]:
    """Beacons as one ranging round (for a test that drives the app directly)."""
    return [RangedBeacon(u, major, minor, rssi) for u, major, minor, rssi in beacons]
