"""Customer and scanner HTTP APIs on the real app (real SQLite, real signed requests)."""

from __future__ import annotations

import asyncio
import secrets
import time
from pathlib import Path
from typing import Any

import msgspec
import pytest

from store_server import cli
from store_server.resolver import AllowlistItem
from store_server.services import scanners as gateway
from tests.server.conftest import (
    STORE_ID,
    WAIT_TIMEOUT_S,
    Harness,
    Scanner,
    batch_body,
    bearer,
    error_of,
    sign_headers,
    wait_until,
)


@pytest.fixture
def server(engine_server: Harness) -> Harness:
    """Every test of this module runs on SQLite and on PostgreSQL (tests/pg.py)."""
    return engine_server


# -- customer API ----------------------------------------------------------------------------


async def test_enroll_returns_token_and_identity(server: Harness) -> None:
    resp = await server.client.post("/api/v1/enroll", json={"language": "en"})
    assert resp.status == 201
    data = await resp.json()
    assert len(bytes.fromhex(data["identity_key"])) == 16
    assert data["rotation_exponent"] == 9
    assert len(data["token"]) >= 32
    assert data["customer_id"].startswith("c_")
    # The token is stored only as its hash.
    stored = await server.rows("SELECT token_hash FROM customers")
    assert [r["token_hash"] for r in stored] != [data["token"]]
    assert len(stored) == 1


async def test_enroll_validates(server: Harness) -> None:
    resp = await server.client.post("/api/v1/enroll", json={"language": "de"})
    assert resp.status == 422
    assert (await error_of(resp))["field"] == "language"


async def test_consent_texts(server: Harness) -> None:
    resp = await server.client.get("/api/v1/consent-texts")
    assert resp.status == 200
    texts = (await resp.json())["texts"]
    assert sorted(t["purpose"] for t in texts) == ["greeting", "stock_check"]
    for text in texts:
        assert len(text["hash"]) == 64
        assert text["text_fr"]
        assert text["text_en"]


async def test_grant_with_wrong_text_hash(server: Harness) -> None:
    token = await server.enroll()
    wrong = await server.text_hash("stock_check")
    for text_hash in (wrong, "0" * 64):
        resp = await server.client.post(
            "/api/v1/consents",
            json={"purpose": "greeting", "text_hash": text_hash},
            headers=bearer(token),
        )
        assert resp.status == 422
        error = await error_of(resp)
        assert error["field"] == "text_hash"
        assert error["code"] == "invalid_request"
    assert await server.rows("SELECT * FROM consents") == []
    assert await server.rows("SELECT * FROM consent_log") == []


async def test_grant_then_withdraw(server: Harness) -> None:
    token = await server.enroll()
    resp = await server.grant(token, "greeting")
    assert resp.status == 201
    granted = await resp.json()
    assert granted["purpose"] == "greeting"
    assert granted["expires_at"] > granted["granted_at"]
    assert (await server.grant(token, "stock_check")).status == 201
    resp = await server.client.post(
        "/api/v1/consents/withdraw", json={"purposes": ["greeting"]}, headers=bearer(token)
    )
    assert resp.status == 200
    assert await resp.json() == {"withdrawn": ["greeting"], "remaining": ["stock_check"]}
    resp = await server.client.post("/api/v1/consents/withdraw", headers=bearer(token))
    assert resp.status == 200
    assert (await resp.json())["remaining"] == []
    assert await server.rows("SELECT * FROM consents") == []
    log = await server.rows("SELECT action FROM consent_log ORDER BY seq")
    assert [r["action"] for r in log] == ["grant", "grant", "withdraw", "withdraw"]
    assert len(server.service.coordinator.resolver) == 0


