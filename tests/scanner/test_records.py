"""JSON-lines advertisement records: strict validation with key-named errors, round trips."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scanner.errors import RecordError, ScannerError
from scanner.frames import EDDYSTONE_SERVICE_UUID
from scanner.records import AdvertRecord, parse_record, record_to_json

FULL_LINE = (
    '{"t": 0.25, "address": "C0:FF:EE:00:00:01", "rssi": -61, "local_name": null,'
    ' "tx_power": null, "manufacturer_data": {"76": "0215E2C56DB5DFFB48D2B060D0F5A71096E00001000'
    '2C5"}, "service_data": {"0000FEAA-0000-1000-8000-00805F9B34FB": "30ec0123456789abcdef"},'
    ' "service_uuids": ["0000feaa-0000-1000-8000-00805f9b34fb"]}'
)


def test_full_line() -> None:
    record = parse_record(FULL_LINE)
    assert record == AdvertRecord(
        t=0.25,
        address="C0:FF:EE:00:00:01",
        rssi=-61,
        local_name=None,
        tx_power=None,
        manufacturer_data={76: bytes.fromhex("0215e2c56db5dffb48d2b060d0f5a71096e000010002c5")},
        service_data={EDDYSTONE_SERVICE_UUID: bytes.fromhex("30ec0123456789abcdef")},
        service_uuids=(EDDYSTONE_SERVICE_UUID,),
    )


def test_minimal_line_takes_defaults() -> None:
    record = parse_record('{"service_data": {}}')
    assert record == AdvertRecord(None, "00:00:00:00:00:00", -127, None, None, {}, {}, ())
    assert parse_record('{"t": 3}').t == 3.0


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "invalid JSON"),
        ("[1, 2]", "must be a JSON object"),
        (
            '{"manufacturer_data": {"x": "00"}}',
            "manufacturer_data key 'x' is not a decimal company id",
        ),
        ('{"manufacturer_data": {"65536": "00"}}', "manufacturer_data key '65536'"),
        ('{"manufacturer_data": {"076": "00"}}', "manufacturer_data key '076'"),
        ('{"manufacturer_data": {"76": "0g"}}', "manufacturer_data['76'] is not hex"),
        ('{"manufacturer_data": {"76": "021"}}', "manufacturer_data['76'] is not hex"),
        ('{"manufacturer_data": {"76": "02 15"}}', "manufacturer_data['76'] is not hex"),
        ('{"manufacturer_data": {"76": 2}}', "manufacturer_data['76'] is not hex"),
        ('{"manufacturer_data": []}', "manufacturer_data must be an object"),
        (
            '{"service_data": {"0000feaa-0000-1000-8000-00805f9b34fb": "zz"}}',
            "service_data['0000feaa-0000-1000-8000-00805f9b34fb'] is not hex",
        ),
        ('{"service_data": {"feaa": "00"}}', "service_data key 'feaa' is not a 128-bit UUID"),
        ('{"rssi": -128}', "rssi -128 is outside -127..20"),
        ('{"rssi": 21}', "rssi 21 is outside"),
        ('{"rssi": -60.5}', "rssi must be an integer"),
        ('{"rssi": true}', "rssi must be an integer"),
        ('{"tx_power": "x"}', "tx_power must be an integer"),
        ('{"t": -1}', "t must be a finite number"),
        ('{"t": NaN}', "t must be a finite number"),
        ('{"t": "0"}', "t must be a finite number"),
        ('{"address": 5}', "address must be a string"),
        ('{"local_name": 5}', "local_name must be a string or null"),
        ('{"service_uuids": "abc"}', "service_uuids must be a list of strings"),
        ('{"manufacturer-data": {}}', "unknown key 'manufacturer-data'"),
    ],
)
def test_invalid_records_name_the_problem(line: str, message: str) -> None:
    with pytest.raises(RecordError) as caught:
        parse_record(line)
    assert message in str(caught.value)
    assert isinstance(caught.value, ScannerError)


def test_record_to_json_is_compact_and_lower_case() -> None:
    text = record_to_json(parse_record(FULL_LINE))
    assert " " not in text
    assert json.loads(text)["manufacturer_data"] == {
        "76": "0215e2c56db5dffb48d2b060d0f5a71096e000010002c5"
    }
    assert parse_record(text) == parse_record(FULL_LINE)


_dbm = st.integers(-127, 20)
_records = st.builds(
    AdvertRecord,
    t=st.one_of(st.none(), st.floats(min_value=0, max_value=1e9, allow_nan=False)),
    address=st.text(max_size=20),
    rssi=_dbm,
    local_name=st.one_of(st.none(), st.text(max_size=20)),
    tx_power=st.one_of(st.none(), _dbm),
    manufacturer_data=st.dictionaries(st.integers(0, 0xFFFF), st.binary(max_size=30), max_size=3),
    service_data=st.dictionaries(st.uuids().map(str), st.binary(max_size=30), max_size=3),
    service_uuids=st.lists(st.text(max_size=40), max_size=3).map(tuple),
)


@given(_records)
def test_round_trip(record: AdvertRecord) -> None:
    assert parse_record(record_to_json(record)) == record


@given(st.text(max_size=200))
def test_arbitrary_text_raises_only_record_error(line: str) -> None:
    try:
        record = parse_record(line)
    except RecordError:
        return
    assert parse_record(record_to_json(record)) == record
