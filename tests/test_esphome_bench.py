"""Fast CI subset of bench/scanner/esphome_nodes.py: the benchmark still runs end to end.

No speed is asserted (the baseline lives in bench/README.md, measured on purpose): this checks
that a daemon fronting three noise-encrypted fake nodes received what they offered through the
real server's heartbeats, passed the consenting customers' EIDs, and that every figure the
baseline is written from is there.
"""

from __future__ import annotations

import importlib.util

import pytest

from tests.support import require_system_component, run_bench

BENCH_TIMEOUT_S = 150
"""The subset takes about 25 s on a loaded 2-core machine; six times that means a hang."""

# A smoke run costs seconds of CPU in several processes: it runs in CI's own step
# (pytest -m lab_bench), outside the default run's time budget.
pytestmark = pytest.mark.lab_bench


@pytest.mark.slow
@pytest.mark.esphome
@pytest.mark.timeout(BENCH_TIMEOUT_S + 10)
def test_esphome_nodes_bench_runs() -> None:
    require_system_component("aioesphomeapi", importlib.util.find_spec("aioesphomeapi") is not None)
    figures = run_bench(
        "scanner/esphome_nodes.py",
        "--nodes",
        "3",
        "--rates",
        "100",
        "--seconds",
        "6",
        "--warmup",
        "3",
        "--customers",
        "5",
        "--generator-nice",
        "0",
        timeout_s=BENCH_TIMEOUT_S,
    )
    assert figures["nodes"] == 3
    (row,) = figures["rates"]
    assert row["per_node_offered"] == 100
    assert row["offered_per_s"] > 0
    assert row["received_per_s"] is not None, figures  # every node's heartbeat came in time
    # Heartbeats average over their own 2 s periods: received tracks offered, not exactly.
    assert 0.5 * row["offered_per_s"] < row["received_per_s"] < 1.5 * row["offered_per_s"]
    assert row["passed_per_s"] > 0  # the consenting customers' EIDs went through
    assert row["daemon_cpu_pct_of_one_core"] > 0
    assert row["daemon_cpu_us_per_advert"] > 0
