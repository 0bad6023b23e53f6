"""Manager pages: scanners, zones, stock, staff accounts, consent audit, access log."""

from __future__ import annotations

import re

import aiohttp
import pytest

from store_server.i18n import STRINGS
from store_server.services.store import StoreServices
from store_server.storage import scanners as scanner_store
from store_server.views.staff import cookie_name
from tests.server.conftest import Harness, Scanner, bearer


@pytest.fixture
def server(engine_server: Harness) -> Harness:
    """Every test of this module runs on SQLite and on PostgreSQL (tests/pg.py)."""
    return engine_server


COOKIE = cookie_name(False)
MANAGER, STAFF = "margot", "samir"
PASSWORD = "correct horse battery"


async def session(server: Harness, username: str) -> dict[str, str]:
    resp = await server.client.post(
        "/login", data={"username": username, "password": PASSWORD}, allow_redirects=False
    )
    assert resp.status == 303
    morsel = resp.cookies.get(COOKIE)
    assert morsel is not None
    return {"Cookie": f"{COOKIE}={morsel.value}"}


@pytest.fixture
async def manager(server: Harness) -> dict[str, str]:
    await server.add_staff(MANAGER, PASSWORD, "manager")
    return await server.session_cookie(MANAGER)


async def text(resp: aiohttp.ClientResponse) -> str:
    assert resp.content_type == "text/html"
    return await resp.text()


def test_strings_have_the_same_keys_in_every_language() -> None:
    assert set(STRINGS["fr"]) == set(STRINGS["en"])


async def test_staff_gets_403_page_on_every_manager_page(server: Harness) -> None:
    await server.add_staff(STAFF, PASSWORD, "staff")
    cookie = await session(server, STAFF)
    for path in ("/manager", "/manager/scanners", "/manager/stock", "/manager/access-log"):
        resp = await server.client.get(path, headers=cookie, allow_redirects=False)
        assert resp.status == 403
        assert STRINGS["fr"]["forbidden_text"] in await text(resp)
    resp = await server.client.post(
        "/manager/staff",
        data={"username": "eve", "password": "x" * 20, "role": "manager"},
        headers=cookie,
        allow_redirects=False,
    )
    assert resp.status == 403
    assert await server.rows("SELECT * FROM staff_users WHERE username = 'eve'") == []


async def test_register_scanner_shows_secret_once_and_it_signs(
    server: Harness, manager: dict[str, str]
) -> None:
    resp = await server.client.post(
        "/manager/scanners", data={"scanner_id": "s-new"}, headers=manager
    )
    assert resp.status == 200
    assert resp.headers["Cache-Control"] == "no-store"
    page = await text(resp)
    found = re.search(r'id="scanner-secret">([^<]+)<', page)
    assert found is not None
    secret = found.group(1)
    # The secret works for a signed request, and is never shown again.
    scanner = Scanner("s-new", secret)
    assert (await server.signed(scanner, "GET", "/api/scanner/v1/allowlist")).status == 200
    listing = await text(await server.client.get("/manager/scanners", headers=manager))
    assert "s-new" in listing
    assert secret not in listing
    # Revoke: the scanner's next request is refused.
    resp = await server.client.post(
        "/manager/scanners/s-new/revoke", headers=manager, allow_redirects=False
    )
    assert resp.status == 303
    assert (await server.signed(scanner, "GET", "/api/scanner/v1/allowlist")).status == 401


async def test_register_scanner_keeps_an_active_secret_unless_told(
    server: Harness, manager: dict[str, str]
) -> None:
    first = await text(
        await server.client.post("/manager/scanners", data={"scanner_id": "s-new"}, headers=manager)
    )
    found = re.search(r'id="scanner-secret">([^<]+)<', first)
    assert found is not None
    scanner = Scanner("s-new", found.group(1))
    # Registering the id again is refused beside the field; the running box keeps working.
    resp = await server.client.post(
        "/manager/scanners", data={"scanner_id": "s-new"}, headers=manager
    )
    assert resp.status == 409
    page = await text(resp)
    assert 'id="scanner_id-error"' in page
    assert 'id="scanner-secret"' not in page
    assert (await server.signed(scanner, "GET", "/api/scanner/v1/allowlist")).status == 200
    # With "replace its secret" ticked, the box gets a new secret and the old one stops.
    resp = await server.client.post(
        "/manager/scanners", data={"scanner_id": "s-new", "replace": "1"}, headers=manager
    )
    assert resp.status == 200
    renewed = re.search(r'id="scanner-secret">([^<]+)<', await text(resp))
    assert renewed is not None
    assert renewed.group(1) != found.group(1)
    assert (await server.signed(scanner, "GET", "/api/scanner/v1/allowlist")).status == 401
    assert (
        await server.signed(Scanner("s-new", renewed.group(1)), "GET", "/api/scanner/v1/allowlist")
    ).status == 200


