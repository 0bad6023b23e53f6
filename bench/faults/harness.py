"""Shared harness of the fault campaigns: a real store server and real scanner daemons.

Everything runs as subprocesses on 127.0.0.1, exactly as in production: `store-server serve`
on a prepared database (scanners registered with `store-server scanner add`), customers
enrolled and consenting through the public customer API, and `beacon-scanner run` processes
with the simulated backend, fed the Eddystone-EID frames of those customers on stdin.

Accounting without touching the scanner's code: before a scanner starts, the harness creates
its outbox (with scanner.outbox.Outbox itself, so the schema is the real one) and adds two
audit tables filled by triggers in the same transactions as the scanner's own writes:

- `fault_produced`: one row per window inserted into the outbox ("rows produced");
- `fault_deleted`: one row per window deleted, with its batch id (deleted with a batch id =
  acknowledged by the server; the bounds are set so high that nothing is dropped).

A consistent snapshot of an outbox (one read transaction, WAL) plus the server's
`scanner_batches` table then give every invariant of the campaigns.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import secrets
import signal
import socket
import sqlite3
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT))

from scanner.outbox import Outbox  # noqa: E402
from store_server.eid import beacon_time, compute_eid  # noqa: E402

STORE_FILE = REPO_ROOT / "seeds" / "store.toml"
STORE_ID = "demo-store"
EDDYSTONE_UUID = "0000feaa-0000-1000-8000-00805f9b34fb"
SCANNER_IDS = ("s-entrance", "s-machines", "s-parts", "s-checkout")

STARTUP_TIMEOUT_S = 30.0
"""A cold start with aiohttp on a loaded 2-core machine takes a few seconds; 30 s is a hang."""

DRAIN_TIMEOUT_S = 60.0
"""Scanners back off at most 30 s between retries (scanner.uploader.BACKOFF_CAP_S): two cycles."""

FEED_INTERVAL_S = 0.05
"""Each phone advertises 20 times a second: several sightings per window on every scanner."""

SCANNER_WINDOW_S = 0.25
"""Short windows (the default is 1 s) so that more batches are in flight when a fault hits."""

AIM_TIMEOUT_S = 5.0
"""An aimed kill waits at most this long for a commit (scanners upload every 0.25 s)."""

POLL_S = 0.05

PORT_ATTEMPTS = 3
"""Starts on a fresh port when another program took the one chosen (machines shared by runs)."""
"""Condition polling period while waiting for a process or a drain."""

EID_FRAME_TYPE = 0x30
"""Eddystone frame type of an EID frame."""

TX_POWER_AT_0M = -20
"""Calibrated power of a typical phone at 0 m (dBm)."""

_AUDIT_SQL = """
CREATE TABLE IF NOT EXISTS fault_produced (
    n INTEGER PRIMARY KEY AUTOINCREMENT, row_id INTEGER, at REAL, body TEXT
);
CREATE TABLE IF NOT EXISTS fault_deleted (
    n INTEGER PRIMARY KEY AUTOINCREMENT, row_id INTEGER, batch_id TEXT
);
CREATE TRIGGER IF NOT EXISTS fault_ins AFTER INSERT ON windows
BEGIN INSERT INTO fault_produced (row_id, at, body)
VALUES (new.id, (julianday('now') - 2440587.5) * 86400.0, new.body); END;
CREATE TRIGGER IF NOT EXISTS fault_del AFTER DELETE ON windows
BEGIN INSERT INTO fault_deleted (row_id, batch_id) VALUES (old.id, old.batch_id); END;
"""


def create_audited_outbox(path: Path, extra_sql: str = "") -> None:
    """Create an outbox with the scanner's own code, then add the audit tables and triggers
    (and ``extra_sql``, more audit of the same kind)."""
    outbox = Outbox(path, max_rows=1, max_bytes=1, max_age_s=1.0)
    outbox.close()
    conn = sqlite3.connect(path)
    try:
        conn.executescript(_AUDIT_SQL + extra_sql)
    finally:
        conn.close()


class CampaignError(AssertionError):
    """An invariant of a fault campaign does not hold."""


class PortTakenError(CampaignError):
    """Another program took the server's port before it could bind it."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(REPO_ROOT)}


