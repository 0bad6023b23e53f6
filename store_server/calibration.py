"""Per-box RSSI offset and path-loss exponent learned from windows at known places (pure).

A check-in in a known zone, or a tap on "I am here" during a guided calibration walk, says where a
phone stands; the windows the boxes heard from it meanwhile are samples of each box's radio:
``reported + offset = reference - 10 n log10(d) - walls``. For each box, a ridge least-squares fit
of ``offset`` and ``n`` over its samples, pulled toward the defaults (offset 0, the floor's
exponent) so that a box heard from one or two places only moves as far as they show. No I/O.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

__all__ = ["BoxCalibration", "Calibrator"]

# Weight of the defaults, in samples: a box needs a few samples before it moves far from them.
PRIOR_SAMPLES = 3.0
# The exponent's pull is expressed per unit of 10 log10(d): a 1 m spread of distances is about
# one unit. Exponents outside 1.5-5 are not a room's (mis-placed box, a wrong tap).
EXPONENT_RANGE = (1.5, 5.0)
# Offsets beyond +-15 dB are a broken radio or a wrong floor, not calibration.
OFFSET_LIMIT_DB = 15.0
# Keep at most this many samples per box (the latest): memory stays bounded.
MAX_SAMPLES = 2000


@dataclass(frozen=True, slots=True)
class BoxCalibration:
    """The values learned for one box and from how many samples."""

    rssi_offset_db: float
    path_loss_exponent: float
    samples: int


@dataclass(slots=True)
class Calibrator:
    """Collects samples per box and fits its offset and exponent."""

    reference_rssi_dbm: float
    default_exponent: float
    samples: dict[str, list[tuple[float, float, float]]] = field(default_factory=dict)

    def add(
        self,
        box_id: str,
        distance_m: float,
        walls_db: float,
        reported_rssi: float,
        weight: float = 1.0,
    ) -> None:
        """One window median heard by ``box_id`` from a phone at a known distance; ``weight``
        says how many independent samples it is worth (windows that share one error, such as
        a pair of fixed boxes' fading, share one weight between them)."""
        if not (math.isfinite(reported_rssi) and distance_m > 0.0 and weight > 0.0):
            return
        rows = self.samples.setdefault(box_id, [])
        # y = reported - (reference - walls) = -offset - n * x, with x = 10 log10(d)
        rows.append(
            (
                10.0 * math.log10(max(distance_m, 0.1)),
                reported_rssi - self.reference_rssi_dbm + walls_db,
                weight,
            )
        )
        if len(rows) > MAX_SAMPLES:
            del rows[: len(rows) - MAX_SAMPLES]

    def reset(self, box_id: str | None = None) -> None:
        """Forget the samples of one box, or of every box."""
        if box_id is None:
            self.samples.clear()
        else:
            self.samples.pop(box_id, None)

    def fit(self, box_id: str) -> BoxCalibration | None:
        """The learned values for ``box_id``, ``None`` without samples."""
        rows = self.samples.get(box_id)
        if not rows:
            return None
        # Minimise sum w (y + o + n x)^2 + P (o^2 + (n - n0)^2) over (o, n): a 2 x 2 system.
        p, n0 = PRIOR_SAMPLES, self.default_exponent
        sxx = sum(w * x * x for x, _, w in rows) + p
        sx = sum(w * x for x, _, w in rows)
        s1 = sum(w for _, _, w in rows) + p
        sxy = sum(w * x * y for x, y, w in rows)
        sy = sum(w * y for _, y, w in rows)
        # d/do: s1 o + sx n = -sy ; d/dn: sx o + sxx n = -sxy + p n0
        det = s1 * sxx - sx * sx
        offset = (-sy * sxx - sx * (-sxy + p * n0)) / det
        exponent = (s1 * (-sxy + p * n0) + sx * sy) / det
        exponent = min(max(exponent, EXPONENT_RANGE[0]), EXPONENT_RANGE[1])
        offset = min(max(offset, -OFFSET_LIMIT_DB), OFFSET_LIMIT_DB)
        return BoxCalibration(round(offset, 2), round(exponent, 3), len(rows))
