"""Staff pages: sign-in, the live board page and its WebSocket, sign-out."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp_jinja2
from aiohttp import web
from multidict import MultiDictProxy

from store_server.errors import AuthenticationError, ForbiddenError, ValidationError
from store_server.i18n import STRINGS, pick_language
from store_server.i18n_names import name_of
from store_server.keys import CONFIG, SERVICE
from store_server.staff import StaffUser, session_key
from store_server.throttle import IpNetwork, SignInThrottle, client_address, parse_networks

logger = logging.getLogger(__name__)

routes = web.RouteTableDef()

# The WebSocket's largest accepted message (board actions are tiny).
WS_MAX_MESSAGE_BYTES = 4096
# What staff can do with a card: greet the customer, bring the item, or dismiss it.
CARD_ACTIONS = ("greeted", "brought", "dismissed")
# Boards' sessions are re-checked this often: a board is closed well within 1 s of its
# session ending (sign-out elsewhere, account disabled, expiry), whoever ended it.
SESSION_CHECK_S = 0.25
_throttle = web.AppKey("signin_throttle", SignInThrottle)
_proxies = web.AppKey("trusted_proxies", tuple[IpNetwork, ...])
USER_KEY = "bulle_user"


def cookie_name(secure: bool) -> str:
    # The __Host- prefix makes the browser refuse the cookie unless Secure, path=/, no Domain.
    return "__Host-bulle_session" if secure else "bulle_session"


FormData = MultiDictProxy[str | bytes | bytearray | web.FileField]


async def read_form(request: web.Request) -> FormData:
    """The posted form; a form that is not UTF-8 text is refused (422) instead of failing."""
    try:
        return await request.post()
    except UnicodeDecodeError:
        raise ValidationError("the form is not UTF-8 text", field="form") from None


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


def request_address(request: web.Request) -> str:
    """The client's address: X-Forwarded-For is believed only from `trusted_proxies`."""
    return client_address(
        request.remote, request.headers.getall("X-Forwarded-For", []), request.app[_proxies]
    )


def _login_page(request: web.Request, error: str, status: int, username: str) -> web.Response:
    # The user name stays in the form: a typo in the password should not cost both.
    response = page(request, "login.html", error=error, username=username)
    response.set_status(status)
    return response


@routes.post("/login")
async def login(request: web.Request) -> web.Response:
    form = await read_form(request)
    username = str(form.get("username", ""))[:64]
    password = str(form.get("password", ""))[:1024]
    service = request.app[SERVICE]
    config = request.app[CONFIG]
    throttle = request.app[_throttle]
    # Counted before the check (in flight): parallel attempts cannot outrun the limit.
    attempt = throttle.begin(username, request_address(request), time.monotonic())
    if attempt is None:
        return _login_page(request, "throttled", 429, username)
    failed = False
    try:
        if attempt.delay_s > 0:
            await asyncio.sleep(attempt.delay_s)  # the account's back-off, never a lock-out
        user = await service.staff.authenticate(username, password)
    except AuthenticationError:
        failed = True
    finally:
        throttle.end(attempt, failed, time.monotonic())
    if failed:
        return _login_page(request, "bad_login", 401, username)
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
        service = request.app[SERVICE]
        await service.staff.close_session(session_id)
        service.hub.end_sessions({session_key(session_id)})
    response = web.HTTPSeeOther("/login")
    # Deleted with the attributes it was set with: a browser keeps a Secure (__Host-) cookie
    # that a deletion without them does not match.
    response.del_cookie(
        name, path="/", secure=config.cookie_secure, httponly=True, samesite="Strict"
    )
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
    session_id = request.cookies.get(cookie_name(request.app[CONFIG].cookie_secure), "")
    service = request.app[SERVICE]
    ws = web.WebSocketResponse(heartbeat=20.0, max_msg_size=WS_MAX_MESSAGE_BYTES)
    await ws.prepare(request)

    async def on_message(data: dict[str, Any]) -> None:
        # A malformed action from a board is ignored: it must not end that board's connection.
        card_id, action = data.get("id"), data.get("as")
        if data.get("action") == "close" and isinstance(card_id, str) and action in CARD_ACTIONS:
            await service.board.close_card(card_id, user.username, str(action))

    await service.hub.serve(
        ws,
        user.username,
        lambda: service.board.snapshot(user.username),
        on_message,
        transport=request.transport,
        session=session_key(session_id),
    )
    return ws


async def _watch_sessions(app: web.Application) -> AsyncIterator[None]:
    """Close every board whose session has ended, however it ended (sign-out on another
    tablet, account disabled by a manager or from the command line, expiry)."""
    service = app[SERVICE]

    async def watch() -> None:
        while True:
            await asyncio.sleep(SESSION_CHECK_S)
            open_sessions = service.hub.sessions()
            if not open_sessions:
                continue
            try:
                live = await service.staff.live_sessions(open_sessions)
            except Exception:  # the database is closing or busy: check again next time
                logger.warning("could not check the boards' sessions", exc_info=True)
                continue
            ended = open_sessions - live
            if ended:
                logger.info("closing %s board(s) whose session ended", len(ended))
                service.hub.end_sessions(ended)

    task = asyncio.create_task(watch())
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def setup(app: web.Application) -> None:
    app[_throttle] = SignInThrottle()
    app[_proxies] = parse_networks(app[CONFIG].trusted_proxies)
    app.cleanup_ctx.append(_watch_sessions)
    app.add_routes(routes)
