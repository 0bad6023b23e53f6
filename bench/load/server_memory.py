"""Server start-up time and memory (RSS) by store size, with phones present in the shop.

Usage: .venv/bin/python bench/load/server_memory.py [--customers 100000] [--present 2000]
       [--consenting 1.0] [--keep DIR] [--json]

`--keep DIR` keeps the prepared database in DIR and reuses it on the next run with the same
`--customers` and `--consenting` (preparing a million customers takes minutes).

The database is prepared in this process with the server's own storage functions (identity keys
wrapped with the master key, greeting consent in the hash-chained log) for `--customers`
customers, `--consenting` of them with an active consent (1.0, the worst case: every one of
them is in the EID resolver). Then `store-server serve` starts on it and the resident set of
that process is read from /proc/PID/status:

- start to ready: from the process's start to its first answer (the server serves while the
  EIDs of a large store are built in the background), and the server's CPU seconds by then;
- start to every EID resolvable: until /readyz says that every consenting customer is in the
  resolver and none of their EIDs is still being built;
- after start-up: the interpreter, the app and the resolver over every consenting customer;
- after `--present` customers arrived: signed batches of the interior scanner s-machines
  (two windows 1.1 s apart per phone, the interior confirmation), waiting until every visit is
  recorded: the presence engine, visit state and greeting cards;
- VmHWM, the peak; then, reported apart, VmHWM after one scanner fetched the full allowlist
  (what every scanner asks for when it starts); and the peak RSS of the build's worker
  processes (if any) and of the server and its workers together, sampled every 50 ms through
  the whole run. The goal is checked against the larger of the server's peak and that sum:
  workers that run beside the server are part of its footprint.

Goals: 100k consenting customers ready in under 5 s and a peak RSS under 150 MB; 1M ready
in under 10 s, every EID resolvable in under 30 s.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import secrets
import sqlite3
import sys
import tempfile
import time
from dataclasses import astuple
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "faults"))

from harness import STORE_FILE, STORE_ID, Customer, ServerProcess, emit

from scanner.uploader import sign_request
from store_server.app import load_consent_texts
from store_server.consent import GENESIS_HASH, LogEntry, entry_hash, subject_ref
from store_server.eid import COUNTER_MODULUS, beacon_time, clock_offset, new_identity_key
from store_server.identity_load import identity_aad
from store_server.keywrap import derive_key, wrap_key
from store_server.storage import consents as consent_store
from store_server.storage import customers as customer_store
from store_server.storage.database import Database, immediate

SCANNER_ID = "s-machines"
GOAL_MB = 150.0
"""Issue 9: a store server fits a small box next to other services."""

BATCH_WINDOWS = 500
"""The scanner's default batch_max_windows."""

ARRIVAL_TIMEOUT_S = 120.0
"""2,000 arrivals are 2,000 committed transactions; two minutes means something is stuck."""

CONSENT_DURATION_S = 365 * 24 * 3600.0
"""A year: no consent expires during the run."""


PREPARE_BATCH = 5000
"""Customers written per transaction while preparing: one commit per customer dominated."""


