"""What a real shop does to radio, for the accuracy lab (pure, seeded, numpy).

Two tiers:

* ``espresense``: the parameters of ESPresense-companion's published simulation (log-distance
  exponent 2.7, sigma 2.5 dB, one reading in ten 6 dB low), boxes calibrated (the engine's
  model is the channel's).
* ``field``: what an uncalibrated install meets: each box its own exponent (2.0-3.5) and an
  offset the engine does not know (up to +-4 dB), walls absorbing more or less than the floor
  says (2-8 dB), and phone models 2 dB apart either way.

Both tiers add what phones and people do: advertising every 100-1000 ms with 5-30 % of the
advertisements lost, silent bursts of 2-5 s, the phone in a hand (1.2 m) or a pocket (0.8 m), and
the body shadowing (5-10 dB) boxes behind the walker.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from store_server.floor import Floor
from store_server.presence_grid import ON_WALL_T, _crossings, _intervals, _within

__all__ = ["TIERS", "Channel", "PhoneTraits", "Tier", "draw_phones"]

# Below this a box decodes nothing.
SENSITIVITY_DBM = -95.0
# A phone at 1 m from a box (the engine's reference).
REFERENCE_RSSI_DBM = -59.0


@dataclass(frozen=True, slots=True)
class Tier:
    name: str
    exponent_range: tuple[float, float]
    offset_db: float  # boxes' unknown offsets drawn from +-offset_db
    wall_range_db: tuple[float, float] | None  # None: walls cost what the floor says
    phone_model_db: float  # phones' unknown offsets drawn from +-phone_model_db
    sigma_db: float = 2.5
    multipath_share: float = 0.10
    multipath_db: float = 6.0


TIERS = {
    "espresense": Tier("espresense", (2.7, 2.7), 0.0, None, 0.0),
    "field": Tier("field", (2.0, 3.5), 4.0, (2.0, 8.0), 2.0),
}


@dataclass(frozen=True, slots=True)
class PhoneTraits:
    """Per phone: advertising interval (s), advertisement loss, height, model offset (dB)."""

    interval_s: npt.NDArray[np.float64]
    loss: npt.NDArray[np.float64]
    height_m: npt.NDArray[np.float64]
    model_db: npt.NDArray[np.float64]
    phase_s: npt.NDArray[np.float64]


def draw_phones(count: int, tier: Tier, rng: np.random.Generator) -> PhoneTraits:
    """Traits of ``count`` phones."""
    return PhoneTraits(
        interval_s=rng.uniform(0.1, 1.0, count),
        loss=rng.uniform(0.05, 0.30, count),
        height_m=np.where(rng.random(count) < 0.5, 1.2, 0.8),
        model_db=rng.uniform(-tier.phone_model_db, tier.phone_model_db, count),
        phase_s=rng.uniform(0.0, 1.0, count),
    )


class Channel:
    """The true radio of one floor under one tier: the boxes' real exponents and offsets."""

    def __init__(self, floor: Floor, tier: Tier, rng: np.random.Generator) -> None:
        self.floor = floor
        self.tier = tier
        boxes = len(floor.scanners)
        self.exponent = rng.uniform(*tier.exponent_range, boxes)
        self.offset_db = rng.uniform(-tier.offset_db, tier.offset_db, boxes)
        if tier.wall_range_db is None:
            self.wall_db = np.full(len(floor.barriers()), floor.wall_attenuation_db)
        else:
            self.wall_db = rng.uniform(*tier.wall_range_db, len(floor.barriers()))
        self._edges = len(floor.outline)
        barriers = floor.barriers()
        self._doors = [_intervals(e, floor.doors) for e in barriers[: self._edges]]
        self._fronts = [_intervals(e, floor.window_front) for e in barriers[: self._edges]]

    def mean_rssi(
        self,
        b: int,
        x: npt.NDArray[np.float64],
        y: npt.NDArray[np.float64],
        height: npt.NDArray[np.float64],
    ) -> npt.NDArray[np.float64]:
        """True mean RSSI at box ``b`` from phones at (x, y, height), before any body."""
        spec = self.floor.scanners[b]
        bx, by = spec.position
        distance = np.sqrt((x - bx) ** 2 + (y - by) ** 2 + (spec.height_m - height) ** 2)
        rssi = REFERENCE_RSSI_DBM - 10.0 * self.exponent[b] * np.log10(np.maximum(distance, 0.1))
        for e, barrier in enumerate(self.floor.barriers()):
            hit, u = _crossings(x, y, bx, by, barrier, t_max=ON_WALL_T)
            if e < self._edges:
                hit &= ~_within(u, self._doors[e])
                front = hit & _within(u, self._fronts[e])
                rssi -= np.where(front, self.floor.front_attenuation_db, 0.0)
                hit &= ~front
            rssi -= np.where(hit, self.wall_db[e], 0.0)
        result: npt.NDArray[np.float64] = rssi
        return result

    def readings(
        self,
        mean: npt.NDArray[np.float64],
        shadow_db: npt.NDArray[np.float64],
        model_db: npt.NDArray[np.float64],
        b: int,
        rng: np.random.Generator,
    ) -> npt.NDArray[np.float64]:
        """One reading per entry as box ``b`` reports it (NaN: not decoded)."""
        tier = self.tier
        rssi = mean - shadow_db + model_db + rng.normal(0.0, tier.sigma_db, mean.shape)
        rssi -= np.where(rng.random(mean.shape) < tier.multipath_share, tier.multipath_db, 0.0)
        rssi = np.where(rssi < SENSITIVITY_DBM, math.nan, rssi)
        # The box reports its radio's reading: its offset is what calibration must learn.
        reported: npt.NDArray[np.float64] = np.round(rssi - self.offset_db[b])
        return reported
