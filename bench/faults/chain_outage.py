"""Fault campaign: a chain of two stores on one PostgreSQL, under faults.

Usage: .venv/bin/python bench/faults/chain_outage.py [--outage-s 60] [--kills 1]
       [--restarts 1] [--customers 12] [--json]

Real processes on 127.0.0.1: a throwaway PostgreSQL cluster (fsync on), two `store-server
serve` processes on it (store A on seeds/store.toml, store B on seeds/store-corner.toml), each
with its four `beacon-scanner run` processes fed the Eddystone-EID frames of consenting
customers (audited outboxes, bench/faults/harness.py), and a staff board (WebSocket) open on
each store. Store A reaches the database through a TCP proxy run by this campaign, so its
link alone can be cut. The phases, in order:

1. kill -9 store A's server while its scanners upload, `--kills` times, restarting it each time;
2. restart PostgreSQL under load (`pg_ctl stop -m fast`, then start), `--restarts` times;
3. stop PostgreSQL for `--outage-s` seconds, then start it;
4. a new customer arrives (a card on A's board); cut store A from the database for
   `--outage-s` seconds while that customer withdraws through store B; then heal the link.

Invariants, checked on conditions (each violation fails the run with "ok": false):

- no acknowledged row lost and no duplicate: for every scanner, every batch its outbox deleted
  as acknowledged is in `scanner_batches` whole, and once drained, rows at the server = rows
  produced (the batch ids are unique, so a resent batch is never counted twice);
- no card from a withdrawn consent: store A shows no new card of the customer withdrawn during
  its partition, and its card is retracted from A's board once the link is back;
- every store back to normal within 10 s of the database's (or the link's) return: its
  consent view fresh again (metrics) and its allowlist served (a signed request answered 200).

Also reported: the 1-minute load average (start, before the stop, before the heal, end), and
the cards each board saw retracted as "left" after the stop (a store that hears nobody for a
minute ends the visits of those present).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (
    POLL_S,
    REPO_ROOT,
    CampaignError,
    Customer,
    Feeder,
    ScannerProcess,
    ServerProcess,
    check_accounting,
    emit,
    free_port,
    wait_drained,
    wait_producing,
)

from scanner.uploader import sign_request
from store_server import staff
from store_server.keywrap import scanner_aad, wrap_key
from store_server.storage import scanners as scanner_store
from store_server.storage.database import Database
from store_server.storage.pg import PgTarget
from store_server.storage.pg_cluster import Cluster, throwaway_cluster

SEEDS = REPO_ROOT / "seeds"
STORES = {
    "A": (
        SEEDS / "store.toml",
        "demo-store",
        ("s-entrance", "s-machines", "s-parts", "s-checkout"),
    ),
    "B": (
        SEEDS / "store-corner.toml",
        "corner-store",
        ("c-front", "c-coffee", "c-back", "c-repairs"),
    ),
}
BACK_TO_NORMAL_S = 10.0
"""The issue's bound: every store back to normal within 10 s of the database's return."""
STALENESS_S = 30
"""consent_staleness_s of the servers (the default)."""
RECOVERY_TIMEOUT_S = 60.0
"""A store not back after this long is reported as not back (and fails the run)."""
DRAIN_TIMEOUT_S = 120.0
"""A 60 s outage queues a minute of windows; retries come every 2 s (Retry-After)."""
LOAD_S = 3.0
"""Seconds of ingestion between faults."""
DATABASE = "bulle_chain"
STAFF_PASSWORD_BYTES = 16


class LinkProxy:
    """A TCP listener on 127.0.0.1 forwarding to the cluster's Unix socket; `cut()` drops every
    connection and refuses new ones until `heal()`: store A's network partition."""

    def __init__(self, socket_path: Path) -> None:
        self.socket_path = socket_path
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    async def heal(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)

    async def cut(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        for task in list(self._pipes):
            task.cancel()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_r, up_w = await asyncio.open_unix_connection(str(self.socket_path))
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, up_w}
        for src, dst in ((reader, up_w), (up_r, writer)):
            task = asyncio.create_task(self._pipe(src, dst))
            self._pipes.add(task)
            task.add_done_callback(self._pipes.discard)

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            dst.transport.abort()
            self._writers.discard(dst)


