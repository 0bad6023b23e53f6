"""Two stores of one chain on one database: the real app twice, each with its own store file.

Store A is the demo store (`demo-store`); store B is the same floor under another store id.
Both servers share the database file and the master key, as a chain's servers do.
"""

from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp

from store_server.keyseal import generate_authority_key
from store_server.stock import parse_stock_csv
from store_server.storage import catalog as catalog_store
from tests.server.conftest import CATALOG_FILE, STORE_FILE, Harness, bearer, running_server

STORE_A = "demo-store"
STORE_B = "other-store"
PASSWORD = "correct horse battery"


_AUTHORITY_KEY: list[tuple[bytes, bytes]] = []


def authority_key() -> tuple[bytes, bytes]:
    """One authority key pair (private, public PEM) for the whole run (RSA-3072 takes a
    moment to generate)."""
    if not _AUTHORITY_KEY:
        _AUTHORITY_KEY.append(generate_authority_key())
    return _AUTHORITY_KEY[0]


def chain_settings(tmp_path: Path) -> dict[str, Any]:
    """Settings of a chain's store server (not the key authority)."""
    public = tmp_path / "authority.pub.pem"
    public.write_bytes(authority_key()[1])
    return {"chain_mode": True, "authority_public_key_file": str(public)}


def store_file(tmp_path: Path, store_id: str) -> Path:
    """The demo floor under another store id."""
    text = STORE_FILE.read_text("utf-8").replace('id = "demo-store"', f'id = "{store_id}"', 1)
    path = tmp_path / f"{store_id}.toml"
    path.write_text(text, "utf-8")
    return path


@contextlib.asynccontextmanager
async def two_stores(tmp_path: Path, **settings: Any) -> AsyncIterator[tuple[Harness, Harness]]:
    """Servers of stores A and B on one database file; ``settings`` apply to both."""
    shared = {
        "db_path": str(tmp_path / "chain.sqlite"),
        "master_key": secrets.token_hex(32),
        **settings,
    }
    async with running_server(tmp_path, **shared) as a:
        other = store_file(tmp_path, STORE_B)
        async with running_server(tmp_path, store_file=str(other), **shared) as b:
            items = parse_stock_csv(CATALOG_FILE.read_text("utf-8"))
            # Store B stocks less of everything than store A.
            for item in items:
                item["count"] = max(0, int(item["count"]) - 1)
            await b.service.db.run(lambda db: catalog_store.upsert_stock(db, STORE_B, items))
            yield a, b


async def grant(server: Harness, token: str, purpose: str, scope: str) -> None:
    resp = await server.client.post(
        "/api/v1/consents",
        json={"purpose": purpose, "text_hash": await server.text_hash(purpose), "scope": scope},
        headers=bearer(token),
    )
    assert resp.status == 201, await resp.text()


async def check_in(server: Harness, token: str) -> bool:
    resp = await server.client.post("/api/v1/check-in", json={}, headers=bearer(token))
    assert resp.status == 200
    return bool((await resp.json())["checked_in"])


async def staff_cookie(server: Harness, username: str, role: str = "manager") -> dict[str, str]:
    await server.add_staff(username, PASSWORD, role)
    return await server.session_cookie(username)


async def board_snapshot(server: Harness, headers: dict[str, str]) -> list[dict[str, Any]]:
    """The cards a board of this server receives when it connects."""
    ws = await server.client.ws_connect("/ws/board", headers=headers)
    try:
        message = await ws.receive_json(timeout=10)
    finally:
        await ws.close()
    assert message["type"] == "snapshot"
    cards = message["cards"]
    assert isinstance(cards, list)
    return cards


async def refresh(*servers: Harness) -> None:
    """Each server re-reads who consents at its store (what another server's write changed)."""
    for server in servers:
        await server.service.coordinator.refresh_consenting(time.time())


async def page(server: Harness, path: str, headers: dict[str, str]) -> str:
    resp = await server.client.get(path, headers=headers)
    assert resp.status == 200, path
    return await resp.text()


async def json_of(resp: aiohttp.ClientResponse) -> Any:
    assert resp.status == 200
    return await resp.json()
