"""Request bodies of the customer API (validated with msgspec; schemas feed the OpenAPI doc)."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from store_server.consent import Purpose, Scope
from store_server.policy import GreetMode, Language, NameForm

Hhmm = Annotated[str, msgspec.Meta(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$")]
IsoDate = Annotated[str, msgspec.Meta(pattern=r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")]
# The app's version as it goes into the append-only consent log, which outlives erasure:
# dotted numbers only ("2.4.1"), so that nothing free-form (a name, an e-mail) can be kept.
AppVersion = Annotated[str, msgspec.Meta(pattern=r"^[0-9]{1,6}(\.[0-9]{1,6}){0,3}$", max_length=27)]


class EnrollRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    language: Language = "fr"
    app_counter: Annotated[int, msgspec.Meta(ge=0, lt=2**32)] | None = None


class RotateRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    app_counter: Annotated[int, msgspec.Meta(ge=0, lt=2**32)] | None = None


class EnrollResponse(msgspec.Struct, frozen=True):
    customer_id: str
    token: str
    identity_key: str
    rotation_exponent: int
    beacon_time: int


class ConsentRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    purpose: Purpose
    text_hash: Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{64}$")]
    scope: Scope = "store"
    channel: Literal["app", "web", "in_store"] = "app"
    app_version: AppVersion | None = None


class WithdrawRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    purposes: Annotated[list[Purpose], msgspec.Meta(min_length=1)] = msgspec.field(
        default_factory=lambda: ["greeting", "stock_check"]
    )
    channel: Literal["app", "web", "in_store"] = "app"
    app_version: AppVersion | None = None


class PreferencesRequest(
    msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True
):
    """A partial update: an absent field is left as it is; `null` clears a clearable one."""

    display_name: Annotated[str, msgspec.Meta(max_length=80)] | msgspec.UnsetType | None = (
        msgspec.UNSET
    )
    title: Annotated[str, msgspec.Meta(max_length=40)] | msgspec.UnsetType | None = msgspec.UNSET
    name_form: NameForm | msgspec.UnsetType = msgspec.UNSET
    language: Language | msgspec.UnsetType = msgspec.UNSET
    greet_mode: GreetMode | msgspec.UnsetType = msgspec.UNSET
    quiet_start: Hhmm | msgspec.UnsetType | None = msgspec.UNSET
    quiet_end: Hhmm | msgspec.UnsetType | None = msgspec.UNSET
    not_today: IsoDate | msgspec.UnsetType | None = msgspec.UNSET
    legacy_ibeacon: bool | msgspec.UnsetType = msgspec.UNSET


class WishlistRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    skus: Annotated[list[Annotated[str, msgspec.Meta(max_length=64)]], msgspec.Meta(max_length=50)]


class CheckInRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    zone: Annotated[str, msgspec.Meta(max_length=64)] | None = None


# An iBeacon UUID as iOS and Android print it (8-4-4-4-12 hexadecimal digits, either case).
BeaconUuid = Annotated[
    str,
    msgspec.Meta(
        pattern=r"^[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}$"
    ),
]
BeaconNumber = Annotated[int, msgspec.Meta(ge=0, le=0xFFFF)]
# Ranging RSSI in dBm: iOS reports 0 when it has no reading (not a proof of anything).
RangedRssi = Annotated[int, msgspec.Meta(ge=-127, le=-1)]
# A sighting's time, unix seconds on the phone's clock (2001 to 2286).
SeenAt = Annotated[float, msgspec.Meta(ge=1e9, lt=1e10)]


class BeaconSighting(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One store beacon as the app ranged it."""

    uuid: BeaconUuid
    major: BeaconNumber
    minor: BeaconNumber
    rssi: RangedRssi
    seen_at: SeenAt


class ProofCheckInRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The store beacons ranged since the region was entered (nearest first is fine)."""

    beacons: Annotated[list[BeaconSighting], msgspec.Meta(min_length=1, max_length=8)]


class CalibrationJoinRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    code: Annotated[str, msgspec.Meta(min_length=1, max_length=16)]


class EraseRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    channel: Literal["app", "web", "in_store"] = "app"
    app_version: AppVersion | None = None


class ErrorBody(msgspec.Struct, frozen=True):
    code: str
    message: str
    field: str | None = None


class ErrorEnvelope(msgspec.Struct, frozen=True):
    error: ErrorBody