@dataclass(slots=True)
class ChainServer(ServerProcess):
    """A store server of the chain: `database_url` instead of a SQLite file."""

    label: str = "A"
    database_url: str = ""
    store_file: Path = SEEDS / "store.toml"
    store_id: str = "demo-store"
    metrics_port: int = field(default_factory=free_port)
    staff_password: str = field(default_factory=lambda: secrets.token_urlsafe(STAFF_PASSWORD_BYTES))

    def write_config(self, master_key: str) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.master_key = master_key
        self.config_path.write_text(
            "\n".join(
                [
                    f'database_url = "{self.database_url}"',
                    f'db_path = "{self.workdir / "unused.sqlite"}"',
                    f'store_file = "{self.store_file}"',
                    f'master_key = "{master_key}"',
                    f"port = {self.port}",
                    "cookie_secure = false",
                    'enroll_rate_limit = "1000/second"',
                    f"consent_staleness_s = {STALENESS_S}",
                    f'metrics_listen = "127.0.0.1:{self.metrics_port}"',
                    'log_level = "WARNING"',
                    "",
                ]
            ),
            encoding="utf-8",
        )
        self.config_path.chmod(0o600)

    async def view_state(self, http: aiohttp.ClientSession) -> str | None:
        """The consent view's state from the metrics, or None when they do not answer."""
        try:
            async with http.get(f"http://127.0.0.1:{self.metrics_port}/metrics") as resp:
                text = await resp.text()
        except (aiohttp.ClientError, OSError):
            return None
        for line in text.splitlines():
            if line.startswith("bulle_consent_view_state{") and line.endswith(" 1.0"):
                return line.split('state="', 1)[1].split('"', 1)[0]
        return None

    async def allowlist_status(self, http: aiohttp.ClientSession, scanner_id: str) -> int | None:
        path = "/api/scanner/v1/allowlist"
        headers = sign_request(
            self.secrets[scanner_id],
            "GET",
            path,
            scanner_id,
            b"",
            timestamp=int(time.time()),
            nonce=secrets.token_hex(16),
        )
        try:
            async with http.get(self.base_url + path, headers=headers) as resp:
                await resp.read()
                return resp.status
        except (aiohttp.ClientError, OSError):
            return None


def prepare_database(url: str, servers: list[ChainServer], master_key: bytes) -> None:
    """Migrate the chain's database; register each store's scanners and a staff account."""
    now = time.time()
    db = Database(PgTarget(url))
    try:
        for server in servers:
            _, store_id, scanner_ids = STORES[server.label]
            for sid in scanner_ids:
                secret = secrets.token_urlsafe(32)
                blob = wrap_key(master_key, secret.encode(), scanner_aad(sid))
                db.run_sync(
                    lambda d, sid=sid, blob=blob, store_id=store_id: scanner_store.add_scanner(
                        d, sid, store_id, blob, now
                    )
                )
                server.secrets[sid] = secret
            user, password = f"staff-{server.label.lower()}", server.staff_password
            db.run_sync(lambda d, u=user, p=password: staff.add_user(d, u, p, "staff", now))
    finally:
        db.close()


def customer_name(i: int) -> str:
    """A display name (letters only, as the app requires), distinct per customer."""
    return "Client" + "".join(chr(ord("a") + int(d)) for d in f"{i:03d}")


async def enroll_chain(
    server: ChainServer, n: int, first: int = 0
) -> tuple[list[Customer], list[str]]:
    """`n` customers enrolled through `server`, each with a chain-wide greeting consent and a
    name (`customer_name` of `first`, `first` + 1, ...: their arrivals make greeting cards);
    their phones, and their app tokens."""
    customers, tokens = [], []
    async with aiohttp.ClientSession(server.base_url) as http:
        async with http.get("/api/v1/consent-texts") as resp:
            texts = {t["purpose"]: t["hash"] for t in (await resp.json())["texts"]}
        for i in range(first, first + n):
            async with http.post("/api/v1/enroll", json={"language": "fr"}) as resp:
                enrolled = await resp.json()
                if resp.status != 201:
                    raise CampaignError(f"enroll failed: {resp.status}")
            headers = {"Authorization": f"Bearer {enrolled['token']}"}
            prefs = {"display_name": customer_name(i), "name_form": "first_name"}
            async with http.put("/api/v1/preferences", json=prefs, headers=headers) as resp:
                if resp.status >= 300:
                    raise CampaignError(f"preferences refused: {resp.status}")
            body = {"purpose": "greeting", "text_hash": texts["greeting"], "scope": "chain"}
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
            tokens.append(str(enrolled["token"]))
    return customers, tokens


