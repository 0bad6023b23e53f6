"""Fast CI subsets of bench/load/ingest_throughput.py and bench/load/server_memory.py: the
benchmarks still run end to end.

No speed or size is asserted here (targets live in bench/README.md, measured on purpose). The
ingestion subset checks that every batch of both targets was answered 200 (one wire form),
that the server really ingested them (its CPU per batch is well above the bare handler's,
which does not parse), and that the figures the baseline is written from are all there.
"""

from __future__ import annotations

import pytest

from tests.support import run_bench

BENCH_TIMEOUT_S = 120
"""The subset takes about 10 s on a loaded 2-core machine; twelve times that means a hang."""

# A smoke run costs seconds of CPU in several processes: it runs in CI's own step
# (pytest -m lab_bench), outside the default run's time budget.
pytestmark = pytest.mark.lab_bench


@pytest.mark.slow
@pytest.mark.timeout(BENCH_TIMEOUT_S + 10)
def test_ingest_throughput_bench_runs() -> None:
    figures = run_bench(
        "load/ingest_throughput.py",
        "--scanners",
        "4",
        "--windows",
        "50",
        "--seconds",
        "1",
        "--rounds",
        "1",
        "--customers",
        "20",
        timeout_s=BENCH_TIMEOUT_S,
    )
    (round_,) = figures["rounds"]
    for target in ("ceiling", "server"):
        measure = round_[target]
        assert measure["errors"] == 0, figures
        assert measure["batches"] > 0, figures
        assert measure["sightings_per_s"] == figures[f"{target}_sightings_per_s"]
    assert (
        round_["server"]["server_cpu_ms_per_batch"] > round_["ceiling"]["server_cpu_ms_per_batch"]
    )
    assert figures["ratio"] == round_["ratio"]


@pytest.mark.slow
@pytest.mark.timeout(BENCH_TIMEOUT_S + 10)
def test_server_memory_bench_runs_on_a_small_store() -> None:
    """1,000 customers load before the server serves (no background build): the bench must
    still see every EID resolvable (it waited forever for a build's log line before)."""
    figures = run_bench(
        "load/server_memory.py",
        "--customers",
        "1000",
        "--present",
        "10",
        timeout_s=BENCH_TIMEOUT_S,
    )
    assert figures["consenting"] == 1000
    assert figures["present"] == 10
    assert 0 < figures["start_to_ready_s"] <= figures["start_to_every_eid_resolvable_s"]
    assert 0 < figures["rss_mb_after_start"] <= figures["peak_rss_mb"]
    assert figures["peak_worker_rss_mb"] == 0.0  # a small store builds no worker process
    assert figures["peak_tree_rss_mb"] <= figures["peak_rss_mb"]
