"""The manager's floor map in real Chromium at tablet size: a customer's arrival shows in the
count of their zone, their withdrawal takes it back, and a box that starts to heartbeat turns
from stale to active, without reloading the page."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from store_server.eid import compute_eid
from store_server.storage import scanners as scanner_store
from tests.server.conftest import Harness, batch_body, bearer
from tests.server.test_calibration_walk import BATCHES, ROUNDS, _window
from tests.support import require_component, screenshot_dir
from tests.ui_language import COLLECT_JS, problems

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--disable-gpu", "--disable-background-networking", "--no-first-run"]
IMAGES = screenshot_dir()
PASSWORD = "correct horse battery"
TABLET = {"width": 768, "height": 1024}
# The page polls every second; generous for a loaded machine.
CHANGE_WITHIN_MS = 10_000


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


async def test_the_map_counts_an_arrival_live(server: Harness, browser: Any) -> None:
    await server.add_staff("margot", PASSWORD, "manager")
    for spec in server.service.floor.scanners:
        await server.add_scanner(spec.id)
    token = await server.enroll()
    assert (await server.grant(token, "greeting")).status == 201

    context = await browser.new_context(viewport=TABLET, locale="fr-CA")
    try:
        page = await context.new_page()
        problems: list[str] = []
        page.on("console", lambda msg: problems.append(msg.text) if msg.type == "error" else None)
        page.on("pageerror", lambda exc: problems.append(str(exc)))
        base = f"http://127.0.0.1:{server.client.port}"
        await page.goto(base + "/login")
        await page.locator("#username").fill("margot")
        await page.locator("#password").fill(PASSWORD)
        await page.locator("form.login button[type=submit]").click()
        await page.wait_for_url("**/board")
        await page.goto(base + "/manager/floor")
        await page.locator("#status.active").wait_for(timeout=CHANGE_WITHIN_MS)
        count = page.locator("text.zone-count[data-zone='parts']")
        row = page.locator("#zone-counts tr[data-zone='parts'] .count")
        assert await count.text_content() == "0"
        assert await page.locator("text.zone-label").first.text_content() == "Entrée"
        box = page.locator("circle[data-box='s-parts']")
        assert await box.get_attribute("data-state") == "stale"
        # The whole map is in sight on a tablet, without scrolling sideways.
        drawn = await page.locator("#floor-map svg").bounding_box()
        assert drawn is not None
        assert drawn["x"] >= 0
        assert drawn["x"] + drawn["width"] <= TABLET["width"]
        assert await page.evaluate("document.documentElement.scrollWidth") <= TABLET["width"]

        # A customer arrives (the app's "I'm here" at the parts counter).
        resp = await server.client.post(
            "/api/v1/check-in", json={"zone": "parts"}, headers=bearer(token)
        )
        assert await resp.json() == {"checked_in": True}
        await page.wait_for_function(
            "() => document.querySelector(\"text.zone-count[data-zone='parts']\")"
            ".textContent === '1'",
            timeout=CHANGE_WITHIN_MS,
        )
        assert await row.text_content() == "1"
        # A box heartbeats: stale -> active.
        heartbeat = {"adapter": "powered", "frames_seen_per_s": 3.0, "frames_passed_per_s": 1.0}
        now = time.time()
        await server.service.db.run(
            lambda db: scanner_store.record_heartbeat(db, "s-parts", heartbeat, now)
        )
        await page.wait_for_function(
            "() => document.querySelector(\"circle[data-box='s-parts']\").dataset.state"
            " === 'active'",
            timeout=CHANGE_WITHIN_MS,
        )
        await page.screenshot(path=str(IMAGES / "manager-floor-map-tablet.png"))
        # The customer withdraws: gone from the count.
        resp = await server.client.post("/api/v1/consents/withdraw", json={}, headers=bearer(token))
        assert resp.status == 200
        await page.wait_for_function(
            "() => document.querySelector(\"text.zone-count[data-zone='parts']\")"
            ".textContent === '0'",
            timeout=CHANGE_WITHIN_MS,
        )
        assert problems == []
    finally:
        await context.close()


async def test_the_calibration_walk_page_in_both_languages(server: Harness, browser: Any) -> None:
    """The walk driven from the page: start, the phone joins, "I am here", the bar fills live
    and the step is marked done; the page stays in one language throughout."""
    await server.add_staff("margot", PASSWORD, "manager")
    scanners = {
        spec.id: await server.add_scanner(spec.id) for spec in server.service.floor.scanners
    }
    resp = await server.client.post("/api/v1/enroll", json={"language": "fr"})
    enrolled = await resp.json()
    token = enrolled["token"]
    assert (await server.grant(token, "greeting")).status == 201
    eid = compute_eid(
        bytes.fromhex(enrolled["identity_key"]),
        enrolled["rotation_exponent"],
        enrolled["beacon_time"],
    )
    found: list[str] = []
    for lang, locale in (("fr", "fr-CA"), ("en", "en-CA")):
        context = await browser.new_context(viewport=TABLET, locale=locale)
        try:
            page = await context.new_page()
            base = f"http://127.0.0.1:{server.client.port}"
            await page.goto(base + "/login")
            await page.locator("#username").fill("margot")
            await page.locator("#password").fill(PASSWORD)
            await page.locator("form.login button[type=submit]").click()
            await page.wait_for_url("**/board")
            await page.goto(base + "/manager/calibration")
            found += await _language(page, lang, "no walk")
            await page.locator("#walk-start").click()
            code = await page.locator("#walk-code").text_content()
            assert code is not None
            found += await _language(page, lang, "code shown")
            resp = await server.client.post(
                "/api/v1/calibration/join", json={"code": code}, headers=bearer(token)
            )
            assert await resp.json() == {"joined": True}
            await page.locator("#walk-joined").wait_for(timeout=CHANGE_WITHIN_MS)  # reloaded
            here = "Je suis ici : Caisse" if lang == "fr" else "I am here: Checkout"
            await page.get_by_role("button", name=here).click()
            await page.locator("li.current[data-zone='checkout']").wait_for()
            for _ in range(ROUNDS):
                for box_id, scanner in scanners.items():
                    body = batch_body(box_id, windows=[_window(eid, -70.0)])
                    assert (await server.signed(scanner, "POST", BATCHES, body)).status == 200
            # The step is full: the page reloads by itself and marks the zone done.
            await page.locator("li.done[data-zone='checkout']").wait_for(timeout=CHANGE_WITHIN_MS)
            found += await _language(page, lang, "step done")
            if lang == "fr":
                await page.screenshot(path=str(IMAGES / "manager-calibration-tablet.png"))
            await page.locator("#walk-end").click()
            await page.locator("#walk-start").wait_for()
        finally:
            await context.close()
    assert found == [], "\n".join(found)


async def _language(page: Any, lang: str, where: str) -> list[str]:
    collected = await page.evaluate(COLLECT_JS)
    assert collected["lang"] == lang
    seen = problems(lang, collected["segments"], collected["identifiers"])
    return [f"{where} ({lang}): {p}" for p in seen]
