"""End to end: real scanner daemons (simulated radio) -> real server -> live staff board.

One demo store per engine runs for the module: the store server on loopback, on SQLite and
on PostgreSQL (tests/pg.py), four `beacon-scanner run` processes fed by simulated phones. The
tests watch the board through its real WebSocket, then search every file the system wrote
(and, on PostgreSQL, every column of every table) for the identifiers of the customer who
gave no consent and of the passer-by. The Chromium board runs on SQLite only: what it shows
comes over the same WebSocket, and a browser costs seconds.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from lab.demo import DEMO_USER, DemoStore
from store_server.storage import database
from store_server.storage.database import close_handle, connect_target
from store_server.storage.pg import PgTarget
from store_server.storage.pg_cluster import Cluster
from tests import pg
from tests.support import require_component, screenshot_dir, wait_until

# The PostgreSQL demo runs in CI's own step (pytest -m pg_step), out of the default run's time
# budget (README, Testing).
pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.slow, pytest.mark.own_pg_step]

# The promise: both cards within 20 s of the demo coming up.
CARDS_WITHIN_S = 20.0


class Board:
    """A staff board: signed in over HTTP, listening on the live WebSocket."""

    def __init__(self) -> None:
        self.cards: dict[str, dict[str, Any]] = {}
        self.seen: list[dict[str, Any]] = []
        self.messages: list[dict[str, Any]] = []
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None

    async def open(self, base_url: str, password: str) -> None:
        # unsafe=True: the cookie jar must accept cookies from an IP address (127.0.0.1).
        self._session = aiohttp.ClientSession(base_url, cookie_jar=aiohttp.CookieJar(unsafe=True))
        async with self._session.post(
            "/login", data={"username": DEMO_USER, "password": password}, allow_redirects=False
        ) as resp:
            assert resp.status == 303, await resp.text()
        ws = await self._session.ws_connect("/ws/board")
        self._task = asyncio.create_task(self._listen(ws))

    async def _listen(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for msg in ws:
            data = json.loads(msg.data)
            self.messages.append(data)
            if data["type"] == "snapshot":
                self.cards = {c["id"]: c for c in data["cards"]}
                self.seen.extend(data["cards"])
            elif data["type"] == "card":
                self.cards[data["card"]["id"]] = data["card"]
                self.seen.append(data["card"])
            elif data["type"] in ("retract", "closed"):
                self.cards.pop(data["id"], None)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        if self._session is not None:
            await self._session.close()


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def demo(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[DemoStore]:
    store = DemoStore(workdir=tmp_path_factory.mktemp("e2e") / "demo", port=0, seed=11)
    await store.start()
    try:
        yield store
    finally:
        await store.stop()


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def board(demo: DemoStore) -> AsyncIterator[Board]:
    b = Board()
    await b.open(demo.base_url, demo.staff_password)
    yield b
    await b.close()


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def pg_demo(
    tmp_path_factory: pytest.TempPathFactory, pg_cluster: Cluster
) -> AsyncIterator[DemoStore]:
    """The same demo on a PostgreSQL database of the session's cluster."""
    name, url = pg.new_database(pg_cluster)
    store = DemoStore(
        workdir=tmp_path_factory.mktemp("e2e-pg") / "demo", port=0, seed=11, database_url=url
    )
    await store.start()
    try:
        yield store
    finally:
        await store.stop()
        pg_cluster.drop_database(name)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def pg_board(pg_demo: DemoStore) -> AsyncIterator[Board]:
    b = Board()
    await b.open(pg_demo.base_url, pg_demo.staff_password)
    yield b
    await b.close()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def run(request: pytest.FixtureRequest) -> tuple[DemoStore, Board]:
    """The demo and its board on each engine; both demos stay up for the whole module."""
    prefix = "" if request.param == "sqlite" else "pg_"
    return request.getfixturevalue(prefix + "demo"), request.getfixturevalue(prefix + "board")


def _rows(demo: DemoStore, sql: str, params: list[Any]) -> list[dict[str, Any]]:
    """A read of the demo's database, whichever the engine."""
    handle = connect_target(PgTarget(demo.database_url) if demo.database_url else demo.db_path)
    try:
        return database.rows(handle, sql, params)
    finally:
        close_handle(handle)