def prepare(db_path: Path, master_hex: str, n: int, consenting: float) -> list[Customer]:
    """Write ``n`` customers as enrollment and a greeting grant would, in batched transactions.

    The rows are those of ``customers.create_customer`` and ``consents.grant_consent`` (identity key
    wrapped with the master key under the customer's AAD, token and pickup code, a consent
    row, a hash-chained log entry hashed with ``consent.entry_hash``), but written
    ``PREPARE_BATCH`` customers per transaction with ``executemany``: a million customers in
    about a minute rather than five.
    """
    master = bytes.fromhex(master_hex)
    pseudonym_key = derive_key(master, "consent-pseudonym")
    texts = load_consent_texts()
    db = Database(db_path)
    customers: list[Customer] = []
    try:
        db.run_sync(lambda d: d.execute("PRAGMA synchronous = OFF"))  # preparation only
        db.run_sync(lambda d: consent_store.ensure_consent_texts(d, texts))
        text_hash = next(
            r["hash"]
            for r in db.run_sync(consent_store.current_consent_texts)
            if r["purpose"] == "greeting"
        )
        now = time.time()
        n_consenting = int(n * consenting)
        offset = clock_offset(int(now) % COUNTER_MODULUS, now)

        def fill(d: Any) -> None:
            last = d.execute("SELECT entry_hash FROM consent_log ORDER BY seq DESC LIMIT 1")
            row = last.fetchone()
            prev = GENESIS_HASH if row is None else str(row[0])
            for first in range(0, n, PREPARE_BATCH):
                people, keys, grants, log = [], [], [], []
                for i in range(first, min(first + PREPARE_BATCH, n)):
                    key = new_identity_key()
                    customer_id = "c_" + secrets.token_hex(12)
                    token = secrets.token_urlsafe(32)
                    people.append(
                        (
                            customer_id,
                            customer_store.token_hash(token),
                            now,
                            "fr",
                            customer_store.new_pickup_code(),
                        )
                    )
                    wrapped = wrap_key(master, key, identity_aad(customer_id))
                    keys.append((customer_id, wrapped, 9, offset, now))
                    if i >= n_consenting:
                        continue
                    grants.append(
                        (customer_id, "greeting", "store", text_hash, now, now + CONSENT_DURATION_S)
                    )
                    entry = LogEntry(
                        subject_ref(pseudonym_key, customer_id),
                        "greeting",
                        "grant",
                        text_hash,
                        "store",
                        "app",
                        None,
                        now,
                    )
                    digest = entry_hash(prev, entry)
                    log.append((*astuple(entry), prev, digest))
                    prev = digest
                    customers.append(Customer(key, 9, beacon_time(now, offset) - now))
                with immediate(d):
                    d.conn.executemany(
                        "INSERT INTO customers (id, token_hash, created_at, language,"
                        " pickup_code) VALUES (?, ?, ?, ?, ?)",
                        people,
                    )
                    d.conn.executemany(
                        "INSERT INTO identities (customer_id, key_wrapped, k, clock_offset_s,"
                        " created_at) VALUES (?, ?, ?, ?, ?)",
                        keys,
                    )
                    d.conn.executemany(
                        "INSERT INTO consents (customer_id, purpose, scope, text_hash,"
                        " granted_at, expires_at) VALUES (?, ?, ?, ?, ?, ?)",
                        grants,
                    )
                    d.conn.executemany(
                        "INSERT INTO consent_log (subject_ref, purpose, action, text_hash, scope,"
                        " channel, app_version, at, prev_hash, entry_hash)"
                        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        log,
                    )

        db.run_sync(fill)
    finally:
        db.close()
    return customers


def rss_mb(pid: int) -> dict[str, float]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = round(int(value.split()[0]) / 1024, 1)
    return fields


async def full_allowlist(server: ServerProcess) -> int:
    """One scanner's full allowlist (no version yet), as its first long poll asks; its size."""
    path = "/api/scanner/v1/allowlist"
    headers = sign_request(
        server.secrets[SCANNER_ID],
        "GET",
        path,
        SCANNER_ID,
        b"",
        timestamp=int(time.time()),
        nonce=secrets.token_hex(16),
    )
    async with (
        aiohttp.ClientSession() as http,
        http.get(server.base_url + path, headers=headers) as resp,
    ):
        if resp.status != 200:
            raise RuntimeError(f"allowlist refused: {resp.status} {await resp.text()}")
        return len(await resp.read())


async def make_present(server: ServerProcess, customers: list[Customer]) -> float:
    secret = server.secrets[SCANNER_ID]
    started = time.monotonic()
    async with aiohttp.ClientSession() as http:
        for round_ in range(2):
            now = time.time()
            for i in range(0, len(customers), BATCH_WINDOWS):
                windows = [
                    {
                        "id_type": "eid",
                        "id": c.frame_hex(now)[4:],
                        "start": now - 1.0,
                        "end": now,
                        "count": 4,
                        "rssi_max": -55,
                        "rssi_median": -56.0,
                        "tx_power": -20,
                    }
                    for c in customers[i : i + BATCH_WINDOWS]
                ]
                body = json.dumps(
                    {
                        "batch_id": secrets.token_hex(16),
                        "store_id": STORE_ID,
                        "scanner_id": SCANNER_ID,
                        "windows": windows,
                    }
                ).encode()
                path = "/api/scanner/v1/batches"
                headers = sign_request(
                    secret,
                    "POST",
                    path,
                    SCANNER_ID,
                    body,
                    timestamp=int(time.time()),
                    nonce=secrets.token_hex(16),
                )
                headers["Content-Type"] = "application/json"
                async with http.post(server.base_url + path, data=body, headers=headers) as resp:
                    if resp.status != 200:
                        raise RuntimeError(f"batch refused: {resp.status} {await resp.text()}")
            if round_ == 0:
                await asyncio.sleep(1.1)  # the interior confirmation needs two windows 1 s apart
    deadline = time.monotonic() + ARRIVAL_TIMEOUT_S
    while time.monotonic() < deadline:
        conn = sqlite3.connect(server.db_path, timeout=10)
        try:
            visits = conn.execute("SELECT count(*) FROM visits").fetchone()[0]
        finally:
            conn.close()
        if visits >= len(customers):
            return time.monotonic() - started
        await asyncio.sleep(0.5)
    raise RuntimeError(f"only {visits} of {len(customers)} arrived")