def run_cli(args: list[str], stdin: str | None = None) -> str:
    """Run a `store-server` admin command; return its standard output."""
    import subprocess

    done = subprocess.run(
        [sys.executable, "-m", "store_server", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=_env(),
        cwd=REPO_ROOT,
        timeout=STARTUP_TIMEOUT_S,
        check=False,
    )
    if done.returncode != 0:
        raise CampaignError(f"store-server {' '.join(args[:2])} failed: {done.stderr.strip()}")
    return done.stdout


@dataclass(slots=True)
class Customer:
    identity_key: bytes
    k: int
    clock_offset_s: float

    def frame_hex(self, now: float) -> str:
        eid = compute_eid(self.identity_key, self.k, beacon_time(now, self.clock_offset_s))
        return bytes([EID_FRAME_TYPE, TX_POWER_AT_0M & 0xFF]).hex() + eid.hex()


@dataclass(slots=True)
class ServerProcess:
    workdir: Path
    port: int = field(default_factory=free_port)
    process: asyncio.subprocess.Process | None = None
    secrets: dict[str, str] = field(default_factory=dict)
    starts: int = 0
    master_key: str = ""

    @property
    def config_path(self) -> Path:
        return self.workdir / "server.toml"

    @property
    def db_path(self) -> Path:
        return self.workdir / "store.sqlite"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def prepare(
        self,
        scanner_ids: tuple[str, ...],
        *,
        store_file: Path = STORE_FILE,
        via_cli: bool = True,
        log_level: str = "WARNING",
    ) -> None:
        """Write the settings and register the scanners (through the admin CLI by default;
        `via_cli=False` registers them in-process, which saves an interpreter start each)."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        master_key = os.urandom(32).hex()
        self.master_key = master_key
        self.config_path.write_text(
            "\n".join(
                [
                    f'db_path = "{self.db_path}"',
                    f'store_file = "{store_file}"',
                    f'master_key = "{master_key}"',
                    f"port = {self.port}",
                    "cookie_secure = false",
                    # Every phone of a campaign enrolls from this one address at once.
                    'enroll_rate_limit = "1000/second"',
                    f'log_level = "{log_level}"',
                    "",
                ]
            ),
            encoding="utf-8",
        )
        self.config_path.chmod(0o600)
        if not via_cli:
            self._register_in_process(scanner_ids)
            return
        for scanner_id in scanner_ids:
            out = run_cli(["scanner", "add", scanner_id, "--config", str(self.config_path)])
            match = re.search(r"secret \(shown once.*\): (\S+)", out)
            if match is None:
                raise CampaignError("scanner add printed no secret")
            self.secrets[scanner_id] = match.group(1)

    def _register_in_process(self, scanner_ids: tuple[str, ...]) -> None:
        from store_server.keywrap import scanner_aad, wrap_key
        from store_server.storage import scanners as scanner_store
        from store_server.storage.database import Database

        master = bytes.fromhex(self.master_key)
        db = Database(self.db_path)
        try:
            for scanner_id in scanner_ids:
                secret = secrets.token_urlsafe(32)
                blob = wrap_key(master, secret.encode(), scanner_aad(scanner_id))
                db.run_sync(
                    lambda d, sid=scanner_id, b=blob: scanner_store.add_scanner(
                        d, sid, STORE_ID, b, time.time()
                    )
                )
                self.secrets[scanner_id] = secret
        finally:
            db.close()

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    async def start(self) -> None:
        for attempt in range(1, PORT_ATTEMPTS + 1):
            log = (self.workdir / "server.log").open("ab")
            self.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "store_server",
                "serve",
                "--config",
                str(self.config_path),
                stdout=log,
                stderr=log,
                env=_env(),
                cwd=REPO_ROOT,
            )
            log.close()
            self.starts += 1
            try:
                await self.wait_ready()
                return
            except PortTakenError:
                # Another program took the port between free_port() and the server's bind.
                # Only the first start may move (the scanners learn the address after it).
                if self.starts > attempt or attempt == PORT_ATTEMPTS:
                    raise
                self.starts -= 1
                self.port = free_port()
                text = self.config_path.read_text(encoding="utf-8")
                text = re.sub(r"(?m)^port = \d+$", f"port = {self.port}", text)
                self.config_path.write_text(text, encoding="utf-8")

    def listening(self) -> bool:
        """This process said it listens on the port (the line aiohttp prints, once a start)."""
        log = self.workdir / "server.log"
        if not log.exists():
            return False
        line = f"Running on http://127.0.0.1:{self.port} ".encode()
        return log.read_bytes().count(line) >= self.starts

    async def wait_ready(self) -> None:
        """Wait until this process listens and answers; another program that holds the port
        would answer too, so its own "Running on" line must be in its log first."""
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        async with aiohttp.ClientSession() as http:
            while time.monotonic() < deadline:
                if self.process is not None and self.process.returncode is not None:
                    log = self.workdir / "server.log"
                    if log.exists() and b"already in use" in log.read_bytes():
                        raise PortTakenError(f"port {self.port} taken by another program")
                    raise CampaignError(f"server exited with {self.process.returncode}")
                if self.listening():
                    with contextlib.suppress(aiohttp.ClientError, OSError):
                        async with http.get(self.base_url + "/api/v1/consent-texts") as resp:
                            if resp.status == 200:
                                return
                await asyncio.sleep(POLL_S)
        raise CampaignError("server not ready in time")

    async def kill(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signal.SIGKILL)
            await self.process.wait()

    async def terminate(self, timeout_s: float = 15.0) -> float:
        """SIGTERM; return the seconds until the process exited."""
        assert self.process is not None
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.process.wait(), timeout_s)
        except TimeoutError:
            await self.kill()
        return time.monotonic() - started

    async def enroll_consenting(self, n: int) -> list[Customer]:
        """Enroll `n` customers through the customer API with greeting consent."""
        customers = []
        async with aiohttp.ClientSession(self.base_url) as http:
            async with http.get("/api/v1/consent-texts") as resp:
                texts = {t["purpose"]: t["hash"] for t in (await resp.json())["texts"]}
            for _ in range(n):
                async with http.post("/api/v1/enroll", json={"language": "fr"}) as resp:
                    enrolled = await resp.json()
                    if resp.status != 201:
                        raise CampaignError(f"enroll failed: {resp.status}")
                body = {"purpose": "greeting", "text_hash": texts["greeting"], "channel": "app"}
                headers = {"Authorization": f"Bearer {enrolled['token']}"}
                async with http.post("/api/v1/consents", json=body, headers=headers) as resp:
                    if resp.status != 201:
                        raise CampaignError(f"consent failed: {resp.status}")
                customers.append(
                    Customer(
                        bytes.fromhex(enrolled["identity_key"]),
                        enrolled["rotation_exponent"],
                        enrolled["beacon_time"] - time.time(),
                    )
                )
        return customers

    def server_batches(self) -> dict[tuple[str, str], int]:
        """(scanner, batch id) -> accepted windows, read from the database file."""
        conn = sqlite3.connect(self.db_path, timeout=10)
        try:
            return {
                (str(s), str(b)): int(a)
                for s, b, a in conn.execute(
                    "SELECT scanner_id, batch_id, accepted FROM scanner_batches"
                )
            }
        finally:
            conn.close()

    async def until_new_batch(self, scanner_id: str | None = None) -> None:
        """Return right after a new row in scanner_batches (of `scanner_id` if given), or
        after AIM_TIMEOUT_S."""
        conn = sqlite3.connect(self.db_path, timeout=10)
        try:
            query = "SELECT count(*) FROM scanner_batches WHERE ? IS NULL OR scanner_id = ?"
            before = conn.execute(query, (scanner_id, scanner_id)).fetchone()[0]
            deadline = time.monotonic() + AIM_TIMEOUT_S
            while time.monotonic() < deadline:
                if conn.execute(query, (scanner_id, scanner_id)).fetchone()[0] != before:
                    return
                await asyncio.sleep(0)
        finally:
            conn.close()

    def quick_check(self) -> str:
        conn = sqlite3.connect(self.db_path, timeout=10)
        try:
            return "; ".join(str(r[0]) for r in conn.execute("PRAGMA quick_check"))
        finally:
            conn.close()


@dataclass(frozen=True, slots=True)
class OutboxSnapshot:
    produced: int
    queued: Counter[str | None]  # batch id (None: not yet in a batch) -> rows still queued
    acked: Counter[str]  # batch id -> rows deleted on acknowledgement
    dropped_unbatched: int  # rows deleted without a batch id (bounds: must stay 0)


@dataclass(slots=True)
class ScannerProcess:
    scanner_id: str
    secret: str
    workdir: Path
    server_url: str
    process: asyncio.subprocess.Process | None = None
    starts: int = 0
    window_s: float = SCANNER_WINDOW_S
    store_id: str = STORE_ID

    @property
    def outbox_path(self) -> Path:
        return self.workdir / f"{self.scanner_id}.outbox.sqlite"

    def prepare(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / f"{self.scanner_id}.toml"
        config.write_text(
            "\n".join(
                [
                    f'scanner_id = "{self.scanner_id}"',
                    f'store_id = "{self.store_id}"',
                    f'server_url = "{self.server_url}"',
                    f'secret = "{self.secret}"',
                    'backend = "simulated"',
                    f'outbox_path = "{self.outbox_path}"',
                    f"window_s = {self.window_s}",
                    "upload_interval_s = 0.2",
                    "heartbeat_interval_s = 5.0",
                    "allowlist_wait_s = 20.0",
                    "batch_max_windows = 50",
                    "outbox_max_rows = 10000000",
                    "outbox_max_bytes = 10000000000",
                    "outbox_max_age_s = 1000000",
                    'log_level = "INFO"',
                    "",
                ]
            ),
            encoding="utf-8",
        )
        config.chmod(0o600)
        create_audited_outbox(self.outbox_path)

    async def start(self) -> None:
        log = (self.workdir / f"{self.scanner_id}.log").open("ab")
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "scanner",
            "run",
            "--config",
            str(self.workdir / f"{self.scanner_id}.toml"),
            stdin=asyncio.subprocess.PIPE,
            stdout=log,
            stderr=log,
            env=_env(),
            cwd=REPO_ROOT,
        )
        log.close()
        self.starts += 1

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.returncode is None

    async def feed(self, lines: bytes) -> None:
        process = self.process
        if process is None or process.stdin is None or process.returncode is not None:
            return
        with contextlib.suppress(ConnectionError, RuntimeError):
            process.stdin.write(lines)
            await process.stdin.drain()

    async def kill(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signal.SIGKILL)
            await self.process.wait()

    async def terminate(self, timeout_s: float = 15.0) -> None:
        if self.process is None or self.process.returncode is not None:
            return
        if self.process.stdin is not None:
            self.process.stdin.close()
        self.process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.process.wait(), timeout_s)
        except TimeoutError:
            await self.kill()

    def snapshot(self) -> OutboxSnapshot:
        """One read transaction: produced, queued and acknowledged rows are consistent."""
        conn = sqlite3.connect(self.outbox_path, timeout=10, isolation_level=None)
        try:
            conn.execute("BEGIN")
            produced = int(conn.execute("SELECT count(*) FROM fault_produced").fetchone()[0])
            queued: Counter[str | None] = Counter(
                {
                    b: int(n)
                    for b, n in conn.execute(
                        "SELECT batch_id, count(*) FROM windows GROUP BY batch_id"
                    )
                }
            )
            acked: Counter[str] = Counter()
            unbatched = 0
            for b, n in conn.execute(
                "SELECT batch_id, count(*) FROM fault_deleted GROUP BY batch_id"
            ):
                if b is None:
                    unbatched += int(n)
                else:
                    acked[str(b)] = int(n)
            conn.execute("COMMIT")
        finally:
            conn.close()
        return OutboxSnapshot(produced, queued, acked, unbatched)


class Feeder:
    """Writes every customer's current EID frame to every live scanner's stdin."""

    def __init__(self, scanners: list[ScannerProcess], customers: list[Customer]) -> None:
        self._scanners = scanners
        self._customers = customers
        self._task: asyncio.Task[None] | None = None
        self.lines_written = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            now = time.time()
            lines = "".join(
                json.dumps(
                    {
                        "address": f"02:00:00:00:00:{i:02x}",
                        "rssi": -60,
                        "service_data": {EDDYSTONE_UUID: c.frame_hex(now)},
                    }
                )
                + "\n"
                for i, c in enumerate(self._customers)
            ).encode()
            for scanner in self._scanners:
                await scanner.feed(lines)
                self.lines_written += len(self._customers)
            await asyncio.sleep(FEED_INTERVAL_S)


def check_accounting(
    scanner: ScannerProcess,
    snap: OutboxSnapshot,
    server: dict[tuple[str, str], int],
    *,
    drained: bool = False,
) -> dict[str, int]:
    """Check the invariants between one outbox snapshot and the server's batches.

    Valid at any moment when the side that may be writing is stopped or the snapshot is taken
    while the other side is dead. Returns figures; raises CampaignError on a violation.
    """
    sid = scanner.scanner_id
    at_server = {b: n for (s, b), n in server.items() if s == sid}
    # 1. Every batch the scanner deleted as acknowledged is at the server, whole.
    for batch_id, n in snap.acked.items():
        if at_server.get(batch_id) != n:
            raise CampaignError(
                f"{sid}: acknowledged batch {batch_id} ({n} rows) has "
                f"{at_server.get(batch_id)} rows at the server: acknowledged data lost"
            )
    # 2. Nothing dropped by the bounds (they are set out of reach).
    if snap.dropped_unbatched:
        raise CampaignError(f"{sid}: {snap.dropped_unbatched} rows deleted without a batch")
    # 3. Every server batch comes from this outbox, whole (acknowledged or still queued).
    in_doubt = 0
    for batch_id, n in at_server.items():
        if batch_id in snap.acked:
            continue
        if snap.queued.get(batch_id) != n:
            raise CampaignError(f"{sid}: server batch {batch_id} unknown to the scanner")
        in_doubt += n  # committed at the server, not yet deleted: will be re-sent, deduplicated
    # 4. Conservation: server rows + rows queued and not at the server = rows produced.
    server_rows = sum(at_server.values())
    queued_only = sum(n for b, n in snap.queued.items() if b not in at_server)
    if server_rows + queued_only != snap.produced:
        raise CampaignError(
            f"{sid}: server {server_rows} + queued {queued_only} != produced {snap.produced}"
        )
    if drained and (queued_only or in_doubt):
        raise CampaignError(f"{sid}: {queued_only + in_doubt} rows still queued after drain")
    return {
        "produced": snap.produced,
        "server_rows": server_rows,
        "queued_not_at_server": queued_only,
        "committed_not_acked": in_doubt,
    }


async def wait_producing(
    scanners: list[ScannerProcess], timeout_s: float = STARTUP_TIMEOUT_S
) -> None:
    """Wait until every scanner has written windows to its outbox (it has an allowlist)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if all(s.snapshot().produced > 0 for s in scanners):
            return
        await asyncio.sleep(POLL_S * 4)
    raise CampaignError("scanners produced nothing in time")


async def wait_drained(scanners: list[ScannerProcess], timeout_s: float = DRAIN_TIMEOUT_S) -> None:
    """Wait until every outbox is empty (all windows acknowledged)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if all(sum(s.snapshot().queued.values()) == 0 for s in scanners):
            return
        await asyncio.sleep(POLL_S * 4)
    raise CampaignError("outboxes did not drain in time")


def emit(figures: dict[str, Any], as_json: bool, title: str) -> None:
    if as_json:
        print(json.dumps(figures, sort_keys=True))
        return
    print(title)
    for key, value in figures.items():
        print(f"  {key}: {value}")


@dataclass(slots=True)
class Fleet:
    """A running server, its scanners and the feeder of consenting phones' advertisements."""

    server: ServerProcess
    scanners: list[ScannerProcess]
    feeder: Feeder


@contextlib.asynccontextmanager
async def fleet(workdir: Path, n_scanners: int, customers: int) -> AsyncIterator[Fleet]:
    """Start a server, `n_scanners` scanners and the feeder; wait until rows are produced.

    On exit the feeder and the scanners are stopped; the server is left to the campaign
    (one campaign kills it, another terminates it and measures the exit).
    """
    server = ServerProcess(workdir / "server")
    server.prepare(SCANNER_IDS[:n_scanners])
    await server.start()
    enrolled = await server.enroll_consenting(customers)
    scanners = [
        ScannerProcess(sid, server.secrets[sid], workdir / "scanners", server.base_url)
        for sid in SCANNER_IDS[:n_scanners]
    ]
    for scanner in scanners:
        scanner.prepare()
        await scanner.start()
    feeder = Feeder(scanners, enrolled)
    feeder.start()
    try:
        await wait_producing(scanners)
        yield Fleet(server, scanners, feeder)
    finally:
        await feeder.stop()
        for scanner in scanners:
            await scanner.terminate()


def campaign_main(
    doc: str,
    title: str,
    campaign: Callable[[int, int, int, Path], Awaitable[dict[str, object]]],
    default_seed: int,
) -> int:
    """The command line shared by the scanner/server kill campaigns."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50, help="kills (default 50)")
    parser.add_argument("--scanners", type=int, default=3, choices=range(1, 5))
    parser.add_argument("--seed", type=int, default=default_seed)
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bulle-fault-") as tmp:
        try:
            figures = asyncio.run(campaign(args.runs, args.scanners, args.seed, Path(tmp)))
        except CampaignError as exc:
            emit({"ok": False, "error": str(exc)}, args.json, "FAILED")
            return 1
    emit(figures, args.json, title)
    return 0