def _pickup_code(demo: DemoStore, handle: str) -> str:
    customer_id = demo.customers[handle].customer_id
    (row,) = _rows(demo, "SELECT pickup_code FROM customers WHERE id = ?", [customer_id])
    return str(row["pickup_code"])


async def test_greeting_and_stock_cards_appear_live(run: tuple[DemoStore, Board]) -> None:
    demo, board = run

    async def both_cards() -> bool:
        kinds = {c["kind"] for c in board.cards.values()}
        sylvie = any(c.get("text") == "Bonjour Sylvie" for c in board.cards.values())
        return sylvie and "stock" in kinds

    await wait_until(both_cards, CARDS_WITHIN_S, "a greeting card and a stock card on the board")
    greeting = next(c for c in board.cards.values() if c.get("text") == "Bonjour Sylvie")
    stock = next(c for c in board.cards.values() if c["kind"] == "stock")
    # Sylvie chose her first name, in French.
    assert greeting["text"] == "Bonjour Sylvie"
    assert greeting["named"] is True
    # Marc consented to stock checks only: item, count, aisle and a pickup code, no name.
    assert stock["name"] is None
    assert stock["pickup_code"] == _pickup_code(demo, "marc")
    assert stock["items"] == [
        {
            "sku": "GAS-GASKET-58",
            "name": {"fr": "Joint de groupe 58 mm", "en": "Group head gasket 58 mm"},
            "count": 12,
            "aisle": "3",
        }
    ]
    assert "Marc" not in json.dumps(stock)
    assert "Tremblay" not in json.dumps(stock)


async def test_the_iphone_customer_is_greeted_through_her_proof(
    run: tuple[DemoStore, Board],
) -> None:
    """Léa's iPhone broadcasts nothing: iOS wakes her app near the boxes' store beacon, the
    app checks in with the beacon it ranged, and her card comes from that proof."""
    demo, board = run

    async def lea_card() -> bool:
        return any(c.get("text") == "Hello Léa" for c in board.cards.values())

    await wait_until(lea_card, CARDS_WITHIN_S, "Léa's greeting card on the board")
    lea = demo.customers["lea"]
    assert lea.device == "iphone"
    assert "lea" not in demo.broadcast_eids  # nothing reached a scanner from her phone
    visits = _rows(demo, "SELECT via FROM visits WHERE customer_id = ?", [lea.customer_id])
    assert [r["via"] for r in visits] == ["beacon_proof"]


async def test_nobody_else_ever_appears(run: tuple[DemoStore, Board]) -> None:
    demo, board = run

    # Nadia walks in at t=4 s and stays two minutes; the passer-by passes every minute.
    # Wait until both have been in range of the scanners, then check the board's history.
    async def both_broadcast() -> bool:
        return (
            len(demo.broadcast_eids.get("nadia", ())) > 0
            and len(demo.broadcast_eids.get("passer-by", ())) > 0
        )

    await wait_until(both_broadcast, 30.0, "the non-consenting phones to be heard")

    # Run alone, this test must first let the three consenting customers be greeted.
    async def three_cards() -> bool:
        return len(board.seen) >= 3

    await wait_until(three_cards, CARDS_WITHIN_S, "the three consenting customers' cards")
    texts = [c.get("text") or c.get("pickup_code") for c in board.seen]
    assert len(board.seen) == 3, texts
    cards = _rows(demo, "SELECT DISTINCT customer_id FROM cards", [])
    assert {r["customer_id"] for r in cards} == {
        demo.customers["sylvie"].customer_id,
        demo.customers["marc"].customer_id,
        demo.customers["lea"].customer_id,
    }


def _needles(demo: DemoStore, handle: str) -> list[bytes]:
    needles: list[bytes] = []
    for eid in demo.broadcast_eids.get(handle, ()):
        needles += [eid, eid.hex().encode(), eid.hex().upper().encode()]
    for address in demo.broadcast_addresses.get(handle, ()):
        needles += [address.encode(), address.lower().encode(), address.replace(":", "").encode()]
    return needles


