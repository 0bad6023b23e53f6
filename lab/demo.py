"""The demo store: the real server, real scanner daemons, simulated phones walking the floor.

`DemoStore` is used by `store-server demo` and by the end-to-end tests. It:

1. claims its working directory (a lock file: one demo per folder) and its port, and refuses
   to start, before changing anything, when either is in use or the folder holds files it did
   not make;
2. empties the working directory and creates a throw-away master key, SQLite database, demo
   staff account (random password, demo only: production has no default account), stock
   from seeds/catalog.csv and one registered scanner per scanner of seeds/store.toml;
3. starts the store server on 127.0.0.1;
4. enrolls the demo customers of seeds/customers.toml through the public customer API and
   sets their consents, preferences and wishlists through it, as the app would;
5. starts one `beacon-scanner run` process per scanner with the simulated backend, whose
   bleak backend reads advertisements from the process's standard input;
6. steps the floor simulation and writes what each scanner hears to its standard input;
7. plays the story in rounds (lab/story.py): every 3 minutes new visitors are enrolled and
   walk in, and the visitors of a finished round are erased through the API, so that a board
   opened at any time sees cards within seconds.

The server package never imports the scanner package: scanners are separate processes that
talk to the server over HTTP, exactly as on a real store.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import sys
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import aiohttp
from aiohttp import web

from lab.demo_iphone import DEMO_BEACON_MAJOR, DEMO_CHAIN_UUID, DemoIphones
from lab.radio import RadioModel
from lab.sim import SimAdvert, SimPhone, StoreSimulation
from lab.story import ROUND_S, live_rounds, round_start
from store_server import staff
from store_server.app import AccessLogger, create_app, load_floor
from store_server.config import ServerConfig
from store_server.eid import beacon_time, compute_eid, new_identity_key
from store_server.errors import StoreServerError
from store_server.floor import Floor
from store_server.keywrap import scanner_aad, wrap_key
from store_server.stock import parse_stock_csv
from store_server.storage import catalog, scanners
from store_server.storage.database import Database, Handle
from store_server.storage.pg import PgTarget

logger = logging.getLogger(__name__)

EDDYSTONE_UUID = "0000feaa-0000-1000-8000-00805f9b34fb"
# Eddystone EID frame type byte and a typical phone's calibrated power at 0 m.
EID_FRAME_TYPE = 0x30
PHONE_TX_POWER_AT_0M = -20
# Phones advertise about 4 times a second in the simulation (a typical Android
# "balanced" advertising interval is 250 ms).
SIM_STEP_S = 0.25
DEMO_USER = "demo"
# Scanner processes get this long to stop on SIGTERM before they are killed.
SCANNER_STOP_TIMEOUT_S = 5.0
SEEDS = Path(__file__).resolve().parent.parent / "seeds"
# The file that marks a folder as a demo's and that a running demo holds locked.
DEMO_MARKER = ".bulle-demo"
# What the demo writes in its folder: a folder holding anything else is not emptied.
DEMO_ENTRIES = frozenset(
    {DEMO_MARKER, "logs", "scanners", "store.sqlite", "store.sqlite-wal", "store.sqlite-shm"}
)


class DemoBusyError(StoreServerError):
    """The demo's folder or port is in use; nothing was changed."""


@dataclass(slots=True)
class DemoCustomer:
    handle: str
    walk: str
    customer_id: str | None
    token: str | None
    identity_key: bytes
    k: int
    clock_offset_s: float
    consents: dict[str, bool]
    # "android" broadcasts an Eddystone-EID; "iphone" cannot, and checks in with a proof.
    device: str = "android"

    def eid_at(self, now: float) -> bytes:
        return compute_eid(self.identity_key, self.k, beacon_time(now, self.clock_offset_s))

    def advert(self, now: float) -> bytes:
        return bytes([EID_FRAME_TYPE, PHONE_TX_POWER_AT_0M & 0xFF]) + self.eid_at(now)


