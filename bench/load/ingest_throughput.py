"""Ingestion throughput: 20 concurrent scanners posting signed batches to the real server,
against a bare aiohttp handler that only reads and acknowledges the same batches (the
framework's ceiling), in the same run.

Usage: .venv/bin/python bench/load/ingest_throughput.py [--scanners 20] [--windows 500]
       [--seconds 10] [--rounds 3] [--customers 200] [--json]

A "sighting" is one window of a batch (one phone heard by one scanner for one window). Each
server is a `store-server serve` / bare_server.py subprocess on 127.0.0.1; the load generator
is this process (one aiohttp session, one connection per scanner). Batches are built and
signed the same way for both targets, with fresh batch ids (no duplicate short cut) and fresh
window times (each batch's windows end at the time it is sent, so the engine takes every
batch's windows as new), windows of consenting customers' current EIDs seen by interior
scanners (so every window resolves and feeds the presence engine, and each customer arrives
once: greeting cards are written).
Both servers stay up and are driven in turns, ``--rounds`` times (ceiling, then server, for
``--seconds`` each); each round's ratio compares two measures taken seconds apart, and the
median ratio is reported. The CPU time per batch answered of the target server (user +
system, every thread, /proc/PID/stat) and of this load generator are reported for every
measure: when the load generator's figure is close to the time per batch, the ceiling is the
load generator's own speed, not the bare handler's (which then idles part of the time).
Goals (issue 9): real / ceiling >= 0.5 and real >= 50,000 sightings/s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "faults"))

from harness import (
    POLL_S,
    REPO_ROOT,
    STARTUP_TIMEOUT_S,
    STORE_FILE,
    STORE_ID,
    CampaignError,
    Customer,
    ServerProcess,
    emit,
)

from scanner.uploader import sign_request

PATH = "/api/scanner/v1/batches"
WARMUP_S = 1.0
"""Requests of the first second are not counted: connections open, caches fill."""

GOAL_RATIO = 0.5
"""Issue 9: the server must keep at least half of the framework's ceiling."""

