"""The accuracy lab: simulated customers on the example floors, measured against the truth.

Floor + channel (:mod:`lab.channel`) + the presence engine through its public API, nothing else.
Scenarios per floor come from :mod:`lab.floors`; the loop from :mod:`lab.run`. Deterministic for
a seed. ``python -m lab.accuracy --floor demo --tier espresense [--reduced]``.

For diagnosis, ``--without`` switches parts of the lab's reality off (:class:`lab.run.Reality`),
``--tick-s`` ticks the engine at another period, ``--window-s`` gives the boxes another window
length and ``--set`` changes a setting of the engine: what a figure becomes without a part is
what that part costs. ``--tolerance-s`` forgives the shown zone a longer or shorter lag than the
goals' 2 s (what another goal would measure).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TextIO

import numpy as np

from lab.calibrate import calibration_walk
from lab.channel import TIERS, Channel, draw_phones
from lab.floors import FLOORS, FloorScenarios, Leg
from lab.iphones import IphoneFigures, simulate_iphones
from lab.iphones import figures as iphone_figures
from lab.report import (
    PARTS,
    Figures,
    GoalCheck,
    LabReport,
    changed_settings,
    format_report,
)
from lab.run import FULL, LabPhone, Reality, Tally, simulate
from store_server.cli_settings import HelpFormatter
from store_server.floor import Floor, FloorError, floor_from_dict
from store_server.presence import PresenceEngine, PresenceSettings

__all__ = [
    "Figures",
    "GoalCheck",
    "LabReport",
    "add_set_option",
    "load_floor",
    "main",
    "run_lab",
]

SEEDS_DIR = Path(__file__).resolve().parents[1] / "seeds"
# Walking in from the street and out again, and between displays (m/s).
WALK_PACE = 1.1
BROWSE_PACE = 0.8
# (full, reduced) sizes of each scenario.
WALKERS = (40, 8)
PASSERS = (10_000, 1_000)
SHOPPERS = (2_000, 200)
VISITS = (200, 60)
DWELL_S = (1800.0, 900.0)
# Passers-by and window shoppers start within this span; they do not interact.
STREET_SPAN_S = (600.0, 150.0)
# Start of the pavement walk, beyond the shop's side.
STREET_OVERSHOOT_M = 4.0

# The goals of the issue (espresense tier).
GOALS_ESPRESENSE = (
    ("diagonal_misid_tolerant", "<", 0.03),
    ("boundary_misid_tolerant", "<", 0.10),
    ("street_arrived", "<=", 0),
    ("shoppers_arrived", "<=", 0),
    ("arrival_p95_s", "<", 3.0),
    ("short_visits_detected", ">=", 0.95),
    ("false_left", "<=", 0),
    ("flaps_per_hour_mid", "<=", 1.0),
    ("flaps_per_hour_edge", "<=", 4.0),
    ("left_p95_s", "<", 15.0),
)
# The field tier, after the calibration walk.
GOALS_FIELD = (
    ("diagonal_misid_tolerant", "<", 0.08),
    ("street_arrived_per_10000", "<=", 1.0),
)


def load_floor(path: str | Path) -> Floor:
    """Read and validate a store TOML file."""
    with Path(path).open("rb") as handle:
        return floor_from_dict(tomllib.load(handle))


def _path(
    start: tuple[float, float], legs: Sequence[Leg], pace: float
) -> list[tuple[float, float, float]]:
    t, (x, y) = 0.0, start
    points = [(t, x, y)]
    for nx, ny, pause in legs:
        speed = WALK_PACE if y < 0.0 or ny < 0.0 else pace
        t += max(math.hypot(nx - x, ny - y) / speed, 1e-3)
        x, y = nx, ny
        points.append((t, x, y))
        if pause > 0.0:
            t += pause
            points.append((t, x, y))
    return points


def _phone(
    subject: str, points: list[tuple[float, float, float]], start: float, kind: str
) -> LabPhone:
    arr = np.array(points)
    return LabPhone(subject, arr[:, 0], arr[:, 1], arr[:, 2], start, kind)


def _visit(
    sc: FloorScenarios, legs: Sequence[Leg], rng: np.random.Generator
) -> list[tuple[float, float, float]]:
    door = float(rng.uniform(*sc.door_x))
    inner = [(door, 0.0, 0.0), *legs, (door, 0.0, 0.0), (door, -2.5, 0.0)]
    return _path((door, -2.5), inner, BROWSE_PACE)


def _walkers(
    sc: FloorScenarios,
    legs: Sequence[Leg],
    count: int,
    kind: str,
    rng: np.random.Generator,
    gap: float,
) -> list[LabPhone]:
    return [
        _phone(f"{kind}-{i}", _visit(sc, legs, rng), 1.0 + gap * i, "walker") for i in range(count)
    ]


def _dwellers(
    sc: FloorScenarios,
    spots: Sequence[tuple[float, float]],
    kind: str,
    duration: float,
    rng: np.random.Generator,
) -> list[LabPhone]:
    phones = []
    for i, (x, y) in enumerate(spots):
        door = float(rng.uniform(*sc.door_x))
        points = _path((door, -2.5), [(door, 0.0, 0.0), (x, y, duration + 60.0)], BROWSE_PACE)
        phone = _phone(f"{kind}-{i}", points, 1.0, kind)
        arrive = 1.0 + points[2][0]
        phone.dwell = (arrive + 10.0, arrive + duration)
        phones.append(phone)
    return phones


def _street(
    floor: Floor,
    sc: FloorScenarios,
    count: int,
    shoppers: bool,
    span: float,
    rng: np.random.Generator,
) -> list[LabPhone]:
    phones = []
    x_min = min(p[0] for p in floor.outline) - STREET_OVERSHOOT_M
    x_max = max(p[0] for p in floor.outline) + STREET_OVERSHOOT_M
    for i in range(count):
        y = float(rng.uniform(floor.pavement_y_min, floor.pavement_y_max))
        speed = float(rng.uniform(0.9, 1.6))
        x0, x1 = (x_min, x_max) if rng.random() < 0.5 else (x_max, x_min)
        if shoppers:
            lo, hi = sc.glass_x[int(rng.integers(len(sc.glass_x)))]
            stop = float(rng.uniform(lo, hi))
            pause = float(rng.uniform(30.0, 120.0))
            glass = -float(rng.uniform(0.2, 0.5))
            a = abs(stop - x0) / speed
            points = [
                (0.0, x0, y),
                (a, stop, y),
                (a + 1.5, stop, glass),
                (a + 1.5 + pause, stop, glass),
                (a + 3.0 + pause, stop, y),
                (a + 3.0 + pause + abs(x1 - stop) / speed, x1, y),
            ]
            kind = "shopper"
        else:
            points = [(0.0, x0, y), (abs(x1 - x0) / speed, x1, y)]
            kind = "passer"
        phones.append(_phone(f"{kind}-{i}", points, float(rng.uniform(0.0, span)), kind))
    return phones


def _short_visits(
    sc: FloorScenarios, count: int, span: float, rng: np.random.Generator
) -> list[LabPhone]:
    phones = []
    for i in range(count):
        door = float(rng.uniform(*sc.door_x))
        nx, ny = sc.near_door
        inside = float(rng.uniform(5.0, 10.0))
        walk = (math.hypot(nx - door, ny) * 2.0) / BROWSE_PACE
        pause = max(0.0, inside - walk)
        points = _path(
            (door, -2.5),
            [(door, 0.0, 0.0), (nx, ny, pause), (door, 0.0, 0.0), (door, -2.5, 0.0)],
            BROWSE_PACE,
        )
        phones.append(_phone(f"visit-{i}", points, float(rng.uniform(0.0, span)), "visit"))
    return phones


def _run(
    floor: Floor,
    channel: Channel,
    settings: PresenceSettings,
    calibration: dict[str, tuple[float, float]] | None,
    phones: list[LabPhone],
    tier: str,
    rng: np.random.Generator,
    reality: Reality,
) -> Tally:
    engine = PresenceEngine(floor, settings)
    if calibration:
        for box, (offset, exponent) in calibration.items():
            engine.set_calibration(box, offset, exponent)
    traits = draw_phones(len(phones), TIERS[tier], rng)
    silence = max(settings.silence_left_s, settings.silence_inside_s)
    duration = max(p.start + p.times[-1] for p in phones) + silence + 5.0
    return simulate(floor, channel, engine, phones, traits, duration, rng, reality)


# iPhones (lab/iphones.py): walk-ins (short visits and diagonal walkers) and app users outside
# (passers-by and window shoppers), (full, reduced).
IPHONE_VISITS = (200, 30)
IPHONE_OUTSIDE = (2_000, 200)


def _iphones(
    floor: Floor,
    sc: FloorScenarios,
    channel: Channel,
    settings: PresenceSettings,
    calibration: dict[str, tuple[float, float]] | None,
    size: int,
    rng: Callable[[int], np.random.Generator],
) -> IphoneFigures:
    """The iPhone population: it arrives only through the proof check-in."""
    span = STREET_SPAN_S[size]
    outside = IPHONE_OUTSIDE[size]
    phones = _short_visits(sc, IPHONE_VISITS[size], span, rng(20))
    phones += _walkers(sc, sc.diagonal, WALKERS[size], "iphone-diagonal", rng(21), 13.0)
    phones += _street(floor, sc, outside * 3 // 4, False, span, rng(22))
    phones += _street(floor, sc, outside // 4, True, span, rng(23))
    engine = PresenceEngine(floor, settings)
    for box, (offset, exponent) in (calibration or {}).items():
        engine.set_calibration(box, offset, exponent)
    duration = max(p.start + p.times[-1] for p in phones) + 5.0
    return iphone_figures(simulate_iphones(floor, channel, engine, phones, duration, rng(24)))


def _rate(num: int, den: int) -> float | None:
    return num / den if den else None


def _pct(values: list[float], share: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(share * len(ordered)) - 1))]


def run_lab(
    floor_name: str = "demo",
    tier: str = "espresense",
    seed: int = 1,
    reduced: bool = False,
    settings: PresenceSettings | None = None,
    calibrate: bool | None = None,
    reality: Reality = FULL,
    store: Path | None = None,
) -> LabReport:
    """Every scenario on one floor under one tier; ``reduced`` is the CI form.

    ``calibrate`` (default: for the field tier) runs the calibration walk first and gives the
    engine the offsets and exponents it learned. ``reality``: parts of the lab switched off,
    for diagnosis (the goals are checked all the same). ``store``: another store file of the
    same floor (other boxes, say) in place of the shipped one; its shop must hold the floor's
    scenarios (:func:`scenario_misfits`; ValueError otherwise).
    """
    sc = FLOORS[floor_name]
    floor = load_floor(store or SEEDS_DIR / sc.store_file)
    misfits = scenario_misfits(floor, sc)
    if misfits:
        raise ValueError(f"the {floor_name} floor's scenarios do not fit: {misfits[0]}")
    settings = settings or PresenceSettings()
    size = 1 if reduced else 0
    root = np.random.default_rng([seed, 7])
    radio = TIERS[tier]
    if not reality.multipath:
        radio = dataclasses.replace(radio, multipath_share=0.0)
    channel = Channel(floor, radio, np.random.default_rng([seed, 1]))
    if calibrate is None:
        calibrate = tier == "field"
    calibration = (
        calibration_walk(floor, channel, np.random.default_rng([seed, 2])) if calibrate else None
    )

    def rng(k: int) -> np.random.Generator:
        return np.random.default_rng([seed, 100 + k])

    diag = _walkers(sc, sc.diagonal, WALKERS[size], "diagonal", rng(1), 13.0)
    diag[0].trace = []
    t_diag = _run(floor, channel, settings, calibration, diag, tier, rng(2), reality)
    edge = _walkers(sc, sc.boundary, WALKERS[size], "boundary", rng(3), 11.0)
    t_edge = _run(floor, channel, settings, calibration, edge, tier, rng(4), reality)
    dwell = _dwellers(sc, sc.dwell_mid, "dwell_mid", DWELL_S[size], rng(5)) + _dwellers(
        sc, sc.dwell_edge, "dwell_edge", DWELL_S[size], rng(6)
    )
    t_dwell = _run(floor, channel, settings, calibration, dwell, tier, rng(7), reality)
    street = _street(floor, sc, PASSERS[size], False, STREET_SPAN_S[size], rng(8))
    t_street = _run(floor, channel, settings, calibration, street, tier, rng(9), reality)
    shoppers = _street(floor, sc, SHOPPERS[size], True, STREET_SPAN_S[size], rng(10))
    t_shop = _run(floor, channel, settings, calibration, shoppers, tier, rng(11), reality)
    visits = _short_visits(sc, VISITS[size], STREET_SPAN_S[size], rng(12))
    t_visit = _run(floor, channel, settings, calibration, visits, tier, rng(13), reality)
    del root
    iphones = _iphones(floor, sc, channel, settings, calibration, size, rng)

    everyone = (t_diag, t_edge, t_dwell, t_visit)
    arrivals = [v for t in (t_diag, t_edge, t_dwell) for v in t.arrival_latencies]
    lefts = [v for t in (t_diag, t_edge, t_visit) for v in t.left_latencies]
    figures = Figures(
        diagonal_misid=_rate(t_diag.wrong, t_diag.samples),
        diagonal_misid_tolerant=_rate(t_diag.wrong_tolerant, t_diag.samples),
        boundary_misid=_rate(t_edge.wrong, t_edge.samples),
        boundary_misid_tolerant=_rate(t_edge.wrong_tolerant, t_edge.samples),
        street=t_street.street,
        street_arrived=t_street.street_arrived,
        street_arrived_per_10000=(t_street.street_arrived + t_shop.shoppers_arrived)
        * 10_000
        / max(1, t_street.street + t_shop.shoppers),
        shoppers=t_shop.shoppers,
        shoppers_arrived=t_shop.shoppers_arrived,
        arrival_p50_s=_pct(arrivals, 0.5),
        arrival_p95_s=_pct(arrivals, 0.95),
        missed_arrivals=sum(t.missed for t in everyone),
        short_visits=t_visit.visits,
        short_visits_detected=_rate(t_visit.visits_detected, t_visit.visits),
        false_left=sum(t.false_left for t in everyone),
        flaps_per_hour_mid=t_dwell.flaps_mid / (t_dwell.dwell_mid_s / 3600.0)
        if t_dwell.dwell_mid_s
        else None,
        flaps_per_hour_edge=t_dwell.flaps_edge / (t_dwell.dwell_edge_s / 3600.0)
        if t_dwell.dwell_edge_s
        else None,
        left_p50_s=_pct(lefts, 0.5),
        left_p95_s=_pct(lefts, 0.95),
    )
    goals = []
    for name, sign, limit in GOALS_ESPRESENSE if tier == "espresense" else GOALS_FIELD:
        value = getattr(figures, name)
        ok = (
            value is not None
            and {"<": value < limit, "<=": value <= limit, ">=": value >= limit}[sign]
        )
        goals.append(GoalCheck(name, f"{sign} {limit:g}", value, ok))
    return LabReport(
        floor_name,
        tier,
        seed,
        reduced,
        calibrate,
        figures,
        tuple(goals),
        tuple(diag[0].trace or ()),
        iphones,
        reality,
        changed_settings(settings),
        str(store) if store is not None else None,
    )


def scenario_misfits(floor: Floor, sc: FloorScenarios) -> list[str]:
    """Where the floor's scenarios leave the shop, or cross no door (empty when they fit)."""
    misfits = []
    spots = [(x, y) for x, y, _ in (*sc.diagonal, *sc.boundary)]
    spots += [*sc.dwell_mid, *sc.dwell_edge, sc.near_door]
    for x, y in spots:
        if not floor.is_walkable(x, y):
            misfits.append(f"({x:g}, {y:g}) is not walkable ground of this shop")
    for x in sc.door_x:
        if not floor.through_door((x, 0.0)):
            misfits.append(f"customers walk in at x = {x:g} m, where this shop has no door")
    return misfits