@dataclass(slots=True)
class Board:
    """A staff board (WebSocket) of one store, recording every message with its time."""

    server: ChainServer
    messages: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    _http: aiohttp.ClientSession | None = None
    _task: asyncio.Task[None] | None = None

    async def open(self) -> None:
        self._http = aiohttp.ClientSession(
            cookie_jar=aiohttp.CookieJar(unsafe=True),
            timeout=aiohttp.ClientTimeout(total=None),  # a board stays open for hours
        )
        resp = await self._http.post(
            self.server.base_url + "/login",
            data={
                "username": f"staff-{self.server.label.lower()}",
                "password": self.server.staff_password,
            },
            allow_redirects=False,
        )
        if resp.status != 303:
            raise CampaignError(f"store {self.server.label}: sign-in failed ({resp.status})")
        self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self._http is not None
        while True:  # the board reconnects after its server restarts, as the page does
            with contextlib.suppress(aiohttp.ClientError, OSError):
                async with self._http.ws_connect(self.server.base_url + "/ws/board") as ws:
                    async for msg in ws:
                        if msg.type == aiohttp.WSMsgType.TEXT:
                            self.messages.append((time.time(), json.loads(msg.data)))
            await asyncio.sleep(0.5)

    def cards_named(self, name: str, after: float = 0.0) -> list[dict[str, Any]]:
        found = []
        for at, m in self.messages:
            cards = m.get("cards", []) if m.get("type") == "snapshot" else [m.get("card")]
            for card in cards:
                if at >= after and isinstance(card, dict) and name in json.dumps(card):
                    found.append(card)
        return found

    def open_cards_named(self, name: str) -> list[str]:
        """Ids of the cards with `name` on the board now (snapshot, cards, retractions)."""
        shown: dict[str, dict[str, Any]] = {}
        for _, m in self.messages:
            kind = m.get("type")
            if kind == "snapshot":
                shown = {c["id"]: c for c in m.get("cards", []) if isinstance(c, dict)}
            elif kind == "card" and isinstance(m.get("card"), dict):
                shown[m["card"]["id"]] = m["card"]
            elif kind in ("retract", "closed"):
                shown.pop(str(m.get("id")), None)
        return [i for i, c in shown.items() if name in json.dumps(c)]

    def retractions(self, reason: str, after: float) -> int:
        """Cards retracted from this board for `reason` since `after`."""
        return sum(
            1
            for at, m in self.messages
            if at >= after and m.get("type") == "retract" and m.get("reason") == reason
        )

    def retracted(self, card_id: str) -> float | None:
        for at, m in self.messages:
            if m.get("type") == "retract" and m.get("id") == card_id:
                return at
        return None

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._http is not None:
            await self._http.close()


async def until_normal(servers: list[ChainServer], since: float) -> dict[str, float]:
    """Seconds from `since` until each store's view is fresh and its allowlist answers 200."""
    back: dict[str, float] = {}
    deadline = time.monotonic() + RECOVERY_TIMEOUT_S
    async with aiohttp.ClientSession() as http:
        while len(back) < len(servers) and time.monotonic() < deadline:
            for server in servers:
                if server.label in back:
                    continue
                scanner_id = next(iter(server.secrets))
                if await server.view_state(http) == "fresh" and (
                    await server.allowlist_status(http, scanner_id) == 200
                ):
                    back[server.label] = round(time.time() - since, 2)
            await asyncio.sleep(POLL_S)
    for server in servers:
        if server.label not in back:
            raise CampaignError(
                f"store {server.label} not back to normal in {RECOVERY_TIMEOUT_S} s"
            )
    return back


def _load() -> float:
    """The machine's 1-minute load average (the figures depend on it: 2 shared cores)."""
    return round(os.getloadavg()[0], 1)


