"""Benchmark: from a customer's withdrawal call to the retraction on a connected staff board.

Usage: .venv/bin/python bench/consent/bench_withdrawal.py [--runs 200] [--json]

A real store server on 127.0.0.1 (aiohttp AppRunner, port 0) on a fresh SQLite file; a staff
member signs in (POST /login) and keeps the board's WebSocket open. For each run a new
customer enrolls, grants the greeting consent, chooses a name and checks in, so a greeting
card reaches the board; then the clock starts, the app calls POST /api/v1/consents/withdraw,
and the clock stops when the board receives the card's "retract" message. The call's own
latency (until its answer) is reported too. Goal: p99 under 250 ms on loopback.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT))

from store_server import staff  # noqa: E402
from store_server.app import create_app  # noqa: E402
from store_server.config import ServerConfig  # noqa: E402
from store_server.keys import SERVICE  # noqa: E402

DEFAULT_RUNS = 200
"""Enough runs for a p99 that is not just the maximum of a handful."""

WARMUP_RUNS = 5
"""Untimed runs first: imports, first queries and connection set-up are not what we measure."""

STORE_FILE = REPO_ROOT / "seeds" / "store.toml"
"""The demo store (its floor gives the check-in a zone)."""

WAIT_S = 10.0
"""Longest wait for one board message before the run is declared lost."""

GOAL_P99_MS = 250.0
"""The issue's goal for the withdrawal-to-retraction latency on loopback."""


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


async def next_message(ws: aiohttp.ClientWebSocketResponse, kind: str) -> dict[str, Any]:
    while True:
        msg = await asyncio.wait_for(ws.receive(), WAIT_S)
        if msg.type != aiohttp.WSMsgType.TEXT:
            raise RuntimeError(f"board connection ended: {msg.type}")
        data = json.loads(msg.data)
        if isinstance(data, dict) and data.get("type") == kind:
            return data


async def one_run(
    http: aiohttp.ClientSession, base: str, ws: aiohttp.ClientWebSocketResponse, text_hash: str
) -> tuple[float, float]:
    resp = await http.post(f"{base}/api/v1/enroll", json={"language": "en"})
    token = (await resp.json())["token"]
    auth = {"Authorization": f"Bearer {token}"}
    await (
        await http.post(
            f"{base}/api/v1/consents",
            json={"purpose": "greeting", "text_hash": text_hash},
            headers=auth,
        )
    ).read()
    await (
        await http.put(
            f"{base}/api/v1/preferences",
            json={"display_name": "Sylvie", "name_form": "first_name"},
            headers=auth,
        )
    ).read()
    await (await http.post(f"{base}/api/v1/check-in", json={}, headers=auth)).read()
    card = (await next_message(ws, "card"))["card"]
    start = time.perf_counter()
    resp = await http.post(f"{base}/api/v1/consents/withdraw", json={}, headers=auth)
    await resp.read()
    answered = time.perf_counter()
    if resp.status != 200:
        raise RuntimeError(f"withdrawal failed with HTTP {resp.status}")
    while True:
        retract = await next_message(ws, "retract")
        if retract["id"] == card["id"]:
            break
    retracted = time.perf_counter()
    return (retracted - start) * 1000, (answered - start) * 1000


async def bench(runs: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bulle-bench-") as tmp:
        config = ServerConfig(
            db_path=str(Path(tmp) / "store.sqlite"),
            store_file=str(STORE_FILE),
            master_key=secrets.token_hex(32),
            cookie_secure=False,
        )
        app = create_app(config, base_dir=REPO_ROOT)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        base = f"http://{host}:{port}"
        service = app[SERVICE]
        password = secrets.token_urlsafe(16)
        await service.db.run(lambda db: staff.add_user(db, "bench", password, "staff", time.time()))
        retractions: list[float] = []
        calls: list[float] = []
        try:
            async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
                resp = await http.post(
                    f"{base}/login",
                    data={"username": "bench", "password": password},
                    allow_redirects=False,
                )
                if resp.status != 303:
                    raise RuntimeError(f"staff sign-in failed with HTTP {resp.status}")
                texts = await (await http.get(f"{base}/api/v1/consent-texts")).json()
                text_hash = next(t["hash"] for t in texts["texts"] if t["purpose"] == "greeting")
                async with http.ws_connect(f"{base}/ws/board") as ws:
                    await next_message(ws, "snapshot")
                    for index in range(WARMUP_RUNS + runs):
                        retraction, call = await one_run(http, base, ws, text_hash)
                        if index >= WARMUP_RUNS:
                            retractions.append(retraction)
                            calls.append(call)
        finally:
            await runner.cleanup()
    return {
        "runs": runs,
        "withdraw_to_retract_ms": summary(retractions),
        "withdraw_call_ms": summary(calls),
        "goal_p99_ms": GOAL_P99_MS,
        "goal_met": percentile(retractions, 0.99) < GOAL_P99_MS,
    }


def summary(values: list[float]) -> dict[str, float]:
    return {
        "p50": round(statistics.median(values), 2),
        "p90": round(percentile(values, 0.90), 2),
        "p99": round(percentile(values, 0.99), 2),
        "max": round(max(values), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=DEFAULT_RUNS)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    result = asyncio.run(bench(args.runs))
    if args.json:
        sys.stdout.write(json.dumps(result, indent=2) + "\n")
        return
    lines = [
        f"runs: {result['runs']} (after {WARMUP_RUNS} warm-up runs)",
        "",
        "| figure | p50 (ms) | p90 (ms) | p99 (ms) | max (ms) |",
        "|---|---:|---:|---:|---:|",
    ]
    for label, key in (
        ("withdrawal call -> retraction on the board", "withdraw_to_retract_ms"),
        ("withdrawal call -> its HTTP answer", "withdraw_call_ms"),
    ):
        s = result[key]
        lines.append(f"| {label} | {s['p50']} | {s['p90']} | {s['p99']} | {s['max']} |")
    lines.append("")
    lines.append(f"goal p99 < {GOAL_P99_MS:.0f} ms: {'met' if result['goal_met'] else 'NOT met'}")
    sys.stdout.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
