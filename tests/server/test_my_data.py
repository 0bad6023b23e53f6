"""Customer API: my data, export, erasure, and the OpenAPI document built from the routes."""

from __future__ import annotations

import json
import random
import string
from pathlib import Path
from typing import Any

import pytest

from store_server.consent import verify_chain
from store_server.storage import consents as consent_store
from tests.server.conftest import Harness, bearer, error_of
from tests.server.traces import file_traces, table_traces


@pytest.fixture
def server(engine_server: Harness) -> Harness:
    """Every test of this module runs on SQLite and on PostgreSQL (tests/pg.py)."""
    return engine_server


API_MD = (Path(__file__).resolve().parents[2] / "docs" / "api.md").read_text("utf-8")


def unique_name() -> str:
    """A valid display name that occurs nowhere else (letters only)."""
    return "Zq" + "".join(random.choices(string.ascii_lowercase, k=10))


async def active_customer(server: Harness, name: str) -> tuple[str, str]:
    """A customer with both consents, a name, a wishlist, and one arrival (check-in)."""
    token = await server.enroll()
    for purpose in ("greeting", "stock_check"):
        assert (await server.grant(token, purpose)).status == 201
    resp = await server.client.put(
        "/api/v1/preferences",
        json={"display_name": name, "name_form": "first_name", "language": "en"},
        headers=bearer(token),
    )
    assert resp.status == 200
    resp = await server.client.put(
        "/api/v1/wishlist", json={"skus": ["GAS-GASKET-58"]}, headers=bearer(token)
    )
    assert resp.status == 200
    resp = await server.client.post(
        "/api/v1/check-in", json={"zone": "entrance"}, headers=bearer(token)
    )
    assert await resp.json() == {"checked_in": True}
    customer_id = await server.service.customers.customer_for_token(token)
    return token, customer_id


async def test_my_data_lists_every_record(server: Harness) -> None:
    name = unique_name()
    token, customer_id = await active_customer(server, name)
    # A staff member opens the board: the cards shown are logged for the customer to see.
    await server.service.board.snapshot("alice")
    other_token, _ = await active_customer(server, unique_name())

    resp = await server.client.get("/api/v1/me", headers=bearer(token))
    assert resp.status == 200
    assert resp.headers["Cache-Control"] == "no-store"
    data = await resp.json()
    assert data["profile"]["id"] == customer_id
    assert data["profile"]["display_name"] == name
    assert "token_hash" not in data["profile"]
    assert {c["purpose"] for c in data["consents"] if c["active"]} == {"greeting", "stock_check"}
    assert [(h["action"], h["purpose"]) for h in data["consent_history"]] == [
        ("grant", "greeting"),
        ("grant", "stock_check"),
    ]
    assert [w["sku"] for w in data["wishlist"]] == ["GAS-GASKET-58"]
    assert len(data["visits"]) == 1
    assert data["visits"][0]["via"] == "check_in"
    assert len(data["decisions"]) == 1
    assert "greeting:consented" in data["decisions"][0]["reason"]
    assert sorted(c["kind"] for c in data["cards"]) == ["greeting", "stock"]
    assert len(data["messages"]) == 1
    shown = {(a["staff_user"], a["card_id"]) for a in data["access_log"]}
    assert shown == {("alice", c["id"]) for c in data["cards"]}
    # Nothing of the other customer leaks into this answer.
    other = await (await server.client.get("/api/v1/me", headers=bearer(other_token))).json()
    assert other["profile"]["id"] not in json.dumps(data)
    assert not {c["id"] for c in other["cards"]} & {c["id"] for c in data["cards"]}


async def test_export_is_an_attachment_with_the_same_data(server: Harness) -> None:
    token, _ = await active_customer(server, unique_name())
    resp = await server.client.get("/api/v1/me/export", headers=bearer(token))
    assert resp.status == 200
    assert resp.headers["Content-Disposition"].startswith("attachment;")
    assert resp.headers["Cache-Control"] == "no-store"
    exported = json.loads(await resp.read())
    shown = await (await server.client.get("/api/v1/me", headers=bearer(token))).json()
    exported.pop("generated_at")
    shown.pop("generated_at")
    assert exported == shown


async def test_erasure_leaves_no_trace(server: Harness) -> None:
    name = unique_name()
    token, customer_id = await active_customer(server, name)
    await server.service.board.snapshot("alice")
    keep_token, keep_id = await active_customer(server, unique_name())
    row = (await server.rows("SELECT * FROM customers WHERE id = ?", [customer_id]))[0]
    needles = [customer_id, row["token_hash"], row["pickup_code"], name]
    assert customer_id in server.service.coordinator.resolver
    # The scan does see the customer while they exist (it can fail).
    assert len(await server.service.db.run(lambda db: table_traces(db, needles))) >= 4
    # The SQLite file holds the name; on PostgreSQL the tables are all there is to search
    # (its WAL and dead tuples are the operator's: docs/operations.md, section 10).
    sqlite = not server.config.database_url
    assert (file_traces(server.db_path, [name]) != []) == sqlite

    resp = await server.client.delete("/api/v1/me", headers=bearer(token))
    assert resp.status == 200
    assert await resp.json() == {"erased": True}

    # The token no longer works.
    resp = await server.client.get("/api/v1/me", headers=bearer(token))
    assert resp.status == 401
    assert (await error_of(resp))["code"] == "unauthenticated"
    assert customer_id not in server.service.coordinator.resolver
    assert customer_id not in server.service.coordinator.engine.present()
    assert await server.service.db.run(lambda db: table_traces(db, needles)) == []
    assert file_traces(server.db_path, needles) == []
    # The proof of consent stays, pseudonymous, with one 'erase' entry per purpose.
    log = await server.service.db.run(consent_store.consent_log_rows)
    ref = server.service.customers.subject_ref(customer_id)
    assert [e.entry.action for e in log if e.entry.subject_ref == ref] == [
        "grant",
        "grant",
        "erase",
        "erase",
    ]
    assert verify_chain(log) == len(log)
    # The other customer is untouched.
    assert keep_id in server.service.coordinator.resolver
    resp = await server.client.get("/api/v1/me", headers=bearer(keep_token))
    assert resp.status == 200
    assert len((await resp.json())["cards"]) == 2


