"""The accuracy lab: simulated customers on the floor, measured against ground truth.

Floor + radio model + presence engine, nothing else (no scanner daemon, no server). Every
simulated second each scanner aggregates what it heard of each phone into one
:class:`~store_server.presence.Observation` (count, median, max), as the real scanner does, and
the engine's decisions are compared with where the phone really is. Deterministic for a seed.

The scenarios are drawn on the demo floor (``seeds/store.toml``); ``--store`` lets you try
another scanner layout or calibration of that shop.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import random
import statistics
import sys
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from lab.radio import RadioModel
from store_server.floor import Floor, ScannerSpec, Walk, floor_from_dict, walk_position
from store_server.presence import Observation, PresenceEngine, PresenceSettings

__all__ = [
    "GoalCheck",
    "LabReport",
    "ScenarioResult",
    "TracePoint",
    "add_lab_arguments",
    "format_table",
    "main",
    "report_to_json",
    "run_lab",
    "run_lab_command",
    "walk_svg",
    "write_walk_svg",
]

logger = logging.getLogger(__name__)

# Advertisements a scanner decodes per phone per 1 s window (phone at ~10 Hz, scanner duty cycle).
ADVERTS_PER_WINDOW = 3
# Aggregation window of the real scanner.
WINDOW_S = 1.0
# Share of advertisements lost to collisions per phone advertising nearby (500 phones: 25 %).
COLLISION_LOSS_PER_PHONE = 0.0005
# Walks never repeat inside a lab run.
NO_REPEAT_S = 1e9
# Walking in from the street and out again (m/s).
WALK_IN_PACE = 1.1
# Moving between displays inside the shop (m/s); browsing itself is the stops.
BROWSE_PACE = 0.8
# Passes on the pavement in the full run (the figure) and in the reduced CI run.
FULL_PASSES = 10_000
REDUCED_PASSES = 1_000
# Phones in the crowd scenario.
CROWD_PHONES = 500
# Seconds each crowd phone is simulated in the full and the reduced run.
FULL_CROWD_S = 400.0
REDUCED_CROWD_S = 150.0
# Length of the stationary dwell (the 30 minutes) and its reduced CI form.
FULL_DWELL_S = 1800.0
REDUCED_DWELL_S = 600.0
# Repetitions of the diagonal and boundary walks (full, reduced).
FULL_REPEATS = 40
REDUCED_REPEATS = 8
# Phones passing the window at the same time: keeps the run short, they do not interact.
PASSERS_AT_ONCE = 200
DEFAULT_STORE = Path("seeds/store.toml")
# Scanners the lab adds to the demo layout: one scanner cannot cover the 12 m entrance strip
# (its corners are nearer the machines and parts scanners), the front of the machines zone is
# nearer the entrance scanner than the machines one, and the position fit needs scanners close
# to the machines/parts and machines/checkout edge (x = 6) to place customers walking along it.
LAB_EXTRA_SCANNERS = (
    ScannerSpec("lab-entrance-west", "entrance", (2.0, 1.2), False, 0.0),
    ScannerSpec("lab-entrance-east", "entrance", (10.0, 1.2), False, 0.0),
    ScannerSpec("lab-machines-front", "machines", (3.0, 3.6), True, 0.0),
    ScannerSpec("lab-parts-west", "parts", (7.5, 4.0), True, 0.0),
    ScannerSpec("lab-checkout-west", "checkout", (7.5, 7.2), True, 0.0),
)

# The goals of the issue.
GOAL_MISID_DIAGONAL = 0.03
GOAL_MISID_BOUNDARY = 0.10
GOAL_PASSERS_ARRIVED = 0
GOAL_ARRIVAL_P95_S = 3.0
GOAL_FALSE_LEFT = 0
GOAL_FLAPS_PER_HOUR = 1.0


@dataclass(frozen=True, slots=True)
class TracePoint:
    """One second of one phone: true position and zone, detected zone (``None``: not present)."""

    t: float
    x: float
    y: float
    true_zone: str | None
    detected_zone: str | None


@dataclass(frozen=True, slots=True)
class ScenarioResult:
    """The figures of one scenario (``None`` where a figure does not apply)."""

    name: str
    description: str
    phones: int
    simulated_s: float
    misid_rate: float | None
    arrival_p50_s: float | None
    arrival_p95_s: float | None
    missed_arrivals: int
    passers: int
    passers_arrived: int
    false_left: int
    flaps_per_hour: float | None


@dataclass(frozen=True, slots=True)
class GoalCheck:
    """One goal of the issue and whether the run meets it."""

    scenario: str
    figure: str
    limit: str
    value: float | None
    ok: bool


@dataclass(frozen=True, slots=True)
class LabReport:
    seed: int
    reduced: bool
    scenarios: tuple[ScenarioResult, ...]
    goals: tuple[GoalCheck, ...]
    diagonal_trace: tuple[TracePoint, ...]

    @property
    def ok(self) -> bool:
        return all(goal.ok for goal in self.goals)

    def scenario(self, name: str) -> ScenarioResult:
        for result in self.scenarios:
            if result.name == name:
                return result
        raise KeyError(name)


@dataclass(slots=True)
class _LabPhone:
    subject: str
    walk: Walk
    start: float
    passer: bool = False
    dwell: tuple[float, float] | None = None
    arrived_t: float | None = None
    crossed_t: float | None = None
    trace: list[TracePoint] | None = None

    def position(self, t: float) -> tuple[float, float] | None:
        if t < self.start:
            return None
        return walk_position(self.walk, t - self.start)


@dataclass(slots=True)
class _Tally:
    present_s: int = 0
    wrong_s: int = 0
    latencies: list[float] = field(default_factory=list)
    missed_arrivals: int = 0
    passers: int = 0
    passers_arrived: int = 0
    false_left: int = 0
    dwell_flaps: int = 0
    dwell_s: float = 0.0
    simulated_s: float = 0.0


def _walk(name: str, points: Sequence[tuple[float, float, float]]) -> Walk:
    return Walk(id=name, repeat_s=NO_REPEAT_S, points=tuple(points))


def _timed(start: tuple[float, float], legs: Sequence[tuple[float, float, float]]) -> Walk:
    """A walk from ``start`` through ``(x, y, pause_s)`` legs, walking in then browsing."""
    t = 0.0
    x, y = start
    points = [(t, x, y)]
    for nx, ny, pause in legs:
        pace = WALK_IN_PACE if y <= 0.0 or ny <= 0.0 else BROWSE_PACE
        t += math.hypot(nx - x, ny - y) / pace
        x, y = nx, ny
        points.append((t, x, y))
        if pause > 0.0:
            t += pause
            points.append((t, x, y))
    return _walk("lab", points)


def _door_crossing(walk: Walk, start: float) -> float | None:
    """When the walk first crosses the window line into the shop."""
    for (t0, _, y0), (t1, _, y1) in zip(walk.points, walk.points[1:], strict=False):
        if y0 < 0.0 <= y1:
            return start + t0 + (0.0 - y0) / (y1 - y0) * (t1 - t0)
    if walk.points[0][2] >= 0.0:
        return start + walk.points[0][0]
    return None


def _simulate(
    floor: Floor,
    radio: RadioModel,
    settings: PresenceSettings,
    phones: Sequence[_LabPhone],
    duration_s: float,
    rng: random.Random,
    failures: dict[str, float] | None = None,
) -> _Tally:
    """Run the phones for ``duration_s`` and tally the engine's decisions against the truth."""
    engine = PresenceEngine(floor, settings)
    failures = failures or {}
    tally = _Tally(simulated_s=duration_s)
    by_subject = {p.subject: p for p in phones}
    for phone in phones:
        phone.crossed_t = _door_crossing(phone.walk, phone.start)
    loss = min(0.9, COLLISION_LOSS_PER_PHONE * len(phones))
    steps = int(duration_s / WINDOW_S)
    for step in range(1, steps + 1):
        t = step * WINDOW_S
        positions: list[tuple[_LabPhone, tuple[float, float]]] = []
        for phone in phones:
            mid = phone.position(t - WINDOW_S / 2.0)
            if mid is not None:
                positions.append((phone, mid))
        events = []
        for spec in floor.scanners:
            if spec.id in failures and t >= failures[spec.id]:
                continue
            for phone, mid in positions:
                readings = []
                for _ in range(ADVERTS_PER_WINDOW):
                    rssi = radio.rssi(spec, mid, rng)
                    if rssi is not None and (loss == 0.0 or rng.random() >= loss):
                        readings.append(rssi)
                if readings:
                    obs = Observation(
                        phone.subject,
                        spec.id,
                        t,
                        statistics.median(readings),
                        max(readings),
                        len(readings),
                    )
                    events.extend(engine.observe(obs))
        events.extend(engine.tick(t))
        for event in events:
            phone = by_subject[event.subject]
            here = phone.position(t)
            inside = here is not None and floor.is_inside(*here)
            if event.kind == "arrived" and phone.arrived_t is None:
                phone.arrived_t = event.t
            elif event.kind == "left" and inside:
                tally.false_left += 1
            elif (
                event.kind == "zone_changed"
                and phone.dwell is not None
                and phone.dwell[0] <= event.t <= phone.dwell[1]
            ):
                tally.dwell_flaps += 1
        for phone in phones:
            here = phone.position(t)
            true_zone = floor.zone_at(*here) if here is not None else None
            detected = engine.zone_of(phone.subject)
            if true_zone is not None and detected is not None:
                tally.present_s += 1
                if detected != true_zone:
                    tally.wrong_s += 1
            if phone.trace is not None and here is not None:
                phone.trace.append(TracePoint(t, here[0], here[1], true_zone, detected))
    for phone in phones:
        if phone.dwell is not None:
            tally.dwell_s += min(phone.dwell[1], duration_s) - phone.dwell[0]
        if phone.passer:
            tally.passers += 1
            if phone.arrived_t is not None:
                tally.passers_arrived += 1
        elif phone.crossed_t is not None and phone.crossed_t < duration_s:
            if phone.arrived_t is None:
                tally.missed_arrivals += 1
            else:
                tally.latencies.append(phone.arrived_t - phone.crossed_t)
    return tally


