"""The reference phone app's store-beacon protocol, and the phone OS around it (pure).

What an app must do, step by step (docs/customer-app.md, "iPhone" and "Android"), as a state
machine that takes the OS's callbacks and the server's answers with their time and returns what
to do next (:class:`BeaconCheckInApp`); :mod:`lab.phone_client` performs it over HTTP for the
demo and the tests, and :mod:`lab.iphones` runs it in the accuracy lab without a network.

1. Monitor the store beacon region: the chain's UUID (and this store's major) from
   ``GET /api/v1/store-beacon``. The OS watches it even when the app is not running.
2. On entering the region the OS wakes (or relaunches) the app: start ranging.
3. Ranging reports each box's beacon about once a second with the RSSI the phone measures.
   Post each round whose strongest beacon is heard well (at least ``near_rssi``) to
   ``POST /api/v1/check-in/proof``, one at a time. The server's presence engine weighs them as
   it weighs the boxes' windows of an Android phone: ``not_inside`` (maybe still on the
   pavement) means range on and post the next round; ``checked_in`` means stop ranging.
   A background app has about 30 s of ranging after a wake-up: past ``ranging_budget_s``
   without a near beacon it stops, and stays silent until the next region entry.
4. A refusal that ranging again can cure (the minor rotated between ranging and posting) is
   retried once with the next round; any other answer ends the attempt: the customer can still
   tap "I'm here".
5. On leaving the region, forget the attempt: the next entry starts again at 2.

:class:`RegionMonitor` stands in for the OS: it turns what the phone hears each moment into
region entry and exit callbacks, with the OS's delays, and ranging rounds once a second.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

__all__ = [
    "Action",
    "AppState",
    "BeaconCheckInApp",
    "PostProof",
    "RangedBeacon",
    "Region",
    "RegionMonitor",
    "StartRanging",
    "StopRanging",
]

# A round is worth posting when its strongest beacon is at least this loud (about 8 m from a
# box advertising -59 dBm at 1 m): the engine decides inside or outside, not this threshold.
# Lab (seed 1, espresense): -80 detects 97 % of walk-ins on the demo floor and 74 % on the
# corner floor with 0 and 3 of 400 app users outside arriving; -70 detected 26 % on the corner.
DEFAULT_NEAR_RSSI_DBM = -80
# iOS gives a background app about 10 s after a region wake-up, up to 30 s with a background
# task: ranging longer than this is not possible without the customer opening the app.
RANGING_BUDGET_S = 30.0
# One more ranging round after a refusal that fresh values can cure.
RETRIES = 1
# At most this many beacons go into one proof (the server reads at most 8).
MAX_PROOF_BEACONS = 8
# Refusals that the next ranging round may cure: the minor rotated, or the sighting aged.
RETRYABLE = frozenset({"beacon_stale", "beacon_unknown_minor", "beacon_expired"})
# iOS calls back with the beacons ranged about once a second.
RANGING_INTERVAL_S = 1.0
# iOS notices a region entry about a second after the first advertisement heard...
ENTRY_DELAY_S = 1.0
# ...and an exit only after about 30 s without any.
EXIT_DELAY_S = 30.0


@dataclass(frozen=True, slots=True)
class Region:
    """The beacon region the app monitors: the chain's UUID, and this store's major."""

    uuid: UUID
    major: int | None = None

    def contains(self, beacon_uuid: UUID, major: int) -> bool:
        return beacon_uuid == self.uuid and (self.major is None or major == self.major)


@dataclass(frozen=True, slots=True)
class RangedBeacon:
    """One beacon in a ranging round: its values and the RSSI measured (0: none, on iOS)."""

    uuid: UUID
    major: int
    minor: int
    rssi: int


@dataclass(frozen=True, slots=True)
class StartRanging:
    """Start ranging the region (``startRangingBeacons(satisfying:)`` on iOS)."""


@dataclass(frozen=True, slots=True)
class StopRanging:
    """Stop ranging: the attempt is over (battery)."""


@dataclass(frozen=True, slots=True)
class PostProof:
    """``POST /api/v1/check-in/proof`` with this JSON body."""

    body: dict[str, Any]


Action = StartRanging | StopRanging | PostProof


class AppState(enum.Enum):
    OUTSIDE = "outside"
    RANGING = "ranging"
    POSTING = "posting"
    CHECKED_IN = "checked_in"
    NOT_CHECKED_IN = "not_checked_in"
    """The server answered but did not check in (no consent): nothing more this visit."""
    GAVE_UP = "gave_up"


@dataclass(slots=True)
class BeaconCheckInApp:
    """The app's side of the proof-of-presence check-in, one region visit at a time."""

    region: Region
    near_rssi: int = DEFAULT_NEAR_RSSI_DBM
    ranging_budget_s: float = RANGING_BUDGET_S
    state: AppState = AppState.OUTSIDE
    entered_at: float | None = None
    posted_at: float | None = None
    checked_in_at: float | None = None
    refusal: str | None = None
    zone: str | None = None
    _retries: int = field(default=RETRIES, repr=False)

    def region_entered(self, t: float) -> list[Action]:
        """The OS says the phone entered the region (it may have relaunched the app)."""
        if self.state is not AppState.OUTSIDE:
            return []
        self.state, self.entered_at = AppState.RANGING, t
        self.posted_at = self.checked_in_at = None
        self.refusal = self.zone = None
        self._retries = RETRIES
        return [StartRanging()]

    def ranged(self, beacons: Iterable[RangedBeacon], t: float) -> list[Action]:
        """One ranging round: post a proof when the strongest beacon is near."""
        if self.state is not AppState.RANGING:
            return []
        heard = sorted(
            (b for b in beacons if b.rssi < 0 and self.region.contains(b.uuid, b.major)),
            key=lambda b: -b.rssi,
        )
        if heard and heard[0].rssi >= self.near_rssi:
            self.state = AppState.POSTING
            self.posted_at = t if self.posted_at is None else self.posted_at
            return [PostProof(proof_body(heard[:MAX_PROOF_BEACONS], t))]
        if self.entered_at is not None and t - self.entered_at >= self.ranging_budget_s:
            self.state = AppState.GAVE_UP
            return [StopRanging()]
        return []

    def answered(self, status: int, body: Mapping[str, Any], t: float) -> list[Action]:
        """The server's answer to the proof just posted."""
        if self.state is not AppState.POSTING:
            return []
        if status == 200:
            if body.get("checked_in"):
                self.state, self.checked_in_at = AppState.CHECKED_IN, t
                zone = body.get("zone")
                self.zone = zone if isinstance(zone, str) else None
            elif body.get("reason") == "not_inside":
                self.state = AppState.RANGING  # maybe still outside the window: range on
                return []
            else:
                self.state = AppState.NOT_CHECKED_IN
            return [StopRanging()]
        error = body.get("error")
        self.refusal = str(error.get("code")) if isinstance(error, dict) else f"http_{status}"
        if status == 403 and self.refusal in RETRYABLE and self._retries > 0:
            self._retries -= 1
            self.state = AppState.RANGING
            return []
        self.state = AppState.GAVE_UP
        return [StopRanging()]

    def region_exited(self, t: float) -> list[Action]:
        """The OS says the phone left the region: the next entry is a new attempt."""
        del t
        ranging = self.state in (AppState.RANGING, AppState.POSTING)
        self.state = AppState.OUTSIDE
        return [StopRanging()] if ranging else []