def pg_batches(url: str) -> dict[tuple[str, str], int]:
    with psycopg.connect(url) as conn:
        return {
            (str(s), str(b)): int(a)
            for s, b, a in conn.execute(
                "SELECT scanner_id, batch_id, accepted FROM scanner_batches"
            )
        }


async def poll_until(predicate: Callable[[], bool], timeout_s: float) -> bool:
    """Whether `predicate` became true within `timeout_s` (checked every POLL_S)."""
    for _ in range(int(timeout_s / POLL_S) + 1):
        if predicate():
            return True
        await asyncio.sleep(POLL_S)
    return predicate()


async def until_new_batch(url: str) -> None:
    """Return right after a new row in scanner_batches, or after 5 s."""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        query = "SELECT count(*) FROM scanner_batches"
        before = (await (await conn.execute(query)).fetchone() or (0,))[0]
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline:
            if (await (await conn.execute(query)).fetchone() or (0,))[0] != before:
                return
            await asyncio.sleep(0.01)


def account(scanners: list[ScannerProcess], url: str, *, drained: bool) -> dict[str, int]:
    at_server = pg_batches(url)
    totals = {"produced": 0, "server_rows": 0}
    for scanner in scanners:
        figures = check_accounting(scanner, scanner.snapshot(), at_server, drained=drained)
        totals["produced"] += figures["produced"]
        totals["server_rows"] += figures["server_rows"]
    return totals


async def restart_cluster(cluster: Cluster, down_s: float) -> float:
    """Stop the cluster (fast), wait `down_s`, start it; the time.time() it answers again."""
    await asyncio.to_thread(cluster.stop, "fast")
    if down_s:
        await asyncio.sleep(down_s)
    await asyncio.to_thread(cluster.start)
    return time.time()


