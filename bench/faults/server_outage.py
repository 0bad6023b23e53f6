"""Fault campaign: the store server down for an hour of simulated traffic (bounded outbox).

Usage: .venv/bin/python bench/faults/server_outage.py [--phones 20] [--outage-s 3600]
       [--max-rows 20000] [--max-age-s OUTAGE/2] [--max-bytes 2097152] [--min-failures 7]
       [--seed 11] [--json]

An hour cannot pass in real time, so it is simulated on the scanner side, with the scanner's
own code in this process: three `scanner.daemon.Daemon`s (scanners `s-entrance`, `s-machines`,
`s-parts`), each with its own outbox bounded one way so that the hour exceeds it (rows, age,
bytes), each running the daemon's own upload loop (`Daemon._upload_loop`: `upload_once`,
`Uploader.post_batch`, `backoff_delay` with full jitter) against a real `store-server serve`
(harness.ServerProcess) on 127.0.0.1.

1. The server starts, `--phones` consenting customers enroll through the customer API, then
   the server is killed (kill -9).
2. The hour: for every simulated second from `now - outage` to `now`, each phone is sighted a
   few times (its real EID at that time) through the daemon's aggregator, and the finished
   windows are put into the daemon's outbox with that simulated `now`, exactly as the daemon's
   flush loop does. Meanwhile the upload loops fail (connection refused) and back off for real.
3. Live traffic then goes on in real time (the daemon's own flush loop), and the outage lasts
   until every upload loop has failed `--min-failures` times (7: its retry delay has reached
   BACKOFF_CAP_S).
4. The server restarts; the outboxes drain while live traffic goes on. Measured per scanner:
   the first upload's delay after the server is ready, the time until no row from before the
   return is left, and the rate. Then live traffic stops and the outboxes empty.

Checks (exit 1 and "ok": false on a violation), per scanner:
- after every put, rows <= its row bound and bytes <= its byte bound (audit triggers keep the
  level, read at each commit);
- every bound was exceeded by the hour (something was dropped) and nothing else was;
- rows produced = rows at the server (`scanner_batches.accepted`) + rows dropped (the outbox's
  own counter), and the audit triggers agree: every produced row was deleted, the ones not
  delivered number exactly the dropped counter;
- the dropped rows are the oldest: every dropped row was produced before every delivered one;
- no duplicate at the server: every batch id the server holds was acknowledged to this scanner
  with the same row count, and no window (id, start) was delivered twice;
- the scanner notices the return by its backoff alone: every retry delay of the upload loop
  was within the backoff ceiling of its failure count (<= BACKOFF_CAP_S), the first upload
  attempt after the server was ready is the one that ends the retry delay then in progress
  (no other delay started in between), and it was accepted. These are conditions on the
  order of events, not wall-clock bounds: the seconds until the first upload are reported
  (`first_upload_s`), not checked, since on a loaded machine the server's own start-up (and
  the failures it adds meanwhile) can take any time;
- the outbox is empty at the end; `PRAGMA quick_check` = ok on the server's database and on
  each outbox.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import random
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (
    POLL_S,
    REPO_ROOT,
    SCANNER_IDS,
    STORE_ID,
    CampaignError,
    Customer,
    ServerProcess,
    create_audited_outbox,
    emit,
)

sys.path.insert(0, str(REPO_ROOT))

from scanner.allowlist import SightingKey
from scanner.config import ScannerConfig
from scanner.daemon import Daemon
from scanner.outbox import PendingBatch
from scanner.uploader import (
    BACKOFF_BASE_S,
    BACKOFF_CAP_S,
    Uploader,
    UploadError,
)
from store_server.eid import beacon_time, compute_eid

SIGHTINGS_PER_WINDOW = 3
"""Advertisements of one phone heard per 1 s window (phones advertise several times a second)."""

LIVE_FEED_S = 0.25
"""Period of the live sightings after the simulated hour (several per 1 s window)."""

OUTAGE_TIMEOUT_S = 90.0
"""Longest real outage while waiting for the upload loops' failures (7 failures: 31.5 s worst)."""

DRAIN_TIMEOUT_S = 90.0
"""Longest drain: the first upload within BACKOFF_CAP_S, then tens of thousands of rows."""

