"""The demo store: the real server, real scanner daemons, simulated phones walking the floor.

`DemoStore` is used by `store-server demo` and by the end-to-end tests. It:

1. resets a working directory and creates a throw-away master key, SQLite database, demo
   staff account (random password, demo only: production has no default account), stock
   from seeds/catalog.csv and one registered scanner per scanner of seeds/store.toml;
2. starts the store server on 127.0.0.1;
3. enrolls the demo customers of seeds/customers.toml through the public customer API and
   sets their consents, preferences and wishlists through it, as the app would;
4. starts one `beacon-scanner run` process per scanner with the simulated backend, whose
   bleak backend reads advertisements from the process's standard input;
5. steps the floor simulation and writes what each scanner hears to its standard input.

The server package never imports the scanner package: scanners are separate processes that
talk to the server over HTTP, exactly as on a real store.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import os
import secrets
import shutil
import signal
import sys
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import aiohttp
import sqlite_utils
from aiohttp import web

from lab.radio import RadioModel
from lab.sim import SimPhone, StoreSimulation
from store_server import staff
from store_server.app import AccessLogger, create_app, load_floor
from store_server.config import ServerConfig
from store_server.eid import beacon_time, compute_eid, new_identity_key
from store_server.errors import StoreServerError
from store_server.keywrap import wrap_key
from store_server.service import scanner_aad
from store_server.stock import parse_stock_csv
from store_server.storage import catalog, scanners
from store_server.storage.database import Database

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

    def eid_at(self, now: float) -> bytes:
        return compute_eid(self.identity_key, self.k, beacon_time(now, self.clock_offset_s))

    def advert(self, now: float) -> bytes:
        return bytes([EID_FRAME_TYPE, PHONE_TX_POWER_AT_0M & 0xFF]) + self.eid_at(now)


@dataclass(slots=True)
class DemoStore:
    workdir: Path
    port: int = 0
    seed: int = 7
    seeds: Path = SEEDS
    staff_password: str = field(default_factory=lambda: secrets.token_urlsafe(12))
    customers: dict[str, DemoCustomer] = field(default_factory=dict)
    base_url: str = ""
    config: ServerConfig | None = None
    app: web.Application | None = None
    _runner: web.AppRunner | None = None
    _scanners: dict[str, asyncio.subprocess.Process] = field(default_factory=dict)
    _sim_task: asyncio.Task[None] | None = None
    _log_handler: logging.Handler | None = None
    broadcast_addresses: dict[str, set[str]] = field(default_factory=dict)
    broadcast_eids: dict[str, set[bytes]] = field(default_factory=dict)

    @property
    def db_path(self) -> Path:
        return self.workdir / "store.sqlite"

    @property
    def logs(self) -> Path:
        return self.workdir / "logs"

    def scanner_files(self) -> list[Path]:
        return sorted((self.workdir / "scanners").glob("*"))

    async def start(self) -> None:
        if self.workdir.exists():
            shutil.rmtree(self.workdir)
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
        self.config = ServerConfig(
            host="127.0.0.1",
            port=self.port,
            db_path=str(self.db_path),
            store_file=str(self.seeds / "store.toml"),
            master_key=master_key.hex(),
            # The demo serves plain HTTP on loopback; production runs behind TLS with Secure.
            cookie_secure=False,
        )
        floor = load_floor(self.seeds / "store.toml")
        secrets_by_scanner = self._prepare_database(
            master_key, floor.store_id, [s.id for s in floor.scanners]
        )
        self.app = create_app(self.config)
        self._runner = web.AppRunner(self.app, shutdown_timeout=3.0, access_log_class=AccessLogger)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        server = getattr(site, "_server", None)
        sockets = getattr(server, "sockets", None) or []
        actual_port = sockets[0].getsockname()[1] if sockets else self.port
        self.base_url = f"http://127.0.0.1:{actual_port}"
        await self._enroll_customers()
        for scanner_id, secret in secrets_by_scanner.items():
            await self._start_scanner(scanner_id, floor.store_id, secret)
        radio = RadioModel.for_floor(floor)
        start = time.time()
        # The simulation counts seconds from `start`; phones compute their EID at wall time.
        phones = [
            SimPhone(c.handle, c.walk, 0.0, _advert_at_wall_time(c, start))
            for c in self.customers.values()
        ]
        simulation = StoreSimulation(floor, radio, phones, seed=self.seed)
        self._sim_task = asyncio.create_task(
            self._simulate(simulation, start), name="bulle-demo-sim"
        )

    def _prepare_database(
        self, master_key: bytes, store_id: str, scanner_ids: list[str]
    ) -> dict[str, str]:
        now = time.time()
        secrets_by_scanner = {sid: secrets.token_urlsafe(32) for sid in scanner_ids}
        items = parse_stock_csv((self.seeds / "catalog.csv").read_text("utf-8"))
        db = Database(self.db_path)
        try:
            db.run_sync(lambda d: catalog.upsert_stock(d, store_id, items))
            db.run_sync(lambda d: staff.add_user(d, DEMO_USER, self.staff_password, "manager", now))
            wrapped = {
                sid: wrap_key(master_key, secret.encode(), scanner_aad(sid))
                for sid, secret in secrets_by_scanner.items()
            }

            def register(d: sqlite_utils.Database) -> None:
                for sid, blob in wrapped.items():
                    scanners.add_scanner(d, sid, store_id, blob, now)

            db.run_sync(register)
        finally:
            db.close()
        return secrets_by_scanner

    async def _enroll_customers(self) -> None:
        spec = tomllib.loads((self.seeds / "customers.toml").read_text("utf-8"))
        async with aiohttp.ClientSession(self.base_url) as http:
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
                        async with http.post(
                            "/api/v1/consents", json=body, headers=headers
                        ) as resp:
                            await _ok(resp)
                now = time.time()
                self.customers[entry["handle"]] = DemoCustomer(
                    handle=entry["handle"],
                    walk=entry["walk"],
                    customer_id=enrolled["customer_id"],
                    token=enrolled["token"],
                    identity_key=bytes.fromhex(enrolled["identity_key"]),
                    k=enrolled["rotation_exponent"],
                    clock_offset_s=enrolled["beacon_time"] - now,
                    consents=consents,
                )
        for entry in spec.get("passers_by", []):
            # Not enrolled anywhere: a key the store has never seen.
            self.customers[entry["handle"]] = DemoCustomer(
                handle=entry["handle"],
                walk=entry["walk"],
                customer_id=None,
                token=None,
                identity_key=new_identity_key(),
                k=9,
                clock_offset_s=12345.0,
                consents={},
            )

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

    async def _simulate(self, simulation: StoreSimulation, start: float) -> None:
        while True:
            now = time.time()
            heard = simulation.step(now - start)
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
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._log_handler is not None:
            logging.getLogger().removeHandler(self._log_handler)
            self._log_handler.close()


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
        try:
            await demo.start()
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
            raise StoreServerError(
                f"port {port} on 127.0.0.1 is already in use: stop the other program or pass"
                " --port (0 picks a free port)"
            ) from None
        out.write(
            f"Bulle demo store is running.\n"
            f"  Staff board:  {demo.base_url}/board\n"
            f"  Sign in as:   {DEMO_USER} / {demo.staff_password}   (demo account, this run only)\n"
            f"  Files:        {workdir} (database, scanner outboxes, logs)\n"
            f"Within about 20 s the board shows Sylvie's greeting card and a stock card for\n"
            f"the customer who asked for a stock check. Press Ctrl-C to stop.\n"
        )
        out.flush()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), duration_s)
    finally:
        await demo.stop()
        out.write("Demo stopped.\n")
    return 0