async def test_erasure_retracts_open_cards_on_boards(server: Harness) -> None:
    token, _ = await active_customer(server, unique_name())
    published: list[dict[str, Any]] = []
    open_ids = {r["id"] for r in await server.rows("SELECT id FROM cards WHERE state = 'open'")}
    assert len(open_ids) == 2
    original = server.service.hub.publish
    server.service.hub.publish = published.append  # type: ignore[method-assign]
    try:
        resp = await server.client.delete("/api/v1/me", json={}, headers=bearer(token))
    finally:
        server.service.hub.publish = original  # type: ignore[method-assign]
    assert resp.status == 200
    assert {m["id"] for m in published if m["type"] == "retract"} == open_ids


# -- OpenAPI -----------------------------------------------------------------------------------


async def test_openapi_document_matches_the_routes(server: Harness) -> None:
    resp = await server.client.get("/api/openapi.json")
    assert resp.status == 200
    doc = await resp.json()
    assert doc["openapi"].startswith("3.1")
    documented = {(method.upper(), path) for path, item in doc["paths"].items() for method in item}
    routed = {
        (route.method, route.resource.canonical)
        for route in server.app.router.routes()
        if route.resource is not None
        and route.resource.canonical.startswith("/api/v1/")
        and route.method != "HEAD"
    }
    assert documented == routed
    for needed in [
        ("GET", "/api/v1/me"),
        ("GET", "/api/v1/me/export"),
        ("DELETE", "/api/v1/me"),
        ("POST", "/api/v1/consents/withdraw"),
    ]:
        assert needed in documented
    schemes = doc["components"]["securitySchemes"]
    assert schemes["appToken"] == {
        "type": "http",
        "scheme": "bearer",
        "description": schemes["appToken"]["description"],
    }
    schemas = doc["components"]["schemas"]
    envelope = "#/components/schemas/ErrorEnvelope"
    for path, item in doc["paths"].items():
        for method, op in item.items():
            errors = {s: r for s, r in op["responses"].items() if int(s) >= 400}
            assert "500" in errors, (method, path)
            for response in errors.values():
                assert response["content"]["application/json"]["schema"]["$ref"] == envelope
            body = op.get("requestBody")
            if body is not None:
                ref = body["content"]["application/json"]["schema"]["$ref"]
                assert ref.rsplit("/", 1)[1] in schemas
                assert "422" in errors
            authed = path not in {
                "/api/v1/enroll",
                "/api/v1/consent-texts",
                "/api/v1/catalog",
                "/api/v1/store-beacon",
            }
            assert (op["security"] == [{"appToken": []}]) is authed, (method, path)
            assert ("401" in errors) is authed
    assert set(schemas["PreferencesRequest"]["properties"]) >= {"display_name", "greet_mode"}


# -- validation errors name the field, on every endpoint with a body ---------------------------


@pytest.mark.parametrize(
    ("method", "path", "body", "field"),
    [
        ("POST", "/api/v1/enroll", {"language": "de"}, "language"),
        ("POST", "/api/v1/enroll", {"app_counter": -1}, "app_counter"),
        ("POST", "/api/v1/consents", {"purpose": "marketing", "text_hash": "0" * 64}, "purpose"),
        ("POST", "/api/v1/consents", {"purpose": "greeting", "text_hash": "xyz"}, "text_hash"),
        (
            "POST",
            "/api/v1/consents",
            {"purpose": "greeting", "text_hash": "0" * 64, "scope": "world"},
            "scope",
        ),
        ("POST", "/api/v1/consents", {"purpose": "greeting"}, "text_hash"),
        ("POST", "/api/v1/consents/withdraw", {"purposes": []}, "purposes"),
        ("POST", "/api/v1/consents/withdraw", {"purposes": ["greeting", "x"]}, "purposes[1]"),
        ("PUT", "/api/v1/preferences", {"quiet_start": "25:00"}, "quiet_start"),
        ("PUT", "/api/v1/preferences", {"display_name": "<b>"}, "display_name"),
        ("PUT", "/api/v1/preferences", {"colour": "red"}, "colour"),
        ("PUT", "/api/v1/wishlist", {"skus": ["NOPE"]}, "skus[0]"),
        ("PUT", "/api/v1/wishlist", {"skus": "GAS-GASKET-58"}, "skus"),
        ("POST", "/api/v1/check-in", {"zone": 3}, "zone"),
        ("DELETE", "/api/v1/me", {"channel": "fax"}, "channel"),
    ],
)
async def test_validation_error_names_the_field(
    server: Harness, method: str, path: str, body: dict[str, Any], field: str
) -> None:
    token = await server.enroll()
    resp = await server.client.request(method, path, json=body, headers=bearer(token))
    assert resp.status == 422
    error = await error_of(resp)
    assert error["code"] == "invalid_request"
    assert error["field"] == field
    # Nothing was changed by the refused request.
    assert (await server.client.get("/api/v1/me", headers=bearer(token))).status == 200


async def test_every_customer_endpoint_is_in_api_md(server: Harness) -> None:
    doc = await (await server.client.get("/api/openapi.json")).json()
    for path, item in doc["paths"].items():
        for method in item:
            assert f"### `{method.upper()} {path}`" in API_MD
