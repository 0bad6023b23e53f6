"""The guided calibration walk, simulated: stand in each zone and tap "I am here" (pure, seeded).

The manager walks to the middle of each zone with a phone in the hand and stands there for
``STAND_S`` seconds; every second each box's window of that phone is a sample for
:class:`~store_server.calibration.Calibrator`, at the distance and behind the walls the floor
gives. Returns what the engine is then given: per box, (offset, exponent).
"""

from __future__ import annotations

import math

import numpy as np

from lab.channel import Channel
from store_server.calibration import Calibrator
from store_server.floor import Floor
from store_server.presence import PresenceEngine

__all__ = ["calibration_walk"]

# Seconds standing in each zone: twenty windows per box.
STAND_S = 20
# Advertisements per second of the manager's phone (the app advertises fast while calibrating).
ADVERTS_PER_S = 5


def calibration_walk(
    floor: Floor, channel: Channel, rng: np.random.Generator
) -> dict[str, tuple[float, float]]:
    """Walk the floor zone by zone; what the calibrator learned for each box."""
    engine = PresenceEngine(floor)
    grid = engine.grid
    settings = engine.settings
    calibrator = Calibrator(settings.reference_rssi_dbm, settings.path_loss_exponent)
    for zone in floor.zones:
        cx, cy = zone.centroid()
        cell = int(
            np.argmin((grid.x - cx) ** 2 + (grid.y - cy) ** 2 + np.where(grid.inside, 0.0, 1e6))
        )
        for b, spec in enumerate(floor.scanners):
            mean = channel.mean_rssi(b, np.array([cx]), np.array([cy]), np.array([1.2]))
            bx, by = spec.position
            distance = math.sqrt(
                (cx - bx) ** 2 + (cy - by) ** 2 + (spec.height_m - settings.phone_height_m) ** 2
            )
            for _ in range(STAND_S):
                readings = channel.readings(
                    np.repeat(mean, ADVERTS_PER_S),
                    np.zeros(ADVERTS_PER_S),
                    np.zeros(ADVERTS_PER_S),
                    b,
                    rng,
                )
                readings = readings[~np.isnan(readings)]
                if readings.size:
                    calibrator.add(
                        spec.id,
                        distance,
                        float(grid.attenuation_db[b, cell]),
                        float(np.median(readings)),
                    )
    learned: dict[str, tuple[float, float]] = {}
    for spec in floor.scanners:
        fit = calibrator.fit(spec.id)
        if fit is not None:
            learned[spec.id] = (fit.rssi_offset_db, fit.path_loss_exponent)
    return learned
