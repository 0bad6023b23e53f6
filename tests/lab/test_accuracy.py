"""The accuracy lab in its reduced, seeded form, checked against the issue's goals."""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

import pytest

from lab.accuracy import (
    add_lab_arguments,
    format_table,
    lab_floor,
    load_floor,
    report_to_json,
    run_lab,
    run_lab_command,
    walk_svg,
)

STORE = Path(__file__).resolve().parents[2] / "seeds" / "store.toml"


@pytest.fixture(scope="module")
def report():  # type: ignore[no-untyped-def]
    return run_lab(seed=1, reduced=True, floor=load_floor(STORE))


def test_no_passer_by_arrives(report) -> None:  # type: ignore[no-untyped-def]
    passers = report.scenario("passers")
    assert passers.passers == 1000
    assert passers.passers_arrived == 0


def test_arrival_latency(report) -> None:  # type: ignore[no-untyped-def]
    diagonal = report.scenario("diagonal")
    assert diagonal.missed_arrivals == 0
    assert diagonal.arrival_p95_s is not None
    assert diagonal.arrival_p95_s < 3.0


def test_no_false_left_and_no_flaps_while_dwelling(report) -> None:  # type: ignore[no-untyped-def]
    for name in ("dwell", "scanner_failure", "crowd"):
        assert report.scenario(name).false_left == 0, name
    assert (report.scenario("dwell").flaps_per_hour or 0.0) <= 1.0
    # Standing still is recognised in the right zone, including through a scanner failure.
    assert (report.scenario("dwell").misid_rate or 0.0) < 0.03
    assert (report.scenario("scanner_failure").misid_rate or 0.0) < 0.03


def test_misidentification_goal_diagonal(report) -> None:  # type: ignore[no-untyped-def]
    assert (report.scenario("diagonal").misid_rate or 1.0) < 0.03


def test_misidentification_goal_boundary(report) -> None:  # type: ignore[no-untyped-def]
    assert (report.scenario("boundary").misid_rate or 1.0) < 0.10


def test_crowd_arrival_latency(report) -> None:  # type: ignore[no-untyped-def]
    crowd = report.scenario("crowd")
    assert crowd.missed_arrivals == 0
    assert crowd.arrival_p95_s is not None
    assert crowd.arrival_p95_s < 3.0


def test_every_goal_of_the_issue_is_met(report) -> None:  # type: ignore[no-untyped-def]
    assert [g for g in report.goals if not g.ok] == []
    assert report.ok


def test_outputs(report, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    table = format_table(report)
    assert "| passers | 1000 |" in table
    data = report_to_json(report)
    assert json.loads(json.dumps(data))["seed"] == 1
    svg = walk_svg(lab_floor(load_floor(STORE)), report.diagonal_trace)
    assert svg.startswith("<svg")
    assert svg.rstrip().endswith("</svg>")
    assert "polyline" in svg


def test_command_line(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    add_lab_arguments(parser)
    args = parser.parse_args(
        ["--reduced", "--json", "--store", str(STORE), "--svg", str(tmp_path / "w.svg")]
    )
    assert args.seed == 1
    out = io.StringIO()
    status = run_lab_command(args, out)
    data = json.loads(out.getvalue())
    assert data["ok"] is True
    assert status == 0
    assert (tmp_path / "w.svg").read_text().startswith("<svg")
