"""The lab's simulation loop: phones, boxes, the wire and the engine, against the truth (pure).

Time runs in steps of 0.2 s (the truth is sampled at each). Each phone advertises on its own
interval; each box hears each advertisement (or loses it) and closes a window every second on
its own clock (boxes 0.3 s apart); the window (count, median, max) reaches the engine in a batch
0.1-0.6 s later, sometimes 2-3 s late, through ``observe_many`` and ``decide_arrivals`` as the
server does; ``tick`` runs every second. Nothing here reads a clock or a file.

:class:`Reality` switches parts of this off (bodies, how bodies and phone heights differ from
the engine's assumptions, silent bursts, the wire's delays), ticks at another period or gives
the boxes another window length, to measure what each costs; the random draws stay the same,
so the phones, their walks and their radio are those of the full lab.
"""

from __future__ import annotations

import dataclasses
import math
from collections import deque
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from lab.channel import Channel, PhoneTraits
from store_server.floor import Floor
from store_server.presence import PresenceEngine

__all__ = ["FULL", "PARTS", "LabPhone", "Reality", "Tally", "TracePoint", "simulate"]

# Truth sampling and simulation step.
STEP_S = 0.2
# Box clocks: box b closes its windows at k + 0.3 b (mod 1) seconds.
BOX_CLOCK_SPREAD_S = 0.3
# A batch reaches the server this long after its window closed...
DELIVERY_S = (0.1, 0.6)
# ...except this share, 2-3 s late (a retry on the wire).
LATE_SHARE = 0.05
LATE_S = (2.0, 3.0)
# Silent bursts: about one a minute per phone, 2-5 s each.
BURST_RATE_PER_S = 1.0 / 60.0
BURST_S = (2.0, 5.0)
# Body shadowing toward boxes behind the walker.
SHADOW_DB = (5.0, 10.0)
# Without ``body_spread``: every body the middle of that range (the engine's body_shadow_db).
SHADOW_MIDDLE_DB = sum(SHADOW_DB) / 2.0
# Without ``pockets``: every phone between the hand (1.2 m) and a pocket (0.8 m), the height the
# engine assumes (its phone_height_m).
PHONE_MIDDLE_M = 1.0
# A zone shown within this long after it was the true zone is a lag, not an error (the goals').
TOLERANCE_S = 2.0
# The server runs the engine's tick this often (store_server.services.store.TICK_S).
TICK_S = 1.0
# Each box closes a window this often (the scanner's ``window_s``, 1 s by default).
WINDOW_S = 1.0
# Steps are sums of 0.2 s: a tick due at 3.0 s is taken at 2.9999999 s.
CLOCK_SLACK_S = 1e-6


@dataclass(frozen=True, slots=True)
class Reality:
    """What the lab does beyond the radio channel, each part on by default (the goals are set
    against all of it), and how it judges a lag; changed only to measure what a part costs."""

    bodies: bool = True  # body shadowing toward boxes behind the walker
    body_spread: bool = True  # bodies differ (5-10 dB); off: every body 7.5 dB
    multipath: bool = True  # the tier's share of readings 6 dB low (applied by the channel)
    bursts: bool = True  # silent bursts of 2-5 s
    delays: bool = True  # windows delivered 0.1-0.6 s after they close, some 2-3 s late
    pockets: bool = True  # phones in a pocket (0.8 m) or the hand (1.2 m); off: all at 1.0 m
    tick_s: float = TICK_S
    window_s: float = WINDOW_S  # how often each box closes a window (the scanner's window_s)
    tolerance_s: float = TOLERANCE_S  # how long the shown zone may lag the truth unjudged

    @property
    def off(self) -> tuple[str, ...]:
        """The parts switched off, in ``PARTS`` order."""
        return tuple(name for name in PARTS if not getattr(self, name))


# The parts a Reality can switch off: its yes/no fields, in alphabetical order.
PARTS = tuple(sorted(f.name for f in dataclasses.fields(Reality) if f.type == "bool"))
# The whole lab, every part on (the default).
FULL = Reality()


@dataclass(frozen=True, slots=True)
class TracePoint:
    t: float
    x: float
    y: float
    true_zone: str | None
    shown_zone: str | None
    p_inside: float


@dataclass(slots=True)
class LabPhone:
    """One simulated phone: its path (times from ``start``), what it is, what happened to it."""

    subject: str
    times: npt.NDArray[np.float64]
    xs: npt.NDArray[np.float64]
    ys: npt.NDArray[np.float64]
    start: float
    kind: str  # walker, passer, shopper, visit, dwell_mid, dwell_edge
    dwell: tuple[float, float] | None = None
    arrived_t: float | None = None
    left_t: float | None = None
    entered_t: float | None = None
    exited_t: float | None = None
    trace: list[TracePoint] | None = None

    def position(self, t: float) -> tuple[float, float] | None:
        local = t - self.start
        if local < self.times[0] or local > self.times[-1]:
            return None
        return (
            float(np.interp(local, self.times, self.xs)),
            float(np.interp(local, self.times, self.ys)),
        )


