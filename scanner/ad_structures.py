"""Raw advertising data (AD structures) into the record BlueZ's path produces (pure).

An ESPHome Bluetooth proxy forwards each advertisement as the bytes the radio received: a
sequence of AD structures, each ``length(1) type(1) value(length - 1)`` (Bluetooth Core
Specification, Vol 3, Part C, 11). BlueZ parses these itself and bleak hands the daemon two
mappings; ``parse_ad_structures`` builds the same mappings from the raw bytes, so that a node's
advertisements go through the same ``scanner.frames`` parser, allowlist and aggregation:

- manufacturer data (type 0xFF): company id (little-endian 16 bits) -> value without the id;
- service data, 16-bit UUID (0x16), 32-bit UUID (0x20) and 128-bit UUID (0x21): the lower-case
  128-bit UUID string (the Bluetooth base UUID for the short forms) -> value;
- service UUID lists (0x02 to 0x07), local name (0x08 shortened, 0x09 complete) and tx power
  level (0x0A), which the frame parser does not use but a record carries.

Like BlueZ, a later structure of the same key replaces an earlier one. Hostile bytes never
raise: a zero length ends the data (the specification's padding), a structure whose length runs
past the end is dropped with everything after it, and a value too short for its type is
skipped. ``encode_ad_structures`` is for trusted input (tests, the fake node, the benchmark).
"""

from __future__ import annotations

import functools
import struct
import uuid
from collections.abc import Mapping
from typing import Final

from scanner.records import AdvertRecord

# AD types (Bluetooth SIG Assigned Numbers, "Common Data Types").
AD_UUID16_INCOMPLETE: Final = 0x02
AD_UUID16_COMPLETE: Final = 0x03
AD_UUID32_INCOMPLETE: Final = 0x04
AD_UUID32_COMPLETE: Final = 0x05
AD_UUID128_INCOMPLETE: Final = 0x06
AD_UUID128_COMPLETE: Final = 0x07
AD_NAME_SHORT: Final = 0x08
AD_NAME_COMPLETE: Final = 0x09
AD_TX_POWER: Final = 0x0A
AD_SERVICE_DATA_UUID16: Final = 0x16
AD_SERVICE_DATA_UUID32: Final = 0x20
AD_SERVICE_DATA_UUID128: Final = 0x21
AD_MANUFACTURER: Final = 0xFF

# The Bluetooth base UUID's tail: a 16- or 32-bit UUID is "xxxxxxxx" followed by this.
BASE_UUID_TAIL: Final = "-0000-1000-8000-00805f9b34fb"
# Largest value one AD structure can carry: its length byte counts the type byte too.
AD_VALUE_MAX: Final = 254

_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_INT8 = struct.Struct("<b")
# 16-bit UUID strings kept ready: 0xFEAA comes with nearly every advertisement we keep, and a
# few hundred others cover what a shop hears; a flood of odd ones only churns this cache.
UUID16_CACHE_SIZE: Final = 512


@functools.lru_cache(maxsize=UUID16_CACHE_SIZE)
def _uuid16(short: int) -> str:
    return f"0000{short:04x}{BASE_UUID_TAIL}"


def _uuid32(raw: bytes, offset: int) -> str:
    return f"{_U32.unpack_from(raw, offset)[0]:08x}{BASE_UUID_TAIL}"


def _uuid128(raw: bytes, offset: int) -> str:
    # AD fields carry 128-bit UUIDs little-endian; the string form is big-endian.
    return str(uuid.UUID(bytes=raw[offset : offset + 16][::-1]))


def format_address(address: int) -> str:
    """``0xC0FFEE000001`` -> ``"C0:FF:EE:00:00:01"`` (the form BlueZ uses)."""
    text = f"{address & 0xFFFFFFFFFFFF:012X}"
    return ":".join(text[i : i + 2] for i in range(0, 12, 2))


