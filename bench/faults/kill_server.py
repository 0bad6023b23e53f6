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

import argparse
import asyncio
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (
    SCANNER_IDS,
    CampaignError,
    Feeder,
    ScannerProcess,
    ServerProcess,
    check_accounting,
    emit,
    wait_drained,
    wait_producing,
)

CUSTOMERS = 8
"""Consenting phones in the shop: 8 windows per scanner window, batches of a few dozen rows."""

MIN_UP_S = 0.3
"""Shortest ingestion time before a kill: the scanners have reconnected after the restart."""

MAX_UP_S = 2.0
"""Longest ingestion time before a kill: bounds a 50-run campaign to a few minutes."""


async def campaign(runs: int, n_scanners: int, seed: int, workdir: Path) -> dict[str, object]:
    rng = random.Random(seed)
    server = ServerProcess(workdir / "server")
    server.prepare(SCANNER_IDS[:n_scanners])
    await server.start()
    customers = await server.enroll_consenting(CUSTOMERS)
    scanners = [
        ScannerProcess(sid, server.secrets[sid], workdir / "scanners", server.base_url)
        for sid in SCANNER_IDS[:n_scanners]
    ]
    for scanner in scanners:
        scanner.prepare()
        await scanner.start()
    feeder = Feeder(scanners, customers)
    feeder.start()
    await wait_producing(scanners)
    started = time.monotonic()
    in_doubt_total = 0
    restart_s: list[float] = []
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
        await feeder.stop()
        await wait_drained(scanners)
        batches = server.server_batches()
        totals = [check_accounting(s, s.snapshot(), batches, drained=True) for s in scanners]
    finally:
        await feeder.stop()
        for scanner in scanners:
            await scanner.terminate()
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
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50, help="kills (default 50)")
    parser.add_argument("--scanners", type=int, default=3, choices=range(1, 5))
    parser.add_argument("--seed", type=int, default=9)
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bulle-fault-") as tmp:
        try:
            figures = asyncio.run(campaign(args.runs, args.scanners, args.seed, Path(tmp)))
        except CampaignError as exc:
            emit({"ok": False, "error": str(exc)}, args.json, "FAILED")
            return 1
    emit(figures, args.json, "kill -9 the server during ingestion")
    return 0


if __name__ == "__main__":
    sys.exit(main())
