"""Fault checks: CI subsets of the campaigns of bench/faults/, and in-process shutdown checks.

The campaign subsets (marker `faults`, real processes on 127.0.0.1, 30-60 s together) run in
their own CI step, `pytest -m faults`, not in the README's test command; the in-process checks
at the end of this file are fast and run in every default run.

Each campaign script checks its own invariants (acknowledged rows never lost, rows at the
server + rows queued = rows produced, quick_check ok, boards closed with 1001, bounded exit)
on conditions (what was produced, acknowledged, stored, closed), not on wall-clock guesses,
and exits non-zero with "ok": false on a violation; these tests run a few runs of each and
re-check the figures it prints. The full campaigns (50 runs) and their baseline are in
bench/README.md.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.server.conftest import WAIT_TIMEOUT_S, Harness, server, wait_until

__all__ = ["server"]  # the fixture, imported so that this top-level module can use it

REPO_ROOT = Path(__file__).resolve().parents[1]
FAULTS = REPO_ROOT / "bench" / "faults"
# A campaign subset takes 10-25 s on a loaded 2-core machine; four times that means a hang.
CAMPAIGN_TIMEOUT_S = 120
ALLOWLIST = "/api/scanner/v1/allowlist"
# The bound: every store back to normal within 10 s of the database's return.
BACK_TO_NORMAL_S = 10.0


def run_campaign(script: str, *args: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, str(FAULTS / script), "--json", *args],
        capture_output=True,
        text=True,
        timeout=CAMPAIGN_TIMEOUT_S,
        cwd=REPO_ROOT,
        check=False,
    )
    lines = done.stdout.strip().splitlines()
    assert lines, f"no output; stderr: {done.stderr[-2000:]}"
    figures: dict[str, Any] = json.loads(lines[-1])
    assert figures["ok"] is True, figures
    assert done.returncode == 0
    return figures


@pytest.mark.faults
@pytest.mark.timeout(CAMPAIGN_TIMEOUT_S + 10)
def test_kill_server_during_ingestion_loses_nothing() -> None:
    figures = run_campaign("kill_server.py", "--runs", "3", "--scanners", "3")
    assert figures["kills"] == 3
    assert figures["quick_checks_ok"] == 4
    assert figures["rows_produced"] > 0
    assert figures["rows_at_server"] == figures["rows_produced"]


@pytest.mark.faults
@pytest.mark.timeout(CAMPAIGN_TIMEOUT_S + 10)
def test_kill_scanner_mid_upload_conserves_rows() -> None:
    figures = run_campaign("kill_scanner.py", "--runs", "3", "--scanners", "2")
    assert figures["kills"] == 3
    assert figures["rows_produced"] > 0
    assert figures["rows_at_server"] == figures["rows_produced"]


@pytest.mark.faults
@pytest.mark.timeout(CAMPAIGN_TIMEOUT_S + 10)
def test_sigterm_closes_boards_and_exits_in_bound() -> None:
    figures = run_campaign("sigterm_boards.py", "--runs", "1", "--boards", "20")
    assert figures["boards_closed_1001"] == 20
    assert figures["exit_s_max"] < 10
    assert figures["failures"] == []
    assert figures["long_polls"] == {"200": 5}  # held long polls are answered, not cut


@pytest.mark.faults
@pytest.mark.timeout(CAMPAIGN_TIMEOUT_S + 10)
def test_server_outage_bounded_outbox_drains_fully() -> None:
    figures = run_campaign(
        "server_outage.py",
        *("--phones", "5", "--outage-s", "300", "--max-rows", "400", "--max-bytes", "40000"),
        *("--min-failures", "2"),
    )
    scanners = figures["scanners"]
    assert {s["bound"] for s in scanners.values()} == {"rows", "age", "bytes"}
    for s in scanners.values():
        assert s["produced"] == s["at_server"] + s["dropped"]
        assert s["dropped"] > 0  # the simulated outage exceeded every bound
        assert s["at_server"] > 0
        assert s["retry_delays_checked"] >= 2  # the backoff was exercised, then checked
    assert scanners["s-entrance"]["peak_rows"] <= 400
    assert scanners["s-parts"]["peak_bytes"] <= 40000
    assert figures["quick_checks_ok"] == 4
    # The return is noticed by the backoff alone (checked by the campaign on the order of
    # events); the seconds it took depend on the machine's load and are only reported.
    assert figures["first_upload_s_max"] >= 0


async def test_shutdown_answers_held_long_polls(server: Harness) -> None:
    scanner = await server.add_scanner("s-entrance")
    version = (await (await server.signed(scanner, "GET", ALLOWLIST)).json())["version"]
    task = asyncio.create_task(
        server.signed(scanner, "GET", f"{ALLOWLIST}?since={version}&wait=30")
    )
    condition = server.service.coordinator.allowlist_changed
    await wait_until(lambda: len(condition._waiters) > 0)
    await server.service.release_long_polls()
    resp = await asyncio.wait_for(task, WAIT_TIMEOUT_S)
    assert resp.status == 200
    assert (await resp.json())["version"] == version


async def test_cancelled_long_poll_leaves_the_condition_usable(server: Harness) -> None:
    service = server.service
    version = service.coordinator.resolver.version
    cancelled = asyncio.create_task(service.scanners.allowlist(version, 30.0))
    condition = service.coordinator.allowlist_changed
    await wait_until(lambda: len(condition._waiters) > 0)
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    assert not condition.locked()
    held = asyncio.create_task(service.scanners.allowlist(version, 30.0))
    await wait_until(lambda: len(condition._waiters) > 0)
    await service.release_long_polls()
    answer = await asyncio.wait_for(held, WAIT_TIMEOUT_S)
    assert answer["version"] == version


@pytest.mark.faults
@pytest.mark.postgres
@pytest.mark.timeout(600)
def test_chain_survives_kills_restarts_and_outages() -> None:
    """bench/faults/chain_outage.py with a short outage: two stores on one PostgreSQL."""
    done = subprocess.run(
        [sys.executable, str(FAULTS / "chain_outage.py"), "--json", "--outage-s", "12"],
        capture_output=True,
        text=True,
        timeout=580,
        cwd=REPO_ROOT,
        check=False,
    )
    lines = done.stdout.strip().splitlines()
    assert lines, f"no output; stderr: {done.stderr[-2000:]}"
    figures: dict[str, Any] = json.loads(lines[-1])
    # No acknowledged row lost, none twice; no card of the customer withdrawn during A's
    # partition; every store back to normal within 10 s of the database's (or the link's)
    # return after each fault (the pools' reconnection tries are about a second apart).
    assert figures["ok"] is True, figures
    assert "error" not in figures, figures
    assert figures["server_rows"] == figures["produced"] > 0
    assert figures["cards_after_withdrawal"] == 0
    assert figures["pg_restart_back_s"], figures
    assert figures["back_to_normal_max_s"] <= BACK_TO_NORMAL_S, figures


@pytest.mark.faults
@pytest.mark.postgres
@pytest.mark.timeout(600)
def test_chain_bench_reduced() -> None:
    """bench/chain/bench_chain.py on 3 stores and 3,000 members: the propagation goal holds."""
    done = subprocess.run(
        [
            sys.executable,
            str(REPO_ROOT / "bench" / "chain" / "bench_chain.py"),
            "--json",
            *("--stores", "3", "--members", "3000", "--rounds", "3", "--loaded", "1"),
            *("--load-s", "5"),
        ],
        capture_output=True,
        text=True,
        timeout=580,
        cwd=REPO_ROOT,
        check=False,
    )
    figures: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    assert figures["goal_met"] is True, figures
    assert figures["loaded"]["batch_errors"] == 0
