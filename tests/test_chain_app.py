"""The customer app's consent page at a chain's shop, in Chromium: a consent counts at this
shop unless the customer ticks "every shop of the chain" (never pre-ticked); a single shop's
page has no such box."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.server.chain_helpers import STORE_A, chain_settings, two_stores
from tests.server.conftest import running_server
from tests.test_customer_app import base_url, chromium, enroll_in_page, new_phone_page

pytestmark = pytest.mark.browser

EVERY_SHOP = "Aussi dans les autres boutiques de l'enseigne"


async def test_a_chain_shop_asks_where_a_consent_counts(tmp_path: Path) -> None:
    async with two_stores(tmp_path, **chain_settings(tmp_path)) as (a, _b), chromium() as browser:
        url = base_url(a)
        page = await new_phone_page(browser)
        await enroll_in_page(page, url)
        await page.goto(url + "/app/consents")
        await page.locator("body[data-ready='1']").wait_for()
        for purpose, every_shop in (("greeting", True), ("stock_check", False)):
            section = page.locator(f"section.consent[data-purpose='{purpose}']")
            wide = section.get_by_label(EVERY_SHOP)
            assert await wide.is_checked() is False
            await section.get_by_label("J'ai lu ce texte et je donne mon accord").check()
            if every_shop:
                await wide.check()
            await section.get_by_role("button", name="Donner mon accord").click()
            await section.get_by_role("button", name="Retirer mon accord").wait_for()
        held = await a.rows("SELECT purpose, scope, store_id FROM consents ORDER BY purpose")
        assert held == [
            {"purpose": "greeting", "scope": "chain", "store_id": STORE_A},
            {"purpose": "stock_check", "scope": "store", "store_id": STORE_A},
        ]
        assert page.bulle_errors == []
    shop = tmp_path / "shop"
    shop.mkdir()
    async with running_server(shop) as single, chromium() as browser:
        page = await new_phone_page(browser)
        await enroll_in_page(page, base_url(single))
        await page.goto(base_url(single) + "/app/consents")
        await page.locator("body[data-ready='1']").wait_for()
        assert await page.get_by_label(EVERY_SHOP).count() == 0
