"""Raw AD structures (what an ESPHome proxy forwards): golden vectors, hostile bytes, round
trips, and agreement with bluetooth-data-tools' parser (Home Assistant's) as an oracle."""

from __future__ import annotations

import pytest
from bluetooth_data_tools import parse_advertisement_data_tuple
from hypothesis import given
from hypothesis import strategies as st

from scanner.ad_structures import (
    AD_VALUE_MAX,
    encode_ad_structures,
    format_address,
    parse_ad_structures,
)
from scanner.frames import EDDYSTONE_SERVICE_UUID, EddystoneEIDFrame, parse_advertisement

H = bytes.fromhex
ADDRESS = "C0:FF:EE:00:00:01"
# A phone's Eddystone-EID advertisement as the radio hears it: flags, the complete list of
# 16-bit service UUIDs (0xFEAA) and service data 0xFEAA carrying frame 0x30.
EID_ADVERT = H("0201060303aafe0d16aafe30ec0123456789abcdef")
# An iBeacon as Apple's phones and tags send it: flags, then manufacturer data 0x004C.
IBEACON_ADVERT = H("0201061aff4c000215e2c56db5dffb48d2b060d0f5a71096e000010002c5")


def parse(data: bytes) -> object:
    return parse_ad_structures(data, address=ADDRESS, rssi=-60)


def test_eid_advert_gives_the_record_bluez_gives() -> None:
    rec = parse_ad_structures(EID_ADVERT, address=ADDRESS, rssi=-61)
    assert rec.address == ADDRESS
    assert rec.rssi == -61
    assert rec.service_data == {EDDYSTONE_SERVICE_UUID: H("30ec0123456789abcdef")}
    assert rec.service_uuids == (EDDYSTONE_SERVICE_UUID,)
    assert rec.manufacturer_data == {}
    frame = parse_advertisement(rec.manufacturer_data, rec.service_data)
    assert frame == EddystoneEIDFrame(-20, H("0123456789abcdef"))


def test_ibeacon_manufacturer_data_without_company_id() -> None:
    rec = parse_ad_structures(IBEACON_ADVERT, address=ADDRESS, rssi=-70)
    assert rec.manufacturer_data == {0x004C: H("0215e2c56db5dffb48d2b060d0f5a71096e000010002c5")}


def test_32_and_128_bit_service_data_keys() -> None:
    data = H("072078563412abcd") + H("1221") + bytes(range(16)) + H("ff")
    rec = parse_ad_structures(data, address=ADDRESS, rssi=-70)
    assert rec.service_data == {
        "12345678-0000-1000-8000-00805f9b34fb": H("abcd"),
        "0f0e0d0c-0b0a-0908-0706-050403020100": H("ff"),
    }


def test_name_tx_power_and_uuid_lists() -> None:
    data = H("04084d6f6e") + H("0509426f6e6a") + H("020af6") + H("050211183c18")
    rec = parse_ad_structures(data, address=ADDRESS, rssi=-70)
    assert rec.local_name == "Bonj"  # the complete name wins over the shortened one
    assert rec.tx_power == -10
    assert rec.service_uuids == (
        "00001811-0000-1000-8000-00805f9b34fb",
        "0000183c-0000-1000-8000-00805f9b34fb",
    )


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"", "empty"),
        (H("00") + EID_ADVERT, "a zero length ends the data (padding)"),
        (H("0d16aafe30ec0123456789ab"), "the structure runs past the end"),
        (H("0116"), "service data without its UUID"),
        (H("02ff4c"), "manufacturer data without a whole company id"),
        (H("0420aabbcc"), "32-bit service data without a whole UUID"),
        (H("1121") + bytes(15), "128-bit service data without a whole UUID"),
        (H("010a"), "tx power without its byte"),
        (H("ff"), "a lone length byte"),
    ],
)
def test_malformed_structures_give_no_payload(data: bytes, why: str) -> None:
    rec = parse_ad_structures(data, address=ADDRESS, rssi=-70)
    assert rec.service_data == {}, why
    assert rec.manufacturer_data == {}, why
    assert parse_advertisement(rec.manufacturer_data, rec.service_data) is None


