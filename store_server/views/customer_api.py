"""Customer API used by the loyalty app and the reference web client (Bearer app token)."""

from __future__ import annotations

import uuid
from datetime import date
from typing import Any

import msgspec
from aiohttp import web
from limits import parse_many
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

from store_beacon import SLOT_S
from store_server.api_models import (
    CalibrationJoinRequest,
    CheckInRequest,
    ConsentRequest,
    EnrollRequest,
    EnrollResponse,
    EraseRequest,
    PreferencesRequest,
    ProofCheckInRequest,
    RotateRequest,
    WishlistRequest,
    WithdrawRequest,
)
from store_server.checkin_proof import Sighting
from store_server.errors import (
    AuthenticationError,
    ProofRefusedError,
    RateLimitedError,
    ValidationError,
)
from store_server.ingest import decode
from store_server.keys import CONFIG, SERVICE
from store_server.openapi import Registry, build_document
from store_server.policy import validate_name
from store_server.views.staff import request_address

# Every /api/v1 route goes through the registry, which also feeds the OpenAPI document.
api = Registry()
routes = api.routes
# Version of the customer API contract in the OpenAPI document (bump on breaking changes).
API_VERSION = "1.0.0"
# Name under which "my data" is saved by a browser.
EXPORT_FILENAME = "bulle-my-data.json"


class EnrollLimits:
    """Moving-window limits (`limits`, in memory) on anonymous enrollment."""

    def __init__(self, per_address: str, total: str) -> None:
        self._limiter = MovingWindowRateLimiter(MemoryStorage())
        self._per_address = parse_many(per_address)
        self._total = parse_many(total)

    def hit(self, address: str) -> bool:
        """Count one enrollment from `address`; False (nothing counted) if over a limit."""
        checks = [(item, "all") for item in self._total]
        checks += [(item, address) for item in self._per_address]
        if not all(self._limiter.test(item, "enroll", key) for item, key in checks):
            return False
        for item, key in checks:
            self._limiter.hit(item, "enroll", key)
        return True


class ProofLimits:
    """Moving-window limits on proof-of-presence check-ins (`limits`, in memory): refused
    proofs per customer, so that a 16-bit minor cannot be found by trying them all, and every
    attempt per client address (docs/api.md)."""

    def __init__(self, refused_per_customer: str, per_address: str) -> None:
        self._limiter = MovingWindowRateLimiter(MemoryStorage())
        self._refused = parse_many(refused_per_customer)
        self._per_address = parse_many(per_address)

    def allow(self, customer_id: str, address: str) -> bool:
        """Count one attempt from ``address``; False (nothing counted) if over a limit."""
        limiter = self._limiter
        if not all(limiter.test(item, "proof-refused", customer_id) for item in self._refused):
            return False
        if not all(limiter.test(item, "proof", address) for item in self._per_address):
            return False
        for item in self._per_address:
            limiter.hit(item, "proof", address)
        return True

    def refused(self, customer_id: str) -> None:
        """Count one refused proof of the customer."""
        for item in self._refused:
            self._limiter.hit(item, "proof-refused", customer_id)


_enroll_limits = web.AppKey("enroll_limits", EnrollLimits)
_proof_limits = web.AppKey("proof_limits", ProofLimits)


def _json(data: object, status: int = 200) -> web.Response:
    return web.Response(
        body=msgspec.json.encode(data), status=status, content_type="application/json"
    )


async def _customer(request: web.Request) -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise AuthenticationError("send the app token as 'Authorization: Bearer <token>'")
    return await request.app[SERVICE].customers.customer_for_token(token.strip())


@api.operation(
    "POST",
    "/api/v1/enroll",
    "Enroll the app: returns the app token and the beacon identity key",
    status=201,
    request=EnrollRequest,
    request_optional=True,
    response=EnrollResponse,
    auth=False,
    errors=(429,),
)
async def enroll(request: web.Request) -> web.Response:
    # Anonymous, and each enrollment a permanent row and key: limited per client address and
    # in total (settings enroll_rate_limit, enroll_rate_limit_total).
    if not request.app[_enroll_limits].hit(request_address(request)):
        raise RateLimitedError("too many enrollments from here; try again later")
    body = decode(await request.read() or b"{}", EnrollRequest)
    return _json(await request.app[SERVICE].customers.enroll(body.app_counter, body.language), 201)


@api.operation(
    "POST",
    "/api/v1/enroll/rotate",
    "Re-enroll: a new identity key for the app; the old identifiers stop resolving at once",
    request=RotateRequest,
    request_optional=True,
)
async def rotate(request: web.Request) -> web.Response:
    customer_id = await _customer(request)
    body = decode(await request.read() or b"{}", RotateRequest)
    return _json(
        await request.app[SERVICE].customers.rotate_identity(customer_id, body.app_counter)
    )


