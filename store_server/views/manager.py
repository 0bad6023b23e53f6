"""Manager pages: scanners, zones and calibration, stock, staff accounts, consent audit, access log.

Every route checks, on every request, that the signed-in user is a manager (the role is read
from the database with the session, so a demotion or a disabled account takes effect at once).
Pages that show anything about customers record the view itself in the access log.
"""

from __future__ import annotations

import functools
import logging
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any, cast

from aiohttp import web

from store_server import staff
from store_server.consent import verify_chain
from store_server.errors import (
    AuthenticationError,
    ConflictError,
    ConsentLogError,
    StoreServerError,
    ValidationError,
)
from store_server.i18n_names import FieldError, field_error
from store_server.keys import SERVICE
from store_server.services.store import StoreServices
from store_server.staff import StaffUser
from store_server.stock import parse_count, parse_stock_csv
from store_server.views.staff import current_user, language, page, read_form

logger = logging.getLogger(__name__)

routes = web.RouteTableDef()

# A scanner heartbeats every 15 s by default: three missed beats mean it is in trouble.
SCANNER_STALE_S = 45.0
# The access log page shows the newest entries only: enough for a daily check, and each
# customer named on the page costs one more access log row.
ACCESS_LOG_PAGE_ROWS = 200
# The consent audit shows the newest entries; the whole chain is still verified.
CONSENT_LOG_PAGE_ROWS = 500
# The pseudonymous subject reference is shown shortened: enough to match rows by eye.
SUBJECT_REF_CHARS = 16
# Scanner ids are short names written in configuration files and logs.
SCANNER_ID_MAX = 64
# The entry where consent.verify_chain found the chain broken ("... at seq 12: ...").
_BROKEN_AT = re.compile(r"seq (\d+)")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
ManagerHandler = Callable[[web.Request, StaffUser], Awaitable[web.StreamResponse]]


def manager_only(handler: ManagerHandler) -> Handler:
    """Wrap a handler: anonymous -> sign in (401), staff -> 403 page, manager -> handler."""

    @functools.wraps(handler)
    async def wrapper(request: web.Request) -> web.StreamResponse:
        user = await current_user(request)
        if user is None:
            raise AuthenticationError("sign in first")
        if user.role != "manager":
            response = page(request, "forbidden.html", user=user)
            response.set_status(403)
            return response
        return await handler(request, user)

    return wrapper


def _service(request: web.Request) -> StoreServices:
    return request.app[SERVICE]


def _manager_page(
    request: web.Request, user: StaffUser, template: str, *, status: int = 200, **context: Any
) -> web.Response:
    response = page(request, template, user=user, section=template, fmt_time=format_time, **context)
    response.set_status(status)
    return response


def _error(request: web.Request, exc: StoreServerError, field: str) -> FieldError:
    """The error shown beside the form field it concerns, in the page's language."""
    if isinstance(exc, ConflictError):
        return field_error(language(request), field, exc.reason, field)
    return field_error(language(request), exc.field or field, exc.reason, field)


@routes.get("/manager")
@manager_only
async def manager_home(request: web.Request, user: StaffUser) -> web.StreamResponse:
    raise web.HTTPSeeOther("/manager/scanners")


# -- scanners --------------------------------------------------------------------------------


async def _scanners_page(
    request: web.Request,
    user: StaffUser,
    *,
    secret: tuple[str, str] | None = None,
    error: FieldError | None = None,
    status: int = 200,
    value: str = "",
) -> web.Response:
    service = _service(request)
    now = service.clock()
    found = await service.scanners.scanner_rows()
    for row in found:
        seen = row["last_seen_at"]
        if row["revoked_at"] is not None:
            row["state"] = "revoked"
        elif seen is None or now - seen > SCANNER_STALE_S:
            row["state"] = "stale"
        else:
            row["state"] = "active"
        row["age_s"] = None if seen is None else max(0, round(now - seen))
    return _manager_page(
        request,
        user,
        "manager_scanners.html",
        scanners=found,
        secret=secret,
        error=error,
        status=status,
        value=value,
    )


@routes.get("/manager/scanners")
@manager_only
async def scanners(request: web.Request, user: StaffUser) -> web.StreamResponse:
    return await _scanners_page(request, user)


def _valid_scanner_id(value: str) -> bool:
    return 0 < len(value) <= SCANNER_ID_MAX and value.replace("-", "").replace("_", "").isalnum()