def test_structures_before_a_truncated_one_are_kept() -> None:
    data = EID_ADVERT + H("1aff4c000215")  # the iBeacon is cut short by the end of the data
    rec = parse_ad_structures(data, address=ADDRESS, rssi=-70)
    assert rec.service_data == {EDDYSTONE_SERVICE_UUID: H("30ec0123456789abcdef")}
    assert rec.manufacturer_data == {}


def test_a_later_structure_replaces_an_earlier_one_as_in_bluez() -> None:
    data = H("0516aafe3001") + H("0516aafe3002")
    rec = parse_ad_structures(data, address=ADDRESS, rssi=-70)
    assert rec.service_data == {EDDYSTONE_SERVICE_UUID: H("3002")}


def test_format_address() -> None:
    assert format_address(0xC0FFEE000001) == "C0:FF:EE:00:00:01"
    assert format_address(0x1) == "00:00:00:00:00:01"


@given(st.binary(max_size=300))
def test_never_raises_on_any_bytes(data: bytes) -> None:
    rec = parse_ad_structures(data, address=ADDRESS, rssi=-70)
    assert all(0 <= k <= 0xFFFF for k in rec.manufacturer_data)
    assert all(len(k) == 36 for k in rec.service_data)
    # Whatever came out goes through the frame parser without raising either.
    parse_advertisement(rec.manufacturer_data, rec.service_data)


@given(st.lists(st.tuples(st.integers(0, 255), st.binary(max_size=40)), max_size=8))
def test_never_raises_on_well_framed_structures_of_any_type(
    structures: list[tuple[int, bytes]],
) -> None:
    data = b"".join(bytes((len(v) + 1, kind)) + v for kind, v in structures)
    parse_ad_structures(data, address=ADDRESS, rssi=-70)


_uuid16 = st.integers(0, 0xFFFF).map(lambda n: f"0000{n:04x}-0000-1000-8000-00805f9b34fb")
_uuid32 = st.integers(0x10000, 0xFFFFFFFF).map(lambda n: f"{n:08x}-0000-1000-8000-00805f9b34fb")
_uuid128 = st.uuids().map(str).filter(lambda u: not u.endswith("-0000-1000-8000-00805f9b34fb"))


@given(
    manufacturer=st.dictionaries(st.integers(0, 0xFFFF), st.binary(max_size=24), max_size=3),
    service=st.dictionaries(
        st.one_of(_uuid16, _uuid32, _uuid128), st.binary(max_size=20), max_size=3
    ),
    name=st.none() | st.text(max_size=20),
    tx_power=st.none() | st.integers(-128, 127),
)
def test_round_trip_and_agreement_with_bluetooth_data_tools(
    manufacturer: dict[int, bytes],
    service: dict[str, bytes],
    name: str | None,
    tx_power: int | None,
) -> None:
    data = encode_ad_structures(manufacturer, service, local_name=name, tx_power=tx_power)
    rec = parse_ad_structures(data, address=ADDRESS, rssi=-70)
    assert rec.manufacturer_data == manufacturer
    assert rec.service_data == service
    assert rec.local_name == name
    assert rec.tx_power == tx_power
    oracle_name, _uuids, oracle_service, oracle_manufacturer, oracle_tx = (
        parse_advertisement_data_tuple((data,))
    )
    assert oracle_service == rec.service_data
    assert oracle_manufacturer == rec.manufacturer_data
    assert oracle_tx == rec.tx_power
    if name and name.isprintable():
        assert oracle_name == name


def test_encoder_refuses_what_one_structure_cannot_carry() -> None:
    with pytest.raises(ValueError, match="at most"):
        encode_ad_structures({1: bytes(AD_VALUE_MAX)}, {})
    with pytest.raises(ValueError, match="16 bits"):
        encode_ad_structures({0x10000: b""}, {})