@api.operation(
    "GET",
    "/api/v1/consent-texts",
    "Current consent texts (French and English) with their hash",
    auth=False,
)
async def consent_texts(request: web.Request) -> web.Response:
    return _json({"texts": await request.app[SERVICE].customers.consent_texts()})


@api.operation("GET", "/api/v1/catalog", "Catalog with stock and aisle at this store", auth=False)
async def catalog(request: web.Request) -> web.Response:
    return _json({"items": await request.app[SERVICE].catalog.items()})


@api.operation(
    "POST",
    "/api/v1/consents",
    "Grant (or renew before expiry) the consent for one purpose",
    status=201,
    request=ConsentRequest,
)
async def grant(request: web.Request) -> web.Response:
    customer_id = await _customer(request)
    body = decode(await request.read(), ConsentRequest)
    result = await request.app[SERVICE].customers.grant(
        customer_id, body.purpose, body.text_hash, body.scope, body.channel, body.app_version
    )
    return _json(result, 201)


@api.operation(
    "POST",
    "/api/v1/consents/withdraw",
    "Withdraw consents (all purposes by default); effective when the call returns",
    request=WithdrawRequest,
    request_optional=True,
)
async def withdraw(request: web.Request) -> web.Response:
    customer_id = await _customer(request)
    body = decode(await request.read() or b"{}", WithdrawRequest)
    return _json(
        await request.app[SERVICE].customers.withdraw(
            customer_id, body.purposes, body.channel, body.app_version
        )
    )


@api.operation(
    "PUT",
    "/api/v1/preferences",
    "Update greeting preferences",
    request=PreferencesRequest,
    errors=(403, 404),
)
async def preferences(request: web.Request) -> web.Response:
    customer_id = await _customer(request)
    body = decode(await request.read(), PreferencesRequest)
    values: dict[str, Any] = {
        f: getattr(body, f) for f in body.__struct_fields__ if getattr(body, f) is not msgspec.UNSET
    }
    for name_field in ("display_name", "title"):
        if values.get(name_field) is not None:
            values[name_field] = validate_name(values[name_field], name_field)
    if values.get("not_today") is not None:
        try:
            date.fromisoformat(values["not_today"])  # a real date, not only its shape
        except ValueError:
            raise ValidationError("not a date (YYYY-MM-DD)", field="not_today") from None
    service = request.app[SERVICE].customers
    legacy = values.pop("legacy_ibeacon", None)
    if legacy is not None:
        await service.set_legacy_ibeacon(customer_id, legacy)
    if values:
        await service.set_preferences(customer_id, values)
    return _json(await _preferences_of(request, customer_id))


@api.operation("GET", "/api/v1/preferences", "My greeting preferences")
async def get_preferences(request: web.Request) -> web.Response:
    customer_id = await _customer(request)
    return _json(await _preferences_of(request, customer_id))


# Shown to the customer next to a static iBeacon id: it is trackable, unlike rotating EIDs.
LEGACY_IBEACON_NOTICE = {
    "fr": "Identifiant fixe : tout appareil Bluetooth peut reconnaître et suivre ce téléphone,"
    " ici et ailleurs. Désactivez-le si votre application sait émettre un identifiant tournant.",
    "en": "Static identifier: any Bluetooth device can recognise and follow this phone, here"
    " and elsewhere. Turn it off if your app can broadcast a rotating identifier.",
}


async def _preferences_of(request: web.Request, customer_id: str) -> dict[str, Any]:
    row = await request.app[SERVICE].customers.preferences(customer_id)
    if row is None:
        return {}
    legacy = bool(row["legacy_ibeacon"])
    row["legacy_ibeacon"] = legacy
    row["trackable"] = legacy
    row["legacy_ibeacon_notice"] = LEGACY_IBEACON_NOTICE if legacy else None
    return row


@api.operation("PUT", "/api/v1/wishlist", "Replace the wishlist", request=WishlistRequest)
async def wishlist(request: web.Request) -> web.Response:
    customer_id = await _customer(request)
    body = decode(await request.read(), WishlistRequest)
    await request.app[SERVICE].customers.set_wishlist(customer_id, body.skus)
    return _json({"skus": list(dict.fromkeys(body.skus))})


