"""Staff sign-in, server-side sessions, origin checks, security headers and login throttling."""

from __future__ import annotations

import aiohttp
import pytest

from store_server.throttle import LOGIN_MAX_FAILURES
from store_server.views.staff import cookie_name
from tests.server.conftest import Harness, bearer, error_of


@pytest.fixture
def server(engine_server: Harness) -> Harness:
    """Every test of this module runs on SQLite and on PostgreSQL (tests/pg.py)."""
    return engine_server


USER = "camille"
PASSWORD = "correct horse battery"
COOKIE = cookie_name(False)


async def login(
    server: Harness, username: str = USER, password: str = PASSWORD, **headers: str
) -> aiohttp.ClientResponse:
    return await server.client.post(
        "/login",
        data={"username": username, "password": password},
        headers=headers,
        allow_redirects=False,
    )


def session_of(resp: aiohttp.ClientResponse) -> str:
    morsel = resp.cookies.get(COOKIE)
    assert morsel is not None
    assert morsel.value
    return morsel.value


def with_session(session_id: str) -> dict[str, str]:
    return {"Cookie": f"{COOKIE}={session_id}"}


@pytest.mark.parametrize(
    ("username", "password"),
    [("admin", "admin"), ("admin", ""), ("root", "root"), ("staff", "staff"), ("", "")],
)
async def test_no_default_account(server: Harness, username: str, password: str) -> None:
    resp = await login(server, username, password)
    assert resp.status == 401
    assert COOKIE not in resp.cookies
    assert await server.rows("SELECT * FROM staff_users") == []
    assert await server.rows("SELECT * FROM sessions") == []


async def test_login_sets_strict_httponly_session_cookie(server: Harness) -> None:
    await server.add_staff(USER, PASSWORD)
    resp = await login(server)
    assert resp.status == 303
    assert resp.headers["Location"] == "/board"
    set_cookie = resp.headers["Set-Cookie"]
    assert set_cookie.startswith(f"{COOKIE}=")
    assert "HttpOnly" in set_cookie
    assert "SameSite=Strict" in set_cookie
    assert "Path=/" in set_cookie
    session_id = session_of(resp)
    assert len(session_id) >= 43  # 256 random bits, base64url
    stored = await server.rows("SELECT id_hash, username FROM sessions")
    assert len(stored) == 1
    assert stored[0]["username"] == USER
    assert stored[0]["id_hash"] != session_id
    # A new session id at every login.
    assert session_of(await login(server)) != session_id


async def test_wrong_password(server: Harness) -> None:
    await server.add_staff(USER, PASSWORD)
    resp = await login(server, password=PASSWORD + "!")
    assert resp.status == 401
    assert COOKIE not in resp.cookies


async def test_board_requires_session(server: Harness) -> None:
    resp = await server.client.get("/board", allow_redirects=False)
    assert resp.status == 303
    assert resp.headers["Location"] == "/login"
    resp = await server.client.get(
        "/board", headers=with_session("forged-session-id"), allow_redirects=False
    )
    assert resp.status == 303


async def test_board_and_websocket_with_session(server: Harness) -> None:
    await server.add_staff(USER, PASSWORD)
    session_id = session_of(await login(server))
    resp = await server.client.get("/board", headers=with_session(session_id))
    assert resp.status == 200
    assert "text/html" in resp.headers["Content-Type"]
    assert USER in await resp.text()
    async with server.client.ws_connect("/ws/board", headers=with_session(session_id)) as ws:
        first = await ws.receive_json(timeout=10)
        assert first == {"type": "snapshot", "cards": []}


async def test_logout_invalidates_session_server_side(server: Harness) -> None:
    await server.add_staff(USER, PASSWORD)
    session_id = session_of(await login(server))
    resp = await server.client.post(
        "/logout", headers=with_session(session_id), allow_redirects=False
    )
    assert resp.status == 303
    assert resp.headers["Location"] == "/login"
    assert await server.rows("SELECT * FROM sessions") == []
    # Replaying the old cookie does not work any more.
    resp = await server.client.get(
        "/board", headers=with_session(session_id), allow_redirects=False
    )
    assert resp.status == 303
    assert resp.headers["Location"] == "/login"
    # The handshake is refused (its exact status is pinned by the test below).
    with pytest.raises(aiohttp.WSServerHandshakeError):
        await server.client.ws_connect("/ws/board", headers=with_session(session_id))


async def test_websocket_with_replayed_cookie_gets_401(server: Harness) -> None:
    await server.add_staff(USER, PASSWORD)
    session_id = session_of(await login(server))
    await server.client.post("/logout", headers=with_session(session_id), allow_redirects=False)
    resp = await server.client.get(
        "/ws/board",
        headers={
            **with_session(session_id),
            "Connection": "Upgrade",
            "Upgrade": "websocket",
            "Sec-WebSocket-Version": "13",
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        },
        allow_redirects=False,
    )
    assert resp.status == 401


