"""Pure, bounds-checked parsers and encoders for beacon advertisement frames.

The parser takes the two mappings exactly as bleak exposes them in ``AdvertisementData``:

- ``manufacturer_data``: company id -> value, the value WITHOUT the two company id bytes;
- ``service_data``: lower-case 128-bit UUID string -> value.

``parse_advertisement`` is on the hot path (called for every advertisement the radio hears), so it
checks lengths before touching any byte, avoids slicing where a fixed layout can be unpacked with a
precompiled ``struct.Struct``, and never raises on untrusted bytes: anything malformed yields None.

Precedence when an advertisement carries several beacon payloads:

1. Eddystone service data (0xFEAA) that parses as a UID, URL, TLM (version 0) or EID frame;
2. an iBeacon in Apple's manufacturer data (company id 0x004C, type 0x02, length 0x15);
3. an AltBeacon in any company's manufacturer data (first one in mapping order).

Eddystone service data that does not parse (truncated, unknown frame type, encrypted TLM) does not
hide a valid manufacturer-data beacon of the same advertisement.

Layouts (all multi-byte integers big-endian):

- iBeacon: ``02 15`` UUID(16) major(2) minor(2) power(int8, RSSI at 1 m): 23 bytes exactly.
- AltBeacon: ``BE AC`` beacon id(20) reference RSSI(int8 at 1 m) reserved(1): 24 bytes exactly.
- Eddystone UID: ``00`` tx power(int8 at 0 m) namespace(10) instance(6) [RFU(2)]: 18 or 20 bytes.
- Eddystone URL: ``10`` tx power scheme(1) encoded URL(0..17): 3 to 20 bytes.
- Eddystone TLM: ``20`` version(``00``) battery mV(2) temperature(signed 8.8, ``80 00`` = not
  supported) advertising PDU count(4) time since power-on(4, 0.1 s units): 14 bytes exactly.
- Eddystone EID: ``30`` tx power(int8 at 0 m) EID(8): 10 bytes exactly.

The encoders are for trusted input (tests, the simulator, the capture generator) and raise
ValueError on values that the layouts cannot carry.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

# The Eddystone 16-bit service UUID 0xFEAA in the 128-bit form bleak uses as a service_data key.
EDDYSTONE_SERVICE_UUID: Final = "0000feaa-0000-1000-8000-00805f9b34fb"
# Apple's Bluetooth SIG company identifier, the key of iBeacon manufacturer data.
APPLE_COMPANY_ID: Final = 0x004C

# Apple manufacturer-data type byte of an iBeacon.
IBEACON_TYPE: Final = 0x02
# The iBeacon length byte: 21 bytes (UUID, major, minor, power) follow it.
IBEACON_LENGTH: Final = 0x15
# Whole iBeacon manufacturer value: type, length and the 21 bytes the length announces.
IBEACON_SIZE: Final = 2 + IBEACON_LENGTH
# AltBeacon "beacon code" that opens the manufacturer value.
ALTBEACON_CODE: Final = b"\xbe\xac"
# Whole AltBeacon manufacturer value: code(2) beacon id(20) reference RSSI(1) reserved(1).
ALTBEACON_SIZE: Final = 24
# AltBeacon beacon identifier length fixed by the AltBeacon specification.
ALTBEACON_ID_SIZE: Final = 20

# Eddystone frame type bytes (first byte of the 0xFEAA service data).
EDDYSTONE_UID: Final = 0x00
EDDYSTONE_URL: Final = 0x10
EDDYSTONE_TLM: Final = 0x20
EDDYSTONE_EID: Final = 0x30
# UID frame without the two reserved bytes, which many beacons omit.
UID_SIZE_SHORT: Final = 18
# UID frame with the two reserved (RFU) bytes, as the specification writes it.
UID_SIZE_FULL: Final = 20
# UID namespace length (the truncated SHA-1 or UUID-derived namespace of the specification).
UID_NAMESPACE_SIZE: Final = 10
# UID instance length.
UID_INSTANCE_SIZE: Final = 6
# URL frame: type, tx power and scheme bytes before the encoded URL.
URL_HEADER_SIZE: Final = 3
# Shortest encoded URL: the specification carries 1-17 URL bytes after the scheme.
URL_MIN_ENCODED: Final = 1
# Longest encoded URL that fits the 31-byte advertisement (specification limit).
URL_MAX_ENCODED: Final = 17
# Unencrypted TLM frame length.
TLM_SIZE: Final = 14
# TLM version byte of the plain (unencrypted) telemetry frame; 0x01 is encrypted (eTLM).
TLM_VERSION_PLAIN: Final = 0x00
# Raw TLM temperature meaning "not supported" (the most negative 8.8 value).
TLM_TEMPERATURE_UNSUPPORTED: Final = 0x8000
# TLM temperature fixed point: 8.8 signed, so 256 raw units per degree Celsius.
TLM_TEMPERATURE_SCALE: Final = 256
# TLM time counter unit: 0.1 s, so 10 raw units per second.
TLM_UPTIME_SCALE: Final = 10
# EID frame length: type, tx power and the 8-byte ephemeral identifier.
EID_SIZE: Final = 10
# Ephemeral identifier length fixed by the Eddystone-EID specification.
EID_ID_SIZE: Final = 8

# Eddystone URL scheme prefixes, indexed by the scheme byte.
URL_SCHEMES: Final = ("http://www.", "https://www.", "http://", "https://")
# Eddystone URL expansion codes, indexed by the code byte (0x00..0x0D).
URL_EXPANSIONS: Final = (
    ".com/",
    ".org/",
    ".edu/",
    ".net/",
    ".info/",
    ".biz/",
    ".gov/",
    ".com",
    ".org",
    ".edu",
    ".net",
    ".info",
    ".biz",
    ".gov",
)
# First and last byte the URL encoding carries literally (printable ASCII without space).
URL_LITERAL_MIN: Final = 0x21
URL_LITERAL_MAX: Final = 0x7E

# Precompiled layouts (big-endian); unpack_from reads in place without slicing first.
_IBEACON = struct.Struct(">2x16sHHb")
_ALTBEACON = struct.Struct(">2x20sbB")
_UID = struct.Struct(">xb10s6s")
_TLM = struct.Struct(">xBHHII")
_EID = struct.Struct(">xb8s")
_SIGNED_BYTE = struct.Struct(">b")
# Layouts for the encoders, which write the leading type/code bytes too.
_IBEACON_PACK = struct.Struct(">BB16sHHb")
_ALTBEACON_PACK = struct.Struct(">2s20sbB")
_TLM_PACK = struct.Struct(">BBHHII")

# Byte -> decoded text for URL bodies; None marks a reserved byte that makes the frame invalid.
_URL_DECODE: tuple[str | None, ...] = tuple(
    URL_EXPANSIONS[b]
    if b < len(URL_EXPANSIONS)
    else (chr(b) if URL_LITERAL_MIN <= b <= URL_LITERAL_MAX else None)
    for b in range(256)
)


@dataclass(frozen=True, slots=True)
class IBeaconFrame:
    """Apple iBeacon: proximity UUID (canonical lower-case), major, minor, RSSI at 1 m."""

    uuid: str
    major: int
    minor: int
    power: int


@dataclass(frozen=True, slots=True)
class AltBeaconFrame:
    """AltBeacon: advertiser's company id, 20-byte beacon id, RSSI at 1 m, reserved byte."""

    company_id: int
    beacon_id: bytes
    ref_rssi: int
    reserved: int