DEFAULT_MAX_BYTES = 2 * 1024 * 1024
"""Byte bound of the third outbox: about 15,000 windows of ~140 bytes."""

DEFAULT_MAX_ROWS = 20_000
"""Row bound of the first outbox: under the 72,000 windows of an hour of 20 phones."""

LOOSE_ROWS = 10_000_000
"""A row bound out of reach (the outboxes bounded another way)."""

LOOSE_BYTES = 10_000_000_000
"""A byte bound out of reach."""

LOOSE_AGE_S = 10 * 86_400.0
"""An age bound out of reach."""

_LEVEL_SQL = """
CREATE TABLE IF NOT EXISTS fault_level (
    k INTEGER PRIMARY KEY CHECK (k = 1), rows INTEGER NOT NULL, bytes INTEGER NOT NULL
);
INSERT OR IGNORE INTO fault_level VALUES (1, 0, 0);
CREATE TRIGGER IF NOT EXISTS fault_level_ins AFTER INSERT ON windows
BEGIN UPDATE fault_level SET rows = rows + 1, bytes = bytes + new.size; END;
CREATE TRIGGER IF NOT EXISTS fault_level_del AFTER DELETE ON windows
BEGIN UPDATE fault_level SET rows = rows - 1, bytes = bytes - old.size; END;
"""


def window_key(window: dict[str, Any]) -> tuple[str, float]:
    return str(window["id"]), float(window["start"])


def backoff_ceiling(failures: int) -> float:
    """The upper bound of the retry delay after ``failures`` consecutive failures."""
    return min(BACKOFF_CAP_S, BACKOFF_BASE_S * (2 ** max(failures - 1, 0)))


class RecordingUploader(Uploader):
    """The real uploader; also records what the server acknowledged, and the failures."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.failures = 0
        self.acked: list[tuple[str, list[dict[str, Any]], int, bool]] = []
        self.first_ack_at: float | None = None
        self.attempts: list[tuple[float, bool]] = []
        """(monotonic start, accepted) of every batch upload."""

    async def post_batch(self, batch: PendingBatch) -> dict[str, Any]:
        started = time.monotonic()
        try:
            answer = await super().post_batch(batch)
        except UploadError:
            self.failures += 1
            self.attempts.append((started, False))
            raise
        self.attempts.append((started, True))
        if self.first_ack_at is None:
            self.first_ack_at = time.monotonic()
        self.acked.append(
            (batch.batch_id, batch.windows, int(answer["accepted"]), bool(answer["duplicate"]))
        )
        return answer


@dataclass(slots=True)
class Scanner:
    """One daemon, its bound, its outbox audit and its figures."""

    scanner_id: str
    bound: str
    daemon: Daemon
    outbox_path: Path
    max_rows: int
    max_bytes: int
    produced: int = 0
    puts: int = 0
    peak_rows: int = 0
    peak_bytes: int = 0
    uploader: RecordingUploader | None = None
    reader: sqlite3.Connection | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    retry_delays: list[tuple[float, float, int]] = field(default_factory=list)
    """(monotonic start, seconds, consecutive failures) of every retry delay of the upload loop."""

    def watch_retry_delays(self) -> None:
        """Record the delays the daemon's upload loop sleeps after a failure (its own sleep)."""
        daemon = self.daemon
        original = daemon._sleep

        async def sleep(stop: asyncio.Event, seconds: float) -> None:
            task = asyncio.current_task()
            if self.tasks and task is self.tasks[0] and self.uploader is not None:
                consecutive = 0
                for _started, accepted in reversed(self.uploader.attempts):
                    if accepted:
                        break
                    consecutive += 1
                self.retry_delays.append((time.monotonic(), seconds, consecutive))
            await original(stop, seconds)

        daemon._sleep = sleep  # type: ignore[method-assign]

    def level(self) -> tuple[int, int]:
        assert self.reader is not None
        rows, size = self.reader.execute("SELECT rows, bytes FROM fault_level").fetchone()
        return int(rows), int(size)

    def backlog(self, before: float) -> int:
        """Rows still queued that were produced before ``before`` (wall clock)."""
        assert self.reader is not None
        query = "SELECT count(*) FROM windows WHERE created_at < ?"
        return int(self.reader.execute(query, (before,)).fetchone()[0])

    def watch_puts(self) -> None:
        """Check the bounds after every put's commit (the outbox's own put, wrapped)."""
        outbox = self.daemon.outbox
        original = outbox.put

        async def put(windows: Any, now: float) -> None:
            await original(windows, now)
            self.produced += len(windows)
            self.puts += 1
            rows, size = self.level()
            self.peak_rows = max(self.peak_rows, rows)
            self.peak_bytes = max(self.peak_bytes, size)
            if rows > self.max_rows or size > self.max_bytes:
                raise CampaignError(
                    f"{self.scanner_id}: outbox at {rows} rows / {size} bytes after a put, "
                    f"over its bounds ({self.max_rows} rows / {self.max_bytes} bytes)"
                )

        outbox.put = put  # type: ignore[method-assign]


