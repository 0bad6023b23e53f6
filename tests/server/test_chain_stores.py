"""Two stores of a chain on one database, through the real views: what one store's pages,
boards and API show never includes another store's visits, cards, messages, scanners or
access log; consents count where their scope says; the customer's own data covers both."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

import pytest

from tests.server.chain_helpers import (
    PASSWORD,
    STORE_A,
    STORE_B,
    board_snapshot,
    chain_settings,
    check_in,
    grant,
    json_of,
    page,
    refresh,
    staff_cookie,
    two_stores,
)
from tests.server.conftest import Harness, batch_body, bearer, engine_settings, running_server

# Every test runs with two single shops' servers sharing a file, and with a chain's servers
# (chain mode: temporary keys only).
pytestmark = pytest.mark.parametrize("chain", [False, True], ids=["shops", "chain"])


@pytest.fixture
def on_engine(engine: str, request: pytest.FixtureRequest) -> dict[str, Any]:
    """Every test also runs on both storage engines (tests/conftest.py ``engine``)."""
    return engine_settings(engine, request)


def _settings(tmp_path: Path, chain: bool, on_engine: dict[str, Any]) -> dict[str, Any]:
    return {**(chain_settings(tmp_path) if chain else {}), **on_engine}


async def _customer(server: Harness, name: str) -> str:
    token = await server.enroll()
    resp = await server.client.put(
        "/api/v1/preferences",
        json={"display_name": name, "name_form": "first_name"},
        headers=bearer(token),
    )
    assert resp.status in (200, 204)
    return token


async def test_store_scoped_consent_greets_at_its_store_only(
    tmp_path: Path, chain: bool, on_engine: dict[str, Any]
) -> None:
    async with two_stores(tmp_path, **_settings(tmp_path, chain, on_engine)) as (a, b):
        token = await _customer(a, "Sylvie")
        await grant(a, token, "greeting", "store")
        await refresh(a, b)
        assert await check_in(a, token)
        assert not await check_in(b, token)  # given at A, for A only
        assert await a.rows("SELECT store_id FROM cards") == [{"store_id": STORE_A}]
        # Resolver, allowlist: B does not even hold the customer.
        customer = (await a.rows("SELECT id FROM customers"))[0]["id"]
        assert customer in a.service.coordinator.resolver
        assert customer not in b.service.coordinator.resolver
        # With a chain-wide stock check besides: B recognises them, for that purpose only.
        await grant(a, token, "stock_check", "chain")
        resp = await a.client.put(
            "/api/v1/wishlist", json={"skus": ["GAS-GASKET-58"]}, headers=bearer(token)
        )
        assert resp.status in (200, 204)
        await refresh(b)
        b.service.coordinator.check_ins.clear()  # the one-per-10-s limit: not under test
        assert await check_in(b, token)
        kinds = await b.rows("SELECT kind FROM cards WHERE store_id = ?", [STORE_B])
        assert kinds == [{"kind": "stock"}]


async def test_store_scoped_consents_at_two_stores_both_count(
    tmp_path: Path, chain: bool, on_engine: dict[str, Any]
) -> None:
    async with two_stores(tmp_path, **_settings(tmp_path, chain, on_engine)) as (a, b):
        token = await _customer(a, "Sylvie")
        await grant(a, token, "greeting", "store")
        await grant(b, token, "greeting", "store")  # the one given at A stays
        await refresh(a, b)
        assert await check_in(a, token)
        assert await check_in(b, token)
        data = await json_of(await b.client.get("/api/v1/me", headers=bearer(token)))
        held = sorted((c["scope"], c["store_id"], c["active"]) for c in data["consents"])
        assert held == [("store", STORE_A, True), ("store", STORE_B, True)]
        # "My consents at this store" (what the app shows): the one given here only.
        for server, store_id in ((a, STORE_A), (b, STORE_B)):
            here = await json_of(await server.client.get("/api/v1/consents", headers=bearer(token)))
            assert [c["store_id"] for c in here["consents"]] == [store_id]
        # Chain-wide replaces both; one withdrawal, at either store, ends it everywhere.
        await grant(a, token, "greeting", "chain")
        data = await json_of(await a.client.get("/api/v1/me", headers=bearer(token)))
        assert [(c["scope"], c["store_id"]) for c in data["consents"]] == [("chain", STORE_A)]
        resp = await b.client.post(
            "/api/v1/consents/withdraw", json={"purposes": ["greeting"]}, headers=bearer(token)
        )
        assert resp.status == 200
        await refresh(a, b)
        assert len(a.service.coordinator.resolver) == len(b.service.coordinator.resolver) == 0


async def test_chain_scoped_consent_greets_at_every_store(
    tmp_path: Path, chain: bool, on_engine: dict[str, Any]
) -> None:
    async with two_stores(tmp_path, **_settings(tmp_path, chain, on_engine)) as (a, b):
        token = await _customer(b, "Sylvie")
        await grant(b, token, "greeting", "chain")  # given at B, for the whole chain
        await refresh(a, b)
        assert await check_in(a, token)
        assert await check_in(b, token)
        stores = [r["store_id"] for r in await a.rows("SELECT store_id FROM cards ORDER BY 1")]
        assert stores == [STORE_A, STORE_B]
        # A withdrawal at A counts everywhere: both cards retracted, nobody holds them.
        resp = await a.client.post(
            "/api/v1/consents/withdraw", json={"purposes": ["greeting"]}, headers=bearer(token)
        )
        assert resp.status == 200
        await refresh(b)
        assert await a.rows("SELECT id FROM cards WHERE state = 'open'") == []
        assert len(b.service.coordinator.resolver) == 0


async def test_a_store_never_shows_another_stores_records(
    tmp_path: Path, chain: bool, on_engine: dict[str, Any]
) -> None:
    async with two_stores(tmp_path, **_settings(tmp_path, chain, on_engine)) as (a, b):
        token = await _customer(a, "Sylvie")
        for purpose in ("greeting", "stock_check"):
            await grant(a, token, purpose, "chain")
        resp = await a.client.put(
            "/api/v1/wishlist", json={"skus": ["GAS-GASKET-58"]}, headers=bearer(token)
        )
        assert resp.status in (200, 204)
        await refresh(a, b)
        await a.add_scanner("s-a-door", STORE_A)
        await b.add_scanner("s-b-door", STORE_B)
        assert await check_in(a, token)
        assert await check_in(b, token)
        cards_a = await a.rows("SELECT id FROM cards WHERE store_id = ?", [STORE_A])
        cards_b = await b.rows("SELECT id FROM cards WHERE store_id = ?", [STORE_B])
        assert cards_a
        assert cards_b
        ids_a = {r["id"] for r in cards_a}
        ids_b = {r["id"] for r in cards_b}

        # The boards: each store's snapshot has its own cards only (and logs them as shown).
        staff_a = await staff_cookie(a, "margot")
        staff_b = await staff_cookie(b, "bruno")
        assert {c["id"] for c in await board_snapshot(a, staff_a)} == ids_a
        assert {c["id"] for c in await board_snapshot(b, staff_b)} == ids_b
        # The stock card at B counts B's stock (one fewer than A's).
        counts = {
            c["kind"]: c.get("items") for c in await board_snapshot(b, staff_b) if "items" in c
        }
        stock_b = {i["sku"]: i["count"] for i in counts["stock"]}
        stock_a = {
            i["sku"]: i["count"]
            for c in await board_snapshot(a, staff_a)
            if c["kind"] == "stock"
            for i in c["items"]
        }
        assert stock_b["GAS-GASKET-58"] == stock_a["GAS-GASKET-58"] - 1

        # A's staff cannot close B's card, even knowing its id.
        some_b = next(iter(ids_b))
        await a.service.board.close_card(some_b, "margot", "greeted")
        assert (await a.rows("SELECT state FROM cards WHERE id = ?", [some_b]))[0] == {
            "state": "open"
        }

        # The manager pages: access log and scanners of this store only.
        log_a = await page(a, "/manager/access-log", staff_a)
        log_b = await page(b, "/manager/access-log", staff_b)
        assert all(card in log_a for card in ids_a)
        assert not any(card in log_a for card in ids_b)
        assert all(card in log_b for card in ids_b)
        assert not any(card in log_b for card in ids_a)
        assert "bruno" not in log_a
        assert "margot" not in log_b
        # Staff accounts: a store's account signs in on its own store's servers only, its
        # session is no session at another store, and the staff page lists this store's.
        resp = await b.client.post(
            "/login", data={"username": "margot", "password": PASSWORD}, allow_redirects=False
        )
        assert resp.status != 303
        board = await b.client.get("/board", headers=staff_a, allow_redirects=False)
        assert board.status == 303
        assert board.headers["Location"].startswith("/login")
        accounts_b = await page(b, "/manager/staff", staff_b)
        assert "bruno" in accounts_b
        assert "margot" not in accounts_b
        scanners_a = await page(a, "/manager/scanners", staff_a)
        assert "s-a-door" in scanners_a
        assert "s-b-door" not in scanners_a
        # ... nor revoke it.
        resp = await a.client.post(
            "/manager/scanners/s-b-door/revoke", headers=staff_a, allow_redirects=False
        )
        assert resp.status in (303, 404)
        revoked = await a.rows("SELECT revoked_at FROM scanners WHERE id = 's-b-door'")
        assert revoked == [{"revoked_at": None}]

        # The app's messages: each store's own.
        messages_a = (await json_of(await a.client.get("/api/v1/messages", headers=bearer(token))))[
            "messages"
        ]
        messages_b = (await json_of(await b.client.get("/api/v1/messages", headers=bearer(token))))[
            "messages"
        ]
        assert len(messages_a) == len(messages_b) == 1
        assert messages_a[0]["id"] != messages_b[0]["id"]

        # The customer's own data, asked at either store, covers both, store by store.
        for server in (a, b):
            data = await json_of(await server.client.get("/api/v1/me", headers=bearer(token)))
            assert sorted(v["store_id"] for v in data["visits"]) == [STORE_A, STORE_B]
            assert {c["id"] for c in data["cards"]} == ids_a | ids_b
            assert {m["store_id"] for m in data["messages"]} == {STORE_A, STORE_B}
            assert {e["store_id"] for e in data["access_log"]} == {STORE_A, STORE_B}

        # Erasure through B: gone at both stores.
        resp = await b.client.delete("/api/v1/me", headers=bearer(token))
        assert resp.status == 200
        await refresh(a)
        assert await a.rows("SELECT id FROM cards") == []
        assert len(a.service.coordinator.resolver) == 0


async def test_two_servers_of_one_store_share_the_greeting_cooldown(
    tmp_path: Path, chain: bool, on_engine: dict[str, Any]
) -> None:
    """Failover: a second server of the same store does not greet again within the cooldown
    the first one started, nor take a batch the first one already took."""
    async with two_stores(tmp_path, **_settings(tmp_path, chain, on_engine)) as (a, b):
        other = tmp_path / "a2"
        other.mkdir()
        async with running_server(
            other,
            db_path=a.config.db_path,
            master_key=a.master_key,
            **_settings(tmp_path, chain, on_engine),
        ) as a2:
            token = await _customer(a, "Sylvie")
            await grant(a, token, "greeting", "store")
            await refresh(a2)
            assert await check_in(a, token)
            assert await check_in(a2, token)  # recognised, but not greeted twice
            greetings = await a.rows("SELECT id FROM cards WHERE kind = 'greeting'")
            assert len(greetings) == 1
            # The same batch sent to both servers of the store is taken once.
            scanner = await a.add_scanner("s-a-door", STORE_A)
            body = batch_body(scanner.scanner_id, batch_id=secrets.token_hex(16))
            first = await a.signed(scanner, "POST", "/api/scanner/v1/batches", body)
            again = await a2.signed(scanner, "POST", "/api/scanner/v1/batches", body)
            assert first.status == again.status == 200
            assert (await first.json()).get("duplicate") is not True
            assert (await again.json())["duplicate"] is True
        del b