SAMPLE_S = 0.05
"""How often the process tree's memory is sampled during the start-up."""


def children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def sample_tree(server: ServerProcess, peaks: dict[str, float], stop: asyncio.Event) -> None:
    """Peak RSS of the server's worker processes, and of server + workers together; the CPU
    seconds of the server and of its workers (the last reading of each worker)."""
    worker_cpu: dict[int, float] = {}
    while not stop.is_set():
        if server.process is None:  # not spawned yet
            await asyncio.sleep(SAMPLE_S / 10)
            continue
        pid = server.pid
        total = 0.0
        for child in children(pid):
            try:
                rss = rss_mb(child)["VmRSS"]
            except (OSError, KeyError):
                continue
            peaks["worker"] = max(peaks["worker"], rss)
            total += rss
            with contextlib.suppress(OSError, IndexError, ValueError):
                worker_cpu[child] = cpu_s(child)
            peaks["worker_cpu"] = sum(worker_cpu.values())
        try:
            total += rss_mb(pid)["VmRSS"]
        except (OSError, KeyError):
            return
        peaks["tree"] = max(peaks["tree"], total)
        with contextlib.suppress(OSError, IndexError, ValueError):
            peaks["server_cpu"] = cpu_s(pid)
        await asyncio.sleep(SAMPLE_S)


async def until_built(server: ServerProcess, consenting: int, timeout_s: float) -> None:
    """Until /readyz says every consenting customer is in the resolver with their EIDs built
    (whether they were loaded before serving or built in the background)."""
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            with contextlib.suppress(aiohttp.ClientError, OSError):
                async with http.get(server.base_url + "/readyz") as resp:
                    resolver = (await resp.json())["checks"]["resolver"]
                    if resolver["identities"] >= consenting and resolver["building"] == 0:
                        return
            await asyncio.sleep(READY_POLL_S)
    raise RuntimeError("the server's identities were not all built in time")


READY_POLL_S = 0.5
"""How often /readyz is asked whether every EID resolves: each answer costs the server a little
CPU (the writer thread, the access log), so not too often; the figure is to half a second."""

KEPT_SAMPLE = 5000
"""Customers (keys and clocks) saved beside a kept database: the most `--present` can draw."""


def keep_or_prepare(server: ServerProcess, args: argparse.Namespace) -> list[Customer]:
    """Prepare the database, or reuse the one kept in `--keep` (same master key and scanner
    secret; a sample of its customers for the arrivals)."""
    kept = server.workdir / "kept.json"
    if kept.exists():
        saved = json.loads(kept.read_text("utf-8"))
        if saved["customers"] != args.customers or saved["consenting"] != args.consenting:
            raise SystemExit(f"{kept}: prepared for other --customers/--consenting")
        server.master_key = saved["master_key"]
        server.secrets = saved["secrets"]
        # This checkout's floor file: the folder may have been prepared from another one.
        config = server.config_path.read_text("utf-8").splitlines()
        config = [line for line in config if not line.startswith(("port = ", "store_file = "))]
        server.config_path.write_text(
            "\n".join([*config, f'store_file = "{STORE_FILE}"', f"port = {server.port}", ""]),
            "utf-8",
        )
        conn = sqlite3.connect(server.db_path)
        try:  # the previous run's arrivals: this run's are counted from none
            with conn:
                for table in ("cards", "decisions", "messages", "visits"):
                    conn.execute(f"DELETE FROM {table}")
        finally:
            conn.close()
        return [Customer(bytes.fromhex(k), n, o) for k, n, o in saved["sample"]]
    server.prepare((SCANNER_ID,), via_cli=False, log_level="INFO")
    customers = prepare(server.db_path, server.master_key, args.customers, args.consenting)
    if args.keep is not None:
        sample = random.Random(2).sample(customers, min(KEPT_SAMPLE, len(customers)))
        kept.write_text(
            json.dumps(
                {
                    "customers": args.customers,
                    "consenting": args.consenting,
                    "master_key": server.master_key,
                    "secrets": server.secrets,
                    "sample": [[c.identity_key.hex(), c.k, c.clock_offset_s] for c in sample],
                }
            ),
            "utf-8",
        )
    return customers


