"""The aiohttp application: middlewares (errors, security headers, origin checks) and wiring."""

from __future__ import annotations

import datetime
import logging
import time
import tomllib
from collections.abc import AsyncIterator, Awaitable, Callable
from importlib import resources
from pathlib import Path

import aiohttp_jinja2
import jinja2
import msgspec
from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from store_server.config import ServerConfig, metrics_address
from store_server.consent import ConsentText
from store_server.errors import ConfigError, ForbiddenError, StoreServerError, UnavailableError
from store_server.floor import Floor, floor_from_dict
from store_server.keys import CONFIG, METRICS, METRICS_PORT, SERVICE
from store_server.keyseal import ChainKeys, chain_keys
from store_server.keywrap import KeyWrapError, parse_master_key
from store_server.metrics import Metrics, metrics_app
from store_server.services.consent_feed import is_unavailable
from store_server.services.store import StoreServices
from store_server.storage.database import Database, target_of
from store_server.storage.notify import ConsentListener
from store_server.storage.pg import PgTarget
from store_server.views import (
    customer_api,
    customer_pages,
    floor_pages,
    health,
    manager,
    scanner_api,
    staff,
)

logger = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; frame-ancestors 'none'; base-uri 'none'; "
    "form-action 'self'"
)
# A 503 (database out of reach, consent view out of date) asks for a retry this soon, in
# seconds: a scanner keeps its batch and comes back within it, so an outage's end is seen
# within seconds rather than at the end of a 30 s backoff.
UNAVAILABLE_RETRY_AFTER_S = 2
_UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# Paths authenticated by a bearer token or a request signature, not by a cookie: a browser
# cannot be tricked into sending those credentials, so no origin check applies.
_NON_COOKIE_PREFIXES = ("/api/scanner/", "/api/v1/")


def _error_response(status: int, code: str, message: str, field: str | None) -> web.Response:
    error: dict[str, str] = {"code": code, "message": message}
    if field is not None:
        error["field"] = field
    return web.Response(
        body=msgspec.json.encode({"error": error}),
        status=status,
        content_type="application/json",
    )


_HTTP_CODES = {
    400: "bad_request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",
    429: "rate_limited",
}


def _error_of(request: web.Request, exc: Exception) -> web.Response:
    """The JSON error envelope of an exception a handler raised; re-raise what stays as is.

    A StoreServerError becomes its envelope (a page's 401 on GET/HEAD a redirect to the login
    page, a page's 404 the styled error page); an HTTPException of 400 or more on
    /api/ (or any 413) a generic envelope, a page's 403/404/405 the styled error page, other
    HTTPExceptions (redirects) stay; anything else is logged and becomes a 500.
    """
    page = not request.path.startswith(("/api/", "/ws/"))
    if isinstance(exc, StoreServerError):
        if exc.status == 401 and page and request.method in ("GET", "HEAD"):
            raise web.HTTPSeeOther("/login") from None
        if page and exc.status == 404:
            return staff.error_page(request, exc.status)
        response = _error_response(exc.status, exc.code, exc.message, exc.field)
        if isinstance(exc, UnavailableError):
            # Scanners retry this soon (they keep the batch): the outage may be short.
            response.headers["Retry-After"] = str(UNAVAILABLE_RETRY_AFTER_S)
        return response
    if isinstance(exc, web.HTTPException):
        if exc.status >= 400 and (request.path.startswith("/api/") or exc.status == 413):
            return _error_response(
                exc.status, _HTTP_CODES.get(exc.status, "http_error"), exc.reason, None
            )
        if page and exc.status in staff.ERROR_PAGES:
            return staff.error_page(request, exc.status)
        raise exc
    if isinstance(exc, ConnectionResetError):
        # The client went away mid-request (e.g. mid-upload): nothing to answer, nothing wrong
        # on this side. The answer below is never delivered; it only ends the request quietly.
        logger.debug("client disconnected during %s %s", _method(request), route_of(request))
        return _error_response(400, "client_disconnected", "the client disconnected", None)
    # The route as declared, not the path: nothing the client typed reaches the log.
    logger.error("unhandled error on %s %s", _method(request), route_of(request), exc_info=exc)
    return _error_response(500, "internal_error", "internal error", None)