async def test_register_scanner_rejects_bad_id(server: Harness, manager: dict[str, str]) -> None:
    resp = await server.client.post(
        "/manager/scanners", data={"scanner_id": "<b>x</b>"}, headers=manager
    )
    assert resp.status == 422
    assert await server.rows("SELECT * FROM scanners") == []


@pytest.mark.own_pg_step  # not privacy- nor security-critical: PostgreSQL in its own step
async def test_scanner_health_from_heartbeat(server: Harness, manager: dict[str, str]) -> None:
    await server.add_scanner("s-till")
    heartbeat = {
        "adapter": "powered",
        "frames_seen_per_s": 12.5,
        "frames_passed_per_s": 0.5,
        "outbox_depth": 37,
        "outbox_dropped": 4,
        "version": "9.8.7",
        "readings_unusable": 3,
    }
    await server.service.db.run(
        lambda db: scanner_store.record_heartbeat(db, "s-till", heartbeat, server.service.clock())
    )
    page = await text(await server.client.get("/manager/scanners?lang=en", headers=manager))
    row = page.split('data-scanner="s-till"')[1].split("</tr>")[0]
    for expected in ("powered", "12.5 / 0.5 (3 without RSSI)", ">37<", ">4<", "9.8.7", "active"):
        assert expected in row


@pytest.mark.own_pg_step  # not privacy- nor security-critical: PostgreSQL in its own step
async def test_zones_page_shows_calibration(server: Harness, manager: dict[str, str]) -> None:
    page = await text(await server.client.get("/manager/zones?lang=en", headers=manager))
    for spec in server.service.floor.scanners:
        row = page.split(f'data-scanner="{spec.id}"')[1].split("</tr>")[0]
        assert f'value="{spec.rssi_offset_db:.1f}"' in row
    for zone in server.service.floor.zones:
        assert zone.name_en in page


@pytest.mark.own_pg_step  # not privacy- nor security-critical: PostgreSQL in its own step
async def test_stock_edit_and_csv_import(server: Harness, manager: dict[str, str]) -> None:
    resp = await server.client.post(
        "/manager/stock/GAS-GASKET-58",
        data={"count": "17", "aisle": "9B"},
        headers=manager,
        allow_redirects=False,
    )
    assert resp.status == 303
    stock = await server.rows("SELECT count, aisle FROM stock WHERE sku = 'GAS-GASKET-58'")
    assert stock == [{"count": 17, "aisle": "9B"}]
    bad = await server.client.post(
        "/manager/stock/GAS-GASKET-58", data={"count": "-1", "aisle": "9B"}, headers=manager
    )
    assert bad.status == 422
    form = aiohttp.FormData()
    form.add_field(
        "file",
        b"sku,name_fr,name_en,count,aisle\nNEW-1,Tasse,Cup,5,2A\n",
        filename="stock.csv",
        content_type="text/csv",
    )
    resp = await server.client.post("/manager/stock/import", data=form, headers=manager)
    assert resp.status == 200
    assert f"{STRINGS['fr']['imported']} 1" in await text(resp)
    assert await server.rows("SELECT count, aisle FROM stock WHERE sku = 'NEW-1'") == [
        {"count": 5, "aisle": "2A"}
    ]
    form = aiohttp.FormData()
    form.add_field("file", b"wrong,header\n1,2\n", filename="x.csv", content_type="text/csv")
    resp = await server.client.post("/manager/stock/import", data=form, headers=manager)
    assert resp.status == 422
    assert "header" in await text(resp)


async def test_staff_accounts_add_disable(server: Harness, manager: dict[str, str]) -> None:
    resp = await server.client.post(
        "/manager/staff",
        data={"username": STAFF, "password": PASSWORD, "role": "staff"},
        headers=manager,
        allow_redirects=False,
    )
    assert resp.status == 303
    staff_cookie = await session(server, STAFF)
    assert (await server.client.get("/board", headers=staff_cookie)).status == 200
    listing = await text(await server.client.get("/manager/staff", headers=manager))
    assert f'data-user="{STAFF}"' in listing
    assert "argon2" not in listing
    resp = await server.client.post(
        f"/manager/staff/{STAFF}/disable", headers=manager, allow_redirects=False
    )
    assert resp.status == 303
    # Disabled: the open session is gone and sign-in fails.
    resp = await server.client.get("/board", headers=staff_cookie, allow_redirects=False)
    assert resp.status == 303
    assert resp.headers["Location"] == "/login"
    resp = await server.client.post(
        "/login", data={"username": STAFF, "password": PASSWORD}, allow_redirects=False
    )
    assert resp.status == 401
    # A manager cannot lock themselves out.
    resp = await server.client.post(f"/manager/staff/{MANAGER}/disable", headers=manager)
    assert resp.status == 422
    short = await server.client.post(
        "/manager/staff",
        data={"username": "tom", "password": "short", "role": "staff"},
        headers=manager,
    )
    assert short.status == 422