def _percentile(values: Sequence[float], share: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, math.ceil(share * len(ordered)) - 1))
    return ordered[index]


def _result(name: str, description: str, phones: int, tally: _Tally) -> ScenarioResult:
    return ScenarioResult(
        name=name,
        description=description,
        phones=phones,
        simulated_s=tally.simulated_s,
        misid_rate=tally.wrong_s / tally.present_s if tally.present_s else None,
        arrival_p50_s=_percentile(tally.latencies, 0.50),
        arrival_p95_s=_percentile(tally.latencies, 0.95),
        missed_arrivals=tally.missed_arrivals,
        passers=tally.passers,
        passers_arrived=tally.passers_arrived,
        false_left=tally.false_left,
        flaps_per_hour=tally.dwell_flaps / (tally.dwell_s / 3600.0) if tally.dwell_s else None,
    )


# --- scenarios (coordinates of the demo floor) ------------------------------------------------


def _diagonal(repeats: int) -> list[_LabPhone]:
    """Enter, cross the shop on the diagonal to the checkout, browsing on the way, and leave."""
    walk = _timed(
        (6.0, -2.5),
        [
            (6.0, 0.0, 0.0),
            (7.0, 1.2, 20.0),
            (9.0, 4.0, 60.0),
            (10.5, 7.0, 60.0),
            (7.0, 1.0, 0.0),
            (6.0, 0.0, 0.0),
            (6.0, -2.5, 0.0),
        ],
    )
    return [_LabPhone(f"diag-{i}", walk, start=1.0 + 7.0 * i) for i in range(repeats)]