@dataclass(frozen=True, slots=True)
class EddystoneUIDFrame:
    """Eddystone-UID: static 10-byte namespace and 6-byte instance; tx power at 0 m."""

    tx_power: int
    namespace: bytes
    instance: bytes


@dataclass(frozen=True, slots=True)
class EddystoneURLFrame:
    """Eddystone-URL: the expanded URL; tx power at 0 m."""

    tx_power: int
    url: str


@dataclass(frozen=True, slots=True)
class EddystoneTLMFrame:
    """Eddystone-TLM (plain, version 0): telemetry of the beacon itself."""

    version: int
    battery_mv: int
    temperature_c: float | None
    adv_count: int
    uptime_s: float


@dataclass(frozen=True, slots=True)
class EddystoneEIDFrame:
    """Eddystone-EID: the 8-byte rotating ephemeral identifier; tx power at 0 m."""

    tx_power: int
    eid: bytes


Frame = (
    IBeaconFrame
    | AltBeaconFrame
    | EddystoneUIDFrame
    | EddystoneURLFrame
    | EddystoneTLMFrame
    | EddystoneEIDFrame
)

# Frame class -> stable type name used in logs counters, JSON output and metrics.
FRAME_TYPE_NAMES: Final[Mapping[type, str]] = {
    IBeaconFrame: "ibeacon",
    AltBeaconFrame: "altbeacon",
    EddystoneUIDFrame: "eddystone_uid",
    EddystoneURLFrame: "eddystone_url",
    EddystoneTLMFrame: "eddystone_tlm",
    EddystoneEIDFrame: "eddystone_eid",
}


