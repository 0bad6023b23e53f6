"""Manager pages: the live floor map, and calibration (the guided walk, learned values, reset).

The map shows counts per zone and the boxes' health; nothing on it or in its live feed names a
customer. The walk's code is shown to the manager, who types it into the calibration phone's app
(``POST /api/v1/calibration/join``); the taps "I am here" are made on this page.
"""

from __future__ import annotations

import logging

from aiohttp import web

from store_server.errors import NotFoundError, ValidationError
from store_server.floor_map import box_health, floor_map
from store_server.keys import SERVICE
from store_server.services.store import StoreServices
from store_server.staff import StaffUser
from store_server.views.manager import SCANNER_STALE_S, format_time, manager_only
from store_server.views.staff import page, read_form

logger = logging.getLogger(__name__)

routes = web.RouteTableDef()

# The map's page asks for fresh counts this often (ms): a customer walking between zones
# shows within two seconds, and a tablet left on the page costs one small request a second.
LIVE_POLL_MS = 1000


def _service(request: web.Request) -> StoreServices:
    return request.app[SERVICE]


async def _health(service: StoreServices) -> dict[str, str]:
    now = service.clock()
    rows = {str(r["id"]): r for r in await service.scanners.scanner_rows()}
    return {
        spec.id: box_health(rows.get(spec.id), now, SCANNER_STALE_S)
        for spec in service.floor.scanners
    }


# -- the floor map ---------------------------------------------------------------------------


@routes.get("/manager/floor")
@manager_only
async def floor_page(request: web.Request, user: StaffUser) -> web.StreamResponse:
    service = _service(request)
    return page(
        request,
        "manager_floor.html",
        user=user,
        section="manager_floor.html",
        map=floor_map(service.floor),
        counts=service.board.zone_counts(),
        health=await _health(service),
        poll_ms=LIVE_POLL_MS,
    )


@routes.get("/manager/floor/live")
@manager_only
async def floor_live(request: web.Request, user: StaffUser) -> web.StreamResponse:
    """Counts per zone and each box's health: no customer identifier."""
    service = _service(request)
    body = {"zones": service.board.zone_counts(), "boxes": await _health(service)}
    return web.json_response(body, headers={"Cache-Control": "no-store"})


# -- calibration -----------------------------------------------------------------------------


@routes.get("/manager/calibration")
@manager_only
async def calibration_page(request: web.Request, user: StaffUser) -> web.StreamResponse:
    service = _service(request)
    return page(
        request,
        "manager_calibration.html",
        user=user,
        section="manager_calibration.html",
        fmt_time=format_time,
        walk=service.calibration.walk(),
        boxes=service.calibration.boxes(),
        zones=service.floor.zones,
        zone_names={z.id: (z.name_fr, z.name_en) for z in service.floor.zones},
    )


@routes.get("/manager/calibration/walk")
@manager_only
async def walk_status(request: web.Request, user: StaffUser) -> web.StreamResponse:
    """The walk's progress, for the page's live bar."""
    walk = _service(request).calibration.walk()
    body = (
        None
        if walk is None
        else {
            "joined": walk.joined,
            "zone": walk.zone,
            "progress": walk.progress,
            "done_zones": list(walk.done_zones),
        }
    )
    return web.json_response({"walk": body}, headers={"Cache-Control": "no-store"})


@routes.post("/manager/calibration/walk")
@manager_only
async def start_walk(request: web.Request, user: StaffUser) -> web.StreamResponse:
    _service(request).calibration.start_walk(user.username)
    logger.info("calibration walk started by %s", user.username)
    raise web.HTTPSeeOther("/manager/calibration")


@routes.post("/manager/calibration/walk/here")
@manager_only
async def here(request: web.Request, user: StaffUser) -> web.StreamResponse:
    form = await read_form(request)
    zone = str(form.get("zone", ""))
    service = _service(request)
    if zone not in {z.id for z in service.floor.zones}:
        raise ValidationError("not a zone of this store", field="zone")
    service.calibration.here(zone)
    raise web.HTTPSeeOther("/manager/calibration")


@routes.post("/manager/calibration/walk/end")
@manager_only
async def end_walk(request: web.Request, user: StaffUser) -> web.StreamResponse:
    _service(request).calibration.end_walk()
    logger.info("calibration walk ended by %s", user.username)
    raise web.HTTPSeeOther("/manager/calibration")


@routes.post("/manager/calibration/reset")
@manager_only
async def reset(request: web.Request, user: StaffUser) -> web.StreamResponse:
    form = await read_form(request)
    box = str(form.get("scanner_id", "")) or None
    try:
        await _service(request).calibration.reset(box)
    except NotFoundError:
        raise
    logger.info("learned calibration of %s reset by %s", box or "every box", user.username)
    raise web.HTTPSeeOther("/manager/calibration")


def setup(app: web.Application) -> None:
    app.add_routes(routes)
