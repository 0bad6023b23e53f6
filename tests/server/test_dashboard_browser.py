"""The staff dashboard in real Chromium: live cards, sync across tablets, resync, manager pages.

The server is the real application on 127.0.0.1 (tests/server/conftest.py); arrivals are driven
by the customer API's check-in, the fastest real path to a card.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from store_server.storage import scanners as scanner_store
from tests.server.conftest import Harness, bearer
from tests.support import require_component, screenshot_dir

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
PASSWORD = "correct horse battery"
# The promise: a card on the board within 1 s of an arrival.
# Generous wait for a pushed card (the board never reloads: `window.__noReload`); the under-1 s
# latency target is measured by bench/dashboard, not asserted on a shared machine.
CARD_WITHIN_S = 10.0
# Reconnection and resync after a drop: the board retries after 0.5-1 s.
RESYNC_WITHIN_MS = 5_000


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    require_component("browser")
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        instance = await pw.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield instance
        finally:
            await instance.close()


async def _sign_in(browser: Any, server: Harness, username: str, locale: str) -> Any:
    context = await browser.new_context(viewport={"width": 1024, "height": 700}, locale=locale)
    page = await context.new_page()
    violations: list[str] = []
    page.on(
        "console",
        lambda msg: violations.append(msg.text) if "Content Security Policy" in msg.text else None,
    )
    page.csp_violations = violations
    base = f"http://127.0.0.1:{server.client.port}"
    await page.goto(base + "/board")
    assert page.url.endswith("/login")
    await page.locator("#username").fill(username)
    await page.locator("#password").fill(PASSWORD)
    await page.locator("form.login button[type=submit]").click()
    await page.wait_for_url("**/board")
    await page.wait_for_selector("#status.live", timeout=5_000)
    return page


async def _customer(server: Harness, name: str) -> str:
    token = await server.enroll()
    assert (await server.grant(token, "greeting")).status == 201
    resp = await server.client.put(
        "/api/v1/preferences",
        json={"display_name": name, "name_form": "first_name", "language": "fr"},
        headers=bearer(token),
    )
    assert resp.status == 200
    return token


async def _check_in(server: Harness, token: str) -> None:
    resp = await server.client.post(
        "/api/v1/check-in", json={"zone": "parts"}, headers=bearer(token)
    )
    assert await resp.json() == {"checked_in": True}


def _card(page: Any, name: str) -> Any:
    return page.locator(".card.greeting", has_text=name)


async def test_board_live_sync_withdrawal_and_resync(server: Harness, browser: Any) -> None:
    await server.add_staff("anna", PASSWORD)
    await server.add_staff("bruno", PASSWORD)
    page_a = await _sign_in(browser, server, "anna", "fr-CA")
    page_b = await _sign_in(browser, server, "bruno", "en-CA")
    await page_a.evaluate("window.__noReload = 1")

    # An arrival: the card is pushed to both tablets, in the customer's form and language.
    sylvie = await _customer(server, "Sylvie")
    await _check_in(server, sylvie)
    await _card(page_a, "Bonjour Sylvie").wait_for(timeout=CARD_WITHIN_S * 1000)
    await _card(page_b, "Bonjour Sylvie").wait_for(timeout=CARD_WITHIN_S * 1000)
    assert "Pièces et accessoires" in await _card(page_a, "Sylvie").inner_text()
    assert "Parts and accessories" in await _card(page_b, "Sylvie").inner_text()

    # Acknowledged on tablet A: gone from tablet B too.
    await _card(page_a, "Sylvie").get_by_role("button", name="Salué·e").click()
    await _card(page_b, "Sylvie").wait_for(state="detached", timeout=2_000)
    await _card(page_a, "Sylvie").wait_for(state="detached", timeout=2_000)
    closed = await server.rows("SELECT state, acked_by FROM cards")
    assert closed == [{"state": "greeted", "acked_by": "anna"}]

    # A withdrawal retracts the card everywhere, leaving no trace of the name on the page.
    karim = await _customer(server, "Karim")
    await _check_in(server, karim)
    await _card(page_a, "Karim").wait_for(timeout=CARD_WITHIN_S * 1000)
    await _card(page_b, "Karim").wait_for(timeout=CARD_WITHIN_S * 1000)
    resp = await server.client.post("/api/v1/consents/withdraw", json={}, headers=bearer(karim))
    assert resp.status == 200
    for page in (page_a, page_b):
        await _card(page, "Karim").wait_for(state="detached", timeout=CARD_WITHIN_S * 1000)
    for page in (page_a, page_b):
        assert "Karim" not in await page.content()

    # A dropped connection: a card created while the boards are away appears after resync.
    hub = server.service.hub
    assert hub.disconnect_all() == 2
    lea = await _customer(server, "Léa")
    await _check_in(server, lea)
    assert len(hub) == 0, "the card must be created while no board is connected"
    for page in (page_a, page_b):
        await _card(page, "Bonjour Léa").wait_for(timeout=RESYNC_WITHIN_MS)
        await page.wait_for_selector("#status.live", timeout=RESYNC_WITHIN_MS)
    # The live updates never reloaded the page.
    assert await page_a.evaluate("window.__noReload") == 1
    for page in (page_a, page_b):
        assert page.csp_violations == []


async def test_manager_pages_and_staff_is_refused(server: Harness, browser: Any) -> None:
    await server.add_staff("samir", PASSWORD)
    await server.add_staff("margot", PASSWORD, "manager")
    for spec in server.service.floor.scanners:
        await server.add_scanner(spec.id)
    now = server.service.clock()
    heartbeat = {
        "adapter": "powered",
        "frames_seen_per_s": 41.0,
        "frames_passed_per_s": 1.5,
        "outbox_depth": 0,
        "outbox_dropped": 0,
        "version": "0.1.0",
    }
    await server.service.db.run(
        lambda db: scanner_store.record_heartbeat(db, "s-entrance", heartbeat, now)
    )
    token = await _customer(server, "Sylvie")
    await _check_in(server, token)
    base = f"http://127.0.0.1:{server.client.port}"

    staff_page = await _sign_in(browser, server, "samir", "fr-CA")
    for path in ("/manager", "/manager/scanners", "/manager/access-log"):
        response = await staff_page.goto(base + path)
        assert response is not None
        assert response.status == 403
        assert "réservée aux gérant·es" in await staff_page.content()
    assert await staff_page.locator("a[href='/manager']").count() == 0

    page = await _sign_in(browser, server, "margot", "en-CA")
    await page.get_by_role("link", name="Manager").click()
    await page.wait_for_url("**/manager/scanners")
    # Register a scanner through the form (real origin check): the secret is shown once.
    await page.get_by_label("Scanner id").fill("s-backroom")
    await page.get_by_role("button", name="Register").click()
    secret = await page.locator("#scanner-secret").text_content()
    assert secret is not None
    assert len(secret) >= 40
    await asyncio.to_thread(lambda: IMAGES.mkdir(parents=True, exist_ok=True))
    await page.screenshot(path=str(IMAGES / "manager-scanners.png"), full_page=True)
    await page.goto(base + "/manager/scanners")
    assert secret not in await page.content()

    shots = {
        "/manager/zones": "manager-zones.png",
        "/manager/stock": "manager-stock.png",
        "/manager/staff": "manager-staff.png",
        "/manager/consent-log": "manager-consent.png",
        "/manager/access-log": "manager-access.png",
    }
    for path, image in shots.items():
        response = await page.goto(base + path)
        assert response is not None
        assert response.status == 200
        # Every form control has a label (accessibility), and the page heading is there.
        unlabeled = await page.evaluate(
            "Array.from(document.querySelectorAll('input, select'))"
            ".filter(e => e.type !== 'hidden' && e.labels.length === 0).map(e => e.name)"
        )
        assert unlabeled == []
        assert await page.locator("h1").count() == 1
        await page.screenshot(path=str(IMAGES / image), full_page=True)

    # Edit a stock count through the form.
    row = page.locator("tr[data-sku='GAS-GASKET-58']")
    await page.goto(base + "/manager/stock")
    await row.get_by_label("Count GAS-GASKET-58").fill("23")
    await row.get_by_role("button", name="Save GAS-GASKET-58").click()
    await page.wait_for_url("**/manager/stock")
    stock = await server.rows("SELECT count FROM stock WHERE sku = 'GAS-GASKET-58'")
    assert stock == [{"count": 23}]
    assert page.csp_violations == []

    sizes = await asyncio.to_thread(
        lambda: [
            (IMAGES / name).stat().st_size for name in (*shots.values(), "manager-scanners.png")
        ]
    )
    assert min(sizes) > 10_000  # rendered pages, not blank ones
