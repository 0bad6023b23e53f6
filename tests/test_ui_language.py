"""Every page in real Chromium, in French and in English, on a tablet and on a phone.

Each page is filled with real data (cards on the board, consent and access logs, a customer's
records) and checked with tests/ui_language.py: no word of the other language and no raw code
in the page's language. On a phone, the page's heading and the start of its content are on
the first screen. Form errors sit beside their field, after the page's heading.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from store_server.storage import scanners as scanner_store
from tests.server.conftest import Harness, bearer, server
from tests.support import require_system_component, screenshot_dir, wait_until
from tests.ui_language import COLLECT_JS, ENGLISH_ONLY, FRENCH_ONLY, problems

__all__ = ["server"]  # the fixture, imported so that this top-level module can use it

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--disable-gpu", "--disable-background-networking", "--no-first-run"]
IMAGES = screenshot_dir()
PASSWORD = "correct horse battery"  # test accounts
SIZES = {"phone": {"width": 390, "height": 844}, "tablet": {"width": 768, "height": 1024}}
LOCALES = {"fr": "fr-CA", "en": "en-CA"}
# On a phone the heading must start in the top quarter of the first screen and the page's
# content must start in its upper half: navigation and banners may not push it further.
HEADING_TOP_SHARE = 0.25
CONTENT_TOP_SHARE = 0.5

# Staff pages (manager signed in): path -> the selector of the page's first content.
MANAGER_PAGES = {
    "/board": "#board .card",
    "/manager/scanners": ".table-wrap",
    "/manager/floor": "#floor-map",
    "/manager/zones": ".table-wrap",
    "/manager/calibration": "#walk",
    "/manager/stock": "form.inline-form",
    "/manager/staff": ".table-wrap",
    "/manager/consent-log": "#chain-status",
    "/manager/access-log": ".table-wrap",
    "/manager/no-such-page": ".error-page p",
}
# Customer app pages (enrolled phone): path -> the selector of the page's first content.
APP_PAGES = {
    "/app/": "#enrolled",
    "/app/consents": "#consents .consent",
    "/app/preferences": "#prefs",
    "/app/wishlist": "#catalog .item",
    "/app/my-data": ".actions",
}


def test_the_checker_catches_what_the_issue_saw() -> None:
    """The checker itself: each leak reported on the French pages is caught."""
    leaks = [
        "Erreur : count: must not be negative",
        "greeting",
        "grant",
        "shown",
        "audit_view",
        "created_at",
        "1733150000.5",
        '{"sku": "GAS-GASKET-58"}',
        "Consent given :",
        "404: Not Found",
    ]
    for leak in leaks:
        assert problems("fr", [["fr", leak]]), leak
    assert problems("en", [["en", "Accord donné : Être salué·e"]])
    assert problems("en", [["", "Allée 3"]])
    clean_fr = "Accord donné le 2 décembre 2026 à 14 h 05 : Vérification de stock, par application."
    clean_en = "Consent given on December 2, 2026 at 2:05 p.m.: Stock check, through the app."
    assert problems("fr", [["fr", clean_fr]]) == []
    assert problems("en", [["en", clean_en]]) == []
    # Text marked with the other language on purpose is not the page's language.
    assert problems("en", [["fr", "Bonjour Sylvie"]]) == []
    assert not ENGLISH_ONLY & FRENCH_ONLY


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    present = await asyncio.to_thread(CHROMIUM.exists)
    require_system_component("Chromium (/usr/bin/chromium)", present)
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        instance = await pw.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield instance
        finally:
            await instance.close()


async def _customer(server: Harness, name: str, purposes: list[str], wishlist: list[str]) -> str:
    token = await server.enroll()
    for purpose in purposes:
        assert (await server.grant(token, purpose)).status == 201
    prefs = {"display_name": name, "name_form": "first_name", "language": "fr"}
    resp = await server.client.put("/api/v1/preferences", json=prefs, headers=bearer(token))
    assert resp.status == 200
    if wishlist:
        resp = await server.client.put(
            "/api/v1/wishlist", json={"skus": wishlist}, headers=bearer(token)
        )
        assert resp.status == 200
    return token


async def _check_in(server: Harness, token: str) -> None:
    resp = await server.client.post(
        "/api/v1/check-in", json={"zone": "parts"}, headers=bearer(token)
    )
    assert await resp.json() == {"checked_in": True}


async def _store_with_data(server: Harness) -> str:
    """A manager, a staff member, scanners with a heartbeat, a greeting and a stock card,
    a withdrawn consent and an access log; returns the app token of the stock customer."""
    await server.add_staff("margot", PASSWORD, "manager")
    await server.add_staff("anna", PASSWORD)
    for spec in server.service.floor.scanners:
        await server.add_scanner(spec.id)
    heartbeat = {
        "adapter": "powered",
        "frames_seen_per_s": 41.0,
        "frames_passed_per_s": 1.5,
        "outbox_depth": 0,
        "outbox_dropped": 0,
        "version": "0.1.0",
    }
    now = server.service.clock()
    await server.service.db.run(
        lambda db: scanner_store.record_heartbeat(db, "s-entrance", heartbeat, now)
    )
    gone = await _customer(server, "Karim", ["greeting"], [])
    resp = await server.client.post("/api/v1/consents/withdraw", json={}, headers=bearer(gone))
    assert resp.status == 200
    return await _customer(server, "Éloïse", ["greeting", "stock_check"], ["GAS-GASKET-58"])


async def _sign_in(context: Any, base: str, username: str) -> Any:
    page = await context.new_page()
    await page.goto(base + "/login")
    await page.locator("#username").fill(username)
    await page.locator("#password").fill(PASSWORD)
    await page.locator("form.login button[type=submit]").click()
    await page.wait_for_url("**/board")
    return page


async def _check_page(page: Any, lang: str, where: str, content: str) -> list[str]:
    """Language at both sizes, then the first screen on a phone; returns what is wrong."""
    found: list[str] = []
    for size_name, size in SIZES.items():
        await page.set_viewport_size(size)
        collected = await page.evaluate(COLLECT_JS)
        assert collected["lang"] == lang, where
        seen = problems(lang, collected["segments"], collected["identifiers"])
        found += [f"{where} ({lang}, {size_name}): {p}" for p in seen]
    await page.set_viewport_size(SIZES["phone"])
    await page.evaluate("window.scrollTo(0, 0)")
    width = await page.evaluate("document.documentElement.scrollWidth")
    if width > SIZES["phone"]["width"]:
        found.append(f"{where} ({lang}): the page scrolls sideways on a phone ({width} px)")
    heading = await page.locator("h1").first.bounding_box()
    first = await page.locator(content).first.bounding_box()
    height = SIZES["phone"]["height"]
    if heading is None or heading["y"] > height * HEADING_TOP_SHARE:
        found.append(f"{where} ({lang}): heading at {heading} on a phone")
    if first is None or first["y"] > height * CONTENT_TOP_SHARE:
        found.append(f"{where} ({lang}): content {content} at {first} on a phone")
    return found


@pytest.mark.parametrize("lang", ["fr", "en"])
async def test_every_page_in_one_language(server: Harness, browser: Any, lang: str) -> None:
    await asyncio.to_thread(lambda: IMAGES.mkdir(parents=True, exist_ok=True))
    token = await _store_with_data(server)
    base = str(server.client.make_url("")).rstrip("/")
    context = await browser.new_context(viewport=SIZES["phone"], locale=LOCALES[lang])
    found: list[str] = []
    try:
        manager = await _sign_in(context, base, "margot")
        await manager.wait_for_selector("#status.live", timeout=5_000)
        await _check_in(server, token)
        await manager.locator("#board .card.stock").wait_for(timeout=5_000)
        await manager.locator("#board .card.greeting").wait_for(timeout=5_000)
        # The pickup code is read out as it is: no translator (nor the checker) reads its
        # letters as words ("BE4PTQ" is not English "be").
        assert await manager.locator("#board .card.stock .code[translate='no']").count() == 1
        # The access log gets a view of its own ("audit_view") on the second visit.
        await manager.goto(base + "/manager/access-log")
        for path, content in MANAGER_PAGES.items():
            response = await manager.goto(base + path)
            assert response is not None
            if path == "/board":
                await manager.locator("#board .card").first.wait_for(timeout=5_000)
            tab = manager.locator(".manager-nav [aria-current='page']")
            if await tab.count():
                # The current tab is in sight in the one-row navigation of a phone.
                await manager.wait_for_load_state("load")
                box = await tab.bounding_box()
                assert box is not None
                assert box["x"] >= 0, path
                assert box["x"] + box["width"] <= SIZES["phone"]["width"], path
            found += await _check_page(manager, lang, path, content)
            if lang == "fr" and path == "/manager/scanners":
                name = path.strip("/").replace("/", "-")
                await manager.screenshot(path=str(IMAGES / f"phone-{name}.png"))
        assert (await manager.goto(base + "/manager/no-such-page")).status == 404
        if lang == "fr":
            await manager.screenshot(path=str(IMAGES / "error-404-phone.png"))
        access = await manager.goto(base + "/manager/access-log")
        assert access is not None
        assert await manager.locator("tr[data-action='audit_view']").count() > 0
        assert await manager.locator("tr[data-action='shown']").count() > 0
        await manager.goto(base + "/manager/consent-log")
        assert await manager.locator("tr[data-action='withdraw']").count() == 1

        staff_context = await browser.new_context(viewport=SIZES["phone"], locale=LOCALES[lang])
        staff_page = await _sign_in(staff_context, base, "anna")
        forbidden = await staff_page.goto(base + "/manager/scanners")
        assert forbidden is not None
        assert forbidden.status == 403
        found += await _check_page(staff_page, lang, "403", ".error-page p")
        await staff_context.close()

        app = await context.new_page()
        await app.goto(base + "/app/")
        await app.evaluate("t => localStorage.setItem('bulle_app_token', t)", token)
        for path, content in APP_PAGES.items():
            await app.goto(base + path)
            await app.locator("body[data-ready='1']").wait_for(timeout=5_000)
            if path == "/app/":
                await app.locator(".message").first.wait_for(timeout=5_000)
                # The pickup code staff see on the stock card, shown to the customer too.
                [stock_card] = await server.rows("SELECT payload FROM cards WHERE kind = 'stock'")
                code = json.loads(stock_card["payload"])["pickup_code"]
                assert await app.locator("#pickup-code").inner_text() == code
                assert code in await app.locator(".message").first.inner_text()
            found += await _check_page(app, lang, path, content)
            if lang == "fr" and path == "/app/":
                await app.screenshot(path=str(IMAGES / "phone-app.png"))
        anonymous = await browser.new_context(viewport=SIZES["phone"], locale=LOCALES[lang])
        other = await anonymous.new_page()
        for path, content in {
            "/login": "form.login input",
            "/no-such-page": ".error-page p",
        }.items():
            await other.goto(base + path)
            found += await _check_page(other, lang, path, content)
        await anonymous.close()
    finally:
        await context.close()
    assert found == [], "\n".join(found)


async def test_turning_on_says_it_once(server: Harness, browser: Any) -> None:
    base = str(server.client.make_url("")).rstrip("/")
    context = await browser.new_context(viewport=SIZES["phone"], locale="en-CA")
    try:
        page = await context.new_page()
        await page.goto(base + "/app/")
        await page.get_by_role("button", name="Turn on").click()
        await page.locator("#key-issued").wait_for()
        await page.locator("body[data-ready='1']").wait_for()
        shown = await page.locator("body").inner_text()
        assert shown.count("A key was issued to this device.") == 1
    finally:
        await context.close()


async def _submit_without_browser_checks(page: Any, form: str) -> None:
    """Submit a form as a script or an old browser would, past the HTML constraints."""
    await page.evaluate("f => { document.querySelector(f).noValidate = true; }", form)


async def test_errors_sit_beside_their_field(server: Harness, browser: Any) -> None:
    await server.add_staff("margot", PASSWORD, "manager")
    await server.add_staff("anna", PASSWORD)
    base = str(server.client.make_url("")).rstrip("/")
    context = await browser.new_context(viewport=SIZES["phone"], locale="fr-CA")
    try:
        # A failed sign-in keeps the user name and says why in French.
        page = await context.new_page()
        await page.goto(base + "/login")
        await page.locator("#username").fill("margot")
        await page.locator("#password").fill("not the password")
        await page.locator("form.login button[type=submit]").click()
        await page.locator("#login-error").wait_for()
        assert await page.locator("#username").input_value() == "margot"
        assert "incorrect" in await page.locator("#login-error").inner_text()
        await page.locator("#password").fill(PASSWORD)
        await page.locator("form.login button[type=submit]").click()
        await page.wait_for_url("**/board")

        # A negative count: the error is in that row, beside the count, below the heading.
        await page.goto(base + "/manager/stock")
        row = page.locator("tr[data-sku='GAS-GASKET-58']")
        form_id = await row.locator("form").get_attribute("id")
        await _submit_without_browser_checks(page, f"#{form_id}")
        await row.get_by_label("Quantité GAS-GASKET-58").fill("-4")
        await row.get_by_role("button", name="Enregistrer GAS-GASKET-58").click()
        error = page.locator("tr[data-sku='GAS-GASKET-58'] .field-error")
        await error.wait_for()
        assert await error.inner_text() == "Le nombre ne peut pas être négatif."
        assert await row.get_by_label("Quantité GAS-GASKET-58").input_value() == "-4"
        count = page.locator("tr[data-sku='GAS-GASKET-58'] input[name=count]")
        assert await count.get_attribute("aria-invalid") == "true"
        heading = await page.locator("h1").bounding_box()
        box = await error.bounding_box()
        assert heading is not None
        assert box is not None
        assert box["y"] > heading["y"]
        assert await page.locator("main > .error, .manager-nav + .error").count() == 0
        await page.screenshot(path=str(IMAGES / "manager-stock-error.png"), full_page=True)

        # A stock file with a bad line: the line and the column, in French, beside the file.
        csv = b"sku,name_fr,name_en,count,aisle\nX-1,Un,One,-2,4\n"
        await page.locator("#file").set_input_files(
            {"name": "stock.csv", "mimeType": "text/csv", "buffer": csv}
        )
        await page.get_by_role("button", name="Importer").click()
        await page.locator("#file-error").wait_for()
        assert await page.locator("#file-error").inner_text() == (
            "Ligne 2, quantité : le nombre ne peut pas être négatif."
        )

        # An account name already taken: beside the name, and the name stays typed.
        await page.goto(base + "/manager/staff")
        await page.locator("#new-username").fill("anna")
        await page.locator("#new-password").fill(PASSWORD)
        await page.get_by_role("button", name="Ajouter").click()
        await page.locator("#new-username-error").wait_for()
        assert await page.locator("#new-username").input_value() == "anna"
        assert "déjà utilisé" in await page.locator("#new-username-error").inner_text()

        # Disabling an account asks first; nothing changes until the confirmation.
        await page.get_by_label("Désactiver anna").click()
        confirm = page.get_by_role("button", name="Oui, désactiver anna")
        await confirm.wait_for()
        assert await server.rows("SELECT disabled FROM staff_users WHERE username = 'anna'") == [
            {"disabled": 0}
        ]
        await confirm.click()
        await page.wait_for_url("**/manager/staff")
        await wait_until(
            lambda: _disabled(server, "anna"), 5.0, "the account to be disabled", interval=0.05
        )

        # Revoking a scanner asks first too.
        await server.add_scanner("s-entrance")
        await page.goto(base + "/manager/scanners")
        await page.get_by_label("Révoquer s-entrance").click()
        await page.get_by_role("button", name="Oui, révoquer s-entrance").click()
        await page.wait_for_url("**/manager/scanners")
        revoked = await server.rows("SELECT revoked_at FROM scanners WHERE id = 's-entrance'")
        assert revoked[0]["revoked_at"] is not None
    finally:
        await context.close()


async def _disabled(server: Harness, username: str) -> bool:
    rows = await server.rows("SELECT disabled FROM staff_users WHERE username = ?", [username])
    return bool(rows and rows[0]["disabled"])