async def test_preferences_validation_names_the_field(server: Harness) -> None:
    token = await server.enroll()
    cases = [
        ({"display_name": "<b>Sylvie</b>"}, "display_name"),
        ({"title": "Dr2"}, "title"),
        ({"name_form": "nickname"}, "name_form"),
        ({"quiet_start": "25:00"}, "quiet_start"),
        ({"not_today": "tomorrow"}, "not_today"),
        ({"colour": "blue"}, None),
    ]
    for body, field in cases:
        resp = await server.client.put("/api/v1/preferences", json=body, headers=bearer(token))
        assert resp.status == 422, body
        error = await error_of(resp)
        if field is not None:
            assert error["field"] == field
        else:
            assert "colour" in error["message"]
    resp = await server.client.put(
        "/api/v1/preferences",
        json={"display_name": " Marie-Ève ", "name_form": "first_name", "language": "en"},
        headers=bearer(token),
    )
    assert resp.status == 200
    prefs = await resp.json()
    assert prefs["display_name"] == "Marie-Ève"
    assert prefs["name_form"] == "first_name"
    assert prefs["language"] == "en"


async def test_wishlist_unknown_sku_names_index(server: Harness) -> None:
    token = await server.enroll()
    resp = await server.client.put(
        "/api/v1/wishlist", json={"skus": ["NOPE-1", "GAS-GASKET-58"]}, headers=bearer(token)
    )
    assert resp.status == 422
    assert (await error_of(resp))["field"] == "skus[0]"
    resp = await server.client.put(
        "/api/v1/wishlist", json={"skus": ["GAS-GASKET-58", "NOPE-1"]}, headers=bearer(token)
    )
    assert (await error_of(resp))["field"] == "skus[1]"
    resp = await server.client.put(
        "/api/v1/wishlist",
        json={"skus": ["GAS-GASKET-58", "GAS-GASKET-58"]},
        headers=bearer(token),
    )
    assert resp.status == 200
    assert await resp.json() == {"skus": ["GAS-GASKET-58"]}


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer not-a-token"},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": "Bearer"},
    ],
)
async def test_missing_or_invalid_bearer(server: Harness, headers: dict[str, str]) -> None:
    for method, path in (
        ("GET", "/api/v1/messages"),
        ("POST", "/api/v1/check-in"),
        ("PUT", "/api/v1/wishlist"),
    ):
        resp = await server.client.request(method, path, headers=headers, json={"skus": []})
        assert resp.status == 401
        assert (await error_of(resp))["code"] == "unauthenticated"


async def test_check_in_rate_limited(server: Harness) -> None:
    token = await server.enroll()
    first = await server.client.post("/api/v1/check-in", json={}, headers=bearer(token))
    assert first.status == 200
    assert await first.json() == {"checked_in": False, "reason": "no_consent"}
    second = await server.client.post("/api/v1/check-in", json={}, headers=bearer(token))
    assert second.status == 429
    assert (await error_of(second))["code"] == "rate_limited"
    # Another customer is not affected.
    other = await server.enroll()
    third = await server.client.post("/api/v1/check-in", json={}, headers=bearer(other))
    assert third.status == 200


async def test_check_in_with_stock_consent_messages_the_app(server: Harness) -> None:
    token = await server.enroll()
    assert (await server.grant(token, "stock_check")).status == 201
    resp = await server.client.put(
        "/api/v1/preferences",
        json={"display_name": "Sylvie", "name_form": "first_name"},
        headers=bearer(token),
    )
    assert resp.status == 200
    resp = await server.client.put(
        "/api/v1/wishlist", json={"skus": ["GAS-GASKET-58"]}, headers=bearer(token)
    )
    assert resp.status == 200
    resp = await server.client.get("/api/v1/messages", headers=bearer(token))
    assert (await resp.json()) == {"messages": []}
    resp = await server.client.post(
        "/api/v1/check-in", json={"zone": "entrance"}, headers=bearer(token)
    )
    assert await resp.json() == {"checked_in": True}
    resp = await server.client.get("/api/v1/messages", headers=bearer(token))
    assert resp.status == 200
    messages = (await resp.json())["messages"]
    assert len(messages) == 1
    assert messages[0]["kind"] == "stock"
    assert messages[0]["lines_en"] == ["Group head gasket 58 mm: in stock here, aisle 3"]
    cards = await server.rows("SELECT kind, payload FROM cards")
    assert [c["kind"] for c in cards] == ["stock"]
    # Stock-check consent alone never shows the name to staff.
    assert '"name":null' in cards[0]["payload"].replace(" ", "")
    assert "Sylvie" not in cards[0]["payload"]


