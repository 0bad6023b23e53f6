"""End-to-end latency: advertisement handed to a scanner -> card on a staff board.

Usage: .venv/bin/python bench/load/e2e_latency.py [--trials 100] [--window 1.0] [--json]

Real processes on 127.0.0.1: `store-server serve`, one `beacon-scanner run` on the interior
scanner s-machines with the simulated backend (its bleak callback, Daemon.on_advert, gets each
line written to its stdin), and a staff board connected to /ws/board in this process. Each trial
enrolls a new consenting customer beforehand; its phone then advertises 4 times a second at
-55 dBm until its greeting card arrives on the board.

"Beyond the dwell" subtracts the wait the configuration imposes: a customer only arrives after
interior confirmation over `interior_confirm_s` (read from `PresenceSettings`, 0 s by default:
one window at an interior scanner is enough) counted from the end of the first window, so the
card cannot exist before `dwell_done` = end of the customer's first window (stamped by the
scanner) + `interior_confirm_s`. The figure is card received - dwell_done. When the
confirmation came with a window (not with the engine's own 1 s tick), it is split at the moment
the scanner wrote that window to its outbox (a trigger stamps it):

- flush lag = outbox insert - dwell_done: the scanner flushes at each window boundary plus a
  20 ms grace (`scanner.daemon.FLUSH_GRACE_S`) for callbacks still queued at the boundary;
- server path = card received - outbox insert: upload, signature, validation, resolve,
  presence (the arrival is decided as the batch is ingested), policy, one committed
  transaction, WebSocket push.

The raw latency from the first advertisement is reported too. Goal (issue 9): p99 beyond the
dwell < 150 ms on loopback.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "faults"))

from harness import EDDYSTONE_UUID, Customer, ScannerProcess, ServerProcess, emit

from store_server import staff
from store_server.presence import PresenceSettings
from store_server.storage.database import Database

SCANNER_ID = "s-machines"
ADVERT_INTERVAL_S = 0.25
"""A typical Android "balanced" advertising interval."""

CARD_TIMEOUT_S = 15.0
"""A card not on the board 15 s after the first advertisement is a failure, not a latency."""

GOAL_P99_MS = 150.0
"""Issue 9: p99 beyond the dwell under 150 ms on loopback."""

PASSWORD = "correct horse battery staple"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def summary(values: list[float]) -> dict[str, float]:
    ms = [v * 1000 for v in values]
    return {
        "p50": round(statistics.median(ms), 1),
        "p95": round(percentile(ms, 0.95), 1),
        "p99": round(percentile(ms, 0.99), 1),
        "max": round(max(ms), 1),
    }


def windows_of(outbox: Path, eids: set[str]) -> list[tuple[float, float]]:
    """(window end, outbox insert time) of the customer's windows, in insertion order."""
    conn = sqlite3.connect(outbox, timeout=10)
    try:
        rows = [
            (json.loads(body), at)
            for body, at in conn.execute("SELECT body, at FROM fault_produced ORDER BY n")
        ]
    finally:
        conn.close()
    mine = [(float(w["end"]), float(at)) for w, at in rows if w["id"] in eids]
    if not mine:
        raise RuntimeError("no window of the customer in the outbox")
    return mine


async def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    server = ServerProcess(workdir / "server")
    server.prepare((SCANNER_ID,), via_cli=False)
    db = Database(server.db_path)
    try:
        db.run_sync(lambda d: staff.add_user(d, "board", PASSWORD, "staff", time.time()))
    finally:
        db.close()
    await server.start()
    customers = await server.enroll_consenting(args.trials)
    scanner = ScannerProcess(
        SCANNER_ID, server.secrets[SCANNER_ID], workdir / "scanners", server.base_url
    )
    scanner.window_s = args.window
    scanner.prepare()
    await scanner.start()
    confirm_s = PresenceSettings().interior_confirm_s
    raw: list[float] = []
    beyond: list[float] = []
    flush_lag: list[float] = []
    server_path: list[float] = []
    by_tick = 0  # arrivals confirmed by the engine's 1 s tick before a second window came
    try:
        async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http:
            async with http.post(
                server.base_url + "/login",
                data={"username": "board", "password": PASSWORD},
                allow_redirects=False,
            ) as resp:
                cookie = resp.cookies["bulle_session"].value
            ws = await http.ws_connect(
                server.base_url + "/ws/board", headers={"Cookie": f"bulle_session={cookie}"}
            )
            await ws.receive_json(timeout=CARD_TIMEOUT_S)  # snapshot
            await asyncio.sleep(2.0)  # the scanner has its allowlist (all customers on it)
            for customer in customers:
                first, card_at, eids = await trial(scanner, ws, customer)
                mine = windows_of(scanner.outbox_path, eids)
                dwell_done = mine[0][0] + confirm_s
                raw.append(card_at - first)
                beyond.append(card_at - dwell_done)
                confirming = [at for end, at in mine if end >= dwell_done - 1e-6 and at < card_at]
                if confirming:
                    flush_lag.append(confirming[0] - dwell_done)
                    server_path.append(card_at - confirming[0])
                else:
                    by_tick += 1
            await ws.close()
    finally:
        await scanner.terminate()
        await server.terminate()
    p99 = summary(beyond)["p99"]
    return {
        "benchmark": "advertisement to card on a board",
        "trials": len(raw),
        "window_s": args.window,
        "interior_confirm_s": confirm_s,
        "raw_ms": summary(raw),
        "beyond_dwell_ms": summary(beyond),
        "confirmed_by_window": len(flush_lag),
        "confirmed_by_tick": by_tick,
        "flush_lag_ms": summary(flush_lag) if flush_lag else None,
        "server_path_ms": summary(server_path) if server_path else None,
        "goal_met": p99 < GOAL_P99_MS,
    }


async def trial(
    scanner: ScannerProcess, ws: aiohttp.ClientWebSocketResponse, customer: Customer
) -> tuple[float, float, set[str]]:
    """Advertise until the customer's card arrives; (first advert, card received, EIDs)."""
    eids: set[str] = set()
    received: list[float] = []

    async def watch() -> None:
        while True:
            msg = await ws.receive_json(timeout=CARD_TIMEOUT_S)
            if msg.get("type") == "card":
                received.append(time.time())
                return

    watcher = asyncio.create_task(watch())
    first = time.time()
    deadline = first + CARD_TIMEOUT_S
    while not watcher.done() and time.time() < deadline:
        now = time.time()
        frame = customer.frame_hex(now)
        eids.add(frame[4:])
        line = {
            "address": "02:00:00:00:00:01",
            "rssi": -55,
            "service_data": {EDDYSTONE_UUID: frame},
        }
        await scanner.feed((json.dumps(line) + "\n").encode())
        await asyncio.wait([watcher], timeout=ADVERT_INTERVAL_S)
    await watcher
    return first, received[0], eids


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--window", type=float, default=1.0, help="scanner window_s")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bulle-load-") as tmp:
        figures = asyncio.run(run(args, Path(tmp)))
    emit(figures, args.json, "advertisement to card on a board")
    return 0


if __name__ == "__main__":
    sys.exit(main())