def _boundary(repeats: int) -> list[_LabPhone]:
    """Walk along the parts/checkout and machines/parts boundaries, 0.5 m on either side."""
    legs = [
        (6.5, 0.0, 0.0),
        (6.5, 5.5, 0.0),
        (11.5, 5.5, 10.0),
        (11.5, 6.5, 0.0),
        (6.5, 6.5, 10.0),
        (6.5, 3.5, 10.0),
        (5.5, 3.5, 0.0),
        (5.5, 7.5, 10.0),
        (6.5, 7.5, 0.0),
        (6.5, 0.0, 0.0),
        (6.5, -2.5, 0.0),
    ]
    walk = _timed((6.5, -2.5), legs)
    return [_LabPhone(f"edge-{i}", walk, start=1.0 + 9.0 * i) for i in range(repeats)]


_DWELL_SPOTS = ((3.0, 4.5), (9.0, 4.5), (9.5, 7.0), (3.0, 1.2), (9.0, 1.2))


def _dwell(duration_s: float) -> list[_LabPhone]:
    """Stand still in each zone for the whole run, after walking in."""
    phones = []
    for i, (x, y) in enumerate(_DWELL_SPOTS):
        walk = _timed((6.0, -2.5), [(6.0, 0.0, 0.0), (x, y, duration_s)])
        arrive = walk.points[2][0] + 1.0
        phone = _LabPhone(f"dwell-{i}", walk, start=1.0, dwell=(arrive + 10.0, arrive + duration_s))
        phones.append(phone)
    return phones