class EidBook:
    """The phones' real EIDs at any time (one AES per phone per rotation period)."""

    def __init__(self, customers: list[Customer]) -> None:
        self._customers = customers
        self._cache: dict[tuple[int, int], str] = {}

    def eid(self, index: int, now: float) -> str:
        customer = self._customers[index]
        counter = beacon_time(now, customer.clock_offset_s)
        key = (index, counter >> customer.k)
        eid = self._cache.get(key)
        if eid is None:
            eid = compute_eid(customer.identity_key, customer.k, counter).hex()
            self._cache[key] = eid
        return eid


def sight(scanner: Scanner, book: EidBook, phones: int, now: float, rng: random.Random) -> None:
    """Every phone heard once at ``now``, through the daemon's aggregator."""
    for i in range(phones):
        key = SightingKey("eid", book.eid(i, now))
        scanner.daemon.aggregator.add(key, rng.randint(-80, -50), -20, now)


async def produce_hour(
    scanner: Scanner, book: EidBook, phones: int, start: float, seconds: int, seed: int
) -> None:
    """The simulated hour: what the daemon's flush loop does, once per simulated second."""
    rng = random.Random(seed)
    daemon = scanner.daemon
    window_s = daemon.config.window_s
    for s in range(seconds):
        t = start + s * window_s
        for j in range(SIGHTINGS_PER_WINDOW):
            sight(scanner, book, phones, t + window_s * (j + 0.5) / SIGHTINGS_PER_WINDOW, rng)
        now = t + window_s + 0.02
        windows = daemon.aggregator.flush(now)
        if windows:
            await daemon.outbox.put(windows, now)
            daemon._upload_kick.set()


async def live_feed(scanners: list[Scanner], book: EidBook, phones: int, seed: int) -> None:
    rng = random.Random(seed)
    while True:
        now = time.time()
        for scanner in scanners:
            sight(scanner, book, phones, now, rng)
        await asyncio.sleep(LIVE_FEED_S)