GOAL_SIGHTINGS_S = 50_000
"""Issue 9: at least 50,000 sightings/s."""


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far, all its threads (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _port_in(log: Path) -> int | None:
    found = re.search(rb"Running on http://127\.0\.0\.1:(\d+)", log.read_bytes())
    return int(found.group(1)) if found else None


async def printed_port(log: Path, process: asyncio.subprocess.Process) -> int:
    """The port aiohttp printed it listens on ("Running on http://127.0.0.1:PORT")."""
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        port = _port_in(log)
        if port is not None:
            return port
        if process.returncode is not None:
            raise CampaignError(f"bare server exited with {process.returncode}")
        await asyncio.sleep(POLL_S)
    raise CampaignError("bare server not listening in time")


def store_file_with(n_scanners: int, folder: Path) -> tuple[Path, list[str]]:
    """seeds/store.toml plus interior scanners up to `n_scanners`."""
    base = STORE_FILE.read_text("utf-8")
    ids = ["s-machines", "s-parts", "s-checkout"]
    extra = []
    for i in range(n_scanners - len(ids)):
        sid = f"s-load-{i:02d}"
        ids.append(sid)
        extra.append(
            f'[[scanners]]\nid = "{sid}"\nzone = "machines"\n'
            f"position = [{1.0 + (i % 5)}, {4.0 + (i // 5) * 0.5}]\ninterior = true\n"
            "rssi_offset_db = 0.0\n"
        )
    head, sep, walks = base.partition("# Walks:")
    path = folder / "store.toml"
    path.write_text(head + "\n".join(extra) + "\n" + sep + walks, "utf-8")
    return path, ids[:n_scanners]


def windows_json(customers: list[Customer], n: int, rng: random.Random) -> list[bytes]:
    """The window objects of a batch body (docs/api.md), as the scanner's uploader sends them,
    cut where their times go: each window is ``part[0] + start + part[1] + end + part[2]``."""
    now = time.time()
    cuts: list[bytes] = []
    for _ in range(n):
        c = rng.choice(customers)
        text = json.dumps(
            {
                "id_type": "eid",
                "id": c.frame_hex(now)[4:],
                "start": "START",
                "end": "END",
                "count": 4,
                "rssi_max": -55,
                "rssi_median": -57.0,
                "tx_power": -20,
            },
            separators=(",", ":"),
        ).encode()
        cuts.extend(text.replace(b'"START"', b"\0").replace(b'"END"', b"\0").split(b"\0"))
    return cuts


def window_list(cuts: list[bytes], end: float) -> bytes:
    """The ``windows`` list with fresh times (windows of one second ending at ``end``): each
    window is newer than the last, so the engine takes it."""
    start_text = repr(end - 1.0).encode()
    end_text = repr(end).encode()
    return (
        b"["
        + b",".join(
            cuts[i] + start_text + cuts[i + 1] + end_text + cuts[i + 2]
            for i in range(0, len(cuts), 3)
        )
        + b"]"
    )


async def drive(
    base_url: str,
    scanners: dict[str, str],
    payloads: dict[str, list[bytes]],
    n_windows: int,
    seconds: float,
) -> dict[str, Any]:
    latencies: list[float] = []
    counted = 0
    errors = 0
    start = time.monotonic()
    warm_until = start + WARMUP_S
    stop_at = warm_until + seconds

    answered = 0

    async def scanner(http: aiohttp.ClientSession, sid: str, secret: str) -> None:
        nonlocal counted, errors, answered
        prefix = f'{{"store_id":"{STORE_ID}","scanner_id":"{sid}","batch_id":"'.encode()
        while True:
            t0 = time.monotonic()
            if t0 >= stop_at:
                return
            windows = window_list(payloads[sid], time.time())
            batch_id = secrets.token_hex(16).encode()
            body = prefix + batch_id + b'","windows":' + windows + b"}"
            headers = sign_request(
                secret,
                "POST",
                PATH,
                sid,
                body,
                timestamp=int(time.time()),
                nonce=secrets.token_hex(16),
            )
            headers["Content-Type"] = "application/json"
            async with http.post(base_url + PATH, data=body, headers=headers) as resp:
                await resp.read()
                ok = resp.status == 200
            t1 = time.monotonic()
            answered += 1
            if not ok:
                errors += 1
            elif t0 >= warm_until:
                counted += n_windows
                latencies.append(t1 - t0)

    connector = aiohttp.TCPConnector(limit=len(scanners))
    async with aiohttp.ClientSession(connector=connector) as http:
        await asyncio.gather(*(scanner(http, sid, sec) for sid, sec in scanners.items()))
    elapsed = time.monotonic() - warm_until
    latencies.sort()
    return {
        "answered": answered,
        "sightings_per_s": round(counted / elapsed),
        "batches": len(latencies),
        "errors": errors,
        "batch_latency_ms_p50": round(statistics.median(latencies) * 1000, 1)
        if latencies
        else None,
        "batch_latency_ms_p99": round(latencies[int(len(latencies) * 0.99)] * 1000, 1)
        if latencies
        else None,
    }


async def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    rng = random.Random(args.seed)
    store_file, scanner_ids = store_file_with(args.scanners, workdir)
    server = ServerProcess(workdir / "server")
    server.prepare(tuple(scanner_ids), store_file=store_file, via_cli=False)
    await server.start()
    customers = await server.enroll_consenting(args.customers)
    # The bare handler on its own port, with the same bodies and signing work. Both servers
    # stay up and are driven in turns (ceiling, then server, --rounds times): the ratio of
    # each round compares two measures a few seconds apart, under the same machine load.
    # It binds a port the OS picks (port 0) and prints it: no other program can hold it.
    (workdir / "bare").mkdir()
    bare_log = workdir / "bare" / "server.log"
    with bare_log.open("ab") as log:
        bare = await asyncio.create_subprocess_exec(
            sys.executable,
            str(Path(__file__).with_name("bare_server.py")),
            "0",
            stdout=log,
            stderr=log,
            cwd=REPO_ROOT,
            env={**os.environ, "PYTHONPATH": str(REPO_ROOT), "PYTHONUNBUFFERED": "1"},
        )
    rounds: list[dict[str, Any]] = []
    try:
        bare_port = await printed_port(bare_log, bare)
        bare_server = ServerProcess(workdir / "bare", port=bare_port, process=bare, starts=1)
        await bare_server.wait_ready()
        for _ in range(args.rounds):
            payloads = {sid: windows_json(customers, args.windows, rng) for sid in scanner_ids}
            ceiling = await measured(
                bare_server, server.secrets, payloads, args.windows, args.seconds
            )
            payloads = {sid: windows_json(customers, args.windows, rng) for sid in scanner_ids}
            real = await measured(server, server.secrets, payloads, args.windows, args.seconds)
            ratio = real["sightings_per_s"] / max(ceiling["sightings_per_s"], 1)
            rounds.append({"ceiling": ceiling, "server": real, "ratio": round(ratio, 3)})
    finally:
        bare.terminate()
        await bare.wait()
        await server.terminate()
    ratio = round(statistics.median(r["ratio"] for r in rounds), 3)
    rate = statistics.median(r["server"]["sightings_per_s"] for r in rounds)
    return {
        "benchmark": "ingestion throughput",
        "scanners": args.scanners,
        "windows_per_batch": args.windows,
        "seconds": args.seconds,
        "customers": args.customers,
        "rounds": rounds,
        "ceiling_sightings_per_s": statistics.median(
            r["ceiling"]["sightings_per_s"] for r in rounds
        ),
        "server_sightings_per_s": rate,
        "server_cpu_ms_per_batch": statistics.median(
            r["server"]["server_cpu_ms_per_batch"] for r in rounds
        ),
        "ratio": ratio,
        "goal_ratio_met": ratio >= GOAL_RATIO,
        "goal_rate_met": rate >= GOAL_SIGHTINGS_S,
    }


async def measured(
    target: ServerProcess,
    scanners: dict[str, str],
    payloads: dict[str, list[bytes]],
    n_windows: int,
    seconds: float,
) -> dict[str, Any]:
    """:func:`drive` plus the CPU time per answered batch of the target server and of this
    load generator (warm-up batches included)."""
    server_before = process_cpu_s(target.pid)
    client_before = time.process_time()
    figures = await drive(target.base_url, scanners, payloads, n_windows, seconds)
    answered = max(figures.pop("answered"), 1)
    figures["server_cpu_ms_per_batch"] = round(
        (process_cpu_s(target.pid) - server_before) / answered * 1000, 3
    )
    figures["load_generator_cpu_ms_per_batch"] = round(
        (time.process_time() - client_before) / answered * 1000, 3
    )
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scanners", type=int, default=20)
    parser.add_argument("--windows", type=int, default=500, help="windows per batch")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured time per target")
    parser.add_argument("--customers", type=int, default=200)
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument(
        "--rounds", type=int, default=3, help="ceiling/server turns; the median ratio is kept"
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.scanners < 3:
        parser.error("--scanners: at least 3")
    with tempfile.TemporaryDirectory(prefix="bulle-load-") as tmp:
        figures = asyncio.run(run(args, Path(tmp)))
    emit(figures, args.json, "ingestion throughput")
    return 0


if __name__ == "__main__":
    sys.exit(main())