def _code_of(exc: Exception, status: int) -> str:
    """The error code of a refused request, for the refusal counter (a bounded set)."""
    if isinstance(exc, StoreServerError):
        return exc.code
    return _HTTP_CODES.get(status, "internal_error" if status >= 500 else "http_error")


def request_middleware_factory(
    config: ServerConfig, metrics: Metrics | None = None
) -> Callable[..., Awaitable[web.StreamResponse]]:
    """The one middleware of every route, in this order:

    1. a declared oversized body is refused up front (413), even on routes that never read it;
    2. on cookie-authenticated paths, an unsafe method or a WebSocket from another origin is
       refused (``bad_origin``); paths under _NON_COOKIE_PREFIXES are exempt;
    3. errors become the JSON envelope (:func:`_error_of`), counted in ``metrics``;
    4. every answer, error or redirect included, gets the security headers.

    One coroutine per request instead of four chained ones (the scanner batch route is the
    hot path: hundreds of requests a second).
    """
    allowed = {o.rstrip("/") for o in (config.public_origin, *config.extra_origins) if o}
    max_bytes = config.max_body_bytes

    @web.middleware
    async def request_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            try:
                length = request.content_length
                if length is not None and length > max_bytes:
                    raise web.HTTPRequestEntityTooLarge(max_size=max_bytes, actual_size=length)
                path = request.path
                method = request.method
                if not path.startswith(_NON_COOKIE_PREFIXES) and (
                    method in _UNSAFE_METHODS or path.startswith("/ws/")
                ):
                    _check_origin(request, allowed)
                response = await handler(request)
            except Exception as exc:  # envelope, redirect or re-raised (HTTPException)
                response = _error_of(request, exc)
                if metrics is not None and response.status >= 400:
                    metrics.refused(request.path, _code_of(exc, response.status))
        except web.HTTPException as exc:
            if metrics is not None and exc.status >= 400:
                metrics.refused(request.path, _code_of(exc, exc.status))
            _add_security_headers(request, exc)
            raise
        if not response.prepared:
            _add_security_headers(request, response)
        return response

    return request_middleware


def _check_origin(request: web.Request, allowed: set[str]) -> None:
    """Refuse a cookie-authenticated unsafe request made from another site (``bad_origin``)."""
    origin = request.headers.get("Origin")
    own = f"{request.scheme}://{request.host}"
    if origin is not None and origin != own and origin not in allowed:
        raise ForbiddenError("cross-origin request refused", code="bad_origin")
    site = request.headers.get("Sec-Fetch-Site")
    if origin is None and site not in (None, "same-origin", "none"):
        raise ForbiddenError("cross-site request refused", code="bad_origin")


_QUIET_PREFIXES = ("/api/scanner/", "/healthz", "/readyz")
"""Routes the scanners call every second or so, and the health probes a monitor calls every
few seconds: their successful requests are not logged."""
_CUSTOMER_PREFIXES = ("/api/v1/", "/app/")
"""Routes of the customers' phones: logged without the phone's address."""
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
"""Methods logged as sent; any other token a client made up is logged as OTHER."""
_NO_ROUTE = "(no route)"
"""What the log shows for a path that matches no route (the path itself is the client's)."""


def _method(request: web.BaseRequest) -> str:
    return request.method if request.method in _METHODS else "OTHER"


def route_of(request: web.BaseRequest) -> str:
    """The route a request matched, as declared (``/manager/stock/{sku}``), never the path or
    query the client sent: nothing a client typed reaches the log through it."""
    match_info = getattr(request, "match_info", None)
    route = getattr(match_info, "route", None)
    resource = getattr(route, "resource", None)
    return _NO_ROUTE if resource is None else resource.canonical