@routes.post("/manager/scanners")
@manager_only
async def register_scanner(request: web.Request, user: StaffUser) -> web.StreamResponse:
    form = await read_form(request)
    scanner_id = str(form.get("scanner_id", "")).strip()
    if not _valid_scanner_id(scanner_id):
        error = field_error(language(request), "scanner_id", "identifier", "scanner_id")
        return await _scanners_page(request, user, error=error, status=422, value=scanner_id)
    replace = form.get("replace") == "1"
    try:
        secret = await _service(request).scanners.register_scanner(scanner_id, replace=replace)
    except ConflictError as exc:
        # An active scanner's secret changes only when the manager says so: the running box
        # would be refused from its next request.
        error = _error(request, exc, "scanner_id")
        return await _scanners_page(request, user, error=error, status=409, value=scanner_id)
    logger.info("scanner %s registered by %s", scanner_id, user.username)
    # The secret is rendered in this one response (no-store) and never again.
    return await _scanners_page(request, user, secret=(scanner_id, secret))


@routes.post("/manager/scanners/{scanner_id}/revoke")
@manager_only
async def revoke_scanner(request: web.Request, user: StaffUser) -> web.StreamResponse:
    scanner_id = request.match_info["scanner_id"]
    await _service(request).scanners.revoke_scanner(scanner_id)
    logger.info("scanner %s revoked by %s", scanner_id, user.username)
    raise web.HTTPSeeOther("/manager/scanners")


# -- zones and calibration -------------------------------------------------------------------


async def _zones_page(
    request: web.Request,
    user: StaffUser,
    *,
    error: FieldError | None = None,
    error_row: str | None = None,
    status: int = 200,
) -> web.Response:
    service = _service(request)
    registered = {str(r["id"]) for r in await service.scanners.scanner_rows()}
    return _manager_page(
        request,
        user,
        "manager_zones.html",
        zones=service.floor.zones,
        scanners=service.floor.scanners,
        offsets=service.scanners.calibration(),
        registered=registered,
        zone_names={z.id: (z.name_fr, z.name_en) for z in service.floor.zones},
        error=error,
        error_row=error_row,
        status=status,
    )


@routes.get("/manager/zones")
@manager_only
async def zones(request: web.Request, user: StaffUser) -> web.StreamResponse:
    return await _zones_page(request, user)


@routes.post("/manager/zones/{scanner_id}/calibration")
@manager_only
async def calibrate(request: web.Request, user: StaffUser) -> web.StreamResponse:
    scanner_id = request.match_info["scanner_id"]
    form = await read_form(request)
    service = _service(request)
    try:
        try:
            offset = float(str(form.get("rssi_offset_db", "")).replace(",", "."))
        except ValueError:
            raise ValidationError("not a number", field="rssi_offset_db", reason="number") from None
        await service.scanners.set_calibration(scanner_id, offset, user.username)
    except StoreServerError as exc:
        if exc.status == 404:
            raise
        error = _error(request, exc, "rssi_offset_db")
        return await _zones_page(request, user, error=error, error_row=scanner_id, status=422)
    logger.info("calibration of %s set to %+.1f dB by %s", scanner_id, offset, user.username)
    raise web.HTTPSeeOther("/manager/zones")


# -- stock -----------------------------------------------------------------------------------


async def _stock_page(
    request: web.Request,
    user: StaffUser,
    *,
    notice: str | None = None,
    error: FieldError | None = None,
    error_row: str | None = None,
    status: int = 200,
    typed: dict[str, str] | None = None,
) -> web.Response:
    service = _service(request)
    items = await service.catalog.items()
    return _manager_page(
        request,
        user,
        "manager_stock.html",
        items=items,
        notice=notice,
        error=error,
        error_row=error_row,
        status=status,
        typed=typed or {},
    )


@routes.get("/manager/stock")
@manager_only
async def stock(request: web.Request, user: StaffUser) -> web.StreamResponse:
    return await _stock_page(request, user)


@routes.post("/manager/stock/import")
@manager_only
async def stock_import(request: web.Request, user: StaffUser) -> web.StreamResponse:
    form = await read_form(request)
    upload = form.get("file")
    service = _service(request)
    try:
        if not isinstance(upload, web.FileField):
            raise ValidationError("choose a CSV file", field="file", reason="choose_file")
        try:
            text = upload.file.read().decode("utf-8-sig")
        except UnicodeDecodeError:
            raise ValidationError(
                "the file is not UTF-8 text", field="file", reason="not_utf8"
            ) from None
        items = parse_stock_csv(text)
        count = await service.catalog.import_stock(items)
    except StoreServerError as exc:
        return await _stock_page(request, user, error=_error(request, exc, "file"), status=422)
    logger.info("%s stock items imported by %s", count, user.username)
    return await _stock_page(request, user, notice=f"imported:{count}")