async def test_messages_are_per_customer(server: Harness) -> None:
    token = await server.enroll()
    other = await server.enroll()
    assert (await server.grant(token, "stock_check")).status == 201
    await server.client.put(
        "/api/v1/wishlist", json={"skus": ["GAS-GASKET-58"]}, headers=bearer(token)
    )
    await server.client.post("/api/v1/check-in", json={}, headers=bearer(token))
    resp = await server.client.get("/api/v1/messages", headers=bearer(other))
    assert await resp.json() == {"messages": []}


# -- scanner API: authentication ---------------------------------------------------------------

BATCHES = "/api/scanner/v1/batches"
ALLOWLIST = "/api/scanner/v1/allowlist"


async def batch_count(server: Harness) -> int:
    return len(await server.rows("SELECT * FROM scanner_batches"))


async def test_unsigned_request(server: Harness) -> None:
    scanner = await server.add_scanner("s-entrance")
    resp = await server.client.post(BATCHES, data=batch_body(scanner.scanner_id))
    assert resp.status == 401
    assert (await error_of(resp))["code"] == "unsigned"
    assert await batch_count(server) == 0


async def test_wrong_key(server: Harness) -> None:
    scanner = await server.add_scanner("s-entrance")
    resp = await server.signed(
        scanner, "POST", BATCHES, batch_body(scanner.scanner_id), secret="not-the-secret"
    )
    assert resp.status == 401
    assert (await error_of(resp))["code"] == "bad_signature"
    assert await batch_count(server) == 0


async def test_stale_timestamp(server: Harness) -> None:
    scanner = await server.add_scanner("s-entrance")
    for skew in (-120, 120):
        resp = await server.signed(
            scanner,
            "POST",
            BATCHES,
            batch_body(scanner.scanner_id),
            timestamp=int(time.time()) + skew,
        )
        assert resp.status == 401
        assert (await error_of(resp))["code"] == "stale"
    assert await batch_count(server) == 0


async def test_reused_nonce(server: Harness) -> None:
    scanner = await server.add_scanner("s-entrance")
    nonce = secrets.token_hex(16)
    first = await server.signed(scanner, "GET", ALLOWLIST, nonce=nonce)
    assert first.status == 200
    again = await server.signed(scanner, "GET", ALLOWLIST, nonce=nonce)
    assert again.status == 401
    assert (await error_of(again))["code"] == "replayed"


async def test_tampered_body_is_bad_digest(server: Harness) -> None:
    scanner = await server.add_scanner("s-entrance")
    body = batch_body(scanner.scanner_id)
    headers = sign_headers(
        scanner.secret,
        "POST",
        BATCHES,
        scanner.scanner_id,
        body,
        timestamp=int(time.time()),
        nonce=secrets.token_hex(16),
    )
    resp = await server.client.post(BATCHES, data=body.replace(b"-62.5", b"-12.5"), headers=headers)
    assert resp.status == 401
    assert (await error_of(resp))["code"] == "bad_digest"
    assert await batch_count(server) == 0


async def test_unknown_scanner(server: Harness) -> None:
    scanner = await server.add_scanner("s-entrance")
    scanner.scanner_id = "s-ghost"
    resp = await server.signed(scanner, "GET", ALLOWLIST)
    assert resp.status == 401
    assert (await error_of(resp))["code"] == "unknown_scanner"


def _cli_config(server: Harness, tmp_path: Path) -> Path:
    config = tmp_path / "cli.toml"
    config.write_text(
        f'db_path = "{server.db_path}"\nstore_file = "{server.config.store_file}"\n'
        f'master_key = "{server.master_key}"\n'
        f'database_url = "{server.config.database_url}"\n',
        "utf-8",
    )
    return config