class AccessLogger(AbstractAccessLogger):
    """The access log (INFO, logger ``aiohttp.access``), minding whose requests they are.

    Each line is the time, the method, the route as declared (not the path and query sent),
    the status and the size: no query string, referer or user agent, nothing a client typed
    (a customer's text never reaches the log, whatever route it is sent to).

    - Scanners: twenty scanners posting a batch a second, with their heartbeats and long
      polls, would write about two million lines a day; their successful requests are left
      out (each scanner's last contact is on the manager's scanner page), their refused
      requests (4xx, 5xx) are logged, with the scanner's address.
    - Customers' phones (``/api/v1/``, ``/app/``): without the client address, so that an
      erased customer's requests leave no trace of them in the log.
    - Staff, manager and every other route: with the client's address first.
    """

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        path = request.path
        if path.startswith(_QUIET_PREFIXES) and response.status < 400:
            return
        method = _method(request)
        version = request.version
        now = datetime.datetime.now(datetime.UTC).astimezone()
        line = (
            f'{now:[%d/%b/%Y:%H:%M:%S %z]} "{method} {route_of(request)}'
            f' HTTP/{version.major}.{version.minor}" {response.status} {response.body_length}'
        )
        if not path.startswith(_CUSTOMER_PREFIXES):
            line = f"{request.remote or '-'} {line}"
        self.logger.info("%s", line)


def _add_security_headers(request: web.Request, response: web.StreamResponse) -> None:
    headers = response.headers
    headers.setdefault("Content-Security-Policy", CSP)
    headers.setdefault("X-Content-Type-Options", "nosniff")
    # same-origin, not no-referrer: with no-referrer browsers send "Origin: null" on form
    # posts, which would defeat the origin check; nothing leaks to other sites either way.
    headers.setdefault("Referrer-Policy", "same-origin")
    headers.setdefault("X-Frame-Options", "DENY")
    if not request.path.startswith("/static/"):
        headers.setdefault("Cache-Control", "no-store")


def load_floor(path: Path) -> Floor:
    return floor_from_dict(_read_toml(path))


def store_timezone(path: Path) -> str | None:
    """The store's IANA time zone (for quiet hours and "not today"), if the store file has one."""
    store = _read_toml(path).get("store", {})
    value = store.get("timezone") if isinstance(store, dict) else None
    return value if isinstance(value, str) else None


def _read_toml(path: Path) -> dict[str, object]:
    with path.open("rb") as handle:
        return tomllib.load(handle)


def load_consent_texts() -> list[ConsentText]:
    text = resources.files("store_server").joinpath("consent_texts.toml").read_text("utf-8")
    return [
        ConsentText(
            purpose=t["purpose"], version=t["version"], text_fr=t["text_fr"], text_en=t["text_en"]
        )
        for t in tomllib.loads(text)["texts"]
    ]


def create_app(config: ServerConfig, *, base_dir: Path | None = None) -> web.Application:
    """Build the application; the database opens and the service starts in cleanup_ctx."""
    base = base_dir or Path.cwd()
    master_key = parse_master_key(config.master_key)
    chain = load_chain_keys(config, master_key, base)
    store_file = _resolve(base, config.store_file)
    floor = load_floor(store_file)
    timezone = store_timezone(store_file)
    metrics = Metrics()
    app = web.Application(
        client_max_size=config.max_body_bytes,
        middlewares=[request_middleware_factory(config, metrics)],
    )
    app[CONFIG] = config
    app[METRICS] = metrics
    aiohttp_jinja2.setup(
        app, loader=jinja2.PackageLoader("store_server", "templates"), autoescape=True
    )

    async def service_ctx(app: web.Application) -> AsyncIterator[None]:
        target = target_of(config, _resolve(base, config.db_path))
        db = Database(target)
        # On PostgreSQL the database is shared by the chain's servers: follow the consent log
        # (woken by its notifications) and fail closed when out of date.
        wakeups = (
            ConsentListener(target.url, password=target.password)
            if isinstance(target, PgTarget)
            else None
        )
        service = StoreServices(
            config=config,
            floor=floor,
            db=db,
            master_key=master_key,
            consent_texts=load_consent_texts(),
            timezone=timezone,
            chain=chain,
            shared=wakeups is not None,
            wakeups=wakeups,
        )
        service.tick_observer = metrics.tick_seconds.observe
        app[SERVICE] = service
        await service.start()
        yield
        await service.stop()
        db.close()

    app.cleanup_ctx.append(service_ctx)
    if config.metrics_listen:
        app.cleanup_ctx.append(_metrics_listener)
    app.router.add_static("/static", Path(str(resources.files("store_server") / "static")))
    app.add_routes(scanner_api.routes)
    app.add_routes(health.routes)
    customer_api.setup(app)
    staff.setup(app)
    customer_pages.setup(app)
    manager.setup(app)
    floor_pages.setup(app)

    async def on_shutdown(app: web.Application) -> None:
        if SERVICE in app:
            await app[SERVICE].release_long_polls()
            await app[SERVICE].hub.close_all()

    app.on_shutdown.append(on_shutdown)
    return app