def _files(demo: DemoStore) -> list[Path]:
    return [p for p in demo.workdir.rglob("*") if p.is_file()]


async def test_no_trace_of_non_consenting_people(run: tuple[DemoStore, Board]) -> None:
    demo, _ = run
    await test_nobody_else_ever_appears(run)

    async def every_outbox() -> list[Path] | None:
        # A scanner process that a loaded machine started late has no outbox yet: wait for
        # all four, so that the search below covers every scanner.
        found = await asyncio.to_thread(_files, demo)
        return found if sum(p.name.endswith(".outbox.sqlite") for p in found) == 4 else None

    files = await wait_until(every_outbox, CARDS_WITHIN_S, "every scanner's outbox")
    names = {p.name for p in files}
    # The search covers the server database (SQLite: its file and its WAL; PostgreSQL: every
    # column of every table, as text), every outbox, every log.
    if demo.database_url:
        assert "store.sqlite" not in names
        values = "\n".join(await asyncio.to_thread(pg.every_value, demo.database_url))
    else:
        assert "store.sqlite" in names
        assert "store.sqlite-wal" in names
        values = ""
    assert sum(n.endswith(".outbox.sqlite") for n in names) == 4
    assert {"server.log", "s-entrance.log", "s-machines.log"} <= names
    for handle in ("nadia", "passer-by"):
        needles = _needles(demo, handle)
        assert needles, f"{handle} broadcast nothing: the test would prove nothing"
        for path in files:
            content = path.read_bytes()
            for needle in needles:
                assert needle not in content, f"{handle}'s identifier {needle!r} found in {path}"
        texts = [n.decode() for n in needles if n.isascii()]
        assert [n for n in texts if n in values] == [], f"{handle} in the database"
    # Nadia is enrolled (the app holds her key), so her account row exists; nothing else may
    # mention her: no visit, decision, card, message, access row, consent entry.
    nadia = demo.customers["nadia"].customer_id
    for table in ("visits", "decisions", "cards", "messages", "access_log", "consents"):
        sql = f"SELECT count(*) AS n FROM {table} WHERE customer_id = ?"
        count = _rows(demo, sql, [nadia])[0]["n"]
        assert count == 0, f"{table} mentions the non-consenting customer"


CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENSHOT = screenshot_dir() / "board.png"


@pytest.mark.browser
async def test_board_in_chromium_updates_live(demo: DemoStore) -> None:
    require_component("browser")
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            page = await browser.new_page(viewport={"width": 1024, "height": 640}, locale="fr-CA")
            navigations: list[str] = []
            page.on("framenavigated", lambda frame: navigations.append(frame.url))
            await page.goto(demo.base_url + "/board")
            assert page.url.endswith("/login")  # no session: sent to sign in
            await page.get_by_label("Nom d'utilisateur").fill(DEMO_USER)
            await page.get_by_label("Mot de passe").fill(demo.staff_password)
            await page.get_by_role("button", name="Se connecter").click()
            await page.wait_for_url("**/board")
            await page.wait_for_selector("#status.live", timeout=10_000)
            # A marker that a reload would wipe: the cards must arrive over the WebSocket.
            await page.evaluate("window.__bulleNoReload = 42")
            loads = len(navigations)
            greeting = page.locator(".card.greeting h2", has_text="Bonjour Sylvie")
            await greeting.first.wait_for(timeout=CARDS_WITHIN_S * 1000)
            # Léa's card: her iPhone checked in with the store beacon.
            lea = page.locator(".card.greeting h2", has_text="Hello Léa")
            await lea.first.wait_for(timeout=CARDS_WITHIN_S * 1000)
            await page.locator(".card.stock .code").first.wait_for(timeout=CARDS_WITHIN_S * 1000)
            assert await page.evaluate("window.__bulleNoReload") == 42
            assert len(navigations) == loads
            assert await page.locator(".card").count() == 3
            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            await page.screenshot(path=str(SCREENSHOT))
        finally:
            await browser.close()
    size = await asyncio.to_thread(lambda: SCREENSHOT.stat().st_size)
    assert size > 10_000  # a rendered page, not a blank one
