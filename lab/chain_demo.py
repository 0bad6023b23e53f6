"""The chain demo: two stores on one throwaway PostgreSQL, with real scanners and phones.

`store-server chain-demo` runs it. It:

1. starts a PostgreSQL cluster of its own in a temporary directory (``initdb`` + ``pg_ctl``,
   the same throwaway cluster the tests use), creates the chain's database and migrates it;
2. prepares two stores on that one database, "A" (seeds/store.toml) and "B"
   (seeds/store-corner.toml): stock, scanners, a staff account each;
3. starts both store servers (in this process, each on its own port, in chain mode: each
   follows the consent log through LISTEN/NOTIFY and resolves EIDs from temporary keys
   only; store A is also the chain's key authority, with a throw-away key pair), signs a
   staff member in to each store's board (a real WebSocket), and starts one
   `beacon-scanner run` process per scanner of each store, fed by simulated phones walking
   that store's floor;
4. plays the story: Sylvie enrolls and gives her greeting consent for the whole chain in
   store A's app session; her phone, walking in both shops (the demo's licence: one phone in
   two places), greets her on store B's board and on A's; then she withdraws through store
   B's app session, and the demo measures how long each board takes to retract her card and
   each store's resolver (the scanners' allowlists) to let her EIDs go.

The demo prints each step with its timing, then keeps running until Ctrl-C (or
``duration_s``). Nothing of it survives: the cluster and its files are removed at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import secrets
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import aiohttp
from aiohttp import web

from lab.radio import RadioModel
from lab.sim import SimPhone, StoreSimulation
from store_server import staff
from store_server.app import AccessLogger, create_app, load_floor
from store_server.config import ServerConfig
from store_server.eid import beacon_time, compute_eid
from store_server.errors import StoreServerError
from store_server.floor import Floor, Walk
from store_server.keys import SERVICE
from store_server.keyseal import generate_authority_key
from store_server.keywrap import scanner_aad, wrap_key
from store_server.stock import parse_stock_csv
from store_server.storage import catalog, scanners
from store_server.storage.database import Database, Handle
from store_server.storage.pg import PgTarget
from store_server.storage.pg_cluster import ClusterError, find_bin_dir, throwaway_cluster

logger = logging.getLogger(__name__)

SEEDS = Path(__file__).resolve().parent.parent / "seeds"
EDDYSTONE_UUID = "0000feaa-0000-1000-8000-00805f9b34fb"
EID_FRAME_TYPE = 0x30
PHONE_TX_POWER_AT_0M = -20
# Simulated phones advertise about 4 times a second (Android's "balanced" interval).
SIM_STEP_S = 0.25
STAFF_USER = "demo"
DATABASE = "bulle_chain"
# Sylvie's walk in each shop: in through the door, then browsing for ten minutes.
WALKS = {
    "A": Walk(
        "chain-demo", 900.0, ((0.0, 6.0, -2.5), (3.0, 6.0, 0.0), (6.0, 3.0, 5.0), (600.0, 3.2, 5.4))
    ),
    "B": Walk(
        "chain-demo", 900.0, ((0.0, 7.2, -2.5), (3.0, 7.2, 0.0), (6.0, 7.0, 4.0), (600.0, 7.0, 4.2))
    ),
}
# A step of the story not seen within this long fails the demo (a greeting needs the phone
# to walk in and the presence filter to be sure: some seconds on a loaded machine).
STEP_TIMEOUT_S = 90.0
# Scanner processes get this long to stop on SIGTERM before they are killed.
SCANNER_STOP_TIMEOUT_S = 5.0


class ChainDemoError(StoreServerError):
    """The chain demo could not run (the message says why, in one line)."""


@dataclass(slots=True)
class Shop:
    """One store of the demo: its server, its board connection, its scanners."""

    label: str
    store_file: Path
    floor: Floor
    staff_password: str = field(default_factory=lambda: secrets.token_urlsafe(12))
    scanner_secrets: dict[str, str] = field(default_factory=dict)
    app: web.Application | None = None
    runner: web.AppRunner | None = None
    base_url: str = ""
    http: aiohttp.ClientSession | None = None
    ws: aiohttp.ClientWebSocketResponse | None = None
    board: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    board_changed: asyncio.Event = field(default_factory=asyncio.Event)
    processes: dict[str, asyncio.subprocess.Process] = field(default_factory=dict)
    simulation: StoreSimulation | None = None

    def card_of(self, name: str) -> dict[str, Any] | None:
        for _, message in self.board:
            card = message.get("card")
            if (
                message.get("type") == "card"
                and isinstance(card, dict)
                and name in json.dumps(card, ensure_ascii=False)
            ):
                return card
        return None

    def retracted_at(self, card_id: str) -> float | None:
        for at, message in self.board:
            if message.get("type") == "retract" and message.get("id") == card_id:
                return at
        return None


@dataclass(slots=True)
class Phone:
    identity_key: bytes
    k: int
    clock_offset_s: float

    def advert(self, now: float) -> bytes:
        eid = compute_eid(self.identity_key, self.k, beacon_time(now, self.clock_offset_s))
        return bytes([EID_FRAME_TYPE, PHONE_TX_POWER_AT_0M & 0xFF]) + eid


@dataclass(slots=True)
class StoryFigures:
    """What the story measured, in seconds."""

    greeted_in_b_s: float
    greeted_in_a_s: float
    retracted_in_a_s: float
    retracted_in_b_s: float
    allowlists_clear_s: float


class ChainDemo:
    """Two stores on one throwaway PostgreSQL cluster (see the module docstring)."""

    def __init__(self, workdir: Path, *, seed: int = 7) -> None:
        self.workdir = workdir
        self.seed = seed
        self.shops = [
            Shop("A", SEEDS / "store.toml", load_floor(SEEDS / "store.toml")),
            Shop("B", SEEDS / "store-corner.toml", load_floor(SEEDS / "store-corner.toml")),
        ]
        self.master_key = secrets.token_bytes(32)
        self.url = ""
        self._stack = contextlib.ExitStack()
        self._tasks: list[asyncio.Task[None]] = []
        self._phone: Phone | None = None
        self._started = 0.0
        self._keys: tuple[Path, Path] = (Path(), Path())

    @property
    def a(self) -> Shop:
        return self.shops[0]

    @property
    def b(self) -> Shop:
        return self.shops[1]

    async def start(self) -> None:
        if find_bin_dir() is None:
            raise ChainDemoError(
                "the chain demo needs the PostgreSQL server binaries (initdb, pg_ctl):"
                " install them (Debian: apt-get install postgresql)"
            )
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "scanners").mkdir(exist_ok=True)
        (self.workdir / "logs").mkdir(exist_ok=True)
        try:
            cluster = await asyncio.to_thread(self._stack.enter_context, throwaway_cluster())
            self.url = await asyncio.to_thread(cluster.create_database, DATABASE)
        except ClusterError as exc:
            raise ChainDemoError(f"could not start PostgreSQL: {exc}") from None
        await asyncio.to_thread(self._prepare_database)
        self._keys = await asyncio.to_thread(self._authority_keys)
        for shop in self.shops:
            await self._start_server(shop)
        for shop in self.shops:
            await self._open_board(shop)
            for scanner_id, secret in shop.scanner_secrets.items():
                await self._start_scanner(shop, scanner_id, secret)
        self._started = time.monotonic()

    def _authority_keys(self) -> tuple[Path, Path]:
        """A throw-away key authority pair (`store-server chain-keys init` in production)."""
        folder = self.workdir / "keys"
        folder.mkdir(mode=0o700, exist_ok=True)
        private, public = generate_authority_key()
        private_path, public_path = folder / "authority.pem", folder / "authority.pub.pem"
        private_path.write_bytes(private)
        private_path.chmod(0o600)
        public_path.write_bytes(public)
        return private_path, public_path

    def _config(self, shop: Shop) -> ServerConfig:
        # Real chain mode: store servers resolve from temporary keys only; store A is also
        # the chain's key authority (a headquarters timer in production).
        private_path, public_path = self._keys
        authority = shop.label == "A"
        return ServerConfig(
            host="127.0.0.1",
            port=8080,  # the socket is bound by the demo (port 0: any free one)
            db_path=str(self.workdir / "unused.sqlite"),
            database_url=self.url,
            store_file=str(shop.store_file),
            master_key=self.master_key.hex(),
            cookie_secure=False,
            log_level="WARNING",
            chain_mode=True,
            authority_public_key_file=str(public_path),
            key_authority=authority,
            authority_key_file=str(private_path) if authority else "",
        )

    def _prepare_database(self) -> None:
        now = time.time()
        items = parse_stock_csv((SEEDS / "catalog.csv").read_text("utf-8"))
        db = Database(PgTarget(self.url))
        try:
            for shop in self.shops:
                store_id = shop.floor.store_id
                shop.scanner_secrets = {
                    s.id: secrets.token_urlsafe(32) for s in shop.floor.scanners
                }
                wrapped = {
                    sid: wrap_key(self.master_key, secret.encode(), scanner_aad(sid))
                    for sid, secret in shop.scanner_secrets.items()
                }
                user = f"{STAFF_USER}-{shop.label.lower()}"
                password = shop.staff_password

                def fill(
                    d: Handle,
                    store_id: str = store_id,
                    wrapped: dict[str, bytes] = wrapped,
                    user: str = user,
                    password: str = password,
                ) -> None:
                    catalog.upsert_stock(d, store_id, items)
                    staff.add_user(d, user, password, "manager", now)
                    for sid, blob in wrapped.items():
                        scanners.add_scanner(d, sid, store_id, blob, now)

                db.run_sync(fill)
        finally:
            db.close()

    async def _start_server(self, shop: Shop) -> None:
        shop.app = create_app(self._config(shop))
        shop.runner = web.AppRunner(shop.app, shutdown_timeout=3.0, access_log_class=AccessLogger)
        await shop.runner.setup()
        site = web.TCPSite(shop.runner, "127.0.0.1", 0)
        await site.start()
        host, port = shop.runner.addresses[0][:2]
        shop.base_url = f"http://{host}:{port}"

    async def _open_board(self, shop: Shop) -> None:
        shop.http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
        resp = await shop.http.post(
            f"{shop.base_url}/login",
            data={
                "username": f"{STAFF_USER}-{shop.label.lower()}",
                "password": shop.staff_password,
            },
            allow_redirects=False,
        )
        if resp.status != 303:
            raise ChainDemoError(f"store {shop.label}: staff sign-in failed ({resp.status})")
        shop.ws = await shop.http.ws_connect(f"{shop.base_url}/ws/board")
        self._tasks.append(asyncio.create_task(self._read_board(shop)))

    async def _read_board(self, shop: Shop) -> None:
        assert shop.ws is not None
        async for msg in shop.ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            data = json.loads(msg.data)
            if isinstance(data, dict):
                shop.board.append((time.perf_counter(), data))
                shop.board_changed.set()

    async def _start_scanner(self, shop: Shop, scanner_id: str, secret: str) -> None:
        folder = self.workdir / "scanners"
        name = f"{shop.label}-{scanner_id}"
        config_path = folder / f"{name}.toml"
        config_path.write_text(
            "\n".join(
                [
                    f'scanner_id = "{scanner_id}"',
                    f'store_id = "{shop.floor.store_id}"',
                    f'server_url = "{shop.base_url}"',
                    f'secret = "{secret}"',
                    'backend = "simulated"',
                    f'outbox_path = "{folder / (name + ".outbox.sqlite")}"',
                    "window_s = 1.0",
                    "upload_interval_s = 0.5",
                    "heartbeat_interval_s = 5.0",
                    "allowlist_wait_s = 20.0",
                    "",
                ]
            ),
            encoding="utf-8",
        )
        config_path.chmod(0o600)
        log = (self.workdir / "logs" / f"{name}.log").open("ab")
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "scanner",
            "run",
            "--config",
            str(config_path),
            stdin=asyncio.subprocess.PIPE,
            stdout=log,
            stderr=log,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        log.close()
        shop.processes[scanner_id] = process

    # -- the story ---------------------------------------------------------------------------

    async def play(self, out: TextIO) -> StoryFigures:
        a, b = self.a, self.b
        assert a.http is not None
        assert b.http is not None
        texts = await (await a.http.get(f"{a.base_url}/api/v1/consent-texts")).json()
        greeting = next(t["hash"] for t in texts["texts"] if t["purpose"] == "greeting")
        enrolled = await _ok(
            await a.http.post(f"{a.base_url}/api/v1/enroll", json={"language": "fr"})
        )
        auth = {"Authorization": f"Bearer {enrolled['token']}"}
        await _ok(
            await a.http.put(
                f"{a.base_url}/api/v1/preferences",
                json={"display_name": "Sylvie", "name_form": "first_name"},
                headers=auth,
            )
        )
        start = time.perf_counter()
        await _ok(
            await a.http.post(
                f"{a.base_url}/api/v1/consents",
                json={"purpose": "greeting", "text_hash": greeting, "scope": "chain"},
                headers=auth,
            )
        )
        _say(out, "1. Sylvie gives her greeting consent for the whole chain, in store A's app.")
        self._phone = Phone(
            bytes.fromhex(enrolled["identity_key"]),
            enrolled["rotation_exponent"],
            enrolled["beacon_time"] - time.time(),
        )
        self._start_phones()
        card_b = await self._until_card(b, "Sylvie")
        greeted_b = time.perf_counter() - start
        _say(out, f"2. Her phone walks into store B: B's board greets her ({greeted_b:.1f} s).")
        card_a = await self._until_card(a, "Sylvie")
        greeted_a = time.perf_counter() - start
        _say(out, f"   And in store A: A's board greets her too ({greeted_a:.1f} s).")
        withdrawn = time.perf_counter()
        await _ok(
            await b.http.post(f"{b.base_url}/api/v1/consents/withdraw", json={}, headers=auth)
        )
        _say(out, "3. She withdraws her consent in store B's app.")
        out_a = await self._until_retracted(a, card_a["id"]) - withdrawn
        out_b = await self._until_retracted(b, card_b["id"]) - withdrawn
        customer = str(enrolled["customer_id"])
        clear = await self._until_forgotten(customer) - withdrawn
        _say(
            out,
            f"4. Store A's board retracts her card {out_a * 1000:.0f} ms after the withdrawal,"
            f" store B's {out_b * 1000:.0f} ms; both stores' allowlists dropped her EIDs"
            f" within {clear * 1000:.0f} ms.",
        )
        return StoryFigures(greeted_b, greeted_a, out_a, out_b, clear)

    def _start_phones(self) -> None:
        assert self._phone is not None
        phone = self._phone
        wall_start = time.time()

        def advert(t: float) -> bytes:
            return phone.advert(wall_start + t)

        for index, shop in enumerate(self.shops):
            floor = dataclasses.replace(shop.floor, walks=(*shop.floor.walks, WALKS[shop.label]))
            shop.simulation = StoreSimulation(
                floor,
                RadioModel.for_floor(floor),
                [SimPhone("sylvie", "chain-demo", 0.0, advert)],
                seed=self.seed + index,
            )
        self._tasks.append(asyncio.create_task(self._simulate(wall_start)))

    async def _simulate(self, wall_start: float) -> None:
        while True:
            now = time.time()
            for shop in self.shops:
                assert shop.simulation is not None
                for scanner_id, adverts in shop.simulation.step(now - wall_start).items():
                    process = shop.processes.get(scanner_id)
                    if process is None or process.stdin is None or process.returncode is not None:
                        continue
                    lines = [
                        json.dumps(
                            {
                                "address": advert.address,
                                "rssi": advert.rssi,
                                "service_data": {EDDYSTONE_UUID: advert.service_data_hex},
                            }
                        )
                        for advert in adverts
                    ]
                    if lines:
                        process.stdin.write(("\n".join(lines) + "\n").encode())
                        with contextlib.suppress(ConnectionError):
                            await process.stdin.drain()
            await asyncio.sleep(max(0.0, SIM_STEP_S - (time.time() - now)))

    async def _until_card(self, shop: Shop, name: str) -> dict[str, Any]:
        async def seen() -> dict[str, Any]:
            while (card := shop.card_of(name)) is None:
                shop.board_changed.clear()
                await shop.board_changed.wait()
            return card

        try:
            return await asyncio.wait_for(seen(), STEP_TIMEOUT_S)
        except TimeoutError:
            raise ChainDemoError(f"store {shop.label}'s board showed no card in time") from None

    async def _until_retracted(self, shop: Shop, card_id: str) -> float:
        async def seen() -> float:
            while (at := shop.retracted_at(card_id)) is None:
                shop.board_changed.clear()
                await shop.board_changed.wait()
            return at

        try:
            return await asyncio.wait_for(seen(), STEP_TIMEOUT_S)
        except TimeoutError:
            raise ChainDemoError(f"store {shop.label}'s board kept the card") from None

    async def _until_forgotten(self, customer: str) -> float:
        deadline = time.monotonic() + STEP_TIMEOUT_S
        while time.monotonic() < deadline:
            if all(
                shop.app is not None and customer not in shop.app[SERVICE].coordinator.resolver
                for shop in self.shops
            ):
                return time.perf_counter()
            await asyncio.sleep(0.005)
        raise ChainDemoError("a store still resolves the customer's EIDs")

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        for shop in self.shops:
            for process in shop.processes.values():
                if process.returncode is None:
                    process.send_signal(signal.SIGTERM)
            for process in shop.processes.values():
                try:
                    await asyncio.wait_for(process.wait(), SCANNER_STOP_TIMEOUT_S)
                except TimeoutError:
                    process.kill()
                    await process.wait()
            shop.processes.clear()
            if shop.ws is not None:
                await shop.ws.close()
            if shop.http is not None:
                await shop.http.close()
            if shop.runner is not None:
                await shop.runner.cleanup()
                shop.runner = None
        await asyncio.to_thread(self._stack.close)


def _say(out: TextIO, line: str) -> None:
    out.write(line + "\n")
    out.flush()


async def _ok(resp: aiohttp.ClientResponse) -> dict[str, Any]:
    data: dict[str, Any] = await resp.json()
    if resp.status >= 400:
        raise ChainDemoError(f"chain demo step failed: {resp.status} {data}")
    return data


async def run_chain_demo(
    workdir: Path | None, *, seed: int, out: TextIO, duration_s: float | None = None
) -> int:
    """`store-server chain-demo`: play the story, then keep both stores running."""
    with contextlib.ExitStack() as stack:
        folder = workdir or Path(
            stack.enter_context(tempfile.TemporaryDirectory(prefix="bulle-chain-"))
        )
        demo = ChainDemo(folder, seed=seed)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            _say(out, "Starting a throwaway PostgreSQL and two stores on it...")
            await demo.start()
            _say(out, "Bulle chain demo: two stores, one PostgreSQL database.")
            for shop in demo.shops:
                _say(
                    out,
                    f"  Store {shop.label} ({shop.floor.name}): {shop.base_url}/board   sign in"
                    f" as {STAFF_USER}-{shop.label.lower()} / {shop.staff_password}",
                )
            await demo.play(out)
            _say(out, "The stores keep running; press Ctrl-C to stop.")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), duration_s)
        finally:
            await demo.stop()
            _say(out, "Chain demo stopped; its database is gone.")
    return 0
