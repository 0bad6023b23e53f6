"""The customer app's reference web client (/app/) in real Chromium, against the real server.

The pages talk only to the public customer API. A simulated phone broadcasts the EIDs of the
identity the page enrolled; the scanner's real allowlist, aggregator, outbox and uploader carry
them to the server; a staff board listens on the real WebSocket.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from scanner.aggregate import Aggregator
from scanner.allowlist import Allowlist, AllowlistUpdate
from scanner.frames import EDDYSTONE_SERVICE_UUID, parse_advertisement
from scanner.outbox import Outbox
from scanner.uploader import ServerUnreachableError, Uploader
from store_server.eid import beacon_time, clock_offset, compute_eid
from store_server.policy import Preferences, greeting_text, shown_name
from store_server.storage import customers as customer_store
from tests.server.conftest import STORE_ID, Harness, server
from tests.support import require_component, screenshot_dir, wait_until

__all__ = ["server"]  # the fixture, imported so that this top-level module can use it

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
IMAGES = screenshot_dir()
# A phone next to the interior scanner of the coffee machines (well above its -72 dBm floor).
NEAR_RSSI_DBM = -58
# The phone advertises four times a second (a typical Android "balanced" interval).
ADVERT_INTERVAL_S = 0.25
# Generous bounds for a loaded 2-core machine; the design's target for retraction is 1 s.
CARD_WITHIN_S = 15.0
RETRACT_WITHIN_S = 5.0
STAFF_USER = "anne"
STAFF_PASSWORD = "correct horse battery staple"  # a test account
PHONE_SCANNER = "s-machines"


@dataclass(slots=True)
class Board:
    """A staff board: signed in over HTTP, listening on the live WebSocket."""

    cards: dict[str, dict[str, Any]] = field(default_factory=dict)
    retracted: list[str] = field(default_factory=list)
    task: asyncio.Task[None] | None = None
    session: aiohttp.ClientSession | None = None

    async def open(self, base_url: str) -> None:
        # unsafe=True: the cookie jar must accept cookies from an IP address (127.0.0.1).
        self.session = aiohttp.ClientSession(base_url, cookie_jar=aiohttp.CookieJar(unsafe=True))
        async with self.session.post(
            "/login",
            data={"username": STAFF_USER, "password": STAFF_PASSWORD},
            allow_redirects=False,
        ) as resp:
            assert resp.status == 303, await resp.text()
        ws = await self.session.ws_connect("/ws/board")
        first = await ws.receive_json()
        assert first["type"] == "snapshot"
        self.task = asyncio.create_task(self._listen(ws))

    async def _listen(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for msg in ws:
            data = json.loads(msg.data)
            if data["type"] == "card":
                self.cards[data["card"]["id"]] = data["card"]
            elif data["type"] in ("retract", "closed"):
                self.cards.pop(data["id"], None)
                self.retracted.append(data["id"])

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        if self.session is not None:
            await self.session.close()


class Phone:
    """A simulated phone broadcasting the EIDs of an enrolled identity, heard by one scanner.

    The scanner side is the real one: allowlist filter, 1 s aggregation, outbox, signed upload.
    """

    def __init__(self, enrolled: dict[str, Any], uploader: Uploader, outbox: Outbox) -> None:
        self.key = bytes.fromhex(enrolled["identity_key"])
        self.k = int(enrolled["rotation_exponent"])
        self.offset = clock_offset(int(enrolled["beacon_time"]), time.time())
        self.uploader = uploader
        self.outbox = outbox
        self.allowlist = Allowlist()
        self.allowlist_version: int | None = None
        self.aggregator = Aggregator(window_s=1.0)
        self.reported = 0
        self.heard = 0

    def advert(self, now: float) -> dict[str, bytes]:
        eid = compute_eid(self.key, self.k, beacon_time(now, self.offset))
        return {EDDYSTONE_SERVICE_UUID: bytes([0x30, 0xEC]) + eid}

    async def sync_allowlist(self, wait_s: float = 0) -> None:
        data = await self.uploader.fetch_allowlist(self.allowlist_version, wait_s)
        update = AllowlistUpdate.from_wire(data)
        self.allowlist.apply(update, time.time())
        self.allowlist_version = update.version

    def matches_now(self) -> bool:
        now = time.time()
        return self.allowlist.match(parse_advertisement({}, self.advert(now)), now) is not None

    async def advertised_for(self, seconds: float) -> None:
        """Wait until the phone advertised for `seconds` more (the walk must be running)."""
        target = self.heard + round(seconds / ADVERT_INTERVAL_S)
        await wait_until(_truthy(lambda: self.heard >= target), 10 * seconds, "advertisements")

    async def walk(self) -> None:
        """Stand near the scanner: advertise, filter, aggregate and upload until cancelled."""
        while True:
            now = time.time()
            self.heard += 1
            sighting = self.allowlist.match(parse_advertisement({}, self.advert(now)), now)
            if sighting is not None:
                self.aggregator.add(sighting, NEAR_RSSI_DBM, -20, now)
            windows = self.aggregator.flush(now)
            if windows:
                self.outbox.put(windows, now)
                pending = self.outbox.next_batch(100, now)
                if pending is not None:
                    try:
                        await self.uploader.post_batch(pending)
                    except ServerUnreachableError:
                        # A dropped keep-alive connection: the batch stays in the outbox and
                        # goes with the next window, as the scanner daemon does.
                        pass
                    else:
                        self.outbox.ack(pending.batch_id)
                        self.reported += len(pending.windows)
            await asyncio.sleep(ADVERT_INTERVAL_S)


@contextlib.asynccontextmanager
async def chromium() -> AsyncIterator[Any]:
    require_component("browser")
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield browser
        finally:
            await browser.close()


async def new_phone_page(browser: Any) -> Any:
    page = await browser.new_page(
        viewport={"width": 412, "height": 915}, locale="fr-CA", device_scale_factor=1
    )
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on(
        "response",
        lambda r: (
            errors.append(f"{r.status} {r.url}")
            if r.status >= 400 and not r.url.endswith("/favicon.ico")
            else None
        ),
    )
    page.bulle_errors = errors
    return page


def base_url(server: Harness) -> str:
    return str(server.client.make_url("")).rstrip("/")


async def enroll_in_page(page: Any, url: str) -> dict[str, Any]:
    """Tap "Activer" on the home page; return the enroll answer the page received."""
    answers: list[Any] = []

    async def on_response(response: Any) -> None:
        if response.url.endswith("/api/v1/enroll"):
            answers.append(await response.json())

    page.on("response", on_response)
    await page.goto(url + "/app/")
    await page.get_by_role("button", name="Activer").click()
    await page.locator("#key-issued").wait_for()
    await wait_until(_truthy(lambda: answers), 5.0, "the enroll answer")
    enrolled: dict[str, Any] = answers[0]
    shown = await page.content()
    assert enrolled["identity_key"] not in shown
    assert enrolled["token"] not in shown
    stored = await page.evaluate("localStorage.getItem('bulle_app_token')")
    assert stored == enrolled["token"]
    return enrolled


def _truthy(get: Any) -> Any:
    async def probe() -> Any:
        return get()

    return probe


async def grant_in_page(page: Any, url: str, purpose: str, screenshot: Path | None = None) -> None:
    await page.goto(url + "/app/consents")
    await page.locator("body[data-ready='1']").wait_for()
    section = page.locator(f"section.consent[data-purpose='{purpose}']")
    box = section.get_by_role("checkbox")
    assert await box.is_checked() is False
    grant = section.get_by_role("button", name="Donner mon accord")
    assert await grant.is_disabled()
    if screenshot is not None:
        await page.screenshot(path=str(screenshot), full_page=True)
    await box.check()
    await grant.click()
    await section.get_by_role("button", name="Retirer mon accord").wait_for()


# -- the preview and the policy agree ------------------------------------------------------

PREVIEW_CASES: list[dict[str, Any]] = [
    {"display_name": "Sylvie", "title": None, "name_form": "first_name", "language": "fr"},
    {"display_name": "Bédard", "title": "Madame", "name_form": "title_last_name", "language": "fr"},
    {"display_name": "Bédard", "title": "Mrs", "name_form": "title_last_name", "language": "en"},
    {"display_name": "Bédard", "title": None, "name_form": "title_last_name", "language": "fr"},
    {"display_name": "Bédard", "title": "", "name_form": "title_last_name", "language": "en"},
    {"display_name": "Sylvie", "title": "Madame", "name_form": "no_name", "language": "fr"},
    {"display_name": None, "title": None, "name_form": "first_name", "language": "en"},
    {"display_name": None, "title": "Mx", "name_form": "title_last_name", "language": "fr"},
    {"display_name": "", "title": "", "name_form": "first_name", "language": "fr"},
    {"display_name": "Marie-Ève", "title": None, "name_form": "first_name", "language": "en"},
    {"display_name": "O'Brien", "title": "Mr.", "name_form": "title_last_name", "language": "en"},
    {
        "display_name": "Saint-Laurent Beauchemin",
        "title": "M.",
        "name_form": "title_last_name",
        "language": "fr",
    },
    {"display_name": None, "title": None, "name_form": "no_name", "language": "en"},
]


async def test_preview_agrees_with_policy(server: Harness) -> None:
    async with chromium() as browser:
        page = await new_phone_page(browser)
        await page.goto(base_url(server) + "/app/preferences")
        got = await page.evaluate(
            "cases => cases.map(c => window.BullePreview.greeting(c))", PREVIEW_CASES
        )
        assert page.bulle_errors == []
    assert len(got) == len(PREVIEW_CASES)
    for case, js in zip(PREVIEW_CASES, got, strict=True):
        prefs = Preferences(**case)
        assert js == {"text": greeting_text(prefs), "named": shown_name(prefs) is not None}, case


async def test_preview_updates_live_while_typing(server: Harness) -> None:
    async with chromium() as browser:
        page = await new_phone_page(browser)
        url = base_url(server)
        await enroll_in_page(page, url)
        await page.goto(url + "/app/preferences")
        await page.locator("body[data-ready='1']").wait_for()
        text = page.locator("#preview-text")
        assert await text.text_content() == "Bonjour"
        assert await page.locator("#preview-no-name").is_visible()
        await page.get_by_label("Mon prénom").check()
        await page.get_by_label("Nom à utiliser").fill("Sylvie")
        assert await text.text_content() == "Bonjour Sylvie"
        await page.get_by_label("English").check()
        assert await text.text_content() == "Hello Sylvie"
        await page.get_by_label("Aucun nom").check()
        assert await text.text_content() == "Hello"
        assert await page.locator("#preview-no-name").is_visible()
        assert page.bulle_errors == []


# -- the whole story: opt in, be greeted, withdraw -------------------------------------------


async def test_opt_in_greeted_in_chosen_form_then_withdraw(server: Harness, tmp_path: Path) -> None:
    scanner = await server.add_scanner(PHONE_SCANNER)
    await server.add_staff(STAFF_USER, STAFF_PASSWORD)
    url = base_url(server)
    board = Board()
    await board.open(url)
    outbox = Outbox(tmp_path / "o.sqlite", max_rows=1000, max_bytes=1 << 20, max_age_s=600)
    walk: asyncio.Task[None] | None = None
    try:
        async with chromium() as browser, aiohttp.ClientSession() as session:
            page = await new_phone_page(browser)
            enrolled = await enroll_in_page(page, url)
            uploader = Uploader(
                session,
                server_url=url,
                store_id=STORE_ID,
                scanner_id=scanner.scanner_id,
                secret=scanner.secret,
            )
            phone = Phone(enrolled, uploader, outbox)
            await phone.sync_allowlist()
            assert not phone.matches_now()  # enrolled without consent: dropped at the scanner

            IMAGES.mkdir(parents=True, exist_ok=True)
            await grant_in_page(page, url, "greeting", IMAGES / "app-consent.png")

            await page.goto(url + "/app/preferences")
            await page.locator("body[data-ready='1']").wait_for()
            await page.get_by_label("Titre et nom").check()
            await page.get_by_label("Nom à utiliser").fill("Bédard")
            await page.get_by_label("Titre (Madame, Monsieur, Mx…)").fill("Madame")
            await page.get_by_label("Français").check()
            assert await page.locator("#preview-text").text_content() == "Bonjour Madame Bédard"
            assert await page.locator("#preview-no-name").is_hidden()
            await page.screenshot(path=str(IMAGES / "app-preview.png"), full_page=True)
            await page.get_by_role("button", name="Enregistrer").click()
            await page.get_by_text("Enregistré.").wait_for()

            # The phone walks in: the scanner now lets its EID through and reports it.
            await phone.sync_allowlist()
            assert phone.matches_now()
            walk = asyncio.create_task(phone.walk())

            async def greeting_card() -> dict[str, Any] | None:
                assert not walk.done(), walk.exception()
                return next((c for c in board.cards.values() if c["kind"] == "greeting"), None)

            card = await wait_until(greeting_card, CARD_WITHIN_S, "the greeting card")
            assert card["text"] == "Bonjour Madame Bédard"
            assert card["named"] is True
            # The card can reach the board before the upload's answer reaches the phone.
            await wait_until(_truthy(lambda: phone.reported > 0), CARD_WITHIN_S, "the upload's ack")

            # Withdraw in one tap, in the page.
            await page.goto(url + "/app/consents")
            await page.locator("body[data-ready='1']").wait_for()
            section = page.locator("section.consent[data-purpose='greeting']")
            tapped = time.monotonic()
            await section.get_by_role("button", name="Retirer mon accord").click()

            async def retracted() -> bool:
                return card["id"] not in board.cards and card["id"] in board.retracted

            await wait_until(retracted, RETRACT_WITHIN_S, "the card to be retracted")
            took = time.monotonic() - tapped
            await page.get_by_text("Accord retiré").wait_for()
            assert await section.get_by_role("checkbox").is_checked() is False

            # The scanner's long poll delivers the removal; the phone is no longer reported.
            await phone.sync_allowlist(wait_s=1)
            assert not phone.matches_now()
            # A window opened before the removal may still close and upload once; after that,
            # nothing more: the phone keeps advertising and the scanner drops every frame.
            await phone.advertised_for(2.0)
            reported = phone.reported
            resolved = server.service.scanners.frames_resolved
            await phone.advertised_for(2.0)
            assert phone.reported == reported
            assert len(phone.aggregator) == 0
            assert server.service.scanners.frames_resolved == resolved
            assert board.cards == {}
            assert page.bulle_errors == []
            print(f"withdrawal tap -> card retracted on the board: {took * 1000:.0f} ms")
    finally:
        if walk is not None:
            walk.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await walk
        outbox.close()
        await board.close()


# -- transparency: my data, export, erase ---------------------------------------------------


def _has_route(server: Harness, path: str, method: str) -> bool:
    return any(
        r.method == method and r.resource is not None and r.resource.canonical == path
        for r in server.app.router.routes()
    )


async def test_my_data_export_and_erase(server: Harness) -> None:
    if not (
        _has_route(server, "/api/v1/me", "GET")
        and _has_route(server, "/api/v1/me/export", "GET")
        and _has_route(server, "/api/v1/me", "DELETE")
    ):
        pytest.skip("needs /api/v1/me")
    await server.add_staff(STAFF_USER, STAFF_PASSWORD)
    url = base_url(server)
    board = Board()
    await board.open(url)
    try:
        async with chromium() as browser:
            page = await new_phone_page(browser)
            enrolled = await enroll_in_page(page, url)
            await grant_in_page(page, url, "greeting")
            await grant_in_page(page, url, "stock_check")
            customer_id = await server.service.customers.customer_for_token(enrolled["token"])
            [consent_hash] = [
                r["hash"]
                for r in await server.rows("SELECT hash, purpose FROM consent_texts")
                if r["purpose"] == "stock_check"
            ]

            await page.goto(url + "/app/preferences")
            await page.locator("body[data-ready='1']").wait_for()
            await page.get_by_label("Mon prénom").check()
            await page.get_by_label("Nom à utiliser").fill("Éloïse")
            await page.get_by_role("button", name="Enregistrer").click()
            await page.get_by_text("Enregistré.").wait_for()

            await page.goto(url + "/app/wishlist")
            await page.locator("body[data-ready='1']").wait_for()
            await page.locator("input[value='GAS-GASKET-58']").check()
            await page.get_by_role("button", name="Enregistrer").click()
            await page.get_by_text("Enregistré.").wait_for()

            # "I'm here": a visit, a decision, two cards seen by the staff board, a message.
            await page.goto(url + "/app/")
            await page.get_by_role("button", name="Je suis là").click()
            await page.get_by_text("la boutique sait que vous êtes là").wait_for()
            await wait_until(_truthy(lambda: len(board.cards) == 2), 10.0, "two cards")
            await page.locator(".message").first.wait_for()
            card_ids = sorted(board.cards)

            await page.goto(url + "/app/my-data")
            await page.locator("body[data-ready='1']").wait_for()
            IMAGES.mkdir(parents=True, exist_ok=True)
            await page.screenshot(path=str(IMAGES / "app-mydata.png"), full_page=True)
            shown = await page.locator("#records").text_content()
            assert "Éloïse" in shown
            assert "GAS-GASKET-58" in shown

            async with page.expect_download() as download_info:
                await page.get_by_role("button", name="Télécharger mes données (JSON)").click()
            download = await download_info.value
            saved = Path(await download.path())
            exported = json.loads(await asyncio.to_thread(saved.read_text, "utf-8"))
            text = json.dumps(exported, ensure_ascii=False)
            pickup = (
                await server.rows("SELECT pickup_code FROM customers WHERE id = ?", [customer_id])
            )[0]["pickup_code"]
            # Every record: account, consents with their text, preferences, wishlist, visit,
            # decision, the cards and the access log of the staff member who saw them, messages.
            for needle in (
                customer_id,
                consent_hash,
                "Éloïse",
                "GAS-GASKET-58",
                STAFF_USER,
                "greeting:consented",
                pickup,
                "allée 3",
                *card_ids,
            ):
                assert needle in text, needle

            # Erase.
            await page.get_by_role("button", name="Effacer mon compte").click()
            await page.get_by_role("button", name="Oui, tout effacer définitivement").click()
            await page.locator("body[data-erased='1']").wait_for()
            assert await page.evaluate("localStorage.getItem('bulle_app_token')") is None
            assert page.bulle_errors == []

        token_hash = customer_store.token_hash(enrolled["token"])
        needles = [customer_id, token_hash, pickup, "Éloïse"]
        files = [server.db_path, server.db_path.with_name(server.db_path.name + "-wal")]
        assert files[1].exists()
        for path in files:
            content = await asyncio.to_thread(path.read_bytes)
            for needle in needles:
                assert needle.encode() not in content, f"{needle!r} still in {path.name}"
        resp = await server.client.get(
            "/api/v1/messages", headers={"Authorization": f"Bearer {enrolled['token']}"}
        )
        assert resp.status == 401
    finally:
        await board.close()