@dataclass(slots=True)
class Tally:
    samples: int = 0
    wrong: int = 0
    wrong_tolerant: int = 0
    flaps_mid: int = 0
    flaps_edge: int = 0
    dwell_mid_s: float = 0.0
    dwell_edge_s: float = 0.0
    false_left: int = 0
    left_latencies: list[float] = field(default_factory=list)
    arrival_latencies: list[float] = field(default_factory=list)
    missed: int = 0
    visits: int = 0
    visits_detected: int = 0
    street: int = 0
    street_arrived: int = 0
    shoppers: int = 0
    shoppers_arrived: int = 0


def _medians(
    idx: npt.NDArray[np.intp], rssi: npt.NDArray[np.float64]
) -> tuple[
    npt.NDArray[np.intp], npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.intp]
]:
    """Per phone index: median, max and count of its readings."""
    order = np.lexsort((rssi, idx))
    idx, rssi = idx[order], rssi[order]
    starts = np.flatnonzero(np.r_[True, idx[1:] != idx[:-1]])
    counts = np.diff(np.r_[starts, len(idx)])
    low = rssi[starts + (counts - 1) // 2]
    high = rssi[starts + counts // 2]
    maxes = rssi[starts + counts - 1]
    return idx[starts], (low + high) / 2.0, maxes, counts


def simulate(
    floor: Floor,
    channel: Channel,
    engine: PresenceEngine,
    phones: list[LabPhone],
    traits: PhoneTraits,
    duration_s: float,
    rng: np.random.Generator,
    reality: Reality = FULL,
) -> Tally:
    """Run ``phones`` for ``duration_s`` and tally the engine's decisions against the truth."""
    n = len(phones)
    boxes = floor.scanners
    box_ids = [b.id for b in boxes]
    tally = Tally()
    subjects = [p.subject for p in phones]
    by_subject = {p.subject: i for i, p in enumerate(phones)}
    shadow = rng.uniform(*SHADOW_DB, n)
    if not reality.body_spread:
        shadow[:] = SHADOW_MIDDLE_DB
    shadow *= reality.bodies
    heights = traits.height_m if reality.pockets else np.full(n, PHONE_MIDDLE_M)
    heading = np.zeros((n, 2))
    silent_until = np.full(n, -1.0)
    last_xy = np.full((n, 2), math.nan)
    buffers: list[list[tuple[npt.NDArray[np.intp], npt.NDArray[np.float64]]]] = [[] for _ in boxes]
    clock = [(b * BOX_CLOCK_SPREAD_S) % reality.window_s for b in range(len(boxes))]
    next_close = list(clock)
    in_flight: list[tuple[float, int, float, list[str], list[float], list[float], list[int]]] = []
    inside_prev = np.zeros(n, dtype=bool)
    history: list[deque[tuple[float, str | None]]] = [deque() for _ in range(n)]
    shown: list[str | None] = [None] * n
    counted = np.array([p.kind in ("walker", "dwell_mid", "dwell_edge", "visit") for p in phones])
    starts = np.array([p.start for p in phones])
    ends = np.array([p.start + p.times[-1] for p in phones])
    steps = round(duration_s / STEP_S)
    next_tick = reality.tick_s
    for step in range(steps):
        t0 = step * STEP_S
        t1 = t0 + STEP_S
        mid = t0 + STEP_S / 2.0
        x = np.full(n, math.nan)
        y = np.full(n, math.nan)
        live = np.flatnonzero((starts <= mid) & (mid <= ends))
        for i in live:
            here = phones[i].position(mid)
            if here is not None:
                x[i], y[i] = here
        present = ~np.isnan(x)
        # Heading from the last step's position; standing keeps the last heading.
        moved = present & ~np.isnan(last_xy[:, 0])
        dx = np.where(moved, x - last_xy[:, 0], 0.0)
        dy = np.where(moved, y - last_xy[:, 1], 0.0)
        walking = np.hypot(dx, dy) > 0.01
        heading[walking, 0] = dx[walking]
        heading[walking, 1] = dy[walking]
        last_xy[:, 0], last_xy[:, 1] = x, y
        # Silent bursts.
        start_burst = present & (rng.random(n) < BURST_RATE_PER_S * STEP_S)
        burst_s = rng.uniform(*BURST_S, int(start_burst.sum()))
        if reality.bursts:
            silent_until[start_burst] = t0 + burst_s
        # Advertisements in this step.
        phase, interval = traits.phase_s, traits.interval_s
        adverts = np.floor((t1 - phase) / interval) - np.floor((t0 - phase) / interval)
        sending = np.flatnonzero(present & (silent_until <= t0) & (adverts > 0))
        if sending.size:
            sx, sy = x[sending], y[sending]
            height = heights[sending]
            for b, spec in enumerate(boxes):
                mean = channel.mean_rssi(b, sx, sy, height)
                bx, by = spec.position
                behind = (bx - sx) * heading[sending, 0] + (by - sy) * heading[sending, 1] < 0.0
                body = np.where(behind, shadow[sending], 0.0)
                for k in range(int(adverts[sending].max())):
                    who = adverts[sending] > k
                    readings = channel.readings(
                        mean[who], body[who], traits.model_db[sending][who], b, rng
                    )
                    kept = ~np.isnan(readings) & (
                        rng.random(readings.shape) >= traits.loss[sending][who]
                    )
                    if kept.any():
                        buffers[b].append((sending[who][kept], readings[kept]))
        # Windows closing in this step.
        for b in range(len(boxes)):
            if next_close[b] > t1:
                continue
            end = next_close[b]
            next_close[b] += reality.window_s
            parts = buffers[b]
            buffers[b] = []
            if not parts:
                continue
            heard, med, mx, cnt = _medians(
                np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
            )
            delay = rng.uniform(*DELIVERY_S)
            if rng.random() < LATE_SHARE:
                delay += rng.uniform(*LATE_S)
            delay *= reality.delays
            in_flight.append(
                (
                    end + delay,
                    b,
                    end,
                    [subjects[i] for i in heard],
                    med.tolist(),
                    mx.tolist(),
                    cnt.tolist(),
                )
            )
        events = []
        arrived_now = [w for w in in_flight if w[0] <= t1]
        in_flight = [w for w in in_flight if w[0] > t1]
        for _, b, end, names, med_l, max_l, cnt_l in sorted(arrived_now, key=lambda w: w[0]):
            taken = engine.observe_many(
                box_ids[b], names, [end] * len(names), med_l, cnt_l, rssi_max=max_l
            )
            if taken:
                events.extend(engine.decide_arrivals(taken, end))
        if t1 >= next_tick - CLOCK_SLACK_S:  # the first step at or after each tick
            next_tick += reality.tick_s
            events.extend(engine.tick(t1))
        # Truth at t1.
        truth_inside = np.zeros(n, dtype=bool)
        true_zone: list[str | None] = [None] * n
        for i in live:
            here = phones[i].position(t1)
            if here is not None and floor.is_inside(*here):
                truth_inside[i] = True
                true_zone[i] = floor.zone_at(*here)
        for j in np.flatnonzero(truth_inside & ~inside_prev):
            if phones[j].entered_t is None:
                phones[j].entered_t = t1
        for j in np.flatnonzero(~truth_inside & inside_prev):
            phones[j].exited_t = t1
        inside_prev = truth_inside
        for event in events:
            k = by_subject[event.subject]
            phone = phones[k]
            if event.kind == "arrived":
                if phone.arrived_t is None:
                    phone.arrived_t = t1
                shown[k] = event.zone
            elif event.kind == "left":
                shown[k] = None
                if truth_inside[k]:
                    tally.false_left += 1
                elif phone.left_t is None:
                    phone.left_t = t1
            else:
                shown[k] = event.zone
                if phone.dwell is not None and phone.dwell[0] <= t1 <= phone.dwell[1]:
                    if phone.kind == "dwell_mid":
                        tally.flaps_mid += 1
                    else:
                        tally.flaps_edge += 1
        for i in np.flatnonzero(counted & truth_inside):
            zone = true_zone[i]
            past = history[i]
            past.append((t1, zone))
            while past and past[0][0] < t1 - reality.tolerance_s:
                past.popleft()
            now_shown = shown[i]
            if now_shown is None or zone is None:
                continue
            tally.samples += 1
            if now_shown != zone:
                tally.wrong += 1
                if all(z != now_shown for _, z in past):
                    tally.wrong_tolerant += 1
        for p_i, phone in enumerate(phones):
            if phone.trace is not None and step % 5 == 4:
                here = phone.position(t1)
                if here is not None:
                    phone.trace.append(
                        TracePoint(
                            t1,
                            here[0],
                            here[1],
                            true_zone[p_i],
                            shown[p_i],
                            engine.p_inside(phone.subject),
                        )
                    )
    for phone in phones:
        if phone.dwell is not None:
            span = max(0.0, min(phone.dwell[1], duration_s) - phone.dwell[0])
            if phone.kind == "dwell_mid":
                tally.dwell_mid_s += span
            else:
                tally.dwell_edge_s += span
        if phone.kind == "passer":
            tally.street += 1
            tally.street_arrived += phone.arrived_t is not None
        elif phone.kind == "shopper":
            tally.shoppers += 1
            tally.shoppers_arrived += phone.arrived_t is not None
        elif phone.entered_t is not None:
            if phone.kind == "visit":
                tally.visits += 1
                tally.visits_detected += phone.arrived_t is not None
            elif phone.arrived_t is None:
                tally.missed += 1
            else:
                tally.arrival_latencies.append(phone.arrived_t - phone.entered_t)
            if phone.kind == "visit" and phone.arrived_t is not None:
                tally.arrival_latencies.append(phone.arrived_t - phone.entered_t)
            if phone.exited_t is not None and phone.left_t is not None:
                tally.left_latencies.append(phone.left_t - phone.exited_t)
    return tally