async def campaign(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """Run the phases; whatever happens, no server or scanner process outlives it."""
    started: list[ServerProcess | ScannerProcess] = []
    try:
        return await _campaign(args, workdir, started)
    finally:
        for process in started:
            await process.kill()


async def _campaign(
    args: argparse.Namespace, workdir: Path, started: list[ServerProcess | ScannerProcess]
) -> dict[str, Any]:
    figures: dict[str, Any] = {"ok": False, "load_1m": [_load()]}
    with throwaway_cluster(ephemeral=False) as cluster:
        url = await asyncio.to_thread(cluster.create_database, DATABASE)
        proxy = LinkProxy(cluster.plan.socket_dir / f".s.PGSQL.{cluster.plan.port}")
        await proxy.heal()
        master_hex = os.urandom(32).hex()
        servers = []
        for label, (store_file, store_id, _) in STORES.items():
            server = ChainServer(
                workdir / f"server-{label}", label=label, store_file=store_file, store_id=store_id
            )
            server.database_url = (
                f"postgresql://bulle@127.0.0.1:{proxy.port}/{DATABASE}" if label == "A" else url
            )
            server.write_config(master_hex)
            servers.append(server)
            started.append(server)
        a, b = servers
        await asyncio.to_thread(prepare_database, url, servers, bytes.fromhex(master_hex))
        for server in servers:
            await server.start()
        customers, _ = await enroll_chain(a, args.customers)
        scanners: list[ScannerProcess] = []
        for server in servers:
            for sid in STORES[server.label][2]:
                scanner = ScannerProcess(
                    sid,
                    server.secrets[sid],
                    workdir / "scanners",
                    server.base_url,
                    store_id=server.store_id,
                )
                scanner.prepare()
                await scanner.start()
                scanners.append(scanner)
                started.append(scanner)
        boards = [Board(server) for server in servers]
        for board in boards:
            await board.open()
        feeder = Feeder(scanners, customers)
        feeder.start()
        try:
            await wait_producing(scanners)
            # 1. kill -9 store A's server during ingestion.
            for _ in range(args.kills):
                await asyncio.sleep(LOAD_S)
                await until_new_batch(url)  # aimed: right after a commit, more in flight
                await a.kill()
                account(scanners, url, drained=False)
                await a.start()
            figures["kills"] = args.kills
            # 2. restart PostgreSQL under load.
            restarts = []
            for _ in range(args.restarts):
                await asyncio.sleep(LOAD_S)
                back_at = await restart_cluster(cluster, 0.0)
                restarts.append(await until_normal(servers, back_at))
            figures["pg_restart_back_s"] = restarts
            # 3. stop PostgreSQL for the outage.
            await asyncio.sleep(LOAD_S)
            figures["load_1m"].append(_load())
            stopped_at = time.time()
            back_at = await restart_cluster(cluster, args.outage_s)
            figures["pg_outage_back_s"] = await until_normal(servers, back_at)
            # The stores saw nobody during the outage: the visits of those present ended
            # (cards retracted as "left"), and those greeted are not greeted again within the
            # cooldown. Counted, not an invariant.
            board_a = boards[0]
            figures["left_retractions_after_stop"] = {
                board.server.label: board.retractions("left", after=stopped_at) for board in boards
            }
            # 4. cut store A off; a customer with a card on A's board withdraws through B.
            # The victim arrives now, so the cooldown of an earlier greeting cannot hide them.
            new_customers, new_tokens = await enroll_chain(a, 1, first=len(customers))
            victim = customer_name(len(customers))
            customers.extend(new_customers)  # the feeder's list: the phone is heard from now
            if not await poll_until(
                lambda: bool(board_a.open_cards_named(victim)), RECOVERY_TIMEOUT_S
            ):
                raise CampaignError("no card of the victim on store A's board before the cut")
            card_id = board_a.open_cards_named(victim)[-1]
            await proxy.cut()
            await asyncio.sleep(min(5.0, args.outage_s / 2))
            withdrawn_at = time.time()
            async with aiohttp.ClientSession(b.base_url) as http:
                headers = {"Authorization": f"Bearer {new_tokens[0]}"}
                async with http.post("/api/v1/consents/withdraw", json={}, headers=headers) as r:
                    if r.status != 200:
                        raise CampaignError(f"withdrawal through B failed: {r.status}")
            await asyncio.sleep(max(0.0, args.outage_s - min(5.0, args.outage_s / 2)))
            figures["load_1m"].append(_load())
            await proxy.heal()
            healed_at = time.time()
            figures["partition_back_s"] = await until_normal(servers, healed_at)
            await poll_until(lambda: board_a.retracted(card_id) is not None, BACK_TO_NORMAL_S * 2)
            retracted = board_a.retracted(card_id)
            if retracted is None:
                raise CampaignError("store A kept the withdrawn customer's card")
            figures["partition_retracted_after_heal_s"] = round(retracted - healed_at, 2)
            late = board_a.cards_named(victim, after=withdrawn_at)
            late = [c for c in late if c["id"] != card_id]
            if late:
                raise CampaignError(f"store A showed {len(late)} card(s) of the withdrawn customer")
            figures["cards_after_withdrawal"] = 0
        finally:
            await feeder.stop()
            for scanner in scanners:
                await scanner.terminate()
            for board in boards:
                await board.close()
        # The scanners were stopped gracefully: what is queued stays queued; restart them to drain.
        for scanner in scanners:
            await scanner.start()
        try:
            await wait_drained(scanners, DRAIN_TIMEOUT_S)
            figures |= account(scanners, url, drained=True)
        finally:
            for scanner in scanners:
                await scanner.terminate()
            for server in servers:
                await server.terminate()
            await proxy.cut()
    back = [
        *[v for r in figures["pg_restart_back_s"] for v in r.values()],
        *figures["pg_outage_back_s"].values(),
        *figures["partition_back_s"].values(),
    ]
    figures["load_1m"].append(_load())
    figures["back_to_normal_max_s"] = max(back)
    figures["ok"] = max(back) <= BACK_TO_NORMAL_S and figures["produced"] == figures["server_rows"]
    if not figures["ok"]:
        figures["error"] = "a store took more than 10 s to come back, or rows are missing"
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--outage-s", type=float, default=60.0)
    parser.add_argument("--kills", type=int, default=1)
    parser.add_argument("--restarts", type=int, default=1)
    parser.add_argument("--customers", type=int, default=12)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bulle-chain-fault-") as tmp:
        try:
            figures = asyncio.run(campaign(args, Path(tmp)))
        except CampaignError as exc:
            emit({"ok": False, "error": str(exc)}, args.json, "FAILED")
            return 1
    emit(figures, args.json, "chain outage campaign")
    return 0 if figures["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
