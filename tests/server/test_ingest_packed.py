"""Packed columns (docs/api.md): base64 of little-endian values, same rules as JSON arrays.

The packer here is written from the documentation, apart from the scanner's (whose output
tests/test_contract.py checks against this server).
"""

from __future__ import annotations

import base64
import json
import math
import struct
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from store_server.errors import ValidationError
from store_server.ingest import MAX_WINDOWS_PER_BATCH, Batch, batch_columns, decode
from tests.server.test_ingest import field_of, window
from tests.server.test_ingest_columns import IBEACON, columnar

FORMATS = {"start": "d", "end": "d", "count": "I", "rssi_max": "b", "rssi_median": "d"}
"""docs/api.md: the struct format of each numeric column."""


def pack(name: str, values: list[Any]) -> str:
    if name == "id_type":
        raw = bytes({"eid": 0, "ibeacon": 1}[v] for v in values)
    elif name == "id":
        raw = bytes.fromhex("".join(values))
    elif name == "tx_power":
        raw = struct.pack(f"<{len(values)}b", *(-128 if v is None else v for v in values))
    else:
        raw = struct.pack(f"<{len(values)}{FORMATS[name]}", *values)
    return base64.b64encode(raw).decode()


def packed_body(windows: list[dict[str, Any]], lists: tuple[str, ...] = ()) -> dict[str, Any]:
    """A columnar body with every column packed but those in ``lists``."""
    body: dict[str, Any] = json.loads(columnar(windows))
    for name, values in body["columns"].items():
        if name not in lists:
            body["columns"][name] = pack(name, values)
    return body


def parsed(body: dict[str, Any]) -> Any:
    return batch_columns(decode(json.dumps(body).encode(), Batch))


def field_of_body(body: dict[str, Any]) -> str | None:
    return field_of(json.dumps(body).encode())


WINDOWS = [
    window(id="0123456789abcdef", end=1763800001.0, rssi_median=-61.5, count=2),
    window(id="fedcba9876543210", start=1763800001.0, end=1763800002.0, count=7, tx_power=None),
    window(id="00000000000000ff", rssi_max=-127, rssi_median=20, count=100_000),
]


def same(a: Any, b: Any) -> None:
    for name in ("eid_rows", "eids", "end", "rssi_median", "rssi_max", "count"):
        assert getattr(a, name).tolist() == getattr(b, name).tolist(), name
    assert a.other == b.other


def test_packed_columns_give_the_same_batch_as_arrays() -> None:
    plain = parsed(json.loads(columnar(WINDOWS)))
    assert plain.eids.tolist() == [0x0123456789ABCDEF, 0xFEDCBA9876543210, 0xFF]
    same(parsed(packed_body(WINDOWS)), plain)
    # Any mix of forms, column by column.
    same(parsed(packed_body(WINDOWS, lists=("id", "count", "tx_power"))), plain)
    same(parsed(packed_body(WINDOWS, lists=("id_type", "start", "rssi_max"))), plain)


def test_ibeacon_windows_with_packed_types_and_listed_ids() -> None:
    windows = [window(), window(id_type="ibeacon", id=IBEACON)]
    got = parsed(packed_body(windows, lists=("id",)))
    assert got.other == [(1, IBEACON)]
    assert got.eid_rows.tolist() == [0]
    # The eid syntax still holds for listed ids under packed types.
    bad = packed_body([window(id="0123456789ABCDEF"), window()], lists=("id",))
    assert field_of_body(bad) == "columns.id[0]"


def test_packed_ids_only_for_eid_batches() -> None:
    body = packed_body([window(), window(id_type="ibeacon", id="00" * 8)])
    assert field_of_body(body) == "columns.id"


def test_empty_packed_columns() -> None:
    assert len(parsed(packed_body([]))) == 0