async def test_cross_origin_login_refused(server: Harness) -> None:
    await server.add_staff(USER, PASSWORD)
    resp = await login(server, Origin="http://evil.example")
    assert resp.status == 403
    assert (await error_of(resp))["code"] == "bad_origin"
    assert COOKIE not in resp.cookies
    assert await server.rows("SELECT * FROM sessions") == []
    resp = await login(server, **{"Sec-Fetch-Site": "cross-site"})
    assert resp.status == 403
    assert (await error_of(resp))["code"] == "bad_origin"


async def test_same_origin_login_allowed(server: Harness) -> None:
    await server.add_staff(USER, PASSWORD)
    origin = str(server.client.make_url("/")).rstrip("/")
    resp = await login(server, Origin=origin, **{"Sec-Fetch-Site": "same-origin"})
    assert resp.status == 303


async def test_cross_origin_websocket_refused(server: Harness) -> None:
    await server.add_staff(USER, PASSWORD)
    session_id = session_of(await login(server))
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await server.client.ws_connect(
            "/ws/board", headers={**with_session(session_id), "Origin": "http://evil.example"}
        )
    assert info.value.status == 403


async def test_cross_origin_logout_refused(server: Harness) -> None:
    await server.add_staff(USER, PASSWORD)
    session_id = session_of(await login(server))
    resp = await server.client.post(
        "/logout",
        headers={**with_session(session_id), "Origin": "http://evil.example"},
        allow_redirects=False,
    )
    assert resp.status == 403
    assert len(await server.rows("SELECT * FROM sessions")) == 1


def assert_security_headers(resp: aiohttp.ClientResponse) -> None:
    csp = resp.headers["Content-Security-Policy"]
    directives = {d.split()[0]: d.split()[1:] for d in csp.split(";") if d.strip()}
    assert directives["object-src"] == ["'none'"]
    assert directives["frame-ancestors"] == ["'none'"]
    assert "'unsafe-inline'" not in directives["script-src"]
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert resp.headers["Referrer-Policy"]
    assert "no-store" in resp.headers["Cache-Control"]


async def test_security_headers(server: Harness) -> None:
    await server.add_staff(USER, PASSWORD)
    session_id = session_of(await login(server))
    token = await server.enroll()
    responses = [
        await server.client.get("/login"),
        await server.client.get("/board", headers=with_session(session_id)),
        await server.client.get("/board", allow_redirects=False),
        await server.client.get("/api/v1/messages"),  # 401 envelope
        await server.client.get("/api/v1/messages", headers=bearer(token)),
        await server.client.get("/api/v1/consent-texts"),
        await server.client.get("/api/v1/no-such-route"),
        await login(server, Origin="http://evil.example"),
    ]
    assert [r.status for r in responses] == [200, 200, 303, 401, 200, 200, 404, 403]
    for resp in responses:
        assert_security_headers(resp)
    assert (await error_of(responses[6]))["code"] == "not_found"


async def test_login_throttled_after_failures(server: Harness) -> None:
    await server.add_staff(USER, PASSWORD)
    for _ in range(LOGIN_MAX_FAILURES):
        assert (await login(server, password="wrong password!")).status == 401
    resp = await login(server)  # even the right password is refused now
    assert resp.status == 429
    assert COOKIE not in resp.cookies
    assert await server.rows("SELECT * FROM sessions") == []


async def test_failures_below_limit_do_not_throttle(server: Harness) -> None:
    await server.add_staff(USER, PASSWORD)
    for _ in range(LOGIN_MAX_FAILURES - 1):
        assert (await login(server, password="wrong password!")).status == 401
    assert (await login(server)).status == 303


async def test_malformed_board_messages_do_not_end_the_connection(server: Harness) -> None:
    await server.add_staff(USER, PASSWORD)
    session_id = session_of(await login(server))
    token = await server.enroll()
    assert (await server.grant(token, "greeting")).status == 201
    async with server.client.ws_connect("/ws/board", headers=with_session(session_id)) as ws:
        assert (await ws.receive_json(timeout=10))["type"] == "snapshot"
        await ws.send_str("not json")
        await ws.send_json({"action": "close", "id": "k_unknown", "as": "bogus"})
        await ws.send_json({"action": "close", "id": 42, "as": "greeted"})
        await ws.send_json(["not", "an", "object"])
        resp = await server.client.post("/api/v1/check-in", json={}, headers=bearer(token))
        assert resp.status == 200
        message = await ws.receive_json(timeout=10)
        assert message["type"] == "card"
        assert message["card"]["kind"] == "greeting"
        assert not ws.closed