def _canonical_uuid(raw: bytes) -> str:
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _parse_eddystone(data: bytes) -> Frame | None:
    size = len(data)
    if size == 0:
        return None
    kind = data[0]
    if kind == EDDYSTONE_EID:
        if size != EID_SIZE:
            return None
        tx, eid = _EID.unpack_from(data)
        return EddystoneEIDFrame(tx, eid)
    if kind == EDDYSTONE_UID:
        if size != UID_SIZE_FULL and size != UID_SIZE_SHORT:
            return None
        tx, namespace, instance = _UID.unpack_from(data)
        return EddystoneUIDFrame(tx, namespace, instance)
    if kind == EDDYSTONE_TLM:
        if size != TLM_SIZE or data[1] != TLM_VERSION_PLAIN:
            return None
        version, battery, temp_raw, adv_count, uptime = _TLM.unpack_from(data)
        temperature: float | None
        if temp_raw == TLM_TEMPERATURE_UNSUPPORTED:
            temperature = None
        else:
            if temp_raw >= 0x8000:
                temp_raw -= 0x10000
            temperature = temp_raw / TLM_TEMPERATURE_SCALE
        return EddystoneTLMFrame(
            version, battery, temperature, adv_count, uptime / TLM_UPTIME_SCALE
        )
    if kind == EDDYSTONE_URL:
        if not URL_MIN_ENCODED <= size - URL_HEADER_SIZE <= URL_MAX_ENCODED:
            return None
        scheme = data[2]
        if scheme >= len(URL_SCHEMES):
            return None
        parts = [URL_SCHEMES[scheme]]
        for b in data[URL_HEADER_SIZE:]:
            text = _URL_DECODE[b]
            if text is None:
                return None
            parts.append(text)
        return EddystoneURLFrame(_SIGNED_BYTE.unpack_from(data, 1)[0], "".join(parts))
    return None


def parse_advertisement(
    manufacturer_data: Mapping[int, bytes], service_data: Mapping[str, bytes]
) -> Frame | None:
    """Return the beacon frame an advertisement carries, or None; never raises on bad bytes.

    See the module docstring for the layouts and the precedence between payloads.
    """
    if service_data:
        eddystone = service_data.get(EDDYSTONE_SERVICE_UUID)
        if eddystone is not None:
            frame = _parse_eddystone(eddystone)
            if frame is not None:
                return frame
    if not manufacturer_data:
        return None
    apple = manufacturer_data.get(APPLE_COMPANY_ID)
    if (
        apple is not None
        and len(apple) == IBEACON_SIZE
        and apple[0] == IBEACON_TYPE
        and apple[1] == IBEACON_LENGTH
    ):
        raw_uuid, major, minor, power = _IBEACON.unpack_from(apple)
        return IBeaconFrame(_canonical_uuid(raw_uuid), major, minor, power)
    for company_id, value in manufacturer_data.items():
        if len(value) == ALTBEACON_SIZE and value.startswith(ALTBEACON_CODE):
            beacon_id, ref_rssi, reserved = _ALTBEACON.unpack_from(value)
            return AltBeaconFrame(company_id, beacon_id, ref_rssi, reserved)
    return None


