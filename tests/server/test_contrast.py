"""Text contrast on every staff and customer page, measured in real Chromium (WCAG 2.1 AA).

For each visible element that holds text, the script below takes the computed text colour and
the first opaque background behind it (walking up the ancestors), and computes the WCAG
contrast ratio. Normal text needs 4.5:1, large text (24 px, or 18.66 px bold) 3:1; disabled
controls are exempt, as in WCAG.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.server.conftest import Harness, bearer
from tests.server.test_dashboard_browser import (
    PASSWORD,
    _check_in,
    _customer,
    _sign_in,
    browser,  # noqa: F401  (the fixture)
)

pytestmark = pytest.mark.browser

CONTRAST_SCRIPT = """
() => {
  function rgba(value) {
    const m = value.match(/rgba?\\(([^)]+)\\)/);
    if (!m) return [0, 0, 0, 0];
    const p = m[1].split(",").map(Number);
    return [p[0], p[1], p[2], p.length > 3 ? p[3] : 1];
  }
  function luminance(c) {
    const f = c.slice(0, 3).map(v => {
      v /= 255;
      return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4);
    });
    return 0.2126 * f[0] + 0.7152 * f[1] + 0.0722 * f[2];
  }
  function background(el) {
    for (let node = el; node; node = node.parentElement) {
      const bg = rgba(getComputedStyle(node).backgroundColor);
      if (bg[3] >= 0.99) return bg;
    }
    return [255, 255, 255, 1];
  }
  const failures = [];
  let checked = 0;
  for (const el of document.querySelectorAll("body *")) {
    const own = Array.from(el.childNodes).some(n => n.nodeType === 3 && n.textContent.trim());
    if (!own) continue;
    const style = getComputedStyle(el);
    const box = el.getBoundingClientRect();
    if (style.visibility === "hidden" || style.display === "none" || box.width < 2 ||
        box.height < 2 || el.closest(".visually-hidden,[hidden]")) continue;
    // WCAG 1.4.3 exempts inactive controls (a disabled button) from the requirement.
    if (el.closest(":disabled")) continue;
    const fg = rgba(style.color);
    const bg = background(el);
    const opacity = parseFloat(style.opacity || "1");
    const a = fg[3] * opacity;
    const mixed = fg.slice(0, 3).map((v, i) => v * a + bg[i] * (1 - a));
    const l1 = luminance(mixed), l2 = luminance(bg);
    const ratio = (Math.max(l1, l2) + 0.05) / (Math.min(l1, l2) + 0.05);
    const size = parseFloat(style.fontSize);
    const bold = parseInt(style.fontWeight, 10) >= 700;
    const large = size >= 24 || (bold && size >= 18.66);
    const need = large ? 3 : 4.5;
    checked += 1;
    if (ratio + 1e-6 < need) {
      const text = el.textContent.trim().slice(0, 30);
      const name = `${el.tagName.toLowerCase()}.${el.className}`;
      failures.push(`${name} "${text}" ${ratio.toFixed(2)} < ${need}`);
    }
  }
  return {checked, failures};
}
"""


async def _contrast(page: Any) -> tuple[int, list[str]]:
    result = await page.evaluate(CONTRAST_SCRIPT)
    return int(result["checked"]), list(result["failures"])


async def test_text_contrast_on_staff_and_customer_pages(
    server: Harness,
    browser: Any,  # noqa: F811
) -> None:
    await server.add_staff("camille", PASSWORD, "manager")
    page = await _sign_in(browser, server, "camille", "fr-CA")
    base = f"http://127.0.0.1:{server.client.port}"
    token = await _customer(server, "Sylvie")
    await _check_in(server, token)
    await page.locator(".card.greeting").wait_for(timeout=5_000)
    report: dict[str, list[str]] = {}
    total = 0
    checked, failures = await _contrast(page)
    total += checked
    report["/board"] = failures
    paths = [
        "/manager/scanners",
        "/manager/floor",
        "/manager/zones",
        "/manager/calibration",
        "/manager/stock",
        "/manager/staff",
        "/manager/consent-log",
        "/manager/access-log",
        "/login?lang=en",
    ]
    for path in paths:
        await page.goto(base + path)
        checked, failures = await _contrast(page)
        total += checked
        report[path] = failures
    # The customer pages, with an enrolled app (its token in the page's storage).
    app = await browser.new_page()
    await app.goto(base + "/app/")
    await app.evaluate(f"localStorage.setItem('bulle_app_token', {token!r})")
    for path in ("/app/", "/app/consents", "/app/preferences", "/app/wishlist", "/app/my-data"):
        await app.goto(base + path)
        await app.wait_for_load_state("networkidle")
        checked, failures = await _contrast(app)
        total += checked
        report[path] = failures
    assert total > 100  # the script really looked at text
    assert {p: f for p, f in report.items() if f} == {}
    assert (await server.client.get("/api/v1/me", headers=bearer(token))).status == 200