@api.operation(
    "POST",
    "/api/v1/check-in",
    'Check in ("I\'m here"): arrival without a beacon',
    request=CheckInRequest,
    request_optional=True,
    errors=(429,),
)
async def check_in(request: web.Request) -> web.Response:
    customer_id = await _customer(request)
    body = decode(await request.read() or b"{}", CheckInRequest)
    service = request.app[SERVICE]
    if body.zone is not None and body.zone not in {zone.id for zone in service.floor.zones}:
        # Checked before the check-in slot is used; the answer does not repeat the text.
        raise ValidationError("not a zone of this store", field="zone")
    return _json(await service.customers.check_in(customer_id, body.zone))


@api.operation(
    "POST",
    "/api/v1/check-in/proof",
    "Proof-of-presence check-in: the store beacons the app ranged near the shop's boxes",
    request=ProofCheckInRequest,
    errors=(403, 429),
)
async def check_in_proof(request: web.Request) -> web.Response:
    customer_id = await _customer(request)
    limits = request.app[_proof_limits]
    if not limits.allow(customer_id, request_address(request)):
        raise RateLimitedError("too many proof check-ins; try again later")
    body = decode(await request.read(), ProofCheckInRequest)
    sightings = [
        Sighting(uuid.UUID(b.uuid), b.major, b.minor, b.rssi, b.seen_at) for b in body.beacons
    ]
    try:
        answer = await request.app[SERVICE].customers.check_in_with_proof(customer_id, sightings)
    except ProofRefusedError:
        limits.refused(customer_id)  # a forger's guesses use up the allowance
        raise
    return _json(answer)


@api.operation(
    "GET",
    "/api/v1/store-beacon",
    "The store beacon to monitor: the chain's UUID, this store's major, the slot length",
    auth=False,
)
async def store_beacon_info(request: web.Request) -> web.Response:
    beacon = request.app[SERVICE].customers.beacon
    if beacon is None:
        return _json({"enabled": False})
    return _json(
        {"enabled": True, "uuid": str(beacon.chain_uuid), "major": beacon.major, "slot_s": SLOT_S}
    )


@api.operation(
    "POST",
    "/api/v1/calibration/join",
    "Join the calibration walk a manager started, as its calibration phone",
    request=CalibrationJoinRequest,
)
async def calibration_join(request: web.Request) -> web.Response:
    customer_id = await _customer(request)
    body = decode(await request.read(), CalibrationJoinRequest)
    # Only a consenting app's windows reach the server: it must be one to calibrate.
    joined = request.app[SERVICE].calibration.join_walk(body.code, customer_id)
    return _json({"joined": joined})


@api.operation("GET", "/api/v1/messages", "Messages to the app (stock answers), newest first")
async def messages(request: web.Request) -> web.Response:
    customer_id = await _customer(request)
    return _json({"messages": await request.app[SERVICE].customers.messages(customer_id)})


@api.operation(
    "GET", "/api/v1/consents", "My consents at this store, with their expiry", errors=(404,)
)
async def my_consents(request: web.Request) -> web.Response:
    customer_id = await _customer(request)
    return _json({"consents": await request.app[SERVICE].customers.consents_here(customer_id)})


@api.operation(
    "GET",
    "/api/v1/me",
    "My data: every record held about me, with the consent history and the staff access log",
    errors=(404,),
)
async def my_data(request: web.Request) -> web.Response:
    customer_id = await _customer(request)
    response = _json(await request.app[SERVICE].customers.my_data(customer_id))
    response.headers["Cache-Control"] = "no-store"
    return response


@api.operation(
    "GET", "/api/v1/me/export", "My data as a JSON file to download", download=True, errors=(404,)
)
async def export(request: web.Request) -> web.Response:
    customer_id = await _customer(request)
    response = _json(await request.app[SERVICE].customers.my_data(customer_id))
    response.headers["Cache-Control"] = "no-store"
    response.headers["Content-Disposition"] = f'attachment; filename="{EXPORT_FILENAME}"'
    return response


@api.operation(
    "DELETE",
    "/api/v1/me",
    "Erase me: my data and keys are deleted; the consent proof stays pseudonymous",
    request=EraseRequest,
    request_optional=True,
)
async def erase(request: web.Request) -> web.Response:
    customer_id = await _customer(request)
    body = decode(await request.read() or b"{}", EraseRequest)
    result = await request.app[SERVICE].customers.erase(customer_id, body.channel, body.app_version)
    return _json(result)


async def openapi_document(request: web.Request) -> web.Response:
    return _json(build_document(api.operations, title="Bulle customer API", version=API_VERSION))


def setup(app: web.Application) -> None:
    config = app[CONFIG]
    app[_enroll_limits] = EnrollLimits(config.enroll_rate_limit, config.enroll_rate_limit_total)
    app[_proof_limits] = ProofLimits(config.proof_rate_limit, config.proof_rate_limit_address)
    app.add_routes(routes)
    app.router.add_get("/api/openapi.json", openapi_document)
