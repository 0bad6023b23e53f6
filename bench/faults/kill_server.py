"""Fault campaign: kill -9 the store server at random moments during ingestion.

Usage: .venv/bin/python bench/faults/kill_server.py [--runs 50] [--scanners 3] [--json]

Set-up: a store server subprocess on a prepared database (scanners registered with
`store-server scanner add`), consenting customers enrolled through the customer API, and
`--scanners` `beacon-scanner run` processes (simulated backend) fed those customers' EIDs.
Each run lets ingestion go on for a random time, SIGKILLs the server (every other run
"aimed": right after it committed a batch, while the answer is on its way), and while it is dead
checks, for every scanner (see harness.check_accounting):

- every batch the scanner deleted as acknowledged is in `scanner_batches`, whole;
- server rows + rows still queued (not at the server) = rows produced: nothing lost, nothing
  counted twice (a batch committed but not yet acknowledged is re-sent and deduplicated);
- `PRAGMA quick_check` = ok;

then restarts the server. At the end the feed stops, the scanners drain, and server rows must
equal rows produced exactly. Exit status 1 (and "ok": false) on any violation.
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

MIN_UP_S = 0.3
"""Shortest ingestion time before a kill: the scanners have reconnected after the restart."""

MAX_UP_S = 2.0
"""Longest ingestion time before a kill: bounds a 50-run campaign to a few minutes."""


async def campaign(runs: int, n_scanners: int, seed: int, workdir: Path) -> dict[str, object]:
    rng = random.Random(seed)
    in_doubt_total = 0
    restart_s: list[float] = []
    async with fleet(workdir, n_scanners, CUSTOMERS) as running:
        server, scanners = running.server, running.scanners
        started = time.monotonic()
        try:
            for run in range(runs):
                await asyncio.sleep(rng.uniform(MIN_UP_S, MAX_UP_S))
                if run % 2:
                    # Aimed: right after a commit, while its answer is on its way to the scanner.
                    await server.until_new_batch()
                await server.kill()
                check = server.quick_check()
                if check != "ok":
                    raise CampaignError(f"quick_check after kill -9: {check}")
                batches = server.server_batches()
                for scanner in scanners:
                    if not scanner.alive:
                        raise CampaignError(f"scanner {scanner.scanner_id} died")
                    figures = check_accounting(scanner, scanner.snapshot(), batches)
                    in_doubt_total += figures["committed_not_acked"]
                t0 = time.monotonic()
                await server.start()
                restart_s.append(time.monotonic() - t0)
            await running.feeder.stop()
            await wait_drained(scanners)
            batches = server.server_batches()
            totals = [check_accounting(s, s.snapshot(), batches, drained=True) for s in scanners]
        finally:
            await server.kill()
    check = server.quick_check()
    if check != "ok":
        raise CampaignError(f"final quick_check: {check}")
    return {
        "campaign": "kill -9 server during ingestion",
        "runs": runs,
        "scanners": n_scanners,
        "kills": server.starts - 1,
        "rows_produced": sum(t["produced"] for t in totals),
        "rows_at_server": sum(t["server_rows"] for t in totals),
        "batches_at_server": len(batches),
        "rows_committed_not_acked_at_kill": in_doubt_total,
        "quick_checks_ok": server.starts,
        "restart_s_mean": round(sum(restart_s) / max(len(restart_s), 1), 2),
        "duration_s": round(time.monotonic() - started, 1),
        "ok": True,
    }


def main() -> int:
    return campaign_main(__doc__ or "", "kill -9 the server during ingestion", campaign, 9)


if __name__ == "__main__":
    sys.exit(main())
