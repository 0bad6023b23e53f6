"""Per-window RSSI aggregation of allowlisted sightings (pure; time is passed in).

Windows are aligned to multiples of ``window_s`` (``start = floor(now / window_s) * window_s``),
so every scanner of a store cuts time the same way. A window holds the sightings of one
``SightingKey``; ``flush(now)`` hands over every window whose end is at or before ``now``.
Memory is bounded: at most ``MAX_SAMPLES_PER_WINDOW`` RSSI samples are kept per window (``count``
and ``rssi_max`` still see every sighting) and at most ``MAX_OPEN_WINDOWS`` windows are open.
"""

from __future__ import annotations

import logging
import math
import statistics
from dataclasses import dataclass
from typing import Final

from scanner.allowlist import SightingKey

logger = logging.getLogger(__name__)

# Samples kept per window for the median: a phone advertises at most ~10 Hz per scanner, so 64
# covers several seconds of one phone while a flood of replays cannot grow memory.
MAX_SAMPLES_PER_WINDOW: Final = 64
# Open windows at once: far above allowlist size x windows between flushes in a real shop, yet a
# hard ceiling on memory if flushing stalls.
MAX_OPEN_WINDOWS: Final = 50_000
# The dBm range of a window's readings on the wire (docs/api.md): the server refuses a batch
# holding a value outside it, so such a reading never enters a window. HCI reports 127 for
# "RSSI not available"; a beacon may advertise any byte as its power.
RSSI_MIN: Final = -127
RSSI_MAX: Final = 20


@dataclass(frozen=True, slots=True)
class WindowAggregate:
    """Sightings of one identifier during one window, as sent in a batch (docs/api.md)."""

    id_type: str
    id: str
    start: float
    end: float
    count: int
    rssi_max: int
    rssi_median: float
    tx_power: int | None

    def to_wire(self) -> dict[str, object]:
        """The window object of ``POST /api/scanner/v1/batches``."""
        return {
            "id_type": self.id_type,
            "id": self.id,
            "start": self.start,
            "end": self.end,
            "count": self.count,
            "rssi_max": self.rssi_max,
            "rssi_median": self.rssi_median,
            "tx_power": self.tx_power,
        }


class _OpenWindow:
    __slots__ = ("count", "rssi_max", "samples", "tx_power")

    def __init__(self, rssi: int, tx_power: int | None) -> None:
        self.count = 1
        self.rssi_max = rssi
        self.samples = [rssi]
        self.tx_power = tx_power


class Aggregator:
    """Collects sightings into aligned windows of ``window_s`` seconds."""

    __slots__ = ("_open", "overflow", "unusable", "window_s")

    def __init__(self, window_s: float) -> None:
        if not (math.isfinite(window_s) and window_s > 0):
            raise ValueError(f"window_s must be a positive number, got {window_s!r}")
        self.window_s = window_s
        # Sightings refused because MAX_OPEN_WINDOWS windows were already open.
        self.overflow = 0
        # Sightings left out because their RSSI is not a reading (outside RSSI_MIN..RSSI_MAX).
        self.unusable = 0
        self._open: dict[tuple[SightingKey, float], _OpenWindow] = {}

    def __len__(self) -> int:
        return len(self._open)

    def add(self, key: SightingKey, rssi: int, tx_power: int | None, now: float) -> None:
        """Count one sighting of ``key`` at time ``now``.

        A sighting whose RSSI is not a reading is left out (counted in ``unusable``), and a
        power outside the same range is taken as unknown (None): one phone's odd value must
        not make the server refuse the batch of every phone around it.
        """
        if not RSSI_MIN <= rssi <= RSSI_MAX:
            self.unusable += 1
            return
        if tx_power is not None and not RSSI_MIN <= tx_power <= RSSI_MAX:
            tx_power = None
        start = math.floor(now / self.window_s) * self.window_s
        window = self._open.get((key, start))
        if window is None:
            if len(self._open) >= MAX_OPEN_WINDOWS:
                self.overflow += 1
                return
            self._open[(key, start)] = _OpenWindow(rssi, tx_power)
            return
        window.count += 1
        if rssi > window.rssi_max:
            window.rssi_max = rssi
        if len(window.samples) < MAX_SAMPLES_PER_WINDOW:
            window.samples.append(rssi)
        if tx_power is not None:
            window.tx_power = tx_power

    def _close(self, key: SightingKey, start: float, window: _OpenWindow) -> WindowAggregate:
        return WindowAggregate(
            id_type=key.id_type,
            id=key.id,
            start=start,
            end=start + self.window_s,
            count=window.count,
            rssi_max=window.rssi_max,
            rssi_median=float(statistics.median(window.samples)),
            tx_power=window.tx_power,
        )

    def flush(self, now: float) -> list[WindowAggregate]:
        """Return and forget every window whose end is <= ``now``, ordered by (start, id)."""
        done = [(key, start) for key, start in self._open if start + self.window_s <= now]
        done.sort(key=lambda ks: (ks[1], ks[0].id_type, ks[0].id))
        return [self._close(key, start, self._open.pop((key, start))) for key, start in done]

    def flush_all(self) -> list[WindowAggregate]:
        """Return and forget every open window (shutdown), ordered by (start, id)."""
        return self.flush(math.inf)