async def _greeted_customer(server: Harness) -> str:
    token = await server.enroll()
    assert (await server.grant(token, "greeting")).status == 201
    await server.client.put(
        "/api/v1/preferences",
        json={"display_name": "Sylvie", "name_form": "first_name"},
        headers=bearer(token),
    )
    return token


async def test_consent_audit_shows_chain_status_without_names(
    server: Harness, manager: dict[str, str]
) -> None:
    await _greeted_customer(server)
    page = await text(await server.client.get("/manager/consent-log?lang=en", headers=manager))
    assert "Chain verified and intact. Entries: 1." in page
    assert "Sylvie" not in page
    customer = (await server.rows("SELECT id FROM customers"))[0]["id"]
    assert customer not in page
    ref = (await server.rows("SELECT subject_ref FROM consent_log"))[0]["subject_ref"]
    assert ref[:16] in page


async def test_access_log_view_is_itself_logged(server: Harness, manager: dict[str, str]) -> None:
    token = await _greeted_customer(server)
    customer = (await server.rows("SELECT id FROM customers"))[0]["id"]
    resp = await server.client.post("/api/v1/check-in", json={}, headers=bearer(token))
    assert (await resp.json()) == {"checked_in": True}
    card = (await server.rows("SELECT id FROM cards"))[0]["id"]
    await server.service.board.close_card(card, "samir", "greeted")
    page = await text(await server.client.get("/manager/access-log", headers=manager))
    assert card in page
    assert "samir" in page
    assert customer not in page
    views = await server.rows(
        "SELECT customer_id, staff_user FROM access_log WHERE action = 'audit_view'"
    )
    assert views == [{"customer_id": customer, "staff_user": MANAGER}]
    # The next view shows the previous one.
    page = await text(await server.client.get("/manager/access-log", headers=manager))
    assert "audit_view" in page


@pytest.mark.own_pg_step  # not privacy- nor security-critical: PostgreSQL in its own step
async def test_manager_sets_a_calibration_that_applies_at_once_and_survives_restart(
    server: Harness, manager: dict[str, str]
) -> None:
    headers = manager
    service = server.service
    assert service.coordinator.engine.calibration()["s-parts"] == 0.0

    resp = await server.client.post(
        "/manager/zones/s-parts/calibration",
        data={"rssi_offset_db": "-3.5"},
        headers=headers,
        allow_redirects=False,
    )
    assert resp.status == 303
    assert service.coordinator.engine.calibration()["s-parts"] == -3.5
    rows = await server.rows(
        "SELECT scanner_id, rssi_offset_db, updated_by FROM scanner_calibration"
    )
    assert [(r["scanner_id"], r["rssi_offset_db"]) for r in rows] == [("s-parts", -3.5)]

    # Out of range: refused, named, nothing changed.
    resp = await server.client.post(
        "/manager/zones/s-parts/calibration", data={"rssi_offset_db": "45"}, headers=headers
    )
    assert resp.status == 422
    assert "rssi_offset_db" in await resp.text()
    assert service.coordinator.engine.calibration()["s-parts"] == -3.5

    # A restarted service reads the override back.
    fresh = StoreServices(
        config=service.config,
        floor=service.floor,
        db=service.db,
        master_key=bytes(32),
        consent_texts=[],
    )
    await fresh.prepare()
    assert fresh.coordinator.engine.calibration()["s-parts"] == -3.5
    assert fresh.coordinator.engine.calibration()["s-entrance"] == 0.0


@pytest.mark.own_pg_step  # not privacy- nor security-critical: PostgreSQL in its own step
@pytest.mark.parametrize(
    ("lang", "connected", "error", "expected"),
    [
        ("en", True, None, '<span translate="no">192.168.1.41:6053</span> — connected'),
        ("en", False, "wrong_key", "disconnected (wrong API encryption key)"),
        ("fr", False, "unreachable", "déconnecté (injoignable : vérifiez son alimentation"),
    ],
)
async def test_scanner_page_shows_an_esphome_node_link(
    server: Harness,
    manager: dict[str, str],
    lang: str,
    connected: bool,
    error: str | None,
    expected: str,
) -> None:
    await server.add_scanner("s-node")
    heartbeat = {
        "adapter": "powered" if connected else "off",
        "frames_seen_per_s": 300.0,
        "frames_passed_per_s": 2.0,
        "outbox_depth": 0,
        "outbox_dropped": 0,
        "version": "0.1.0",
        "node": {
            "kind": "esphome",
            "host": "192.168.1.41:6053",
            "connected": connected,
            "connects": 1,
            "error": error,
            "last_error": None if error is None else "the scanner's English line",
        },
    }
    await server.service.db.run(
        lambda db: scanner_store.record_heartbeat(db, "s-node", heartbeat, server.service.clock())
    )
    page = await text(await server.client.get(f"/manager/scanners?lang={lang}", headers=manager))
    row = page.split('data-scanner="s-node"')[1].split("</tr>")[0]
    assert expected in row
    # The page speaks one language: the scanner's English line is not on it.
    assert "English line" not in row