async def wait_for(cond: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise CampaignError(f"{what}: not within {timeout_s:.0f} s")
        await asyncio.sleep(POLL_S)


def outbox_quick_check(path: Path) -> str:
    conn = sqlite3.connect(path, timeout=10)
    try:
        return "; ".join(str(r[0]) for r in conn.execute("PRAGMA quick_check"))
    finally:
        conn.close()


def check_scanner(
    scanner: Scanner, dropped: int, server: dict[tuple[str, str], int]
) -> dict[str, Any]:
    """The accounting of one drained outbox against the server; raises CampaignError."""
    sid = scanner.scanner_id
    uploader = scanner.uploader
    assert uploader is not None
    conn = sqlite3.connect(scanner.outbox_path, timeout=10)
    try:
        produced_rows = {
            # n, not the row id: SQLite reuses the ids of a table that was emptied.
            str(body): int(n)
            for n, body in conn.execute("SELECT n, body FROM fault_produced")
        }
        produced_audit = int(conn.execute("SELECT count(*) FROM fault_produced").fetchone()[0])
        deleted_audit = int(conn.execute("SELECT count(*) FROM fault_deleted").fetchone()[0])
        queued = int(conn.execute("SELECT count(*) FROM windows").fetchone()[0])
    finally:
        conn.close()
    if len(produced_rows) != produced_audit:
        raise CampaignError(f"{sid}: {produced_audit - len(produced_rows)} windows produced twice")
    if produced_audit != scanner.produced:
        raise CampaignError(f"{sid}: audit counts {produced_audit} rows, {scanner.produced} put")
    if queued or deleted_audit != produced_audit:
        raise CampaignError(f"{sid}: {queued} rows still queued after the drain")
    at_server = {b: n for (s, b), n in server.items() if s == sid}
    first_answer: dict[str, tuple[list[dict[str, Any]], int]] = {}
    for batch_id, windows, accepted, _duplicate in uploader.acked:
        first_answer.setdefault(batch_id, (windows, accepted))
    if set(first_answer) != set(at_server):
        raise CampaignError(
            f"{sid}: {len(at_server)} batches at the server, {len(first_answer)} acknowledged"
        )
    delivered: dict[tuple[str, float], int] = {}
    for batch_id, (windows, accepted) in first_answer.items():
        if accepted != len(windows) or at_server[batch_id] != accepted:
            raise CampaignError(
                f"{sid}: batch {batch_id}: {len(windows)} windows sent, {accepted} accepted, "
                f"{at_server[batch_id]} at the server"
            )
        for window in windows:
            key = window_key(window)
            if key in delivered:
                raise CampaignError(f"{sid}: window {key} delivered twice")
            body = json.dumps(window, separators=(",", ":"), sort_keys=True)
            row_id = produced_rows.get(body)
            if row_id is None:
                raise CampaignError(f"{sid}: a delivered window was never produced")
            delivered[key] = row_id
    server_rows = sum(at_server.values())
    if server_rows != len(delivered):
        raise CampaignError(f"{sid}: {server_rows} rows at the server, {len(delivered)} sent")
    if scanner.produced != server_rows + dropped:
        raise CampaignError(
            f"{sid}: produced {scanner.produced} != at the server {server_rows} + dropped {dropped}"
        )
    delivered_ids = set(delivered.values())
    dropped_ids = [r for r in produced_rows.values() if r not in delivered_ids]
    if len(dropped_ids) != dropped:
        raise CampaignError(
            f"{sid}: {len(dropped_ids)} rows left undelivered, the counter says {dropped}"
        )
    if dropped == 0:
        raise CampaignError(f"{sid}: the outage did not exceed the {scanner.bound} bound")
    if max(dropped_ids) > min(delivered_ids):
        raise CampaignError(f"{sid}: a dropped row is younger than a delivered one")
    check = outbox_quick_check(scanner.outbox_path)
    if check != "ok":
        raise CampaignError(f"{sid}: outbox quick_check: {check}")
    return {"produced": scanner.produced, "at_server": server_rows, "dropped": dropped}


def check_return(scanner: Scanner, back: float) -> None:
    """The upload loop noticed the server's return by its backoff alone; raises CampaignError.

    ``back`` is when the server answered its readiness probe (monotonic).
    """
    sid = scanner.scanner_id
    uploader = scanner.uploader
    assert uploader is not None
    for _started, seconds, consecutive in scanner.retry_delays:
        ceiling = backoff_ceiling(consecutive)
        if not 0 <= seconds <= ceiling <= BACKOFF_CAP_S:
            raise CampaignError(
                f"{sid}: a retry delay of {seconds:.2f} s after {consecutive} failures, "
                f"ceiling {ceiling:g} s"
            )
    after = [(t, ok) for t, ok in uploader.attempts if t >= back]
    if not after:
        raise CampaignError(f"{sid}: no upload attempt after the server returned")
    first_t, first_ok = after[0]
    if not first_ok:
        raise CampaignError(f"{sid}: the first upload after the server returned failed")
    between = [d for d in scanner.retry_delays if back <= d[0] < first_t]
    if between:
        raise CampaignError(
            f"{sid}: {len(between)} retry delay(s) started after the server returned, "
            "before the first upload"
        )


async def campaign(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    started = time.monotonic()
    random.seed(args.seed)  # the backoff's jitter (scanner.uploader uses the module's RNG)
    max_age_s = args.max_age_s if args.max_age_s is not None else args.outage_s / 2
    bounds = {
        "rows": (args.max_rows, LOOSE_BYTES, LOOSE_AGE_S),
        "age": (LOOSE_ROWS, LOOSE_BYTES, max_age_s),
        "bytes": (LOOSE_ROWS, args.max_bytes, LOOSE_AGE_S),
    }
    ids = SCANNER_IDS[: len(bounds)]
    server = ServerProcess(workdir / "server")
    server.prepare(ids, via_cli=False)
    await server.start()
    customers = await server.enroll_consenting(args.phones)
    book = EidBook(customers)
    await server.kill()  # the outage starts

    scanners: list[Scanner] = []
    for sid, (bound, (max_rows, max_bytes, age)) in zip(ids, bounds.items(), strict=True):
        outbox_path = workdir / "scanners" / f"{sid}.outbox.sqlite"
        outbox_path.parent.mkdir(parents=True, exist_ok=True)
        create_audited_outbox(outbox_path, _LEVEL_SQL)
        config = ScannerConfig(
            scanner_id=sid,
            store_id=STORE_ID,
            server_url=server.base_url,
            secret=server.secrets[sid],
            backend="simulated",
            outbox_path=str(outbox_path),
            outbox_max_rows=max_rows,
            outbox_max_bytes=max_bytes,
            outbox_max_age_s=age,
            upload_interval_s=0.2,
        )
        scanner = Scanner(
            sid, bound, Daemon(config, config.secret or ""), outbox_path, max_rows, max_bytes
        )
        scanner.reader = sqlite3.connect(outbox_path, timeout=10, isolation_level=None)
        scanner.watch_puts()
        scanner.watch_retry_delays()
        scanners.append(scanner)

    stop = asyncio.Event()
    live: asyncio.Task[None] | None = None
    try:
        async with aiohttp.ClientSession() as session:
            for scanner in scanners:
                scanner.uploader = RecordingUploader(
                    session,
                    server_url=server.base_url,
                    store_id=STORE_ID,
                    scanner_id=scanner.scanner_id,
                    secret=server.secrets[scanner.scanner_id],
                )
                scanner.tasks.append(
                    asyncio.create_task(scanner.daemon._upload_loop(stop, scanner.uploader))
                )
            # 2. The simulated hour, ending now.
            t_hour = time.monotonic()
            hour_start = time.time() - args.outage_s
            await asyncio.gather(
                *(
                    produce_hour(s, book, args.phones, hour_start, args.outage_s, args.seed + i)
                    for i, s in enumerate(scanners)
                )
            )
            hour_real_s = time.monotonic() - t_hour
            # 3. Live traffic from now on; the outage lasts until the backoff is capped.
            for scanner in scanners:
                scanner.tasks.append(asyncio.create_task(scanner.daemon._flush_loop(stop)))
            live = asyncio.create_task(live_feed(scanners, book, args.phones, args.seed))
            await wait_for(
                lambda: all(
                    s.uploader is not None and s.uploader.failures >= args.min_failures
                    for s in scanners
                ),
                OUTAGE_TIMEOUT_S,
                f"{args.min_failures} failed uploads per scanner",
            )
            at_return = {s.scanner_id: s.level()[0] for s in scanners}
            outage_real_s = time.monotonic() - t_hour
            # 4. The server returns (its start-up takes a while: the loops go on failing).
            await server.start()
            back_wall, back = time.time(), time.monotonic()
            failures_at_return = {s.scanner_id: s.uploader.failures for s in scanners}  # type: ignore[union-attr]
            drained_at: dict[str, float] = {}

            def drained() -> bool:
                for s in scanners:
                    if s.scanner_id not in drained_at and s.backlog(back_wall) == 0:
                        drained_at[s.scanner_id] = time.monotonic()
                return len(drained_at) == len(scanners)

            await wait_for(drained, DRAIN_TIMEOUT_S, "backlog drained")
            # Then live traffic stops, the last windows are flushed, the outboxes empty.
            live.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await live
            for scanner in scanners:
                flush = scanner.daemon.aggregator.flush_all()
                if flush:
                    await scanner.daemon.outbox.put(flush, time.time())
                    scanner.daemon._upload_kick.set()
            await wait_for(
                lambda: all(s.level()[0] == 0 for s in scanners), DRAIN_TIMEOUT_S, "outbox empty"
            )
            stop.set()
            await asyncio.gather(*(t for s in scanners for t in s.tasks))
            dropped = {s.scanner_id: (await s.daemon.outbox.stats())[1] for s in scanners}
    finally:
        stop.set()
        if live is not None:
            live.cancel()
        for scanner in scanners:
            for task in scanner.tasks:
                task.cancel()
            await asyncio.gather(*scanner.tasks, return_exceptions=True)
            if scanner.reader is not None:
                scanner.reader.close()
            await scanner.daemon.outbox.aclose()
        await server.kill()
    check = server.quick_check()
    if check != "ok":
        raise CampaignError(f"server quick_check: {check}")
    batches = server.server_batches()
    per_scanner: dict[str, Any] = {}
    for scanner in scanners:
        sid = scanner.scanner_id
        uploader = scanner.uploader
        assert uploader is not None
        assert uploader.first_ack_at is not None
        counts = check_scanner(scanner, dropped[sid], batches)
        check_return(scanner, back)
        first_s = uploader.first_ack_at - back
        ceiling = backoff_ceiling(failures_at_return[sid])
        drain_s = drained_at[sid] - back
        sending_s = max(drained_at[sid] - uploader.first_ack_at, 1e-3)
        per_scanner[sid] = {
            "bound": scanner.bound,
            "bound_value": {
                "rows": scanner.max_rows,
                "age": max_age_s,
                "bytes": scanner.max_bytes,
            }[scanner.bound],
            **counts,
            "peak_rows": scanner.peak_rows,
            "peak_bytes": scanner.peak_bytes,
            "queued_at_return": at_return[sid],
            "failed_uploads_before_return": failures_at_return[sid],
            "retry_delays_checked": len(scanner.retry_delays),
            "backoff_ceiling_at_return_s": ceiling,
            "first_upload_s": round(first_s, 2),
            "drain_s": round(drain_s, 2),
            "drain_rows_per_s": round(at_return[sid] / sending_s),
        }
    return {
        "campaign": "server down for an hour of simulated traffic",
        "phones": args.phones,
        "simulated_outage_s": args.outage_s,
        "hour_produced_real_s": round(hour_real_s, 1),
        "outage_real_s": round(outage_real_s, 1),
        "scanners": per_scanner,
        "rows_produced": sum(v["produced"] for v in per_scanner.values()),
        "rows_at_server": sum(v["at_server"] for v in per_scanner.values()),
        "rows_dropped": sum(v["dropped"] for v in per_scanner.values()),
        "first_upload_s_max": max(v["first_upload_s"] for v in per_scanner.values()),
        "drain_s_max": max(v["drain_s"] for v in per_scanner.values()),
        "backoff_cap_s": BACKOFF_CAP_S,
        "quick_checks_ok": 1 + len(scanners),
        "duration_s": round(time.monotonic() - started, 1),
        "ok": True,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--phones", type=int, default=20, help="phones in the shop (20)")
    parser.add_argument(
        "--outage-s", type=int, default=3600, help="simulated outage, 1 s windows (3600)"
    )
    parser.add_argument("--max-rows", type=int, default=DEFAULT_MAX_ROWS)
    parser.add_argument("--max-age-s", type=float, default=None, help="default: outage / 2")
    parser.add_argument("--max-bytes", type=int, default=DEFAULT_MAX_BYTES)
    parser.add_argument(
        "--min-failures",
        type=int,
        default=7,
        help="failed uploads per scanner before the server returns (7: backoff capped)",
    )
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    args = parser.parse_args()
    # The scanner's warnings (server unreachable, oldest windows dropped) are the campaign.
    logging.getLogger("scanner").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory(prefix="bulle-fault-") as tmp:
        try:
            figures = asyncio.run(campaign(args, Path(tmp)))
        except CampaignError as exc:
            emit({"ok": False, "error": str(exc)}, args.json, "FAILED")
            return 1
    emit(figures, args.json, "server down for an hour of simulated traffic")
    return 0


if __name__ == "__main__":
    sys.exit(main())