async def test_scanner_registered_by_cli_and_revoked_before_use(
    server: Harness, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _cli_config(server, tmp_path)
    assert (
        await asyncio.to_thread(cli.main, ["scanner", "add", "s-parts", "--config", str(config)])
        == 0
    )
    out = capsys.readouterr().out
    assert "registered for store demo-store" in out
    secret = out.rsplit(": ", 1)[1].strip()
    scanner = Scanner("s-parts", secret)
    assert (
        await asyncio.to_thread(cli.main, ["scanner", "revoke", "s-parts", "--config", str(config)])
        == 0
    )
    resp = await server.signed(scanner, "GET", ALLOWLIST)
    assert resp.status == 401
    assert (await error_of(resp))["code"] == "unknown_scanner"


async def test_revoked_scanner_is_refused_at_next_request(
    server: Harness, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _cli_config(server, tmp_path)
    assert (
        await asyncio.to_thread(cli.main, ["scanner", "add", "s-parts", "--config", str(config)])
        == 0
    )
    secret = capsys.readouterr().out.rsplit(": ", 1)[1].strip()
    scanner = Scanner("s-parts", secret)
    assert (await server.signed(scanner, "GET", ALLOWLIST)).status == 200
    assert (
        await asyncio.to_thread(cli.main, ["scanner", "revoke", "s-parts", "--config", str(config)])
        == 0
    )
    resp = await server.signed(scanner, "GET", ALLOWLIST)
    assert resp.status == 401
    assert (await error_of(resp))["code"] == "unknown_scanner"


async def test_revoked_scanner_batch_is_refused_at_next_batch(
    server: Harness, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Batches are verified with the registration read before; the recording transaction
    re-reads it, so a revocation by another process still refuses the very next batch."""
    config = _cli_config(server, tmp_path)
    add = ["scanner", "add", "s-parts", "--config", str(config)]
    assert await asyncio.to_thread(cli.main, add) == 0
    scanner = Scanner("s-parts", capsys.readouterr().out.rsplit(": ", 1)[1].strip())
    assert (await server.signed(scanner, "POST", BATCHES, batch_body("s-parts"))).status == 200
    revoke = ["scanner", "revoke", "s-parts", "--config", str(config)]
    assert await asyncio.to_thread(cli.main, revoke) == 0
    resp = await server.signed(scanner, "POST", BATCHES, batch_body("s-parts"))
    assert resp.status == 401
    assert (await error_of(resp))["code"] == "unknown_scanner"
    assert await batch_count(server) == 1
    # Registered again (a new secret, by another process): the old secret no longer works,
    # the new one does, at once.
    assert await asyncio.to_thread(cli.main, add) == 0
    renewed = Scanner("s-parts", capsys.readouterr().out.rsplit(": ", 1)[1].strip())
    resp = await server.signed(scanner, "POST", BATCHES, batch_body("s-parts"))
    assert resp.status == 401
    assert (await server.signed(renewed, "POST", BATCHES, batch_body("s-parts"))).status == 200
    resp = await server.signed(scanner, "POST", BATCHES, batch_body("s-parts"))
    assert resp.status == 401
    assert (await error_of(resp))["code"] == "bad_signature"
    assert await batch_count(server) == 2


async def test_batch_of_a_scanner_re_registered_after_its_last_batch(
    server: Harness, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The old secret still verifies against the registration read before, but the
    recording transaction sees the new registration: refused, nothing recorded."""
    scanner = await server.add_scanner("s-parts")
    assert (await server.signed(scanner, "POST", BATCHES, batch_body("s-parts"))).status == 200
    await server.add_scanner("s-parts")  # new secret, written without the service knowing
    resp = await server.signed(scanner, "POST", BATCHES, batch_body("s-parts"))
    assert resp.status == 401
    assert (await error_of(resp))["code"] == "unknown_scanner"
    assert await batch_count(server) == 1


async def test_batch_for_another_store(server: Harness) -> None:
    scanner = await server.add_scanner("s-entrance")
    body = batch_body(scanner.scanner_id, store_id="other-store")
    resp = await server.signed(scanner, "POST", BATCHES, body)
    assert resp.status == 403
    assert (await error_of(resp))["code"] == "wrong_store"
    # A batch claiming another scanner id is refused the same way.
    body = batch_body("s-parts")
    resp = await server.signed(scanner, "POST", BATCHES, body)
    assert resp.status == 403
    assert (await error_of(resp))["code"] == "wrong_store"
    assert await batch_count(server) == 0


async def test_scanner_of_another_store(server: Harness) -> None:
    scanner = await server.add_scanner("s-elsewhere", store_id="other-store")
    resp = await server.signed(scanner, "POST", BATCHES, batch_body(scanner.scanner_id))
    assert resp.status == 403
    assert (await error_of(resp))["code"] == "wrong_store"


# -- scanner API: batches, allowlist, heartbeat -------------------------------------------------


async def test_valid_batch_then_duplicate(server: Harness) -> None:
    scanner = await server.add_scanner("s-entrance")
    batch_id = secrets.token_hex(16)
    body = batch_body(scanner.scanner_id, batch_id=batch_id)
    resp = await server.signed(scanner, "POST", BATCHES, body)
    assert resp.status == 200
    assert await resp.json() == {"batch_id": batch_id, "accepted": 1, "duplicate": False}
    again = await server.signed(scanner, "POST", BATCHES, body)
    assert again.status == 200
    assert await again.json() == {"batch_id": batch_id, "accepted": 1, "duplicate": True}
    rows = await server.rows("SELECT scanner_id, batch_id, accepted FROM scanner_batches")
    assert rows == [{"scanner_id": "s-entrance", "batch_id": batch_id, "accepted": 1}]


async def test_invalid_batch_names_the_field(server: Harness) -> None:
    scanner = await server.add_scanner("s-entrance")
    body = batch_body(scanner.scanner_id).replace(b'"count":2', b'"count":"2"')
    resp = await server.signed(scanner, "POST", BATCHES, body)
    assert resp.status == 422
    error = await error_of(resp)
    assert error["field"] == "windows[0].count"
    assert error["code"] == "invalid_request"
    assert await batch_count(server) == 0


async def test_body_too_large(server: Harness) -> None:
    scanner = await server.add_scanner("s-entrance")
    body = b"{" + b" " * (2 * 1024 * 1024) + b"}"
    resp = await server.signed(scanner, "POST", BATCHES, body)
    assert resp.status == 413
    assert (await error_of(resp))["code"] == "body_too_large"
    resp = await server.client.post("/api/v1/enroll", data=body)
    assert resp.status == 413
    assert (await error_of(resp))["code"] == "body_too_large"
    assert await batch_count(server) == 0


async def test_allowlist_full_shape(server: Harness) -> None:
    scanner = await server.add_scanner("s-entrance")
    token = await server.enroll()
    assert (await server.grant(token, "greeting")).status == 201
    resp = await server.signed(scanner, "GET", ALLOWLIST)
    assert resp.status == 200
    data = await resp.json()
    assert set(data) == {"version", "full", "entries", "removed", "box_beacons"}
    assert data["box_beacons"] is True
    assert data["full"] is True
    assert data["removed"] == []
    assert isinstance(data["version"], int)
    # Current window and one neighbour on each side (skew_windows = 1).
    assert len(data["entries"]) == 3
    now = time.time()
    for entry in data["entries"]:
        assert set(entry) == {"id_type", "id", "not_after"}
        assert entry["id_type"] == "eid"
        assert len(bytes.fromhex(entry["id"])) == 8
        assert entry["not_after"] > now
    # No names, no keys: only the opaque EIDs.
    enrolled = await server.rows("SELECT id FROM customers")
    assert enrolled[0]["id"] not in await resp.text()


async def test_allowlist_bad_query(server: Harness) -> None:
    scanner = await server.add_scanner("s-entrance")
    resp = await server.signed(scanner, "GET", ALLOWLIST + "?since=abc")
    assert resp.status == 422
    assert (await error_of(resp))["field"] == "since"


async def test_long_poll_returns_early_on_grant_and_withdrawal(server: Harness) -> None:
    scanner = await server.add_scanner("s-entrance")
    token = await server.enroll()
    version = (await (await server.signed(scanner, "GET", ALLOWLIST)).json())["version"]

    async def poll(since: int) -> dict[str, Any]:
        resp = await server.signed(scanner, "GET", f"{ALLOWLIST}?since={since}&wait=30")
        assert resp.status == 200
        data: dict[str, Any] = await resp.json()
        return data

    task = asyncio.create_task(poll(version))
    condition = server.service.coordinator.allowlist_changed
    await wait_until(lambda: len(condition._waiters) > 0)
    assert not task.done()
    assert (await server.grant(token, "greeting")).status == 201
    granted = await asyncio.wait_for(task, WAIT_TIMEOUT_S)
    assert granted["full"] is False
    assert isinstance(granted["version"], int)
    assert granted["version"] > version
    assert len(granted["entries"]) == 3

    task = asyncio.create_task(poll(granted["version"]))
    await wait_until(lambda: len(condition._waiters) > 0)
    resp = await server.client.post("/api/v1/consents/withdraw", headers=bearer(token))
    assert resp.status == 200
    withdrawn = await asyncio.wait_for(task, WAIT_TIMEOUT_S)  # < the poll's 30 s hold
    assert withdrawn["full"] is False
    assert sorted(withdrawn["removed"]) == sorted(e["id"] for e in granted["entries"])


async def test_long_poll_without_change_answers_empty_delta(server: Harness) -> None:
    scanner = await server.add_scanner("s-entrance")
    version = (await (await server.signed(scanner, "GET", ALLOWLIST)).json())["version"]
    resp = await server.signed(scanner, "GET", f"{ALLOWLIST}?since={version}&wait=1")
    assert resp.status == 200
    assert await resp.json() == {
        "version": version,
        "full": False,
        "entries": [],
        "removed": [],
        "box_beacons": True,
    }


async def test_heartbeat(server: Harness) -> None:
    scanner = await server.add_scanner("s-entrance")
    body = (
        b'{"store_id":"demo-store","scanner_id":"s-entrance","version":"0.1.0",'
        b'"adapter":"powered","frames_seen_per_s":12.5,"frames_passed_per_s":0.8,'
        b'"outbox_depth":0,"outbox_dropped":0,"last_upload_at":null,'
        b'"watchdog_restarts":0,"allowlist_version":42,"sent_at":1763800001.0}'
    )
    resp = await server.signed(scanner, "POST", "/api/scanner/v1/heartbeat", body)
    assert resp.status == 200
    data = await resp.json()
    assert data["ok"] is True
    assert abs(data["server_time"] - time.time()) < 60
    row = await server.rows("SELECT last_heartbeat FROM scanners WHERE id = 's-entrance'")
    assert '"adapter": "powered"' in row[0]["last_heartbeat"]
    assert STORE_ID in row[0]["last_heartbeat"]


async def test_preferences_are_a_partial_update_and_null_clears(server: Harness) -> None:
    token = await server.enroll()
    first = {
        "display_name": "Sylvie",
        "name_form": "first_name",
        "quiet_start": "12:00",
        "quiet_end": "13:30",
    }
    resp = await server.client.put("/api/v1/preferences", json=first, headers=bearer(token))
    assert resp.status == 200
    # Absent fields stay; null clears the quiet hours.
    resp = await server.client.put(
        "/api/v1/preferences",
        json={"quiet_start": None, "quiet_end": None},
        headers=bearer(token),
    )
    assert resp.status == 200
    prefs = await resp.json()
    assert (prefs["display_name"], prefs["name_form"]) == ("Sylvie", "first_name")
    assert (prefs["quiet_start"], prefs["quiet_end"]) == (None, None)
    stored = await (await server.client.get("/api/v1/preferences", headers=bearer(token))).json()
    assert stored == prefs
    # A field that cannot be cleared refuses null, naming it.
    resp = await server.client.put(
        "/api/v1/preferences", json={"language": None}, headers=bearer(token)
    )
    assert resp.status == 422
    assert (await resp.json())["error"]["field"] == "language"


@pytest.mark.parametrize("part", [1, 2, 3, 5000])
@pytest.mark.parametrize(("items_n", "static_n"), [(0, 0), (0, 2), (5, 0), (5, 2)])
def test_a_full_allowlist_encoded_in_parts_is_the_same_array(
    monkeypatch: pytest.MonkeyPatch, part: int, items_n: int, static_n: int
) -> None:
    """A large store's full allowlist is encoded a part at a time (memory): the array is the
    one a list of entry objects encodes to, whatever the part size."""
    monkeypatch.setattr(gateway, "FULL_LIST_PART", part)
    items = [AllowlistItem(bytes([i]) * 8, 1_763_800_000.5 + i) for i in range(items_n)]
    static = [{"id_type": "ibeacon", "id": f"{i:040x}", "not_after": None} for i in range(static_n)]
    raw = gateway._encoded_entries(iter(items), static)
    whole = [gateway._wire_entry(item) for item in items] + static
    assert msgspec.json.encode({"entries": raw}) == msgspec.json.encode({"entries": whole})
