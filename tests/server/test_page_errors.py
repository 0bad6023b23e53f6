"""Error pages and form errors in the page's language; names instead of stored codes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from store_server.i18n import STRINGS
from store_server.i18n_names import NAMES, REASONS, RECORDS, field_error, name_of
from tests.server.conftest import Harness
from tests.server.test_manager import MANAGER, PASSWORD, session, text

# The PostgreSQL variants run in CI's own step (pytest -m pg_step), outside the default
# run's time budget: neither privacy- nor security-critical (README, Testing).
pytestmark = pytest.mark.own_pg_step


def test_field_error_keeps_the_line_and_speaks_the_page_language() -> None:
    error = field_error("fr", "line 12, count", "negative", "file")
    assert error.field == "file"
    assert error.text == "Ligne 12, quantité : le nombre ne peut pas être négatif."
    english = field_error("en", "line 12, count", "negative", "file")
    assert english.text == "Line 12, count: the number cannot be negative."
    assert field_error("fr", "count", "whole_number", "file").field == "count"
    # An error without a reason the table knows still gives a sentence of the page's language.
    for reason in (None, "something_new"):
        unknown = field_error("fr", None, reason, "username")
        assert unknown.field == "username"
        assert unknown.text == "Valeur refusée."


_RAISED_REASON = re.compile(r'reason="(\w+)"')
_GIVEN_REASON = re.compile(r'field_error\([^,]+, [^,]+, "(\w+)"')


def test_every_reason_the_server_gives_has_a_sentence() -> None:
    """Form errors are translated by their reason key, never by the wording of the message:
    each key the server's code uses is in the table, in both languages."""
    package = Path(__file__).resolve().parents[2] / "store_server"
    used: set[str] = set()
    for path in package.rglob("*.py"):
        source = path.read_text("utf-8")
        used |= set(_RAISED_REASON.findall(source)) | set(_GIVEN_REASON.findall(source))
    assert len(used) >= 15, used  # the pattern still finds them
    assert used <= set(REASONS["fr"]) - {"other"}, used - set(REASONS["fr"])


def test_every_name_exists_in_both_languages() -> None:
    for table in (NAMES, RECORDS, REASONS):
        assert set(table["fr"]) == set(table["en"])
    for kind in NAMES["fr"]:
        assert set(NAMES["fr"][kind]) == set(NAMES["en"][kind])
    assert name_of("fr", "access_action", "audit_view") == "consultation du journal des accès"
    assert name_of("en", "purpose", "stock_check") == "Stock check"
    assert name_of("fr", "purpose", "a_new_purpose") == "autre"
    assert name_of("en", "channel", None) == "—"


@pytest.mark.parametrize("lang", ["fr", "en"])
async def test_missing_page_is_a_styled_page_in_its_language(server: Harness, lang: str) -> None:
    resp = await server.client.get(f"/no-such-page?lang={lang}")
    assert resp.status == 404
    page = await text(resp)
    assert f'<html lang="{lang}">' in page
    assert STRINGS[lang]["error_404_title"] in page
    assert 'href="/board"' in page
    assert 'href="/app/"' in page
    assert "404: Not Found" not in page
    assert resp.headers["Content-Security-Policy"]
    # The API keeps its JSON errors.
    api = await server.client.get("/api/v1/no-such-route")
    assert api.status == 404
    assert (await api.json())["error"]["code"] == "not_found"


async def test_wrong_method_on_a_page_is_a_styled_page(server: Harness) -> None:
    resp = await server.client.put("/login?lang=fr", data=b"")
    assert resp.status == 405
    assert STRINGS["fr"]["error_405_title"] in await text(resp)


async def test_calibration_error_sits_in_its_row(engine_server: Harness) -> None:
    server = engine_server  # on both engines: the calibration is stored
    await server.add_staff(MANAGER, PASSWORD, "manager")
    headers = await session(server, MANAGER)
    resp = await server.client.post(
        "/manager/zones/s-parts/calibration?lang=fr",
        data={"rssi_offset_db": "45"},
        headers=headers,
    )
    assert resp.status == 422
    page = await text(resp)
    row = re.search(r'<tr data-scanner="s-parts">.*?</tr>', page, re.S)
    assert row is not None
    assert "entre -30 et 30 dB" in row.group(0)
    assert 'aria-invalid="true"' in row.group(0)
    assert "between" not in page
    assert page.count('class="field-error"') == 1