def parse_ad_structures(data: bytes, *, address: str, rssi: int) -> AdvertRecord:
    """The record of one raw advertisement; never raises on any ``data``.

    See the module docstring for the structures read and how malformed ones are handled.
    """
    manufacturer: dict[int, bytes] = {}
    service: dict[str, bytes] = {}
    uuids: list[str] = []
    name: str | None = None
    name_complete = False
    tx_power: int | None = None
    size = len(data)
    pos = 0
    while pos < size:
        length = data[pos]
        if length == 0:
            break
        end = pos + 1 + length
        if end > size:
            break
        kind = data[pos + 1]
        start = pos + 2
        pos = end
        value_len = end - start
        if kind == AD_SERVICE_DATA_UUID16:
            if value_len >= 2:
                service[_uuid16(_U16.unpack_from(data, start)[0])] = data[start + 2 : end]
        elif kind == AD_MANUFACTURER:
            if value_len >= 2:
                manufacturer[_U16.unpack_from(data, start)[0]] = data[start + 2 : end]
        elif kind == AD_SERVICE_DATA_UUID32:
            if value_len >= 4:
                service[_uuid32(data, start)] = data[start + 4 : end]
        elif kind == AD_SERVICE_DATA_UUID128:
            if value_len >= 16:
                service[_uuid128(data, start)] = data[start + 16 : end]
        elif kind in (AD_UUID16_INCOMPLETE, AD_UUID16_COMPLETE):
            for at in range(start, end - 1, 2):
                uuids.append(_uuid16(_U16.unpack_from(data, at)[0]))
        elif kind in (AD_UUID32_INCOMPLETE, AD_UUID32_COMPLETE):
            for at in range(start, end - 3, 4):
                uuids.append(_uuid32(data, at))
        elif kind in (AD_UUID128_INCOMPLETE, AD_UUID128_COMPLETE):
            for at in range(start, end - 15, 16):
                uuids.append(_uuid128(data, at))
        elif kind == AD_NAME_COMPLETE or (kind == AD_NAME_SHORT and not name_complete):
            name = data[start:end].decode("utf-8", errors="replace")
            name_complete = kind == AD_NAME_COMPLETE
        elif kind == AD_TX_POWER and value_len >= 1:
            tx_power = _INT8.unpack_from(data, start)[0]
    return AdvertRecord(
        t=None,
        address=address,
        rssi=rssi,
        local_name=name,
        tx_power=tx_power,
        manufacturer_data=manufacturer,
        service_data=service,
        service_uuids=tuple(dict.fromkeys(uuids)),
    )


def _structure(kind: int, value: bytes) -> bytes:
    if len(value) > AD_VALUE_MAX:
        raise ValueError(f"an AD value holds at most {AD_VALUE_MAX} bytes, got {len(value)}")
    return bytes((len(value) + 1, kind)) + value


def _uuid_value(key: str) -> tuple[int, bytes]:
    """AD type and UUID bytes of a service-data key, in its shortest form."""
    parsed = uuid.UUID(key)
    if str(parsed).endswith(BASE_UUID_TAIL):
        short = parsed.int >> 96
        if short <= 0xFFFF:
            return AD_SERVICE_DATA_UUID16, _U16.pack(short)
        return AD_SERVICE_DATA_UUID32, _U32.pack(short)
    return AD_SERVICE_DATA_UUID128, parsed.bytes[::-1]


def encode_ad_structures(
    manufacturer_data: Mapping[int, bytes],
    service_data: Mapping[str, bytes],
    *,
    local_name: str | None = None,
    tx_power: int | None = None,
) -> bytes:
    """The AD structures carrying these fields; ValueError for values they cannot carry."""
    out = bytearray()
    for key, value in service_data.items():
        kind, raw_uuid = _uuid_value(key)
        out += _structure(kind, raw_uuid + value)
    for company_id, value in manufacturer_data.items():
        if not 0 <= company_id <= 0xFFFF:
            raise ValueError(f"company id {company_id} is not 16 bits")
        out += _structure(AD_MANUFACTURER, _U16.pack(company_id) + value)
    if local_name is not None:
        out += _structure(AD_NAME_COMPLETE, local_name.encode("utf-8"))
    if tx_power is not None:
        out += _structure(AD_TX_POWER, _INT8.pack(tx_power))
    return bytes(out)