def proof_body(beacons: Iterable[RangedBeacon], t: float) -> dict[str, Any]:
    """The JSON body of ``POST /api/v1/check-in/proof`` for beacons ranged at ``t``."""
    return {
        "beacons": [
            {
                "uuid": str(b.uuid).upper(),
                "major": b.major,
                "minor": b.minor,
                "rssi": b.rssi,
                "seen_at": round(t, 3),
            }
            for b in beacons
        ]
    }


@dataclass(slots=True)
class RegionMonitor:
    """The phone's OS: region entry and exit with their delays, ranging rounds each second.

    Feed :meth:`heard` with what the phone hears at each moment (box id -> the beacon and
    its RSSI); it returns the callbacks due: ``("enter", None)``, ``("exit", None)`` and, while
    ranging, ``("ranged", [RangedBeacon, ...])`` about once a second (each beacon's readings of
    the round averaged, as iOS reports ``CLBeacon.rssi``).
    """

    region: Region
    entry_delay_s: float = ENTRY_DELAY_S
    exit_delay_s: float = EXIT_DELAY_S
    ranging: bool = False
    inside: bool = False
    _first_heard: float | None = None
    _last_heard: float | None = None
    _round_start: float | None = None
    _round: dict[tuple[UUID, int, int], list[int]] = field(default_factory=dict)

    def heard(
        self, t: float, beacons: Mapping[str, tuple[UUID, int, int, int]]
    ) -> list[tuple[str, list[RangedBeacon] | None]]:
        """``beacons``: box id -> (uuid, major, minor, rssi) heard at ``t``."""
        ours = {
            (u, major, minor): rssi
            for u, major, minor, rssi in beacons.values()
            if self.region.contains(u, major)
        }
        out: list[tuple[str, list[RangedBeacon] | None]] = []
        if ours:
            self._last_heard = t
            if self._first_heard is None:
                self._first_heard = t
        elif self._last_heard is None or t - self._last_heard >= self.exit_delay_s:
            self._first_heard = None
        if (
            not self.inside
            and self._first_heard is not None
            and t - self._first_heard >= self.entry_delay_s
        ):
            self.inside = True
            out.append(("enter", None))
        if (
            self.inside
            and self._last_heard is not None
            and t - self._last_heard >= self.exit_delay_s
        ):
            self.inside = False
            self._first_heard = None
            out.append(("exit", None))
        if self.ranging:
            for key, rssi in ours.items():
                self._round.setdefault(key, []).append(rssi)
            if self._round_start is None:
                self._round_start = t
            elif t - self._round_start >= RANGING_INTERVAL_S:
                ranged = [
                    RangedBeacon(u, ma, mi, round(sum(values) / len(values)))
                    for (u, ma, mi), values in self._round.items()
                ]
                out.append(("ranged", ranged))
                self._round.clear()
                self._round_start = t
        return out

    def perform(self, actions: Iterable[Action]) -> None:
        """Start or stop ranging as the app asked."""
        for action in actions:
            if isinstance(action, StartRanging):
                self.ranging, self._round_start = True, None
                self._round.clear()
            elif isinstance(action, StopRanging):
                self.ranging = False