@routes.post("/manager/stock/{sku}")
@manager_only
async def stock_edit(request: web.Request, user: StaffUser) -> web.StreamResponse:
    sku = request.match_info["sku"]
    form = await read_form(request)
    service = _service(request)
    try:
        count = parse_count(str(form.get("count", "")), "count")
        aisle = str(form.get("aisle", ""))
        await service.catalog.set_stock(sku, count, aisle)
    except StoreServerError as exc:
        if exc.status == 404:
            raise
        error = _error(request, exc, "count")
        typed = {"count": str(form.get("count", "")), "aisle": str(form.get("aisle", ""))}
        return await _stock_page(request, user, error=error, error_row=sku, status=422, typed=typed)
    raise web.HTTPSeeOther("/manager/stock")


# -- staff accounts --------------------------------------------------------------------------


async def _staff_page(
    request: web.Request,
    user: StaffUser,
    *,
    error: FieldError | None = None,
    error_row: str | None = None,
    status: int = 200,
    form: dict[str, str] | None = None,
) -> web.Response:
    accounts = await _service(request).staff.accounts()
    return _manager_page(
        request,
        user,
        "manager_staff.html",
        accounts=accounts,
        error=error,
        error_row=error_row,
        status=status,
        form=form or {},
    )


@routes.get("/manager/staff")
@manager_only
async def staff_accounts(request: web.Request, user: StaffUser) -> web.StreamResponse:
    return await _staff_page(request, user)


@routes.post("/manager/staff")
@manager_only
async def staff_add(request: web.Request, user: StaffUser) -> web.StreamResponse:
    form = await read_form(request)
    username = str(form.get("username", "")).strip()[:64]
    password = str(form.get("password", ""))[:1024]
    role = cast(staff.Role, str(form.get("role", "staff")))
    try:
        await _service(request).staff.add(username, password, role)
    except StoreServerError as exc:
        return await _staff_page(
            request,
            user,
            error=_error(request, exc, "username"),
            status=422,
            form={"username": username, "role": role},
        )
    logger.info("account %s (%s) created by %s", username, role, user.username)
    raise web.HTTPSeeOther("/manager/staff")


@routes.post("/manager/staff/{username}/disable")
@manager_only
async def staff_disable(request: web.Request, user: StaffUser) -> web.StreamResponse:
    username = request.match_info["username"]
    if username == user.username:
        error = field_error(language(request), None, "self_disable", "disable")
        return await _staff_page(request, user, error=error, error_row=username, status=422)
    service = _service(request)
    await service.staff.set_disabled(username, True)
    service.hub.end_sessions(username=username)  # their open boards close now
    logger.info("account %s disabled by %s", username, user.username)
    raise web.HTTPSeeOther("/manager/staff")


@routes.post("/manager/staff/{username}/enable")
@manager_only
async def staff_enable(request: web.Request, user: StaffUser) -> web.StreamResponse:
    username = request.match_info["username"]
    await _service(request).staff.set_disabled(username, False)
    logger.info("account %s enabled by %s", username, user.username)
    raise web.HTTPSeeOther("/manager/staff")


# -- consent audit and access log ------------------------------------------------------------


@routes.get("/manager/consent-log")
@manager_only
async def consent_log(request: web.Request, user: StaffUser) -> web.StreamResponse:
    """The consent proof: pseudonymous subject references only (no customer is named)."""
    service = _service(request).customers
    entries = await service.consent_log()
    try:
        verified: int | None = verify_chain(entries)
        # And the signed checkpoints: a rewrite that recomputed the hashes shows here too.
        await service.verify_checkpoints(entries)
        broken = None
    except ConsentLogError as exc:
        # The page names the entry; the English sentence stays in the server's log.
        logger.warning("%s", exc.message)
        verified, broken = None, _BROKEN_AT.search(exc.message)
    shown = entries[-CONSENT_LOG_PAGE_ROWS:][::-1]
    return _manager_page(
        request,
        user,
        "manager_consent.html",
        entries=shown,
        verified=verified,
        broken=broken.group(1) if broken else None,
        ref_chars=SUBJECT_REF_CHARS,
    )


@routes.get("/manager/access-log")
@manager_only
async def access_log(request: web.Request, user: StaffUser) -> web.StreamResponse:
    """Who saw which card when; viewing this page is itself logged for every customer shown."""
    service = _service(request)
    entries = await service.board.access_log(user.username, ACCESS_LOG_PAGE_ROWS)
    for entry in entries:
        entry["subject"] = entry["subject"][:SUBJECT_REF_CHARS]
    return _manager_page(request, user, "manager_access.html", entries=entries)


def format_time(value: float | None) -> str:
    """A timestamp as local date and time for the tables (template filter)."""
    if value is None:
        return "—"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(value))


def setup(app: web.Application) -> None:
    app.add_routes(routes)
