"""A simulated BLE radio channel: log-distance path loss with noise and multipath (pure).

The parameters follow the published simulation of ESPresense-companion: Gaussian noise with a
standard deviation of 2.5 dB on each reading, and one reading in ten hit by multipath fading that
costs 6 dB. The caller passes the :class:`random.Random` so that runs are reproducible.

Calibration convention: a scanner's ``rssi_offset_db`` is what the presence engine ADDS to the
RSSI the scanner reports. The model therefore returns ``true_rssi - rssi_offset_db`` (a scanner
with offset +3 is a radio that reads 3 dB low).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from store_server.floor import Floor, ScannerSpec

__all__ = [
    "DEFAULT_MULTIPATH_LOSS_DB",
    "DEFAULT_MULTIPATH_SHARE",
    "DEFAULT_NOISE_SIGMA_DB",
    "DEFAULT_PATH_LOSS_EXPONENT",
    "DEFAULT_REFERENCE_RSSI_DBM",
    "DEFAULT_SENSITIVITY_DBM",
    "RadioModel",
]

# A phone's BLE advertisement measured at 1 m by a typical scanner (Android tx power "medium").
DEFAULT_REFERENCE_RSSI_DBM = -59.0
# 2.0 is free space; 2.7 fits an open-plan shop with shelving and people in the way.
DEFAULT_PATH_LOSS_EXPONENT = 2.7
# Per-reading noise of ESPresense-companion's published simulation.
DEFAULT_NOISE_SIGMA_DB = 2.5
# Share of readings hit by multipath fading in the same simulation.
DEFAULT_MULTIPATH_SHARE = 0.10
# Loss of a multipath-hit reading in the same simulation.
DEFAULT_MULTIPATH_LOSS_DB = 6.0
# Below this a Raspberry Pi class BLE adapter decodes no advertisement.
DEFAULT_SENSITIVITY_DBM = -95.0
# Distances below this are clamped: the far-field model is meaningless closer than 10 cm.
MIN_DISTANCE_M = 0.1


@dataclass(frozen=True, slots=True)
class RadioModel:
    """Log-distance path loss: ``rssi = ref - 10 n log10(d) - front + noise (- multipath)``."""

    reference_rssi_dbm: float = DEFAULT_REFERENCE_RSSI_DBM
    path_loss_exponent: float = DEFAULT_PATH_LOSS_EXPONENT
    noise_sigma_db: float = DEFAULT_NOISE_SIGMA_DB
    multipath_share: float = DEFAULT_MULTIPATH_SHARE
    multipath_loss_db: float = DEFAULT_MULTIPATH_LOSS_DB
    sensitivity_dbm: float = DEFAULT_SENSITIVITY_DBM
    front_attenuation_db: float = 0.0

    @classmethod
    def for_floor(cls, floor: Floor) -> RadioModel:
        """The default model with the glass-front attenuation of ``floor``."""
        return cls(front_attenuation_db=floor.front_attenuation_db)

    def mean_rssi(self, scanner: ScannerSpec, position: tuple[float, float]) -> float:
        """The true mean RSSI (before noise and calibration) at ``scanner`` from ``position``."""
        sx, sy = scanner.position
        distance = max(math.hypot(position[0] - sx, position[1] - sy), MIN_DISTANCE_M)
        rssi = self.reference_rssi_dbm - 10.0 * self.path_loss_exponent * math.log10(distance)
        # The shop window sits on y = 0: a phone on the street seen by a scanner in the shop
        # goes through the glass.
        if position[1] < 0.0 <= sy:
            rssi -= self.front_attenuation_db
        return rssi

    def rssi(
        self, scanner: ScannerSpec, position: tuple[float, float], rng: random.Random
    ) -> float | None:
        """One reading as the scanner's radio reports it, or ``None`` when it is not heard."""
        rssi = self.mean_rssi(scanner, position) + rng.gauss(0.0, self.noise_sigma_db)
        if rng.random() < self.multipath_share:
            rssi -= self.multipath_loss_db
        if rssi < self.sensitivity_dbm:
            return None
        return rssi - scanner.rssi_offset_db
