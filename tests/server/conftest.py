"""Server test fixtures: the real application on a real SQLite file, served on 127.0.0.1.

No pytest-aiohttp plugin is installed: the async fixture starts and closes aiohttp's
TestServer / TestClient itself. Scanner requests are signed here independently of
store_server.signing (the docs/api.md recipe), so the tests pin the wire format.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from store_server import staff
from store_server.app import AccessLogger, create_app
from store_server.config import ServerConfig
from store_server.keys import SERVICE
from store_server.passwords import check_new_password, hash_password
from store_server.services.store import StoreServices
from store_server.stock import parse_stock_csv
from store_server.storage import catalog as catalog_store
from store_server.storage import database
from store_server.storage import scanners as scanner_store
from store_server.storage import staff as staff_store
from store_server.views.staff import cookie_name

REPO_ROOT = Path(__file__).resolve().parents[2]
STORE_FILE = REPO_ROOT / "seeds" / "store.toml"
CATALOG_FILE = REPO_ROOT / "seeds" / "catalog.csv"
STORE_ID = "demo-store"
# Long enough for a long poll to be answered on a loaded 2-core machine, short enough to fail fast.
WAIT_TIMEOUT_S = 10.0


@functools.cache
def account_password_hash(password: str) -> str:
    """The stored hash of a test account's password (argon2id, the production parameters),
    made once per password for the run: an account is a test's set-up, and each sign-in still
    verifies its hash in full. About 0.16 s of CPU per hash, once for each of the hundreds of
    accounts the suite makes."""
    return hash_password(password)


@dataclass(slots=True)
class Scanner:
    scanner_id: str
    secret: str


@dataclass(slots=True)
class Harness:
    app: web.Application
    client: TestClient[web.Request, web.Application]
    config: ServerConfig
    db_path: Path
    master_key: str

    @property
    def service(self) -> StoreServices:
        return self.app[SERVICE]

    async def add_scanner(self, scanner_id: str, store_id: str = STORE_ID) -> Scanner:
        secret = secrets.token_urlsafe(32)
        wrapped = self.service.scanners.wrap_scanner_secret(scanner_id, secret)
        now = time.time()
        await self.service.db.run(
            lambda db: scanner_store.add_scanner(db, scanner_id, store_id, wrapped, now)
        )
        return Scanner(scanner_id, secret)

    async def add_staff(self, username: str, password: str, role: str = "staff") -> None:
        """An account as `staff.add_user` makes it (the password policy, argon2id with the
        production parameters), its hash made once per password for the run
        (`account_password_hash`)."""
        check_new_password(password, username)
        password_hash = await asyncio.to_thread(account_password_hash, password)
        now = time.time()
        store_id = self.service.store_id
        await self.service.db.run(
            lambda db: staff_store.insert_user(db, username, password_hash, role, now, store_id)
        )

    async def session_cookie(self, username: str) -> dict[str, str]:
        """The cookie of a session opened for an account as a sign-in opens it, without the
        sign-in's password check (an argon2id verification, about 0.16 s of CPU): for tests
        that need a signed-in account, not a sign-in (those post to /login)."""
        store_id = self.service.store_id
        record = await self.service.db.run(lambda db: staff.password_record(db, username, store_id))
        assert record is not None, username
        session_id = await self.service.staff.open_session(record[0], self.config.session_ttl_s)
        return {"Cookie": f"{cookie_name(self.config.cookie_secure)}={session_id}"}

    async def rows(self, sql: str, params: list[Any] | None = None) -> list[dict[str, Any]]:
        return await self.service.db.run(lambda db: database.rows(db, sql, params or []))

    async def signed(
        self,
        scanner: Scanner,
        method: str,
        path_qs: str,
        body: bytes = b"",
        *,
        timestamp: int | None = None,
        nonce: str | None = None,
        secret: str | None = None,
    ) -> aiohttp.ClientResponse:
        headers = sign_headers(
            secret if secret is not None else scanner.secret,
            method,
            path_qs,
            scanner.scanner_id,
            body,
            timestamp=int(time.time()) if timestamp is None else timestamp,
            nonce=nonce or secrets.token_hex(16),
        )
        if body:
            headers["Content-Type"] = "application/json"
        return await self.client.request(method, path_qs, data=body or None, headers=headers)

    async def enroll(self, language: str = "fr") -> str:
        resp = await self.client.post("/api/v1/enroll", json={"language": language})
        assert resp.status == 201
        token = (await resp.json())["token"]
        assert isinstance(token, str)
        return token

    async def text_hash(self, purpose: str) -> str:
        resp = await self.client.get("/api/v1/consent-texts")
        texts = (await resp.json())["texts"]
        found = [t["hash"] for t in texts if t["purpose"] == purpose]
        assert len(found) == 1
        return str(found[0])

    async def grant(self, token: str, purpose: str) -> aiohttp.ClientResponse:
        return await self.client.post(
            "/api/v1/consents",
            json={"purpose": purpose, "text_hash": await self.text_hash(purpose)},
            headers=bearer(token),
        )


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def sign_headers(
    secret: str,
    method: str,
    path_qs: str,
    scanner_id: str,
    body: bytes,
    *,
    timestamp: int,
    nonce: str,
) -> dict[str, str]:
    digest = "sha-256=:" + base64.b64encode(hashlib.sha256(body).digest()).decode() + ":"
    text = "\n".join(
        ("bulle-v1", method.upper(), path_qs, scanner_id, str(timestamp), nonce, digest)
    )
    mac = hmac.new(secret.encode("utf-8"), text.encode("utf-8"), hashlib.sha256).digest()
    return {
        "X-Bulle-Scanner": scanner_id,
        "X-Bulle-Timestamp": str(timestamp),
        "X-Bulle-Nonce": nonce,
        "Content-Digest": digest,
        "X-Bulle-Signature": base64.b64encode(mac).decode(),
    }


def batch_body(
    scanner_id: str,
    *,
    store_id: str = STORE_ID,
    batch_id: str | None = None,
    windows: list[dict[str, Any]] | None = None,
) -> bytes:
    now = time.time()
    body = {
        "batch_id": batch_id or secrets.token_hex(16),
        "store_id": store_id,
        "scanner_id": scanner_id,
        "windows": windows
        if windows is not None
        else [
            {
                "id_type": "eid",
                "id": secrets.token_hex(8),
                "start": now - 1,
                "end": now,
                "count": 2,
                "rssi_max": -60,
                "rssi_median": -62.5,
                "tx_power": -20,
            }
        ],
    }
    return json.dumps(body, separators=(",", ":")).encode()


async def wait_until(predicate: Callable[[], bool], limit_s: float = WAIT_TIMEOUT_S) -> None:
    """Poll a condition on the loop until it holds; fail after `limit_s` seconds."""
    deadline = time.monotonic() + limit_s
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail("condition not reached in time")
        await asyncio.sleep(0.01)


async def error_of(resp: aiohttp.ClientResponse) -> dict[str, Any]:
    """The error object of the JSON envelope, checking its shape."""
    assert resp.content_type == "application/json"
    data = await resp.json()
    assert set(data) == {"error"}
    error = data["error"]
    assert isinstance(error, dict)
    assert {"code", "message"} <= set(error) <= {"code", "message", "field"}
    assert isinstance(error["message"], str)
    assert error["message"]
    return error


@contextlib.asynccontextmanager
async def running_server(tmp_path: Path, **settings: Any) -> AsyncIterator[Harness]:
    """The real app on 127.0.0.1 with a fresh database and the demo catalog; `settings`
    override ServerConfig fields (e.g. legacy_ibeacon=True)."""
    values: dict[str, Any] = {
        "db_path": str(tmp_path / "s.sqlite"),
        "store_file": str(STORE_FILE),
        "master_key": secrets.token_hex(32),
        "cookie_secure": False,
        # Tests enroll many customers from 127.0.0.1 within seconds; the limit's own tests
        # (tests/test_hardening.py) pass the default back.
        "enroll_rate_limit": "1000/second",
    }
    config = ServerConfig(**{**values, **settings})
    db_path, master_key = Path(config.db_path), config.master_key
    app = create_app(config, base_dir=REPO_ROOT)
    client: TestClient[web.Request, web.Application] = TestClient(
        TestServer(app, host="127.0.0.1"), cookie_jar=aiohttp.DummyCookieJar()
    )
    # The server's own access log, as `store-server serve` and the demo run it.
    await client.server.start_server(access_log_class=AccessLogger)
    await client.start_server()
    harness = Harness(app, client, config, db_path, master_key)
    items = parse_stock_csv(CATALOG_FILE.read_text("utf-8"))
    await harness.service.db.run(lambda db: catalog_store.upsert_stock(db, STORE_ID, items))
    try:
        yield harness
    finally:
        await client.close()


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Harness]:
    async with running_server(tmp_path) as harness:
        yield harness


def engine_settings(engine: str, request: pytest.FixtureRequest) -> dict[str, Any]:
    """`running_server` settings for the test's engine (tests/conftest.py ``engine``): none
    for SQLite, the URL of a fresh database for PostgreSQL."""
    if engine == "sqlite":
        return {}
    return {"database_url": request.getfixturevalue("pg_url")}


@pytest.fixture
async def engine_server(
    engine: str, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[Harness]:
    """`server` on each engine: a module runs its tests on both with
    ``server = engine_server`` style overrides (see test_storage.py)."""
    async with running_server(tmp_path, **engine_settings(engine, request)) as harness:
        yield harness


Serve = Callable[..., contextlib.AbstractAsyncContextManager[Harness]]


@pytest.fixture
def serve(engine: str, tmp_path: Path, request: pytest.FixtureRequest) -> Serve:
    """`running_server` on the test's engine, for tests that need their own settings:
    ``async with serve(retention_s=1) as server``. On PostgreSQL every call of one test uses
    the same database, as every call on SQLite uses the same file (a restart sees what the
    previous server wrote)."""
    on_engine = engine_settings(engine, request)

    def start(**settings: Any) -> contextlib.AbstractAsyncContextManager[Harness]:
        return running_server(tmp_path, **{**on_engine, **settings})

    return start
