"""Frame parsers and encoders: golden vectors from the specifications, fuzz, round trips."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scanner.frames import (
    APPLE_COMPANY_ID,
    EDDYSTONE_SERVICE_UUID,
    URL_EXPANSIONS,
    AltBeaconFrame,
    EddystoneEIDFrame,
    EddystoneTLMFrame,
    EddystoneUIDFrame,
    EddystoneURLFrame,
    IBeaconFrame,
    encode_altbeacon,
    encode_eddystone,
    encode_ibeacon,
    encode_url,
    frame_to_dict,
    frame_type,
    parse_advertisement,
)

H = bytes.fromhex
# Radius Networks' company id, used in the AltBeacon specification's example.
RADIUS_NETWORKS = 0x0118

IBEACON_GOLDEN = H("0215e2c56db5dffb48d2b060d0f5a71096e000010002c5")
ALTBEACON_GOLDEN = H("beac00112233445566778899aabbccddeeff01020304c500")
UID_GOLDEN = H("00e78b0ca750095477cb3e771a2b3c4d5e6f0000")
EID_GOLDEN = H("30ec0123456789abcdef")
TLM_GOLDEN = H("20000bb81880000003e800002710")


def eddystone(value: bytes) -> object:
    return parse_advertisement({}, {EDDYSTONE_SERVICE_UUID: value})


def apple(value: bytes) -> object:
    return parse_advertisement({APPLE_COMPANY_ID: value}, {})


# --- golden vectors ---------------------------------------------------------------------------


def test_ibeacon_golden() -> None:
    frame = apple(IBEACON_GOLDEN)
    assert frame == IBeaconFrame("e2c56db5-dffb-48d2-b060-d0f5a71096e0", 1, 2, -59)
    assert frame_to_dict(frame) == {  # type: ignore[arg-type]
        "type": "ibeacon",
        "uuid": "e2c56db5-dffb-48d2-b060-d0f5a71096e0",
        "major": 1,
        "minor": 2,
        "power": -59,
    }


def test_ibeacon_big_endian_major_minor_and_positive_power() -> None:
    frame = apple(H("0215" + "ff" * 16 + "fffe010005"))
    assert frame == IBeaconFrame("ffffffff-ffff-ffff-ffff-ffffffffffff", 0xFFFE, 0x0100, 5)


@pytest.mark.parametrize(
    "value",
    [
        IBEACON_GOLDEN[:-1],  # truncated by one byte
        IBEACON_GOLDEN + b"\x00",  # one byte too many for the announced length
        H("0216") + IBEACON_GOLDEN[2:],  # wrong length byte
        H("0315") + IBEACON_GOLDEN[2:],  # wrong type byte
        H("02"),
        b"",
        H("1005011c1a2b3c"),  # Apple Nearby Info
        H("1219" + "00" * 25),  # Apple Find My (offline finding), 27 bytes
        H("01" + "00" * 16),  # Apple overflow area
        H("0c0e00112233445566778899aabb"),  # Apple Handoff
    ],
)
def test_apple_non_ibeacon_is_none(value: bytes) -> None:
    assert apple(value) is None


def test_ibeacon_under_another_company_is_not_an_ibeacon() -> None:
    assert parse_advertisement({0x0075: IBEACON_GOLDEN}, {}) is None


def test_altbeacon_golden() -> None:
    frame = parse_advertisement({RADIUS_NETWORKS: ALTBEACON_GOLDEN}, {})
    assert frame == AltBeaconFrame(
        RADIUS_NETWORKS, H("00112233445566778899aabbccddeeff01020304"), -59, 0
    )
    assert frame_to_dict(frame) == {  # type: ignore[arg-type]
        "type": "altbeacon",
        "company_id": RADIUS_NETWORKS,
        "beacon_id": "00112233445566778899aabbccddeeff01020304",
        "ref_rssi": -59,
        "reserved": 0,
    }


@pytest.mark.parametrize(
    "value",
    [ALTBEACON_GOLDEN[:-1], ALTBEACON_GOLDEN + b"\x00", H("acbe") + ALTBEACON_GOLDEN[2:]],
)
def test_altbeacon_wrong_length_or_code_is_none(value: bytes) -> None:
    assert parse_advertisement({RADIUS_NETWORKS: value}, {}) is None


def test_altbeacon_found_after_unrelated_manufacturer_data() -> None:
    frame = parse_advertisement({0x0006: H("0109200200"), RADIUS_NETWORKS: ALTBEACON_GOLDEN}, {})
    assert isinstance(frame, AltBeaconFrame)
    assert frame.company_id == RADIUS_NETWORKS


def test_eddystone_uid_golden_with_and_without_rfu() -> None:
    expected = EddystoneUIDFrame(-25, H("8b0ca750095477cb3e77"), H("1a2b3c4d5e6f"))
    assert eddystone(UID_GOLDEN) == expected
    assert eddystone(UID_GOLDEN[:-2]) == expected
    assert frame_to_dict(expected) == {
        "type": "eddystone_uid",
        "tx_power": -25,
        "namespace": "8b0ca750095477cb3e77",
        "instance": "1a2b3c4d5e6f",
    }


@pytest.mark.parametrize("size", [0, 1, 2, 17, 19, 21])
def test_eddystone_uid_wrong_length_is_none(size: int) -> None:
    assert eddystone((UID_GOLDEN + b"\x00")[:size]) is None


def test_eddystone_eid_golden() -> None:
    frame = eddystone(EID_GOLDEN)
    assert frame == EddystoneEIDFrame(-20, H("0123456789abcdef"))
    assert frame_to_dict(frame) == {  # type: ignore[arg-type]
        "type": "eddystone_eid",
        "tx_power": -20,
        "eid": "0123456789abcdef",
    }


@pytest.mark.parametrize("value", [EID_GOLDEN[:-1], EID_GOLDEN + b"\x00", H("30")])
def test_eddystone_eid_wrong_length_is_none(value: bytes) -> None:
    assert eddystone(value) is None


def test_eddystone_tlm_golden() -> None:
    frame = eddystone(TLM_GOLDEN)
    assert frame == EddystoneTLMFrame(0, 3000, 24.5, 1000, 1000.0)
    assert frame_to_dict(frame) == {  # type: ignore[arg-type]
        "type": "eddystone_tlm",
        "version": 0,
        "battery_mv": 3000,
        "temperature_c": 24.5,
        "adv_count": 1000,
        "uptime_s": 1000.0,
    }


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("8000", None),  # not supported
        ("ff80", -0.5),
        ("f400", -12.0),
        ("8001", -127.99609375),
        ("7fff", 127.99609375),
        ("0001", 1 / 256),
        ("0000", 0.0),
    ],
)
def test_eddystone_tlm_temperature_8_8(raw: str, expected: float | None) -> None:
    frame = eddystone(H("20000000" + raw + "0000000000000001"))
    assert isinstance(frame, EddystoneTLMFrame)
    assert frame.temperature_c == expected
    assert frame.battery_mv == 0
    assert frame.uptime_s == 0.1


@pytest.mark.parametrize(
    "value",
    [
        TLM_GOLDEN[:-1],
        TLM_GOLDEN + b"\x00",
        H("2001") + TLM_GOLDEN[2:],  # encrypted TLM (eTLM) is not parsed
    ],
)
def test_eddystone_tlm_invalid_is_none(value: bytes) -> None:
    assert eddystone(value) is None


@pytest.mark.parametrize(
    ("hex_value", "url"),
    [
        ("10eb01" + b"google".hex() + "00", "https://www.google.com/"),
        ("10eb02" + b"example".hex() + "08", "http://example.org"),
        ("10eb03" + b"bulle".hex() + "0b" + b"/fr".hex(), "https://bulle.info/fr"),
        ("10eb00" + b"a".hex() + "0d", "http://www.a.gov"),
        ("10eb02" + b"x".hex() + "03" + b"y".hex() + "0a", "http://x.net/y.net"),
    ],
)
def test_eddystone_url_golden(hex_value: str, url: str) -> None:
    frame = eddystone(H(hex_value))
    assert frame == EddystoneURLFrame(-21, url)
    assert frame_to_dict(frame) == {"type": "eddystone_url", "tx_power": -21, "url": url}  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "hex_value",
    [
        "10eb04" + b"google".hex(),  # scheme 0x04 is reserved
        "10eb03" + b"ab".hex() + "0e",  # 0x0e is a reserved expansion code
        "10eb03" + b"a b".hex(),  # space is not carried literally
        "10eb03" + b"ab".hex() + "7f",  # DEL
        "10eb03" + b"ab".hex() + "ff",
        "10eb03" + "61" * 18,  # 18 encoded bytes: longer than 17
        "10eb",  # no scheme byte
        "10eb03",  # a scheme and no URL byte: the specification requires 1-17
    ],
)
def test_eddystone_url_invalid_is_none(hex_value: str) -> None:
    assert eddystone(H(hex_value)) is None


def test_eddystone_unknown_type_or_empty_is_none() -> None:
    assert eddystone(H("40" + "00" * 17)) is None
    assert eddystone(b"") is None


def test_eddystone_preferred_over_manufacturer_data() -> None:
    frame = parse_advertisement(
        {APPLE_COMPANY_ID: IBEACON_GOLDEN}, {EDDYSTONE_SERVICE_UUID: EID_GOLDEN}
    )
    assert isinstance(frame, EddystoneEIDFrame)


def test_invalid_eddystone_does_not_hide_ibeacon() -> None:
    frame = parse_advertisement(
        {APPLE_COMPANY_ID: IBEACON_GOLDEN}, {EDDYSTONE_SERVICE_UUID: EID_GOLDEN[:-1]}
    )
    assert isinstance(frame, IBeaconFrame)


def test_other_service_data_is_ignored() -> None:
    assert parse_advertisement({}, {"0000fe9f-0000-1000-8000-00805f9b34fb": EID_GOLDEN}) is None
    assert parse_advertisement({}, {}) is None


def test_frame_type_names() -> None:
    frames = [
        IBeaconFrame("e2c56db5-dffb-48d2-b060-d0f5a71096e0", 0, 0, -59),
        AltBeaconFrame(1, bytes(20), -59, 0),
        EddystoneUIDFrame(0, bytes(10), bytes(6)),
        EddystoneURLFrame(0, "https://a"),
        EddystoneTLMFrame(0, 0, None, 0, 0.0),
        EddystoneEIDFrame(0, bytes(8)),
    ]
    assert [frame_type(f) for f in frames] == [
        "ibeacon",
        "altbeacon",
        "eddystone_uid",
        "eddystone_url",
        "eddystone_tlm",
        "eddystone_eid",
    ]
    assert [frame_to_dict(f)["type"] for f in frames] == [frame_type(f) for f in frames]


# --- encoders -----------------------------------------------------------------------------


def test_encoders_reproduce_golden_vectors() -> None:
    assert encode_ibeacon(apple(IBEACON_GOLDEN)) == IBEACON_GOLDEN  # type: ignore[arg-type]
    assert (
        encode_altbeacon(parse_advertisement({RADIUS_NETWORKS: ALTBEACON_GOLDEN}, {}))  # type: ignore[arg-type]
        == ALTBEACON_GOLDEN
    )
    for golden in (UID_GOLDEN, EID_GOLDEN, TLM_GOLDEN):
        assert encode_eddystone(eddystone(golden)) == golden  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("url", "encoded"),
    [
        ("https://www.google.com/", "01" + b"google".hex() + "00"),
        ("http://example.org", "02" + b"example".hex() + "08"),
        ("https://a.com/b.com", "03" + "61" + "00" + "62" + "07"),
    ],
)
def test_url_encoding_is_shortest(url: str, encoded: str) -> None:
    assert encode_url(url).hex() == encoded


@pytest.mark.parametrize(
    "url", ["ftp://example.com", "https://a b", "https://" + "a" * 18, "https://café.fr"]
)
def test_url_encoding_refuses_unencodable(url: str) -> None:
    with pytest.raises(ValueError, match="URL"):
        encode_url(url)


def test_encoders_refuse_out_of_range_fields() -> None:
    with pytest.raises(ValueError, match="major"):
        encode_ibeacon(IBeaconFrame("e2c56db5-dffb-48d2-b060-d0f5a71096e0", 70000, 0, 0))
    with pytest.raises(ValueError, match="beacon_id"):
        encode_altbeacon(AltBeaconFrame(1, bytes(19), 0, 0))
    with pytest.raises(ValueError, match="EID"):
        encode_eddystone(EddystoneEIDFrame(0, bytes(7)))
    with pytest.raises(ValueError, match="temperature"):
        encode_eddystone(EddystoneTLMFrame(0, 0, -128.0, 0, 0.0))


# --- properties -----------------------------------------------------------------------------

_service_keys = st.one_of(
    st.just(EDDYSTONE_SERVICE_UUID), st.uuids().map(str), st.text(max_size=40)
)
_eddystone_values = st.builds(
    lambda head, tail: bytes([head]) + tail,
    st.sampled_from([0x00, 0x10, 0x20, 0x30, 0x40, 0xFF]),
    st.binary(max_size=24),
)
_manufacturer_values = st.one_of(
    st.binary(max_size=40),
    st.binary(max_size=26).map(lambda b: b"\x02\x15" + b),
    st.binary(max_size=26).map(lambda b: b"\xbe\xac" + b),
)


@given(
    st.dictionaries(st.integers(0, 0xFFFF), _manufacturer_values, max_size=4),
    st.dictionaries(
        _service_keys, st.one_of(st.binary(max_size=30), _eddystone_values), max_size=4
    ),
)
def test_parse_never_raises(manufacturer: dict[int, bytes], service: dict[str, bytes]) -> None:
    frame = parse_advertisement(manufacturer, service)
    if frame is not None:
        assert frame_to_dict(frame)["type"] == frame_type(frame)


@given(
    st.builds(
        IBeaconFrame,
        st.uuids().map(str),
        st.integers(0, 0xFFFF),
        st.integers(0, 0xFFFF),
        st.integers(-128, 127),
    )
)
def test_ibeacon_round_trip(frame: IBeaconFrame) -> None:
    assert parse_advertisement({APPLE_COMPANY_ID: encode_ibeacon(frame)}, {}) == frame


@given(
    st.builds(
        AltBeaconFrame,
        st.integers(0, 0xFFFF),
        st.binary(min_size=20, max_size=20),
        st.integers(-128, 127),
        st.integers(0, 255),
    )
)
def test_altbeacon_round_trip(frame: AltBeaconFrame) -> None:
    assert parse_advertisement({frame.company_id: encode_altbeacon(frame)}, {}) == frame


_tx = st.integers(-128, 127)


@given(
    st.one_of(
        st.builds(
            EddystoneUIDFrame,
            _tx,
            st.binary(min_size=10, max_size=10),
            st.binary(min_size=6, max_size=6),
        ),
        st.builds(EddystoneEIDFrame, _tx, st.binary(min_size=8, max_size=8)),
        st.builds(
            EddystoneTLMFrame,
            st.just(0),
            st.integers(0, 0xFFFF),
            st.one_of(st.none(), st.integers(-0x7FFF, 0x7FFF).map(lambda r: r / 256)),
            st.integers(0, 0xFFFFFFFF),
            st.integers(0, 0xFFFFFFFF).map(lambda r: r / 10),
        ),
    )
)
def test_eddystone_round_trip(
    frame: EddystoneUIDFrame | EddystoneEIDFrame | EddystoneTLMFrame,
) -> None:
    assert eddystone(encode_eddystone(frame)) == frame


_url_piece = st.one_of(
    st.sampled_from(URL_EXPANSIONS),
    st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=4),
)


@given(
    _tx,
    st.sampled_from(["http://www.", "https://www.", "http://", "https://"]),
    st.lists(_url_piece, max_size=5),
)
def test_url_round_trip(tx: int, scheme: str, pieces: list[str]) -> None:
    url = scheme + "".join(pieces)
    try:
        value = encode_eddystone(EddystoneURLFrame(tx, url))
    except ValueError:
        # Only length may make a URL built from carried characters unencodable: no URL byte
        # after the scheme, or more than 17.
        assert url == scheme or len(url) > 17
        return
    assert len(value) <= 20
    assert eddystone(value) == EddystoneURLFrame(tx, url)