async def _metrics_listener(app: web.Application) -> AsyncIterator[None]:
    """Serve ``GET /metrics`` on ``metrics_listen``, apart from the proxied listener."""
    config, metrics = app[CONFIG], app[METRICS]

    async def render() -> bytes:
        service = app[SERVICE]
        feed = service.feed
        if feed is not None:
            status = feed.status()
            metrics.set_consent_feed(
                state=status.state,
                age_s=status.age_s,
                seq=feed.cursor.seq,
                applied=feed.applied,
                failures=feed.failures,
                listening=feed.listening,
            )
        try:
            rows = await service.scanners.scanner_rows()
        except Exception as exc:
            if not is_unavailable(exc):
                raise
            rows = []  # the database is out of reach: the scrape still answers
        metrics.board_connections.set(len(service.hub))
        metrics.board_queue_max.set(service.hub.max_queue_depth())
        metrics.identities.set(len(service.coordinator.resolver))
        for queue, depth in service.queue_depths().items():
            metrics.pending.labels(queue).set(depth)
        for outcome, count in service.scanners.box_beacon_windows.items():
            metrics.box_beacons.labels(outcome).set(count)
        metrics.set_scanners(rows, time.time())
        return metrics.exposition()

    host, port = metrics_address(config.metrics_listen)
    runner = web.AppRunner(metrics_app(render, config.metrics_token), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = runner.addresses[0][1] if runner.addresses else port
    app[METRICS_PORT] = int(bound)
    logger.info("metrics on http://%s:%s/metrics", host, bound)
    yield
    await runner.cleanup()


def load_chain_keys(config: ServerConfig, master_key: bytes, base: Path) -> ChainKeys | None:
    """Chain mode's keys from the configured files (None outside chain mode); a one-line
    ConfigError naming the setting when a file is missing or holds no usable key."""
    if not config.chain_mode:
        return None
    texts: dict[str, bytes | None] = {}
    for key in ("authority_public_key_file", "authority_key_file"):
        name = getattr(config, key)
        if not name:
            texts[key] = None
            continue
        path = _resolve(base, name)
        try:
            texts[key] = path.read_bytes()
        except OSError as exc:
            raise ConfigError(
                f"{key}: cannot read {path} ({exc.strerror}): see docs/operations.md, chain mode",
                key=key,
            ) from None
    # Only the key authority opens identity keys; another server never loads a private key.
    private = texts["authority_key_file"] if config.key_authority else None
    try:
        public = texts["authority_public_key_file"] or texts["authority_key_file"]
        return chain_keys(master_key, public, private)
    except KeyWrapError as exc:
        key = "authority_key_file" if config.key_authority else "authority_public_key_file"
        raise ConfigError(f"{key}: {exc}", key=key) from None


def _resolve(base: Path, value: str) -> Path:
    path = Path(value)
    return path if path.is_absolute() else base / path