def frame_type(frame: Frame) -> str:
    """Return the stable type name of a frame, e.g. ``"eddystone_eid"``."""
    return FRAME_TYPE_NAMES[type(frame)]


def frame_to_dict(frame: Frame) -> dict[str, object]:
    """Return a JSON-ready dict: ``{"type": ..., <fields>}`` with bytes as lower-case hex."""
    if isinstance(frame, IBeaconFrame):
        return {
            "type": "ibeacon",
            "uuid": frame.uuid,
            "major": frame.major,
            "minor": frame.minor,
            "power": frame.power,
        }
    if isinstance(frame, AltBeaconFrame):
        return {
            "type": "altbeacon",
            "company_id": frame.company_id,
            "beacon_id": frame.beacon_id.hex(),
            "ref_rssi": frame.ref_rssi,
            "reserved": frame.reserved,
        }
    if isinstance(frame, EddystoneUIDFrame):
        return {
            "type": "eddystone_uid",
            "tx_power": frame.tx_power,
            "namespace": frame.namespace.hex(),
            "instance": frame.instance.hex(),
        }
    if isinstance(frame, EddystoneURLFrame):
        return {"type": "eddystone_url", "tx_power": frame.tx_power, "url": frame.url}
    if isinstance(frame, EddystoneTLMFrame):
        return {
            "type": "eddystone_tlm",
            "version": frame.version,
            "battery_mv": frame.battery_mv,
            "temperature_c": frame.temperature_c,
            "adv_count": frame.adv_count,
            "uptime_s": frame.uptime_s,
        }
    return {"type": "eddystone_eid", "tx_power": frame.tx_power, "eid": frame.eid.hex()}


def _check_range(name: str, value: int, low: int, high: int) -> None:
    if not low <= value <= high:
        raise ValueError(f"{name} {value} is outside {low}..{high}")


def encode_ibeacon(frame: IBeaconFrame) -> bytes:
    """Return the Apple manufacturer value (without company id) carrying this iBeacon."""
    raw_uuid = bytes.fromhex(frame.uuid.replace("-", ""))
    if len(raw_uuid) != 16:
        raise ValueError(f"iBeacon uuid {frame.uuid!r} is not 16 bytes")
    _check_range("major", frame.major, 0, 0xFFFF)
    _check_range("minor", frame.minor, 0, 0xFFFF)
    _check_range("power", frame.power, -128, 127)
    return _IBEACON_PACK.pack(
        IBEACON_TYPE, IBEACON_LENGTH, raw_uuid, frame.major, frame.minor, frame.power
    )


def encode_altbeacon(frame: AltBeaconFrame) -> bytes:
    """Return the manufacturer value (without company id) carrying this AltBeacon."""
    if len(frame.beacon_id) != ALTBEACON_ID_SIZE:
        raise ValueError(f"AltBeacon beacon_id must be {ALTBEACON_ID_SIZE} bytes")
    _check_range("ref_rssi", frame.ref_rssi, -128, 127)
    _check_range("reserved", frame.reserved, 0, 0xFF)
    return _ALTBEACON_PACK.pack(ALTBEACON_CODE, frame.beacon_id, frame.ref_rssi, frame.reserved)