def add_lab_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``python -m lab.accuracy``."""
    parser.add_argument("--floor", choices=sorted(FLOORS), default="demo", help="example floor")
    parser.add_argument("--tier", choices=sorted(TIERS), default="espresense", help="radio tier")
    parser.add_argument("--seed", type=int, default=1, help="random seed")
    parser.add_argument("--reduced", action="store_true", help="the short run used in CI")
    parser.add_argument("--no-calibration", action="store_true", help="skip the calibration walk")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--svg", metavar="PATH", help="write the first diagonal walk as SVG")
    parser.add_argument(
        "--store",
        type=Path,
        metavar="PATH",
        help="another store.toml of the same floor (other boxes, say) instead of the shipped one",
    )
    parser.add_argument(
        "--without",
        type=_parts,
        default=(),
        metavar="PART[,PART]",
        help=f"switch parts of the lab off, to measure what they cost: {', '.join(PARTS)}",
    )
    parser.add_argument(
        "--tick-s",
        type=_positive,
        default=FULL.tick_s,
        metavar="S",
        help="run the engine's tick every S seconds (the server ticks every second)",
    )
    parser.add_argument(
        "--window-s",
        type=_positive,
        default=FULL.window_s,
        metavar="S",
        help="each box closes a window every S seconds (the scanner's window_s)",
    )
    parser.add_argument(
        "--tolerance-s",
        type=_positive,
        default=FULL.tolerance_s,
        metavar="S",
        help="a wrong zone shown within S seconds of the true one is a lag, not an error",
    )
    add_set_option(parser)


def add_set_option(parser: argparse.ArgumentParser) -> None:
    """``--set NAME=VALUE`` (repeatable): one of the engine's settings; ``args.set`` holds the
    (name, value) pairs, to give to PresenceSettings (the lab and the presence bench)."""
    parser.add_argument(
        "--set",
        type=_setting,
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="change one of the engine's settings (PresenceSettings), e.g. arrive_p=0.7",
    )


def _parts(text: str) -> tuple[str, ...]:
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    unknown = [name for name in names if name not in PARTS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown part {', '.join(unknown) or repr(text)}: choose among {', '.join(PARTS)}"
        )
    return names


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not value > 0.0:
        raise argparse.ArgumentTypeError(f"not a positive number of seconds: {text!r}")
    return value


def _setting(text: str) -> tuple[str, object]:
    name, sep, raw = text.partition("=")
    kinds = {item.name: str(item.type) for item in dataclasses.fields(PresenceSettings)}
    if not sep or name not in kinds:
        raise argparse.ArgumentTypeError(
            f"expected NAME=VALUE with NAME a field of PresenceSettings, got {text!r}"
        )
    kind = kinds[name]
    if raw.strip().lower() == "none" and "None" in kind:
        return name, None
    try:
        return name, int(raw) if kind == "int" else float(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{name}: not a number: {raw!r}") from None


def run_lab_command(args: argparse.Namespace, out: TextIO) -> int:
    """Run the lab; exit status 0 when every goal is met, 1 otherwise."""
    off = set(args.without)
    reality = Reality(
        **{name: name not in off for name in PARTS},
        tick_s=args.tick_s,
        window_s=args.window_s,
        tolerance_s=args.tolerance_s,
    )
    try:
        settings = PresenceSettings(**dict(args.set))
    except ValueError as error:  # the settings' own checks
        raise SystemExit(f"lab.accuracy: --set: {error}") from None
    store = args.store or SEEDS_DIR / FLOORS[args.floor].store_file
    try:
        floor = load_floor(store)
        misfits = scenario_misfits(floor, FLOORS[args.floor])
    except (OSError, tomllib.TOMLDecodeError, FloorError) as error:
        raise SystemExit(f"lab.accuracy: --store: {store}: {error}") from None
    if misfits:
        raise SystemExit(
            f"lab.accuracy: --store: {store}: the {args.floor} floor's scenarios do not fit "
            f"this shop: {'; '.join(misfits[:3])}"
        )
    report = run_lab(
        args.floor,
        args.tier,
        args.seed,
        args.reduced,
        settings=settings,
        calibrate=False if args.no_calibration else None,
        reality=reality,
        store=args.store,
    )
    if args.svg:
        from lab.plots import walk_svg

        Path(args.svg).write_text(walk_svg(floor, report.trace), encoding="utf-8")
    if args.json:
        data = {
            "floor": report.floor,
            "tier": report.tier,
            "seed": report.seed,
            "reduced": report.reduced,
            "calibrated": report.calibrated,
            "store": report.store,
            "without": list(report.reality.off),
            "tick_s": report.reality.tick_s,
            "window_s": report.reality.window_s,
            "tolerance_s": report.reality.tolerance_s,
            "settings_changed": dict(report.changed),
            "ok": report.ok,
            "figures": asdict(report.figures),
            "iphones": asdict(report.iphones) if report.iphones is not None else None,
            "goals": [asdict(g) for g in report.goals],
        }
        out.write(json.dumps(data, indent=2) + "\n")
    else:
        out.write(format_report(report))
    return 0 if report.ok else 1


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m lab.accuracy``."""
    parser = argparse.ArgumentParser(
        prog="lab.accuracy",
        description=__doc__,
        formatter_class=HelpFormatter,
    )
    add_lab_arguments(parser)
    return run_lab_command(parser.parse_args(argv), sys.stdout)


if __name__ == "__main__":
    sys.exit(main())