def _passers(floor: Floor, count: int, rng: random.Random) -> list[_LabPhone]:
    """People walking past the window; one in five stops at the glass to look in."""
    phones = []
    for i in range(count):
        y = rng.uniform(floor.pavement_y_min, floor.pavement_y_max)
        speed = rng.uniform(0.9, 1.6)
        x0, x1 = (-4.0, floor.width_m + 4.0) if rng.random() < 0.5 else (floor.width_m + 4.0, -4.0)
        span = abs(x1 - x0) / speed
        if rng.random() < 0.2:
            # Window shopping: stop with the phone against the glass (the pavement's inner edge).
            stop_x = rng.uniform(0.5, floor.width_m - 0.5)
            pause = rng.uniform(5.0, 40.0)
            to_stop = abs(stop_x - x0) / speed
            points = [
                (0.0, x0, y),
                (to_stop, stop_x, y),
                (to_stop + 1.0, stop_x, floor.pavement_y_max),
                (to_stop + 1.0 + pause, stop_x, floor.pavement_y_max),
                (to_stop + 2.0 + pause, stop_x, y),
                (to_stop + 2.0 + pause + abs(x1 - stop_x) / speed, x1, y),
            ]
        else:
            points = [(0.0, x0, y), (span, x1, y)]
        phones.append(_LabPhone(f"pass-{i}", _walk("pass", points), start=0.0, passer=True))
    return phones


def _visits(floor: Floor, count: int, duration_s: float, rng: random.Random) -> list[_LabPhone]:
    """A crowd: customers entering at random times, visiting one or two random spots."""
    phones = []
    for i in range(count):
        spots = []
        for _ in range(rng.randint(1, 2)):
            x = rng.uniform(0.5, floor.width_m - 0.5)
            y = rng.uniform(3.0, floor.depth_m - 0.5)
            spots.append((x, y, rng.uniform(20.0, 90.0)))
        door_x = rng.uniform(floor.door_x_min + 0.3, floor.door_x_max - 0.3)
        legs = [(door_x, 0.0, 0.0), *spots, (door_x, 0.0, 0.0), (door_x, -2.5, 0.0)]
        start = rng.uniform(0.0, max(1.0, duration_s - 60.0))
        phones.append(_LabPhone(f"crowd-{i}", _timed((door_x, -2.5), legs), start=start))
    return phones


def lab_floor(floor: Floor) -> Floor:
    """``floor`` with the lab's extra scanners (:data:`LAB_EXTRA_SCANNERS`) where it lacks them."""
    known = {s.id for s in floor.scanners}
    extra = tuple(s for s in LAB_EXTRA_SCANNERS if s.id not in known)
    return dataclasses.replace(floor, scanners=floor.scanners + extra)


