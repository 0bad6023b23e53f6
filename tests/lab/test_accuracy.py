"""The accuracy lab in its reduced, seeded form on both example floors, against the goals.

Every goal of the espresense tier is checked on both floors. The goals the engine does not meet
yet are listed in ``MISSED`` with the figure measured when they were listed: the test fails if
one of them gets worse than that, and also if a goal listed there is met (take it off the list).
"""

from __future__ import annotations

import argparse

import pytest

from lab.accuracy import (
    SEEDS_DIR,
    LabReport,
    add_lab_arguments,
    format_report,
    load_floor,
    run_lab,
)
from lab.floors import FLOORS
from lab.plots import walk_svg

# A reduced run is about 30 s of CPU per floor, taken by the first test of each floor; on a
# machine loaded to 15-17 on 2 cores that is over the suite's 120 s default (seen twice).
# Both reduced runs take about a minute of CPU: they run in CI's own step (pytest -m lab_bench),
# outside the default run's time budget.
pytestmark = [pytest.mark.timeout(600), pytest.mark.lab_bench]

# (floor, goal) -> the worst value accepted for now (reduced run, seed 1): not met, reported.
MISSED: dict[tuple[str, str], float] = {
    ("corner", "diagonal_misid_tolerant"): 0.04229,
    ("corner", "boundary_misid_tolerant"): 0.1672,
    ("corner", "arrival_p95_s"): 5.4,
    ("corner", "short_visits_detected"): 0.9,
    ("demo", "boundary_misid_tolerant"): 0.2145,
    ("demo", "arrival_p95_s"): 6.8,
}


@pytest.fixture(scope="module", params=sorted(FLOORS))
def report(request: pytest.FixtureRequest) -> LabReport:
    return run_lab(request.param, "espresense", seed=1, reduced=True)


def test_goals_met_or_known_and_not_worse(report: LabReport) -> None:
    for goal in report.goals:
        known = MISSED.get((report.floor, goal.figure))
        if known is None:
            assert goal.ok, f"{report.floor}: {goal.figure} = {goal.value} ({goal.limit})"
        else:
            assert not goal.ok, f"{report.floor}: {goal.figure} now met: take it off MISSED"
            assert goal.value is not None
            # Figures are listed to four significant digits.
            slack = 1e-3 * max(1.0, abs(known))
            worse = goal.value > known + slack if "<" in goal.limit else goal.value < known - slack
            assert not worse, f"{report.floor}: {goal.figure} = {goal.value}, was {known}"


def test_no_street_arrival_and_every_scenario_ran(report: LabReport) -> None:
    f = report.figures
    assert f.street == 1000
    assert f.street_arrived == 0
    assert f.shoppers == 200
    assert f.shoppers_arrived == 0
    assert f.false_left == 0 or (report.floor, "false_left") in MISSED
    assert f.diagonal_misid is not None
    assert f.boundary_misid is not None
    assert f.diagonal_misid_tolerant is not None
    assert f.diagonal_misid_tolerant <= f.diagonal_misid


def test_the_walk_plot(report: LabReport) -> None:
    floor = load_floor(SEEDS_DIR / FLOORS[report.floor].store_file)
    svg = walk_svg(floor, report.trace)
    assert svg.startswith("<svg")
    assert svg.rstrip().endswith("</svg>")
    assert "P(inside)" in svg
    assert all(zone.id in svg for zone in floor.zones)


def test_the_table(report: LabReport) -> None:
    table = format_report(report)
    assert f"floor {report.floor}, tier espresense, seed 1, reduced run" in table
    for goal in report.goals:
        assert f"| {goal.figure} | {goal.limit} |" in table


def test_command_options() -> None:
    parser = argparse.ArgumentParser()
    add_lab_arguments(parser)
    args = parser.parse_args(["--floor", "corner", "--tier", "field", "--reduced", "--json"])
    assert (args.floor, args.tier, args.reduced, args.json) == ("corner", "field", True, True)


# iPhones (reduced run, seed 1): (share of walk-ins arrived at least, app users outside arrived
# at most). Measured: demo 97.4 % and 0 of 200; corner 68.4 % and 6 of 200.
IPHONE_FLOOR: dict[str, tuple[float, int]] = {"demo": (0.97, 0), "corner": (0.68, 6)}


def test_the_iphone_population_arrives_only_by_proof(report: LabReport) -> None:
    iphones = report.iphones
    assert iphones is not None
    assert iphones.walked_in == 38
    assert iphones.outside == 200
    least, most = IPHONE_FLOOR[report.floor]
    assert iphones.arrived_share is not None
    assert iphones.arrived_share >= least
    assert iphones.outside_arrived <= most
    assert iphones.arrival_p95_s is not None
    assert iphones.refused == 0
    assert f"| iphone_arrival_p95_s | {iphones.arrival_p95_s:.2f} |" in format_report(report)


def test_two_boxes_per_zone_on_the_demo_floor() -> None:
    """The same scenarios with a second box in each zone (``--store``): the boundary walks are
    placed better than with the shipped layout (measured, reduced run, seed 1: 14.1 % against
    21.4 %), and the report says which store file it ran on."""
    layout = SEEDS_DIR.parent / "lab" / "layouts" / "demo-two-boxes-per-zone.toml"
    more = run_lab("demo", "espresense", seed=1, reduced=True, store=layout)
    assert more.store == str(layout)
    assert f"Diagnosis only (store file {layout})" in format_report(more)
    boundary = more.figures.boundary_misid_tolerant
    assert boundary is not None
    assert boundary < MISSED[("demo", "boundary_misid_tolerant")] - 0.05
