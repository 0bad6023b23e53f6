"""Scanner API: signed batches, allowlist long poll, heartbeats (docs/api.md)."""

from __future__ import annotations

import msgspec
from aiohttp import web

from store_server.errors import ValidationError
from store_server.ingest import Batch, Heartbeat, check_batch, decode
from store_server.keys import METRICS, SERVICE
from store_server.signing import read_headers

routes = web.RouteTableDef()


async def _authenticated(request: web.Request) -> tuple[str, str, bytes]:
    service = request.app[SERVICE]
    body = await request.read()
    signed = read_headers(request.headers)
    store_id = await service.scanners.authenticate_scanner(
        signed, request.method, request.path_qs, body
    )
    return signed.scanner_id, store_id, body


def _json(data: object) -> web.Response:
    return web.Response(body=msgspec.json.encode(data), content_type="application/json")


@routes.post("/api/scanner/v1/batches")
async def post_batch(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    body = await request.read()
    signed = read_headers(request.headers)
    # The registration is checked again in the transaction that records the batch.
    registration = await service.scanners.authenticate_batch(
        signed, request.method, request.path_qs, body
    )
    batch = decode(body, Batch)
    check_batch(batch)
    result = await service.scanners.ingest(
        signed.scanner_id, registration.store_id, batch, registration=registration
    )
    metrics = request.app[METRICS]
    if result.get("duplicate"):
        metrics.batches.labels("duplicate").inc()
    else:
        metrics.batches.labels("accepted").inc()
        metrics.sightings.inc(int(result.get("accepted", 0)))
    return _json(result)


@routes.post("/api/scanner/v1/heartbeat")
async def post_heartbeat(request: web.Request) -> web.Response:
    scanner_id, store_id, body = await _authenticated(request)
    return _json(
        await request.app[SERVICE].scanners.heartbeat(scanner_id, store_id, decode(body, Heartbeat))
    )


# Query integers (allowlist versions, seconds to wait) are at most 18 ASCII digits: they stay
# within SQLite's and a float's exact range, and a 400-digit value never reaches arithmetic.
QUERY_INT_MAX_DIGITS = 18


def _int_param(request: web.Request, name: str) -> int | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return None
    if not (raw.isascii() and raw.isdigit()):
        raise ValidationError("must be a whole number (digits 0-9)", field=name)
    if len(raw) > QUERY_INT_MAX_DIGITS:
        raise ValidationError(f"at most {QUERY_INT_MAX_DIGITS} digits", field=name)
    return int(raw)


@routes.get("/api/scanner/v1/allowlist")
async def get_allowlist(request: web.Request) -> web.Response:
    await _authenticated(request)
    since = _int_param(request, "since")
    wait = _int_param(request, "wait") or 0
    return _json(await request.app[SERVICE].scanners.allowlist(since, float(wait)))
