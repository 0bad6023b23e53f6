"""Staff pages: sign-in, the live board page and its WebSocket, sign-out."""

from __future__ import annotations

import functools
import time
from collections import defaultdict, deque
from typing import Any

import aiohttp_jinja2
from aiohttp import web

from store_server.errors import AuthenticationError, ForbiddenError
from store_server.i18n import STRINGS, pick_language
from store_server.i18n_names import name_of
from store_server.keys import CONFIG, SERVICE
from store_server.staff import StaffUser

routes = web.RouteTableDef()

# Five failed sign-ins per user name and per address within 15 minutes lock that key out for
# the rest of the window: enough for typos, far too few for guessing.
LOGIN_MAX_FAILURES = 5
LOGIN_WINDOW_S = 15 * 60
# The WebSocket's largest accepted message (board actions are tiny).
WS_MAX_MESSAGE_BYTES = 4096
# What staff can do with a card: greet the customer, bring the item, or dismiss it.
CARD_ACTIONS = ("greeted", "brought", "dismissed")
_failures = web.AppKey("login_failures", dict)
USER_KEY = "bulle_user"


def cookie_name(secure: bool) -> str:
    # The __Host- prefix makes the browser refuse the cookie unless Secure, path=/, no Domain.
    return "__Host-bulle_session" if secure else "bulle_session"


def language(request: web.Request) -> str:
    """The page's language: ?lang=, then the cookie, then the browser's preference."""
    return pick_language(
        request.query.get("lang"),
        request.cookies.get("bulle_lang"),
        request.headers.get("Accept-Language"),
    )


async def current_user(request: web.Request) -> StaffUser | None:
    config = request.app[CONFIG]
    session_id = request.cookies.get(cookie_name(config.cookie_secure))
    if not session_id:
        return None
    return await request.app[SERVICE].staff.session_user(session_id)


async def require_user(request: web.Request, role: str | None = None) -> StaffUser:
    user = await current_user(request)
    if user is None:
        raise AuthenticationError("sign in first")
    if role == "manager" and user.role != "manager":
        raise ForbiddenError("managers only")
    return user


def page(request: web.Request, template: str, **context: Any) -> web.Response:
    lang = language(request)
    response = aiohttp_jinja2.render_template(
        template,
        request,
        {"t": STRINGS[lang], "lang": lang, "name": functools.partial(name_of, lang), **context},
    )
    if request.query.get("lang") in STRINGS:
        response.set_cookie(
            "bulle_lang",
            lang,
            samesite="Lax",
            httponly=True,
            secure=request.app[CONFIG].cookie_secure,
            path="/",
        )
    return response


# HTTP errors a person can meet on a page; each has a title and a sentence in i18n.STRINGS.
ERROR_PAGES = (403, 404, 405)


def error_page(request: web.Request, status: int) -> web.Response:
    """A styled error page in the page's language, with links back into Bulle."""
    response = page(request, "error.html", status=status)
    response.set_status(status)
    return response


@routes.get("/")
async def index(request: web.Request) -> web.Response:
    raise web.HTTPFound("/board")


@routes.get("/login")
async def login_page(request: web.Request) -> web.Response:
    return page(request, "login.html", error=None, username="")


def _throttled(request: web.Request, username: str, now: float) -> bool:
    failures: dict[str, deque[float]] = request.app[_failures]
    for key in (f"user:{username}", f"addr:{request.remote}"):
        recent = failures[key]
        while recent and now - recent[0] > LOGIN_WINDOW_S:
            recent.popleft()
        if len(recent) >= LOGIN_MAX_FAILURES:
            return True
    return False


@routes.post("/login")
async def login(request: web.Request) -> web.Response:
    form = await request.post()
    username = str(form.get("username", ""))[:64]
    password = str(form.get("password", ""))[:1024]
    service = request.app[SERVICE]
    config = request.app[CONFIG]
    now = time.monotonic()
    if _throttled(request, username, now):
        response = page(request, "login.html", error="throttled", username=username)
        response.set_status(429)
        return response
    try:
        user = await service.staff.authenticate(username, password)
    except AuthenticationError:
        failures: dict[str, deque[float]] = request.app[_failures]
        failures[f"user:{username}"].append(now)
        failures[f"addr:{request.remote}"].append(now)
        # The user name stays in the form: a typo in the password should not cost both.
        response = page(request, "login.html", error="bad_login", username=username)
        response.set_status(401)
        return response
    session_id = await service.staff.open_session(user, config.session_ttl_s)
    response = web.HTTPSeeOther("/board")
    response.set_cookie(
        cookie_name(config.cookie_secure),
        session_id,
        httponly=True,
        secure=config.cookie_secure,
        samesite="Strict",
        path="/",
        max_age=config.session_ttl_s,
    )
    raise response


@routes.post("/logout")
async def logout(request: web.Request) -> web.Response:
    config = request.app[CONFIG]
    name = cookie_name(config.cookie_secure)
    session_id = request.cookies.get(name)
    if session_id:
        await request.app[SERVICE].staff.close_session(session_id)
    response = web.HTTPSeeOther("/login")
    response.del_cookie(name, path="/")
    raise response


@routes.get("/board")
async def board(request: web.Request) -> web.Response:
    user = await current_user(request)
    if user is None:
        raise web.HTTPSeeOther("/login")
    return page(request, "board.html", user=user)


@routes.get("/ws/board")
async def board_ws(request: web.Request) -> web.WebSocketResponse:
    user = await require_user(request)
    service = request.app[SERVICE]
    ws = web.WebSocketResponse(heartbeat=20.0, max_msg_size=WS_MAX_MESSAGE_BYTES)
    await ws.prepare(request)

    async def on_message(data: dict[str, Any]) -> None:
        # A malformed action from a board is ignored: it must not end that board's connection.
        card_id, action = data.get("id"), data.get("as")
        if data.get("action") == "close" and isinstance(card_id, str) and action in CARD_ACTIONS:
            await service.close_card(card_id, user.username, str(action))

    await service.hub.serve(
        ws,
        user.username,
        lambda: service.board_snapshot(user.username),
        on_message,
        transport=request.transport,
    )
    return ws


def setup(app: web.Application) -> None:
    app[_failures] = defaultdict(deque)
    app.add_routes(routes)