def run_lab(
    seed: int = 1,
    reduced: bool = False,
    floor: Floor | None = None,
    settings: PresenceSettings | None = None,
    extra_scanners: bool = True,
) -> LabReport:
    """Run every scenario; ``reduced`` is the short form used in CI.

    ``extra_scanners`` adds :data:`LAB_EXTRA_SCANNERS` to the floor's own.
    """
    if floor is None:
        floor = load_floor(DEFAULT_STORE)
    if extra_scanners:
        floor = lab_floor(floor)
    settings = settings if settings is not None else PresenceSettings()
    radio = RadioModel.for_floor(floor)
    repeats = REDUCED_REPEATS if reduced else FULL_REPEATS
    results: list[ScenarioResult] = []

    rng = random.Random(f"{seed}:diagonal")
    diagonal = _diagonal(repeats)
    diagonal[0].trace = []
    span = diagonal[-1].start + diagonal[0].walk.points[-1][0] + settings.left_timeout_s + 5.0
    tally = _simulate(floor, radio, settings, diagonal, span, rng)
    results.append(
        _result("diagonal", "enter, diagonal to the checkout with stops", len(diagonal), tally)
    )

    rng = random.Random(f"{seed}:boundary")
    edge = _boundary(repeats)
    span = edge[-1].start + edge[0].walk.points[-1][0] + settings.left_timeout_s + 5.0
    tally = _simulate(floor, radio, settings, edge, span, rng)
    results.append(_result("boundary", "along zone boundaries, 0.5 m inside", len(edge), tally))

    rng = random.Random(f"{seed}:dwell")
    dwell_s = REDUCED_DWELL_S if reduced else FULL_DWELL_S
    dwellers = _dwell(dwell_s)
    tally = _simulate(floor, radio, settings, dwellers, dwell_s, rng)
    results.append(_result("dwell", "standing still in each zone", len(dwellers), tally))

    rng = random.Random(f"{seed}:passers")
    passes = REDUCED_PASSES if reduced else FULL_PASSES
    pass_tally = _Tally()
    for first in range(0, passes, PASSERS_AT_ONCE):
        batch = _passers(floor, min(PASSERS_AT_ONCE, passes - first), rng)
        for offset, phone in enumerate(batch):
            phone.subject = f"pass-{first + offset}"
        span = max(p.walk.points[-1][0] for p in batch) + 2.0
        tally = _simulate(floor, radio, settings, batch, span, rng)
        pass_tally.passers += tally.passers
        pass_tally.passers_arrived += tally.passers_arrived
        pass_tally.simulated_s += tally.simulated_s
    results.append(_result("passers", "walking past, some stop at the glass", passes, pass_tally))

    rng = random.Random(f"{seed}:failure")
    failing = _dwell(dwell_s / 2.0)
    tally = _simulate(
        floor, radio, settings, failing, dwell_s / 2.0, rng, failures={"s-machines": dwell_s / 4.0}
    )
    results.append(_result("scanner_failure", "s-machines dies mid-visit", len(failing), tally))

    rng = random.Random(f"{seed}:crowd")
    crowd_s = REDUCED_CROWD_S if reduced else FULL_CROWD_S
    crowd = _visits(floor, CROWD_PHONES, crowd_s, rng)
    tally = _simulate(floor, radio, settings, crowd, crowd_s, rng)
    results.append(_result("crowd", f"{CROWD_PHONES} phones visiting", len(crowd), tally))

    report = LabReport(seed, reduced, tuple(results), (), tuple(diagonal[0].trace or ()))
    return LabReport(seed, reduced, report.scenarios, _goals(report), report.diagonal_trace)


def _goals(report: LabReport) -> tuple[GoalCheck, ...]:
    checks: list[GoalCheck] = []

    def below(scenario: str, figure: str, value: float | None, limit: float, strict: bool) -> None:
        ok = value is not None and (value < limit if strict else value <= limit)
        sign = "<" if strict else "<="
        checks.append(GoalCheck(scenario, figure, f"{sign} {limit:g}", value, ok))

    below(
        "diagonal", "misid_rate", report.scenario("diagonal").misid_rate, GOAL_MISID_DIAGONAL, True
    )
    below(
        "boundary", "misid_rate", report.scenario("boundary").misid_rate, GOAL_MISID_BOUNDARY, True
    )
    passers = report.scenario("passers")
    below("passers", "passers_arrived", passers.passers_arrived, GOAL_PASSERS_ARRIVED, False)
    for name in ("diagonal", "crowd"):
        below(name, "arrival_p95_s", report.scenario(name).arrival_p95_s, GOAL_ARRIVAL_P95_S, True)
    for name in ("dwell", "scanner_failure", "crowd"):
        below(name, "false_left", report.scenario(name).false_left, GOAL_FALSE_LEFT, False)
    below(
        "dwell",
        "flaps_per_hour",
        report.scenario("dwell").flaps_per_hour,
        GOAL_FLAPS_PER_HOUR,
        False,
    )
    return tuple(checks)