@dataclass(slots=True)
class DemoRound:
    """One playing of the story: its visitors and their walks (see lab/story.py)."""

    index: int
    customers: dict[str, DemoCustomer]
    simulation: StoreSimulation


@dataclass(slots=True)
class DemoStore:
    workdir: Path
    port: int = 0
    seed: int = 7
    seeds: Path = SEEDS
    # Story time at which the demo starts (0: the first visitors walk in; tests start later).
    story_offset_s: float = 0.0
    # A migrated, empty PostgreSQL database to run on instead of the folder's SQLite file
    # (tests run the demo on both engines); no password in it, as in `database_url`.
    database_url: str = ""
    staff_password: str = field(default_factory=lambda: secrets.token_urlsafe(12))
    # The visitors of the newest round, by handle.
    customers: dict[str, DemoCustomer] = field(default_factory=dict)
    rounds: dict[int, DemoRound] = field(default_factory=dict)
    base_url: str = ""
    config: ServerConfig | None = None
    app: web.Application | None = None
    _runner: web.AppRunner | None = None
    _scanners: dict[str, asyncio.subprocess.Process] = field(default_factory=dict)
    _sim_task: asyncio.Task[None] | None = None
    _log_handler: logging.Handler | None = None
    _lock: Any = None
    _created_folder: bool = False
    _socket: socket.socket | None = None
    _http: aiohttp.ClientSession | None = None
    _story_zero: float = 0.0
    _floor: Floor | None = None
    _radio: RadioModel | None = None
    broadcast_addresses: dict[str, set[str]] = field(default_factory=dict)
    broadcast_eids: dict[str, set[bytes]] = field(default_factory=dict)
    iphones: DemoIphones | None = None

    @property
    def db_path(self) -> Path:
        return self.workdir / "store.sqlite"

    @property
    def logs(self) -> Path:
        return self.workdir / "logs"

    def scanner_files(self) -> list[Path]:
        return sorted((self.workdir / "scanners").glob("*"))

    async def start(self) -> None:
        """Claim the folder and the port (DemoBusyError, nothing changed), then start."""
        self._claim_folder()
        try:
            self._socket = _listen(self.port)
        except OSError as exc:
            self._release_folder(undo=True)
            if exc.errno != errno.EADDRINUSE:
                raise
            raise DemoBusyError(
                f"port {self.port} on 127.0.0.1 is already in use: stop the other program or"
                " pass --port (0 picks a free port); nothing was changed"
            ) from None
        self._empty_folder()
        for sub in ("logs", "scanners"):
            (self.workdir / sub).mkdir(parents=True)
        self._log_handler = logging.FileHandler(self.logs / "server.log", encoding="utf-8")
        self._log_handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
        )
        logging.getLogger().addHandler(self._log_handler)
        if logging.getLogger().level > logging.INFO or logging.getLogger().level == 0:
            logging.getLogger().setLevel(logging.INFO)
        master_key = secrets.token_bytes(32)
        # The store beacon key shared by the server and the boxes (store-server beacon-key).
        beacon_key = secrets.token_bytes(32)
        self.config = ServerConfig(
            host="127.0.0.1",
            port=self.port,
            db_path=str(self.db_path),
            database_url=self.database_url,
            store_file=str(self.seeds / "store.toml"),
            master_key=master_key.hex(),
            # The demo serves plain HTTP on loopback; production runs behind TLS with Secure.
            cookie_secure=False,
            store_beacon_key=beacon_key.hex(),
            store_beacon_uuid=str(DEMO_CHAIN_UUID),
            store_beacon_major=DEMO_BEACON_MAJOR,
        )
        floor = load_floor(self.seeds / "store.toml")
        secrets_by_scanner = self._prepare_database(
            master_key, floor.store_id, [s.id for s in floor.scanners]
        )
        self.app = create_app(self.config)
        self._runner = web.AppRunner(self.app, shutdown_timeout=3.0, access_log_class=AccessLogger)
        await self._runner.setup()
        site = web.SockSite(self._runner, self._socket)
        await site.start()
        self.base_url = f"http://127.0.0.1:{self._socket.getsockname()[1]}"
        self._http = aiohttp.ClientSession(self.base_url)
        self._floor = floor
        self._radio = RadioModel.for_floor(floor)
        self.iphones = DemoIphones(floor, self._radio, beacon_key, self.seed)
        # Story time 0 is when round 0's visitors start walking; phones compute their EID at
        # wall time.
        self._story_zero = time.time() - self.story_offset_s
        for index in live_rounds(self.story_offset_s):
            await self._start_round(index)
        for scanner_id, secret in secrets_by_scanner.items():
            await self._start_scanner(scanner_id, floor.store_id, secret)
        self._sim_task = asyncio.create_task(self._simulate(), name="bulle-demo-sim")

    # -- the folder and the port ---------------------------------------------------------------

    def _claim_folder(self) -> None:
        """Lock the folder for this demo; refuse a folder in use or holding others' files."""
        marker = self.workdir / DEMO_MARKER
        if self.workdir.exists():
            if not self.workdir.is_dir():
                raise DemoBusyError(f"{self.workdir} is a file: pass another --dir")
            if any(entry.name not in DEMO_ENTRIES for entry in self.workdir.iterdir()):
                raise DemoBusyError(
                    f"folder {self.workdir} holds files the demo did not make and the demo"
                    " empties its folder: pass another --dir; nothing was changed"
                )
        else:
            self.workdir.mkdir(parents=True)
            self._created_folder = True
        lock = marker.open("a+", encoding="utf-8")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            raise DemoBusyError(
                f"folder {self.workdir} is used by a demo that is running: stop it (Ctrl-C)"
                " or pass another --dir; nothing was changed"
            ) from None
        self._lock = lock

    def _release_folder(self, *, undo: bool = False) -> None:
        """Unlock the folder; with ``undo``, remove it again if this demo created it."""
        if self._lock is not None:
            self._lock.close()  # closing the file releases the lock
            self._lock = None
            if undo and self._created_folder:
                (self.workdir / DEMO_MARKER).unlink(missing_ok=True)
                self.workdir.rmdir()

    def _empty_folder(self) -> None:
        """Remove the previous run's files (the folder is locked by this demo)."""
        for entry in self.workdir.iterdir():
            if entry.name == DEMO_MARKER:
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()

    # -- rounds of the story ---------------------------------------------------------------------

    async def _start_round(self, index: int) -> None:
        """Enroll the round's visitors and put their phones on the floor."""
        assert self._floor is not None
        assert self._radio is not None
        customers = await self._enroll_customers()
        wall_start = self._story_zero + round_start(index)
        phones = [
            SimPhone(c.handle, c.walk, 0.0, _advert_at_wall_time(c, wall_start))
            for c in customers.values()
            if c.device != "iphone"
        ]
        assert self.iphones is not None
        assert self._http is not None
        for c in customers.values():
            if c.device == "iphone" and c.token is not None:
                key = f"{index}:{c.handle}"
                await self.iphones.add(self._http, key, c.walk, c.token, wall_start)
        # Each round its own seed: two rounds' phones never share a Bluetooth address.
        simulation = StoreSimulation(self._floor, self._radio, phones, seed=self.seed + index)
        self.rounds[index] = DemoRound(index, customers, simulation)
        self.customers = customers
        logger.info("demo round %s: %s visitors", index, len(customers))

    async def _end_round(self, index: int) -> None:
        """Stop the round's phones and erase its visitors through the customer API."""
        ended = self.rounds.pop(index)
        assert self._http is not None
        if self.iphones is not None:
            self.iphones.remove({f"{index}:{handle}" for handle in ended.customers})
        for customer in ended.customers.values():
            if customer.token is None:
                continue
            headers = {"Authorization": f"Bearer {customer.token}"}
            async with self._http.delete("/api/v1/me", headers=headers) as resp:
                await _ok(resp)
        logger.info("demo round %s ended, its visitors erased", index)

    def _prepare_database(
        self, master_key: bytes, store_id: str, scanner_ids: list[str]
    ) -> dict[str, str]:
        now = time.time()
        secrets_by_scanner = {sid: secrets.token_urlsafe(32) for sid in scanner_ids}
        items = parse_stock_csv((self.seeds / "catalog.csv").read_text("utf-8"))
        db = Database(PgTarget(self.database_url) if self.database_url else self.db_path)
        try:
            db.run_sync(lambda d: catalog.upsert_stock(d, store_id, items))
            db.run_sync(lambda d: staff.add_user(d, DEMO_USER, self.staff_password, "manager", now))
            wrapped = {
                sid: wrap_key(master_key, secret.encode(), scanner_aad(sid))
                for sid, secret in secrets_by_scanner.items()
            }

            def register(d: Handle) -> None:
                for sid, blob in wrapped.items():
                    scanners.add_scanner(d, sid, store_id, blob, now)

            db.run_sync(register)
        finally:
            db.close()
        return secrets_by_scanner

    async def _enroll_customers(self) -> dict[str, DemoCustomer]:
        spec = tomllib.loads((self.seeds / "customers.toml").read_text("utf-8"))
        customers: dict[str, DemoCustomer] = {}
        http = self._http
        assert http is not None
        async with http.get("/api/v1/consent-texts") as resp:
            texts = {t["purpose"]: t["hash"] for t in (await resp.json())["texts"]}
        for entry in spec.get("customers", []):
            async with http.post("/api/v1/enroll", json={"language": "fr"}) as resp:
                enrolled = await _ok(resp)
            headers = {"Authorization": f"Bearer {enrolled['token']}"}
            prefs = entry.get("preferences", {})
            if prefs:
                async with http.put("/api/v1/preferences", json=prefs, headers=headers) as resp:
                    await _ok(resp)
            if entry.get("wishlist"):
                async with http.put(
                    "/api/v1/wishlist", json={"skus": entry["wishlist"]}, headers=headers
                ) as resp:
                    await _ok(resp)
            consents = entry.get("consents", {})
            for purpose, wanted in consents.items():
                if wanted:
                    body = {"purpose": purpose, "text_hash": texts[purpose], "channel": "app"}
                    async with http.post("/api/v1/consents", json=body, headers=headers) as resp:
                        await _ok(resp)
            now = time.time()
            customers[entry["handle"]] = DemoCustomer(
                handle=entry["handle"],
                walk=entry["walk"],
                customer_id=enrolled["customer_id"],
                token=enrolled["token"],
                identity_key=bytes.fromhex(enrolled["identity_key"]),
                k=enrolled["rotation_exponent"],
                clock_offset_s=enrolled["beacon_time"] - now,
                consents=consents,
                device=entry.get("device", "android"),
            )
        for entry in spec.get("passers_by", []):
            # Not enrolled anywhere: a key the store has never seen.
            customers[entry["handle"]] = DemoCustomer(
                handle=entry["handle"],
                walk=entry["walk"],
                customer_id=None,
                token=None,
                identity_key=new_identity_key(),
                k=9,
                clock_offset_s=12345.0,
                consents={},
            )
        return customers

    async def _start_scanner(self, scanner_id: str, store_id: str, secret: str) -> None:
        folder = self.workdir / "scanners"
        config_path = folder / f"{scanner_id}.toml"
        config_path.write_text(
            "\n".join(
                [
                    f'scanner_id = "{scanner_id}"',
                    f'store_id = "{store_id}"',
                    f'server_url = "{self.base_url}"',
                    f'secret = "{secret}"',
                    'backend = "simulated"',
                    f'outbox_path = "{folder / (scanner_id + ".outbox.sqlite")}"',
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
        log = (self.logs / f"{scanner_id}.log").open("ab")
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
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
            env=env,
        )
        log.close()
        self._scanners[scanner_id] = process

    async def _simulate(self) -> None:
        while True:
            now = time.time()
            story_t = now - self._story_zero
            live = live_rounds(story_t)
            for index in [i for i in self.rounds if i not in live]:
                await self._end_round(index)
            for index in [i for i in live if i not in self.rounds]:
                await self._start_round(index)
            heard: dict[str, list[SimAdvert]] = {}
            for played in self.rounds.values():
                local = story_t - round_start(played.index)
                for scanner_id, adverts in played.simulation.step(local).items():
                    heard.setdefault(scanner_id, []).extend(adverts)
            for scanner_id, adverts in heard.items():
                process = self._scanners.get(scanner_id)
                if process is None or process.stdin is None or process.returncode is not None:
                    continue
                lines = []
                for advert in adverts:
                    self.broadcast_addresses.setdefault(advert.handle, set()).add(advert.address)
                    self.broadcast_eids.setdefault(advert.handle, set()).add(
                        bytes.fromhex(advert.service_data_hex)[2:]
                    )
                    lines.append(
                        json.dumps(
                            {
                                "address": advert.address,
                                "rssi": advert.rssi,
                                "service_data": {EDDYSTONE_UUID: advert.service_data_hex},
                            }
                        )
                    )
                if lines:
                    process.stdin.write(("\n".join(lines) + "\n").encode())
                    with contextlib.suppress(ConnectionError):
                        await process.stdin.drain()
            if self.iphones is not None:
                await self.iphones.step(now)
            await asyncio.sleep(max(0.0, SIM_STEP_S - (time.time() - now)))

    async def stop(self) -> None:
        if self._sim_task is not None:
            self._sim_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sim_task
        for process in self._scanners.values():
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
        for process in self._scanners.values():
            try:
                await asyncio.wait_for(process.wait(), SCANNER_STOP_TIMEOUT_S)
            except TimeoutError:
                process.kill()
                await process.wait()
        self._scanners.clear()
        if self._http is not None:
            await self._http.close()
            self._http = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._socket is not None:
            self._socket.close()
            self._socket = None
        if self._log_handler is not None:
            logging.getLogger().removeHandler(self._log_handler)
            self._log_handler.close()
        self._release_folder()


def _listen(port: int) -> socket.socket:
    """A listening socket on 127.0.0.1 (claimed before the demo changes anything)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


def _advert_at_wall_time(customer: DemoCustomer, start: float) -> Callable[[float], bytes]:
    def advert(t: float) -> bytes:
        return customer.advert(start + t)

    return advert


async def _ok(resp: aiohttp.ClientResponse) -> dict[str, Any]:
    data: dict[str, Any] = await resp.json()
    if resp.status >= 400:
        raise StoreServerError(f"demo set-up failed: {resp.status} {data}")
    return data


async def run_demo(
    workdir: Path, *, port: int, seed: int, out: TextIO, duration_s: float | None = None
) -> int:
    console = logging.StreamHandler()
    console.setLevel(logging.WARNING)  # the full log goes to <dir>/logs/server.log
    console.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(console)
    demo = DemoStore(workdir=workdir, port=port, seed=seed)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await demo.start()
    except BaseException:
        await demo.stop()  # a refused start changed nothing; a failed one is cleaned up
        raise
    try:
        out.write(
            f"Bulle demo store is running.\n"
            f"  Staff board:  {demo.base_url}/board\n"
            f"  Sign in as:   {DEMO_USER} / {demo.staff_password}   (demo account, this run only)\n"
            f"  Files:        {workdir} (database, scanner outboxes, logs)\n"
            f"Within about 20 s the board shows Sylvie's greeting card, Léa's (an iPhone that\n"
            f"checked in with the shop's beacon) and a stock card for the customer who asked\n"
            f"for a stock check. The story starts again every\n"
            f"{ROUND_S / 60:g} minutes with new visitors. Press Ctrl-C to stop.\n"
        )
        out.flush()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), duration_s)
    finally:
        await demo.stop()
        out.write("Demo stopped.\n")
    return 0