def _encode_url_body(body: str) -> bytes:
    """Shortest encoding of a URL body (after the scheme), by dynamic programming."""
    size = len(body)
    # best[i]: shortest encoding of body[i:], or None when body[i:] cannot be encoded.
    best: list[bytes | None] = [None] * size + [b""]
    for i in range(size - 1, -1, -1):
        candidates: list[bytes] = []
        char = ord(body[i])
        tail = best[i + 1]
        if URL_LITERAL_MIN <= char <= URL_LITERAL_MAX and tail is not None:
            candidates.append(bytes((char,)) + tail)
        for code, text in enumerate(URL_EXPANSIONS):
            if body.startswith(text, i):
                rest = best[i + len(text)]
                if rest is not None:
                    candidates.append(bytes((code,)) + rest)
        if candidates:
            best[i] = min(candidates, key=len)
    result = best[0]
    if result is None:
        raise ValueError(f"URL body {body!r} has characters Eddystone-URL cannot carry")
    return result


def encode_url(url: str) -> bytes:
    """Return scheme byte + shortest encoded body; ValueError if unencodable or too long."""
    for scheme in sorted(range(len(URL_SCHEMES)), key=lambda s: -len(URL_SCHEMES[s])):
        prefix = URL_SCHEMES[scheme]
        if url.startswith(prefix):
            body = _encode_url_body(url[len(prefix) :])
            if not URL_MIN_ENCODED <= len(body) <= URL_MAX_ENCODED:
                raise ValueError(
                    f"URL {url!r} encodes to {len(body)} bytes,"
                    f" not {URL_MIN_ENCODED}-{URL_MAX_ENCODED}"
                )
            return bytes((scheme,)) + body
    raise ValueError(f"URL {url!r} does not start with an Eddystone scheme")


def encode_eddystone(
    frame: EddystoneUIDFrame | EddystoneURLFrame | EddystoneTLMFrame | EddystoneEIDFrame,
) -> bytes:
    """Return the 0xFEAA service-data value carrying this Eddystone frame."""
    if isinstance(frame, EddystoneTLMFrame):
        if frame.version != TLM_VERSION_PLAIN:
            raise ValueError("only plain (version 0) TLM frames can be encoded")
        if frame.temperature_c is None:
            temp_raw = TLM_TEMPERATURE_UNSUPPORTED
        else:
            if not math.isfinite(frame.temperature_c):
                raise ValueError("TLM temperature must be finite")
            scaled = round(frame.temperature_c * TLM_TEMPERATURE_SCALE)
            # -0x8000 is reserved for "not supported", so the lowest carried value is -0x7FFF.
            _check_range("temperature (1/256 °C)", scaled, -0x7FFF, 0x7FFF)
            temp_raw = scaled & 0xFFFF
        _check_range("battery_mv", frame.battery_mv, 0, 0xFFFF)
        _check_range("adv_count", frame.adv_count, 0, 0xFFFFFFFF)
        if not math.isfinite(frame.uptime_s):
            raise ValueError("TLM uptime must be finite")
        uptime = round(frame.uptime_s * TLM_UPTIME_SCALE)
        _check_range("uptime (0.1 s)", uptime, 0, 0xFFFFFFFF)
        return _TLM_PACK.pack(
            EDDYSTONE_TLM, frame.version, frame.battery_mv, temp_raw, frame.adv_count, uptime
        )
    _check_range("tx_power", frame.tx_power, -128, 127)
    tx = _SIGNED_BYTE.pack(frame.tx_power)
    if isinstance(frame, EddystoneEIDFrame):
        if len(frame.eid) != EID_ID_SIZE:
            raise ValueError(f"EID must be {EID_ID_SIZE} bytes")
        return bytes((EDDYSTONE_EID,)) + tx + frame.eid
    if isinstance(frame, EddystoneUIDFrame):
        if len(frame.namespace) != UID_NAMESPACE_SIZE or len(frame.instance) != UID_INSTANCE_SIZE:
            raise ValueError("UID namespace must be 10 bytes and instance 6 bytes")
        return bytes((EDDYSTONE_UID,)) + tx + frame.namespace + frame.instance + b"\x00\x00"
    return bytes((EDDYSTONE_URL,)) + tx + encode_url(frame.url)