# --- output -----------------------------------------------------------------------------------


def _fmt(value: float | None, percent: bool = False) -> str:
    if value is None:
        return "-"
    if percent:
        return f"{value * 100:.2f} %"
    return f"{value:g}" if float(value).is_integer() else f"{value:.2f}"


def format_table(report: LabReport) -> str:
    """The report as markdown tables (figures per scenario, then the goals)."""
    lines = [
        f"Accuracy lab, seed {report.seed}, {'reduced' if report.reduced else 'full'} run",
        "",
        "| scenario | phones | sim. s | mis-id | arrival p50 | arrival p95 | missed arr. "
        "| passers arrived | false left | flaps/h |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report.scenarios:
        passers = f"{r.passers_arrived} / {r.passers}" if r.passers else "-"
        lines.append(
            f"| {r.name} | {r.phones} | {r.simulated_s:.0f} | {_fmt(r.misid_rate, True)} "
            f"| {_fmt(r.arrival_p50_s)} | {_fmt(r.arrival_p95_s)} | {r.missed_arrivals} "
            f"| {passers} | {r.false_left} | {_fmt(r.flaps_per_hour)} |"
        )
    lines += ["", "| goal | limit | value | ok |", "|---|---|---|---|"]
    for g in report.goals:
        percent = g.figure == "misid_rate"
        lines.append(
            f"| {g.scenario} {g.figure} | {g.limit} | {_fmt(g.value, percent)} "
            f"| {'yes' if g.ok else 'NO'} |"
        )
    return "\n".join(lines) + "\n"


def report_to_json(report: LabReport) -> dict[str, object]:
    """The report as plain JSON-ready data."""
    return {
        "seed": report.seed,
        "reduced": report.reduced,
        "ok": report.ok,
        "scenarios": [
            {
                "name": r.name,
                "description": r.description,
                "phones": r.phones,
                "simulated_s": r.simulated_s,
                "misid_rate": r.misid_rate,
                "arrival_p50_s": r.arrival_p50_s,
                "arrival_p95_s": r.arrival_p95_s,
                "missed_arrivals": r.missed_arrivals,
                "passers": r.passers,
                "passers_arrived": r.passers_arrived,
                "false_left": r.false_left,
                "flaps_per_hour": r.flaps_per_hour,
            }
            for r in report.scenarios
        ],
        "goals": [
            {
                "scenario": g.scenario,
                "figure": g.figure,
                "limit": g.limit,
                "value": g.value,
                "ok": g.ok,
            }
            for g in report.goals
        ],
    }


_ZONE_COLOURS = ("#e8f1fb", "#fdf0e0", "#e9f7ec", "#f6e8f6", "#f3f3d9", "#e0f4f4")
_SCALE = 50.0  # pixels per metre


def walk_svg(floor: Floor, trace: Sequence[TracePoint]) -> str:
    """SVG text: the floor, the true path (dots coloured green when the detected zone is right,
    red when wrong, grey when not present) and a timeline of true vs detected zone."""

    def px(x: float, y: float) -> tuple[float, float]:
        return (x + 5.0) * _SCALE, (floor.depth_m - y + 1.0) * _SCALE

    width = (floor.width_m + 10.0) * _SCALE
    plan_h = (floor.depth_m + 5.0) * _SCALE
    zone_ids = [z.id for z in floor.zones]
    row_h = 14.0
    timeline_h = (len(zone_ids) + 1) * row_h * 2 + 40.0
    height = plan_h + timeline_h
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" '
        f'font-family="sans-serif" font-size="11">',
        f'<rect x="0" y="0" width="{width:.0f}" height="{height:.0f}" fill="white"/>',
    ]
    for i, zone in enumerate(floor.zones):
        x0, y0 = px(zone.rect[0], zone.rect[3])
        x1, y1 = px(zone.rect[2], zone.rect[1])
        out.append(
            f'<rect x="{x0:.1f}" y="{y0:.1f}" width="{x1 - x0:.1f}" height="{y1 - y0:.1f}" '
            f'fill="{_ZONE_COLOURS[i % len(_ZONE_COLOURS)]}" stroke="#888"/>'
            f'<text x="{x0 + 4:.1f}" y="{y0 + 14:.1f}">{zone.id}</text>'
        )
    dx0, dy = px(floor.door_x_min, 0.0)
    dx1, _ = px(floor.door_x_max, 0.0)
    out.append(
        f'<line x1="{dx0:.1f}" y1="{dy:.1f}" x2="{dx1:.1f}" y2="{dy:.1f}" '
        'stroke="white" stroke-width="4"/>'
    )
    for spec in floor.scanners:
        sx, sy = px(*spec.position)
        fill = "#1f4e9c" if spec.interior else "#9c1f6e"
        out.append(
            f'<circle cx="{sx:.1f}" cy="{sy:.1f}" r="6" fill="{fill}"/>'
            f'<text x="{sx + 8:.1f}" y="{sy + 4:.1f}">{spec.id}</text>'
        )
    if trace:
        path = " ".join(f"{px(p.x, p.y)[0]:.1f},{px(p.x, p.y)[1]:.1f}" for p in trace)
        out.append(f'<polyline points="{path}" fill="none" stroke="#444" stroke-width="1.5"/>')
        for p in trace:
            cx, cy = px(p.x, p.y)
            if p.detected_zone is None:
                colour = "#bbbbbb"
            elif p.detected_zone == p.true_zone:
                colour = "#2a9d3a"
            else:
                colour = "#d62828"
            out.append(f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="2.5" fill="{colour}"/>')
        t0, t1 = trace[0].t, trace[-1].t
        span = max(t1 - t0, 1.0)
        rows = [*zone_ids, "(none)"]
        for k, label in enumerate(("true", "detected")):
            top = plan_h + 20.0 + k * (len(rows) * row_h + 10.0)
            for j, zone_id in enumerate(rows):
                out.append(f'<text x="4" y="{top + j * row_h + 10:.1f}">{label} {zone_id}</text>')
            for p in trace:
                shown = p.true_zone if label == "true" else p.detected_zone
                j = rows.index(shown) if shown in rows else len(rows) - 1
                x = 130.0 + (p.t - t0) / span * (width - 140.0)
                out.append(
                    f'<rect x="{x:.1f}" y="{top + j * row_h:.1f}" width="2" '
                    f'height="{row_h - 2:.0f}" fill="#333"/>'
                )
    out.append("</svg>")
    return "\n".join(out) + "\n"


def write_walk_svg(path: str | Path, floor: Floor, trace: Sequence[TracePoint]) -> None:
    """Write :func:`walk_svg` to ``path``."""
    Path(path).write_text(walk_svg(floor, trace), encoding="utf-8")


# --- command line -----------------------------------------------------------------------------


def load_floor(path: str | Path) -> Floor:
    """Read and validate a store TOML file."""
    with Path(path).open("rb") as handle:
        return floor_from_dict(tomllib.load(handle))


def add_lab_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``store-server lab``."""
    parser.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    parser.add_argument("--reduced", action="store_true", help="the short run used in CI")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--svg", metavar="PATH", help="write the first diagonal walk as SVG")
    parser.add_argument(
        "--store", metavar="PATH", default=str(DEFAULT_STORE), help="store TOML (floor, scanners)"
    )


def run_lab_command(args: argparse.Namespace, out: TextIO) -> int:
    """Run the lab from parsed arguments; exit status 0 when every goal is met, 1 otherwise."""
    floor = load_floor(args.store)
    report = run_lab(seed=args.seed, reduced=args.reduced, floor=floor)
    if args.svg:
        write_walk_svg(args.svg, floor, report.diagonal_trace)
    if args.json:
        out.write(json.dumps(report_to_json(report), indent=2) + "\n")
    else:
        out.write(format_table(report))
    return 0 if report.ok else 1


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m lab.accuracy``."""
    parser = argparse.ArgumentParser(prog="lab.accuracy", description=__doc__)
    add_lab_arguments(parser)
    return run_lab_command(parser.parse_args(argv), sys.stdout)


if __name__ == "__main__":
    sys.exit(main())