async def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    server = ServerProcess(workdir / "server")
    t0 = time.monotonic()
    customers = keep_or_prepare(server, args)
    prepare_s = time.monotonic() - t0
    (server.workdir / "server.log").unlink(missing_ok=True)
    peaks = {"worker": 0.0, "tree": 0.0, "worker_cpu": 0.0, "server_cpu": 0.0}
    stop = asyncio.Event()
    t0 = time.monotonic()
    sampler = asyncio.create_task(sample_tree(server, peaks, stop))
    await server.start()
    ready_s = time.monotonic() - t0
    ready_cpu_s = cpu_s(server.pid)  # what the start cost the server, whatever the load
    await until_built(server, int(args.customers * args.consenting), ARRIVAL_TIMEOUT_S)
    resolvable_s = time.monotonic() - t0
    cpu = dict(peaks)  # the CPU figures until every EID resolved; the sampling goes on
    await asyncio.sleep(2.0)  # the first ticks: resolver advanced, allowlist built
    after_start = rss_mb(server.pid)
    # A random sample: the EIDs of customers anywhere in the build resolve, not only the first.
    present = random.Random(1).sample(customers, args.present)
    arrival_s = await make_present(server, present)
    await asyncio.sleep(2.0)  # a few ticks of the engine with everybody present
    after_present = rss_mb(server.pid)
    stop.set()
    await sampler
    # Last, what a scanner's first request costs (every scanner asks for the whole allowlist
    # when it starts): reported beside the peak, not in it, so the figures stay comparable.
    allowlist_bytes = await full_allowlist(server)
    after_allowlist = rss_mb(server.pid)
    await server.terminate()
    peak = max(after_start["VmHWM"], after_present["VmHWM"])
    # The footprint: the server's own peak, or server and build workers together if higher.
    footprint = max(peak, peaks["tree"])
    return {
        "benchmark": "server start-up and memory",
        "customers": args.customers,
        "consenting": int(args.customers * args.consenting),
        "present": args.present,
        "prepare_s": round(prepare_s, 1),
        "start_to_ready_s": round(ready_s, 2),
        "start_to_every_eid_resolvable_s": round(resolvable_s, 2),
        "arrivals_s": round(arrival_s, 1),
        "rss_mb_after_start": after_start["VmRSS"],
        "rss_mb_with_present": after_present["VmRSS"],
        "peak_rss_mb": peak,
        "peak_worker_rss_mb": peaks["worker"],
        "peak_tree_rss_mb": round(peaks["tree"], 1),
        "full_allowlist_mb": round(allowlist_bytes / 1e6, 1),
        "peak_rss_mb_with_a_full_allowlist": after_allowlist["VmHWM"],
        # CPU seconds spent until every EID resolved: on a loaded machine the wall-clock
        # figures stretch, these do not (two free cores: the workers' share is halved).
        "server_cpu_s_to_ready": round(ready_cpu_s, 2),
        "server_cpu_s_to_resolvable": round(cpu["server_cpu"], 2),
        "worker_cpu_s": round(cpu["worker_cpu"], 2),
        "load_average": round(os.getloadavg()[0], 1),
        "goal_met": footprint < GOAL_MB,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--present", type=int, default=2000)
    parser.add_argument("--consenting", type=float, default=1.0)
    parser.add_argument(
        "--keep", type=Path, help="a folder to keep the prepared database in and reuse it from"
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.present > args.customers * args.consenting:
        parser.error("--present: at most the consenting customers")
    if args.keep is not None:
        args.keep.mkdir(parents=True, exist_ok=True)
        figures = asyncio.run(run(args, args.keep))
    else:
        with tempfile.TemporaryDirectory(prefix="bulle-load-") as tmp:
            figures = asyncio.run(run(args, Path(tmp)))
    emit(figures, args.json, "server memory")
    return 0


if __name__ == "__main__":
    sys.exit(main())