@pytest.mark.parametrize(
    ("name", "value", "field"),
    [
        ("start", "not base64!", "columns.start"),
        ("start", "AAAA", "columns.start"),  # 3 bytes: not whole float64 values
        ("count", pack("count", [3, 3]), "columns.count"),  # one value short
        ("count", pack("count", [3, 3, 3, 3]), "columns.count"),  # one too many
        ("id", pack("id", ["0123456789abcdef"] * 2), "columns.id"),
        ("id_type", base64.b64encode(bytes([0, 2, 0])).decode(), "columns.id_type[1]"),
        ("count", pack("count", [3, 0, 3]), "columns.count[1]"),
        ("count", pack("count", [3, 3, 100_001]), "columns.count[2]"),
        ("rssi_max", pack("rssi_max", [-55, -128, -55]), "columns.rssi_max[1]"),
        ("rssi_max", pack("rssi_max", [21, -55, -55]), "columns.rssi_max[0]"),
        ("rssi_median", pack("rssi_median", [-60, math.nan, -60]), "columns.rssi_median[1]"),
        ("rssi_median", pack("rssi_median", [-60, -60, -127.5]), "columns.rssi_median[2]"),
        ("start", pack("start", [1.0, -1.0, 1.0]), "columns.start[1]"),
        ("start", pack("start", [math.inf, 1.0, 1.0]), "columns.start[0]"),
        ("end", pack("end", [math.nan, 2.0, 2.0]), "columns.end[0]"),
        ("end", pack("end", [1763800001.0, 1763799999.0, 1763800001.0]), "columns.end[1]"),
        ("tx_power", pack("tx_power", [-20, 21, None]), "columns.tx_power[1]"),
        ("tx_power", "A" * (4 * MAX_WINDOWS_PER_BATCH * 3), "columns.tx_power"),  # too long
        ("id_type", pack("id_type", ["eid"] * (MAX_WINDOWS_PER_BATCH + 1)), "columns.id_type"),
    ],
)
def test_packed_errors_name_the_column_and_index(name: str, value: str, field: str) -> None:
    body = packed_body([window(), window(), window()])
    body["columns"][name] = value
    assert field_of_body(body) == field


def test_packed_length_follows_a_listed_id_type() -> None:
    body = packed_body([window(), window()], lists=("id_type",))
    body["columns"]["end"] = pack("end", [1763800001.0])
    assert field_of_body(body) == "columns.end"


@settings(max_examples=400, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(
            ["id_type", "id", "start", "end", "count", "rssi_max", "rssi_median", "tx_power"]
        ),
        st.binary(max_size=40).map(lambda b: base64.b64encode(b).decode())
        | st.text(alphabet="AZaz09+/=", max_size=20),
        max_size=7,
    )
)
def test_any_packed_bytes_are_accepted_or_refused_with_a_named_error(
    columns: dict[str, str],
) -> None:
    body = packed_body([window(), window()])
    body["columns"].update(columns)
    refused: ValidationError | None = None
    try:
        got = parsed(body)
    except ValidationError as exc:  # anything else (a crash, a 500) fails the test
        refused = exc
    if refused is not None:
        assert refused.field is not None
        assert refused.field.startswith("columns.")
        return
    assert len(got) == len(got.count) == len(got.rssi_max) == len(got.rssi_median)
    assert (got.count >= 1).all()
    assert ((got.rssi_max >= -127) & (got.rssi_max <= 20)).all()
    assert ((got.rssi_median >= -127) & (got.rssi_median <= 20)).all()
    assert (got.end >= 0).all()
    assert len(got.eid_rows) == len(got.eids)


def _json_blocks(text: str) -> list[str]:
    return [block.split("```", 1)[0] for block in text.split("```json\n")[1:]]


def test_the_packed_example_of_the_docs_is_the_array_example() -> None:
    """docs/api.md: the packed `columns` example holds the windows of the array example."""
    text = (Path(__file__).resolve().parents[2] / "docs" / "api.md").read_text("utf-8")
    blocks = _json_blocks(text)
    arrays = next(json.loads(b) for b in blocks if '"columns": {\n    "id_type": [' in b)
    packed_text = next(b for b in blocks if b.lstrip().startswith('"columns"'))
    packed = json.loads("{" + packed_text.strip() + "}")
    assert all(isinstance(value, str) for value in packed["columns"].values())
    same(parsed({**arrays, **packed}), parsed(arrays))
