"""Fault campaign: SIGTERM the store server with staff boards connected and requests in flight.

Usage: .venv/bin/python bench/faults/sigterm_boards.py [--runs 3] [--boards 20] [--json]

Each run starts `store-server serve` on a fresh database, signs `--boards` staff members in
(one session each) and connects their live boards (`/ws/board`), starts scanner allowlist long
polls and a stream of signed batch uploads and customer API reads, then sends SIGTERM and
checks:

- every board received a close frame with code 1001 (going away);
- every in-flight request either finished with an HTTP answer (no 5xx) or was refused at
  connection (the listener is closed); "aborted" counts requests cut without an answer;
- the process exited with status 0 within 10 s of the signal.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import secrets
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import STORE_ID, CampaignError, ServerProcess, emit

from scanner.uploader import sign_request
from store_server import staff
from store_server.storage.database import Database

EXIT_LIMIT_S = 10.0
"""The bound of the issue: a store server restarts (systemd, an update) within 10 s."""

LONG_POLLS = 5
"""Scanner allowlist long polls in flight at the signal (one per scanner of a busy shop)."""

UPLOADERS = 5
"""Concurrent clients posting batches and reading the catalog while the signal arrives."""

PRE_SIGNAL_S = 0.5
"""Traffic runs this long before SIGTERM so that requests are really in flight."""

CLIENT_TIMEOUT_S = 20.0
"""A request unanswered this long after the signal counts as hung."""

GOING_AWAY = 1001
"""WebSocket close code of a server going down (RFC 6455)."""

ACCOUNTS = 2
"""Staff accounts whose sessions the boards share (argon2 hashing is slow by design)."""

SCANNER_ID = "s-entrance"
PASSWORD = "correct horse battery staple"


def _classify(exc: BaseException) -> str:
    if isinstance(exc, aiohttp.ClientConnectorError):
        return "refused"
    if isinstance(exc, TimeoutError):
        return "hung"
    return "aborted"


async def _login(http: aiohttp.ClientSession, base: str, user: str) -> str:
    async with http.post(
        base + "/login", data={"username": user, "password": PASSWORD}, allow_redirects=False
    ) as resp:
        match = re.search(r"bulle_session=([^;]+)", resp.headers.get("Set-Cookie", ""))
        if resp.status != 303 or match is None:
            raise CampaignError(f"sign-in failed: {resp.status}")
        return match.group(1)


async def _board(
    http: aiohttp.ClientSession, base: str, cookie: str, ready: asyncio.Event
) -> int | None:
    ws = await http.ws_connect(
        base.replace("http", "ws") + "/ws/board", headers={"Cookie": f"bulle_session={cookie}"}
    )
    first = await ws.receive(timeout=CLIENT_TIMEOUT_S)
    if first.type != aiohttp.WSMsgType.TEXT or json.loads(first.data)["type"] != "snapshot":
        raise CampaignError("board got no snapshot")
    ready.set()
    while True:
        msg = await ws.receive(timeout=CLIENT_TIMEOUT_S + 10)
        if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
            return ws.close_code
        if msg.type == aiohttp.WSMsgType.ERROR:
            return None


async def _signed(
    http: aiohttp.ClientSession, base: str, secret: str, method: str, path: str, body: bytes
) -> str:
    headers = sign_request(
        secret,
        method,
        path,
        SCANNER_ID,
        body,
        timestamp=int(time.time()),
        nonce=secrets.token_hex(16),
    )
    if body:
        headers["Content-Type"] = "application/json"
    try:
        async with http.request(
            method,
            base + path,
            data=body or None,
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=CLIENT_TIMEOUT_S + 30),
        ) as resp:
            await resp.read()
            return str(resp.status)
    except (aiohttp.ClientError, TimeoutError) as exc:
        return _classify(exc)


async def _long_poll(http: aiohttp.ClientSession, base: str, secret: str) -> str:
    # since=<current version> and a long wait: held by the server until a change or shutdown.
    version = await _version(http, base, secret)
    return await _signed(
        http, base, secret, "GET", f"/api/scanner/v1/allowlist?since={version}&wait=25", b""
    )


async def _version(http: aiohttp.ClientSession, base: str, secret: str) -> int:
    path = "/api/scanner/v1/allowlist"
    headers = sign_request(
        secret,
        "GET",
        path,
        SCANNER_ID,
        b"",
        timestamp=int(time.time()),
        nonce=secrets.token_hex(16),
    )
    async with http.get(base + path, headers=headers) as resp:
        return int((await resp.json())["version"])


async def _uploader(
    http: aiohttp.ClientSession,
    base: str,
    secret: str,
    stop: asyncio.Event,
    out: Counter[str],
    cut: list[str],
) -> None:
    while not stop.is_set():
        now = time.time()
        body = json.dumps(
            {
                "batch_id": secrets.token_hex(16),
                "store_id": STORE_ID,
                "scanner_id": SCANNER_ID,
                "windows": [
                    {
                        "id_type": "eid",
                        "id": secrets.token_hex(8),
                        "start": now - 1,
                        "end": now,
                        "count": 3,
                        "rssi_max": -60,
                        "rssi_median": -61.0,
                        "tx_power": -20,
                    }
                ],
            }
        ).encode()
        outcome = await _signed(http, base, secret, "POST", "/api/scanner/v1/batches", body)
        if outcome == "aborted":
            cut.append(json.loads(body)["batch_id"])
        else:
            out[outcome] += 1
        if outcome == "refused":
            return
        try:
            async with http.get(
                base + "/api/v1/catalog", timeout=aiohttp.ClientTimeout(total=CLIENT_TIMEOUT_S)
            ) as resp:
                await resp.read()
                out[str(resp.status)] += 1
        except (aiohttp.ClientError, TimeoutError) as exc:
            # A read cut without an answer was not processed: the client retries it.
            kind = _classify(exc)
            out["refused" if kind == "aborted" else kind] += 1
            if kind == "refused":
                return


async def one_run(workdir: Path, n_boards: int) -> dict[str, Any]:
    server = ServerProcess(workdir)
    server.prepare((SCANNER_ID,))
    secret = server.secrets[SCANNER_ID]
    # Accounts are created in-process (the `store-server user add` code path, without 20
    # interpreter start-ups); the scanner was registered with the CLI by prepare().
    db = Database(server.db_path)
    try:
        for i in range(ACCOUNTS):
            db.run_sync(
                lambda d, i=i: staff.add_user(d, f"staff{i}", PASSWORD, "staff", time.time())
            )
    finally:
        db.close()
    await server.start()
    base = server.base_url
    outcomes: Counter[str] = Counter()
    cut: list[str] = []
    stop = asyncio.Event()
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http:
        sessions = [await _login(http, base, f"staff{i}") for i in range(ACCOUNTS)]
        cookies = [sessions[i % ACCOUNTS] for i in range(n_boards)]
        readies = [asyncio.Event() for _ in cookies]
        boards = [
            asyncio.create_task(_board(http, base, c, r))
            for c, r in zip(cookies, readies, strict=True)
        ]
        await asyncio.wait_for(asyncio.gather(*(r.wait() for r in readies)), CLIENT_TIMEOUT_S)
        polls = [asyncio.create_task(_long_poll(http, base, secret)) for _ in range(LONG_POLLS)]
        uploads = [
            asyncio.create_task(_uploader(http, base, secret, stop, outcomes, cut))
            for _ in range(UPLOADERS)
        ]
        await asyncio.sleep(PRE_SIGNAL_S)
        exit_s = await server.terminate(timeout_s=EXIT_LIMIT_S + 5)
        returncode = server.process.returncode if server.process else None
        stop.set()
        codes = await asyncio.gather(*boards, return_exceptions=True)
        poll_outcomes = Counter(str(o) for o in await asyncio.gather(*polls))
        with contextlib.suppress(Exception):
            await asyncio.gather(*uploads)
    # A batch upload cut without an answer is "refused" if the server never processed it,
    # and "committed, answer lost" if it did (harmless: the scanner's retry is deduplicated).
    committed = {b for (_, b) in server.server_batches()}
    for batch_id in cut:
        outcomes["committed_answer_lost" if batch_id in committed else "refused"] += 1
    closed_1001 = sum(1 for c in codes if c == GOING_AWAY)
    return {
        "exit_s": exit_s,
        "returncode": returncode,
        "boards_closed_1001": closed_1001,
        "board_close_codes": Counter(str(c) for c in codes),
        "long_polls": poll_outcomes,
        "requests": outcomes,
    }


async def campaign(runs: int, n_boards: int, workdir: Path) -> dict[str, Any]:
    results = [await one_run(workdir / f"run{i}", n_boards) for i in range(runs)]
    failures = []
    total_requests: Counter[str] = Counter()
    total_polls: Counter[str] = Counter()
    for i, r in enumerate(results):
        total_requests.update(r["requests"])
        total_polls.update(r["long_polls"])
        if r["boards_closed_1001"] != n_boards:
            failures.append(f"run {i}: board close codes {dict(r['board_close_codes'])}")
        if r["exit_s"] > EXIT_LIMIT_S or r["returncode"] != 0:
            failures.append(f"run {i}: exit {r['returncode']} after {r['exit_s']:.1f} s")
        bad = {
            k: v
            for k, v in (r["requests"] + r["long_polls"]).items()
            if k in ("hung", "aborted", "committed_answer_lost") or k.startswith("5")
        }
        if bad:
            failures.append(f"run {i}: requests {bad}")
    return {
        "campaign": "SIGTERM with boards connected",
        "runs": runs,
        "boards": n_boards,
        "exit_s_max": round(max(r["exit_s"] for r in results), 2),
        "boards_closed_1001": sum(r["boards_closed_1001"] for r in results),
        "requests": dict(sorted(total_requests.items())),
        "long_polls": dict(sorted(total_polls.items())),
        "failures": failures,
        "ok": not failures,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--boards", type=int, default=20)
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bulle-fault-") as tmp:
        try:
            figures = asyncio.run(campaign(args.runs, args.boards, Path(tmp)))
        except CampaignError as exc:
            emit({"ok": False, "error": str(exc)}, args.json, "FAILED")
            return 1
    emit(figures, args.json, "SIGTERM with boards connected")
    return 0 if figures["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
