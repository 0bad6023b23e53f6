"""Fast CI subset of bench/presence/bench_presence.py: the benchmark still runs end to end.

No speed is asserted (the baseline lives in bench/README.md, measured on purpose): this checks
that the bench keeps every phone present, ticks as often as asked, and reports every figure the
baseline is written from.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.support import REPO_ROOT, run_bench

BENCH_TIMEOUT_S = 120
"""A few seconds of CPU for 50 phones; forty times that means a hang."""

# It runs in CI's own step (pytest -m lab_bench), beside the other benches' smoke runs.
pytestmark = pytest.mark.lab_bench


@pytest.mark.timeout(BENCH_TIMEOUT_S + 10)
@pytest.mark.parametrize("ticks", [1, 2])
def test_presence_bench_runs(ticks: int) -> None:
    figures = run_bench(
        "presence/bench_presence.py",
        "--phones",
        "50",
        "--seconds",
        "2",
        "--ticks",
        str(ticks),
        timeout_s=BENCH_TIMEOUT_S,
    )
    assert figures["present"] == 50
    assert figures["ticks_per_second"] == ticks
    assert figures["cpu_share_of_one_core"] > 0.0
    assert {"p99_call_wall_ms", "cells", "boxes"} <= set(figures)


@pytest.mark.timeout(BENCH_TIMEOUT_S + 10)
def test_presence_bench_takes_an_engine_setting() -> None:
    figures = run_bench(
        "presence/bench_presence.py",
        "--phones",
        "20",
        "--seconds",
        "1",
        "--set",
        "common_offset_sigma_db=2.5",
        timeout_s=BENCH_TIMEOUT_S,
    )
    assert figures["settings_changed"] == "common_offset_sigma_db=2.5"
    assert figures["present"] == 20


def test_presence_bench_names_a_refused_setting() -> None:
    done = subprocess.run(
        [
            sys.executable,
            str(REPO_ROOT / "bench" / "presence" / "bench_presence.py"),
            "--set",
            "cell_m=-1",
        ],
        capture_output=True,
        text=True,
        timeout=BENCH_TIMEOUT_S,
        cwd=REPO_ROOT,
        check=False,
    )
    assert done.returncode == 2
    assert "--set: cell_m must be positive" in done.stderr
