"""Boxes hearing each other's store beacon through the lab's channel (pure, seeded, numpy).

A box's advertisement reaches another box over the same radio as a phone's: the listener's own
exponent and unknown offset (:class:`lab.channel.Channel`), the walls between the two (each
absorbing what the channel drew for it), a reading's noise and the odd multipath dip; both ends
at their mounting height, no body in between. What a phone's model adds, the box's transmitter
adds too: its real power at 1 m differs from the ``measured_power`` it advertises by up to
``TRANSMIT_SPREAD_DB`` either way (boxes of one model, each its own unit), drawn once per box.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from lab.channel import REFERENCE_RSSI_DBM, Channel

__all__ = ["TRANSMIT_SPREAD_DB", "BoxRadio"]

# Units of one box model transmit within about +-2 dB of one another (the phone models' spread).
TRANSMIT_SPREAD_DB = 2.0
# A box's antenna stands this far off the wall it hangs on (m).
MOUNT_INSET_M = 0.1


@dataclass(frozen=True, slots=True)
class BoxRadio:
    """The true transmitters of a floor's boxes under one channel."""

    channel: Channel
    transmit_db: npt.NDArray[np.float64]  # each box's real power at 1 m minus the advertised

    @classmethod
    def draw(cls, channel: Channel, rng: np.random.Generator) -> BoxRadio:
        boxes = len(channel.floor.scanners)
        spread = TRANSMIT_SPREAD_DB if channel.tier.offset_db > 0 else 0.0
        return cls(channel, rng.uniform(-spread, spread, boxes))

    def mean(self, listener: int, speaker: int) -> float:
        """The mean RSSI box ``listener`` hears from ``speaker``, before its offset and noise,
        with the speaker advertising the reference power (-59 dBm at 1 m).

        A box hangs on the inside face of its wall: the speaker's point is taken
        ``MOUNT_INSET_M`` toward the listener, or the channel (made for phones, never on a
        wall) would count the speaker's own wall between the two; the distance stays the
        boxes' own."""
        scanners = self.channel.floor.scanners
        spec, there = scanners[speaker], scanners[listener]
        (x, y), (lx, ly) = spec.position, there.position
        true = math.dist((x, y, spec.height_m), (lx, ly, there.height_m))
        flat = math.dist((x, y), (lx, ly))
        if flat > 0.0:
            x += (lx - x) * MOUNT_INSET_M / flat
            y += (ly - y) * MOUNT_INSET_M / flat
        inset = math.dist((x, y, spec.height_m), (lx, ly, there.height_m))
        rssi = self.channel.mean_rssi(
            listener, np.array([x]), np.array([y]), np.array([spec.height_m])
        )
        exponent = float(self.channel.exponent[listener])
        distance_db = 10.0 * exponent * math.log10(max(true, 0.1) / max(inset, 0.1))
        return float(rssi[0]) - distance_db + float(self.transmit_db[speaker])

    def window(
        self, listener: int, speaker: int, adverts: int, rng: np.random.Generator
    ) -> tuple[float, int, int] | None:
        """One window of ``adverts`` advertisements as the listener reports it: (median, max,
        count), or None when none was decoded."""
        mean = np.full(adverts, self.mean(listener, speaker))
        zeros = np.zeros(adverts)
        readings = self.channel.readings(mean, zeros, zeros, listener, rng)
        readings = readings[~np.isnan(readings)]
        if not readings.size:
            return None
        return float(np.median(readings)), int(readings.max()), int(readings.size)


ADVERTISED_POWER_DBM = int(REFERENCE_RSSI_DBM)
"""What the boxes advertise as their power at 1 m (the scanner's default measured_power)."""
