"""Fault campaign: kill -9 a scanner daemon mid-upload.

Usage: .venv/bin/python bench/faults/kill_scanner.py [--runs 50] [--scanners 3] [--json]

A store server subprocess and `--scanners` `beacon-scanner run` processes (simulated backend)
fed consenting customers' EIDs, as in kill_server.py. Each run picks a scanner at random,
SIGKILLs it after a random time (every other run "aimed": right after the server committed
one of its batches, before the scanner could delete it) and, while it is dead, checks its
outbox against the server:
rows at the server + rows still queued (not at the server) = rows produced, every batch it
deleted as acknowledged is at the server whole, and no server batch is unknown to it (see
harness.check_accounting). The scanner is then restarted on the same outbox. At the end the
feed stops, the scanners drain and server rows must equal rows produced exactly.

Windows still being aggregated in memory when a scanner dies were never produced (never
written to the outbox): they are lost by design, at most one window per phone.
"""

from __future__ import annotations

import asyncio
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import CampaignError, campaign_main, check_accounting, fleet, wait_drained

CUSTOMERS = 8
"""Consenting phones in the shop: 8 windows per scanner window, batches of a few dozen rows."""

MIN_UP_S = 0.5
"""Shortest life of a scanner before the kill: long enough to import and start uploading."""

MAX_UP_S = 2.5
"""Longest life before the kill: bounds a 50-run campaign to a few minutes."""


async def campaign(runs: int, n_scanners: int, seed: int, workdir: Path) -> dict[str, object]:
    rng = random.Random(seed)
    in_doubt_total = 0
    async with fleet(workdir, n_scanners, CUSTOMERS) as running:
        server, scanners = running.server, running.scanners
        started = time.monotonic()
        try:
            for run in range(runs):
                victim = rng.choice(scanners)
                await asyncio.sleep(rng.uniform(MIN_UP_S, MAX_UP_S))
                if run % 2:
                    # Aimed: kill as soon as the server has committed a new batch of the victim,
                    # to land between the server's commit and the scanner's delete.
                    await server.until_new_batch(victim.scanner_id)
                await victim.kill()
                figures = check_accounting(victim, victim.snapshot(), server.server_batches())
                in_doubt_total += figures["committed_not_acked"]
                await victim.start()
            await running.feeder.stop()
            await wait_drained(scanners)
            batches = server.server_batches()
            totals = [check_accounting(s, s.snapshot(), batches, drained=True) for s in scanners]
        finally:
            exit_s = await server.terminate()
    check = server.quick_check()
    if check != "ok":
        raise CampaignError(f"final quick_check: {check}")
    return {
        "campaign": "kill -9 a scanner mid-upload",
        "runs": runs,
        "scanners": n_scanners,
        "kills": sum(s.starts for s in scanners) - n_scanners,
        "rows_produced": sum(t["produced"] for t in totals),
        "rows_at_server": sum(t["server_rows"] for t in totals),
        "batches_at_server": len(batches),
        "rows_committed_not_acked_at_kill": in_doubt_total,
        "server_exit_s": round(exit_s, 2),
        "duration_s": round(time.monotonic() - started, 1),
        "ok": True,
    }


def main() -> int:
    return campaign_main(__doc__ or "", "kill -9 a scanner mid-upload", campaign, 11)


if __name__ == "__main__":
    sys.exit(main())
