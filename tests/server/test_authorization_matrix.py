"""Authorization matrix: every route the application registers, for every kind of caller.

The table below is the single source of truth: one row per (method, route), one expected
status per role. A route the application registers but the table does not classify fails the
test, so a new endpoint cannot ship without a decision about who may call it.

Roles: anonymous (no credentials), staff and manager (a signed-in session cookie), scanner (a
correctly signed scanner request, no cookie), app (a customer's bearer token, no cookie).
HEAD requests are expected to answer like their GET route unless listed on their own.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass

import aiohttp
import pytest

from store_server.views.staff import cookie_name
from tests.server.conftest import STORE_ID, Harness, bearer, sign_headers

ROLES = ("anonymous", "staff", "manager", "scanner", "app")
PASSWORD = "correct horse battery"
SCANNER = "s-matrix"
BOUNDARY = "matrixboundary"

# Expected status per role, in the order of ROLES. 303 on a page GET is "go and sign in".
MATRIX: dict[tuple[str, str], tuple[int, int, int, int, int]] = {
    # static files and public pages
    ("GET", "/static"): (200, 200, 200, 200, 200),
    ("GET", "/"): (302, 302, 302, 302, 302),
    ("GET", "/login"): (200, 200, 200, 200, 200),
    ("POST", "/login"): (303, 303, 303, 303, 303),
    # health probes: public, nothing about customers; /readyz is 503 here because the two
    # registered scanners have sent no batch or heartbeat yet when it is asked (GET and HEAD
    # sort before the scanners' POSTs)
    ("GET", "/healthz"): (200, 200, 200, 200, 200),
    ("GET", "/readyz"): (503, 503, 503, 503, 503),
    # staff board
    ("GET", "/board"): (303, 200, 200, 303, 303),
    ("GET", "/ws/board"): (401, 101, 101, 401, 401),
    ("HEAD", "/ws/board"): (401, 400, 400, 401, 401),
    # manager pages: staff get a 403 page, never the content
    ("GET", "/manager"): (303, 403, 303, 303, 303),
    ("GET", "/manager/scanners"): (303, 403, 200, 303, 303),
    ("POST", "/manager/scanners"): (401, 403, 200, 401, 401),
    ("POST", "/manager/scanners/{scanner_id}/revoke"): (401, 403, 303, 401, 401),
    ("GET", "/manager/zones"): (303, 403, 200, 303, 303),
    ("POST", "/manager/zones/{scanner_id}/calibration"): (401, 403, 303, 401, 401),
    ("GET", "/manager/floor"): (303, 403, 200, 303, 303),
    ("GET", "/manager/floor/live"): (303, 403, 200, 303, 303),
    ("GET", "/manager/calibration"): (303, 403, 200, 303, 303),
    ("GET", "/manager/calibration/walk"): (303, 403, 200, 303, 303),
    ("POST", "/manager/calibration/walk"): (401, 403, 303, 401, 401),
    ("POST", "/manager/calibration/walk/here"): (401, 403, 303, 401, 401),
    ("POST", "/manager/calibration/walk/end"): (401, 403, 303, 401, 401),
    ("POST", "/manager/calibration/reset"): (401, 403, 303, 401, 401),
    ("GET", "/manager/stock"): (303, 403, 200, 303, 303),
    ("POST", "/manager/stock/import"): (401, 403, 200, 401, 401),
    ("POST", "/manager/stock/{sku}"): (401, 403, 303, 401, 401),
    ("GET", "/manager/staff"): (303, 403, 200, 303, 303),
    ("POST", "/manager/staff"): (401, 403, 303, 401, 401),
    ("POST", "/manager/staff/{username}/disable"): (401, 403, 303, 401, 401),
    ("POST", "/manager/staff/{username}/enable"): (401, 403, 303, 401, 401),
    ("GET", "/manager/consent-log"): (303, 403, 200, 303, 303),
    ("GET", "/manager/access-log"): (303, 403, 200, 303, 303),
    # scanner API: signed requests only
    ("POST", "/api/scanner/v1/batches"): (401, 401, 401, 200, 401),
    ("POST", "/api/scanner/v1/heartbeat"): (401, 401, 401, 200, 401),
    ("GET", "/api/scanner/v1/allowlist"): (401, 401, 401, 200, 401),
    # customer API: public enrolment and texts, the rest with the app's bearer token
    ("POST", "/api/v1/enroll"): (201, 201, 201, 201, 201),
    ("GET", "/api/v1/consent-texts"): (200, 200, 200, 200, 200),
    ("GET", "/api/v1/catalog"): (200, 200, 200, 200, 200),
    ("POST", "/api/v1/consents"): (401, 401, 401, 401, 201),
    ("POST", "/api/v1/consents/withdraw"): (401, 401, 401, 401, 200),
    ("PUT", "/api/v1/preferences"): (401, 401, 401, 401, 200),
    ("PUT", "/api/v1/wishlist"): (401, 401, 401, 401, 200),
    ("POST", "/api/v1/check-in"): (401, 401, 401, 401, 200),
    # this server has no store beacon key: a valid app token is told proofs are off
    ("POST", "/api/v1/check-in/proof"): (401, 401, 401, 401, 403),
    ("GET", "/api/v1/store-beacon"): (200, 200, 200, 200, 200),
    ("POST", "/api/v1/calibration/join"): (401, 401, 401, 401, 200),
    ("GET", "/api/v1/messages"): (401, 401, 401, 401, 200),
    ("GET", "/api/v1/consents"): (401, 401, 401, 401, 200),
    ("GET", "/api/v1/preferences"): (401, 401, 401, 401, 200),
    ("POST", "/api/v1/enroll/rotate"): (401, 401, 401, 401, 200),
    ("GET", "/api/v1/me"): (401, 401, 401, 401, 200),
    ("GET", "/api/v1/me/export"): (401, 401, 401, 401, 200),
    ("GET", "/api/openapi.json"): (200, 200, 200, 200, 200),
    # the customer web pages are public shells; their data comes from the API with the token
    ("GET", "/app"): (302, 302, 302, 302, 302),
    ("GET", "/app/"): (200, 200, 200, 200, 200),
    ("GET", "/app/{page}"): (200, 200, 200, 200, 200),
    # erasure ends the app's identity: after every other app route
    ("DELETE", "/api/v1/me"): (401, 401, 401, 401, 200),
    # last: signing out ends the staff and manager sessions used above
    ("POST", "/logout"): (303, 303, 303, 303, 303),
}

# Concrete paths for routes with a variable part (targets that do not disturb the callers).
CONCRETE = {
    "/static": "/static/bulle.css",
    "/manager/scanners/{scanner_id}/revoke": "/manager/scanners/s-victim/revoke",
    "/manager/stock/{sku}": "/manager/stock/GAS-GASKET-58",
    "/manager/staff/{username}/disable": "/manager/staff/victim/disable",
    "/manager/staff/{username}/enable": "/manager/staff/victim/enable",
    "/app/{page}": "/app/consents",
    "/manager/zones/{scanner_id}/calibration": "/manager/zones/s-parts/calibration",
}


@dataclass(slots=True)
class Body:
    data: bytes
    content_type: str | None


def _json(value: object) -> Body:
    return Body(json.dumps(value).encode(), "application/json")


def _form(**fields: str) -> Body:
    encoded = "&".join(f"{k}={v}" for k, v in fields.items())
    return Body(encoded.encode(), "application/x-www-form-urlencoded")


def _bodies(text_hash: str) -> dict[tuple[str, str], Body]:
    now = time.time()
    csv = b"sku,name_fr,name_en,count,aisle\nMX-1,Tasse,Cup,3,1A\n"
    multipart = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="s.csv"\r\n'
        f"Content-Type: text/csv\r\n\r\n".encode()
        + csv
        + f"\r\n--{BOUNDARY}--\r\n".encode()
    )
    return {
        ("POST", "/login"): _form(username="mgr", password=PASSWORD.replace(" ", "+")),
        ("POST", "/manager/scanners"): _form(scanner_id="s-registered"),
        ("POST", "/manager/stock/import"): Body(
            multipart, f"multipart/form-data; boundary={BOUNDARY}"
        ),
        ("POST", "/manager/stock/{sku}"): _form(count="4", aisle="2B"),
        ("POST", "/manager/zones/{scanner_id}/calibration"): _form(rssi_offset_db="-2.5"),
        ("POST", "/manager/calibration/walk/here"): _form(zone="parts"),
        ("POST", "/manager/calibration/reset"): _form(scanner_id="s-parts"),
        ("POST", "/api/v1/calibration/join"): _json({"code": "000000"}),
        ("POST", "/manager/staff"): _form(
            username="newcomer", password=PASSWORD.replace(" ", "+"), role="staff"
        ),
        ("POST", "/api/scanner/v1/batches"): _json(
            {
                "batch_id": secrets.token_hex(16),
                "store_id": STORE_ID,
                "scanner_id": SCANNER,
                "windows": [],
            }
        ),
        ("POST", "/api/scanner/v1/heartbeat"): _json(
            {
                "store_id": STORE_ID,
                "scanner_id": SCANNER,
                "version": "1.0",
                "adapter": "simulated",
                "frames_seen_per_s": 1.0,
                "frames_passed_per_s": 0.0,
                "outbox_depth": 0,
                "outbox_dropped": 0,
                "last_upload_at": None,
                "watchdog_restarts": 0,
                "allowlist_version": None,
                "sent_at": now,
            }
        ),
        ("POST", "/api/v1/enroll"): _json({"language": "en"}),
        ("POST", "/api/v1/consents"): _json({"purpose": "greeting", "text_hash": text_hash}),
        ("POST", "/api/v1/consents/withdraw"): _json({"purposes": ["stock_check"]}),
        ("PUT", "/api/v1/preferences"): _json({"language": "en"}),
        ("PUT", "/api/v1/wishlist"): _json({"skus": ["GAS-GASKET-58"]}),
        ("POST", "/api/v1/check-in"): _json({}),
        ("POST", "/api/v1/check-in/proof"): _json(
            {
                "beacons": [
                    {
                        "uuid": "6F1E2D3C-1B2A-4C5D-8E9F-00000000B011",
                        "major": 1,
                        "minor": 2,
                        "rssi": -60,
                        "seen_at": now,
                    }
                ]
            }
        ),
    }


def _registered_routes(server: Harness) -> set[tuple[str, str]]:
    return {(r.method, r.resource.canonical) for r in server.app.router.routes()}


def _expected(method: str, route: str) -> tuple[int, int, int, int, int] | None:
    if (method, route) in MATRIX:
        return MATRIX[(method, route)]
    if method == "HEAD":
        return MATRIX.get(("GET", route))
    return None


async def test_every_route_is_classified(server: Harness) -> None:
    unclassified = sorted(r for r in _registered_routes(server) if _expected(*r) is None)
    assert unclassified == [], f"add these routes to MATRIX: {unclassified}"
    stale = sorted(set(MATRIX) - _registered_routes(server))
    assert stale == [], f"MATRIX lists routes the app does not have: {stale}"


async def test_authorization_matrix(engine_server: Harness) -> None:
    """On both engines: every answer that depends on what the database holds (sessions,
    roles, scanners, tokens) must be the same."""
    server = engine_server
    cookie = cookie_name(False)
    await server.add_staff("stf", PASSWORD, "staff")
    await server.add_staff("mgr", PASSWORD, "manager")
    await server.add_staff("victim", PASSWORD, "staff")
    await server.add_scanner("s-victim")
    scanner = await server.add_scanner(SCANNER)
    token = await server.enroll()
    greeting_hash = await server.text_hash("greeting")
    bodies = _bodies(greeting_hash)

    sessions: dict[str, str] = {}
    for role, user in (("staff", "stf"), ("manager", "mgr")):
        resp = await server.client.post(
            "/login", data={"username": user, "password": PASSWORD}, allow_redirects=False
        )
        assert resp.status == 303
        morsel = resp.cookies.get(cookie)
        assert morsel is not None
        sessions[role] = morsel.value

    def credentials(role: str, method: str, path: str, body: bytes) -> dict[str, str]:
        if role in sessions:
            return {"Cookie": f"{cookie}={sessions[role]}"}
        if role == "scanner":
            return sign_headers(
                scanner.secret,
                method,
                path,
                SCANNER,
                body,
                timestamp=int(time.time()),
                nonce=secrets.token_hex(16),
            )
        if role == "app":
            return bearer(token)
        return {}

    # Last, in this order: erasing the app's customer, then signing the staff out.
    finishers = [("DELETE", "/api/v1/me"), ("POST", "/logout")]

    def order(route: tuple[str, str]) -> tuple[int, tuple[str, str]]:
        rank = finishers.index(route) + 1 if route in finishers else 0
        return rank, route

    routes = sorted(_registered_routes(server), key=order)
    mismatches: list[str] = []
    for method, route in routes:
        expected = _expected(method, route)
        assert expected is not None
        path = CONCRETE.get(route, route)
        body = bodies.get((method, route), Body(b"", None))
        for role, want in zip(ROLES, expected, strict=True):
            headers = credentials(role, method, path, body.data)
            if body.content_type:
                headers["Content-Type"] = body.content_type
            if method == "GET" and route.startswith("/ws/"):
                status = await _ws_status(server, path, headers)
            else:
                resp = await server.client.request(
                    method, path, data=body.data or None, headers=headers, allow_redirects=False
                )
                status = resp.status
                resp.release()
            if status != want:
                mismatches.append(f"{method} {route} as {role}: {status}, expected {want}")
    assert mismatches == [], "\n".join(mismatches)


async def _ws_status(server: Harness, path: str, headers: dict[str, str]) -> int:
    try:
        ws = await server.client.ws_connect(path, headers=headers)
    except aiohttp.WSServerHandshakeError as exc:
        return exc.status
    await ws.receive_json(timeout=5)  # the snapshot
    await ws.close()
    return 101


@pytest.mark.parametrize("route", sorted(r for m, r in MATRIX if r.startswith("/manager")))
def test_manager_routes_deny_staff(route: str) -> None:
    """No manager route lets a staff member through (guards against a table typo)."""
    for method in ("GET", "POST"):
        if (method, route) in MATRIX:
            assert MATRIX[(method, route)][ROLES.index("staff")] == 403
