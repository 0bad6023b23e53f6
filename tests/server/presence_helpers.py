"""Hand-written traces for the presence filter: windows as the model predicts them (pure)."""

from __future__ import annotations

import itertools
import math
import tomllib
from collections.abc import Callable
from pathlib import Path

import numpy as np

from lab.channel import TIERS, Channel
from store_server.floor import Floor, floor_from_dict
from store_server.presence import Observation, PresenceEngine, PresenceEvent

SEEDS = Path(__file__).resolve().parents[2] / "seeds"

Path_ = Callable[[float], tuple[float, float] | None]


def load(name: str = "store.toml") -> Floor:
    with (SEEDS / name).open("rb") as handle:
        return floor_from_dict(tomllib.load(handle))


def channel(floor: Floor) -> Channel:
    """The espresense channel: the engine's own model, calibrated boxes."""
    return Channel(floor, TIERS["espresense"], np.random.default_rng(0))


def window_at(ch: Channel, position: tuple[float, float], noise: float = 0.0) -> dict[str, float]:
    """The mean RSSI every box hears from a phone in the hand at ``position`` (+ ``noise``)."""
    x, y = np.array([position[0]]), np.array([position[1]])
    return {
        spec.id: float(ch.mean_rssi(b, x, y, np.array([1.0]))[0]) + noise
        for b, spec in enumerate(ch.floor.scanners)
    }


def drive(
    engine: PresenceEngine,
    ch: Channel,
    path: Path_,
    until: float,
    subject: str = "a",
    start: float = 1.0,
    rng: np.random.Generator | None = None,
    sigma: float = 0.0,
) -> list[PresenceEvent]:
    """One window per box and second along ``path`` (None: silent), then a tick; all events."""
    events: list[PresenceEvent] = []
    t = start
    while t <= until:
        here = path(t - 0.5)
        if here is not None:
            for box, rssi in window_at(ch, here).items():
                if rng is not None:
                    rssi += float(rng.normal(0.0, sigma))
                engine.observe(Observation(subject, box, t, rssi, rssi + 2.0, 3))
            events.extend(engine.decide_arrivals([subject], t))
        events.extend(engine.tick(t))
        t += 1.0
    return events


def line(points: list[tuple[float, float, float]]) -> Path_:
    """A path through ``(t, x, y)`` points at constant speed; None outside their times."""

    def at(t: float) -> tuple[float, float] | None:
        if t < points[0][0] or t > points[-1][0]:
            return None
        for (t0, x0, y0), (t1, x1, y1) in itertools.pairwise(points):
            if t0 <= t <= t1:
                share = 0.0 if t1 == t0 else (t - t0) / (t1 - t0)
                return (x0 + share * (x1 - x0), y0 + share * (y1 - y0))
        return None

    return at


def first(events: list[PresenceEvent], kind: str) -> PresenceEvent | None:
    return next((e for e in events if e.kind == kind), None)


def is_finite(value: float) -> bool:
    return math.isfinite(value)
