"""The columnar batch body: same rules as row-wise windows, errors naming `columns.<field>[i]`."""

from __future__ import annotations

import base64
import json
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from store_server.errors import ValidationError
from store_server.ingest import MAX_WINDOWS_PER_BATCH, Batch, batch_columns, decode
from tests.server.test_ingest import batch, field_of, window

FIELDS = ("id_type", "id", "start", "end", "count", "rssi_max", "rssi_median", "tx_power")
IBEACON = "f7826da6-4fa2-4e98-8024-bc5b71e0893e:1:2"


def columns_of(windows: list[dict[str, Any]]) -> dict[str, list[Any]]:
    return {name: [w[name] for w in windows] for name in FIELDS}


def columnar(windows: list[dict[str, Any]] | None = None, **changes: Any) -> bytes:
    body = json.loads(batch())
    del body["windows"]
    body["columns"] = columns_of([window()] if windows is None else windows)
    body.update(changes)
    return json.dumps(body).encode()


def with_column(name: str, values: Any, windows: list[dict[str, Any]] | None = None) -> bytes:
    body = json.loads(columnar(windows))
    body["columns"][name] = values
    return json.dumps(body).encode()


def test_columnar_body_gives_the_same_columns_as_rows() -> None:
    windows = [
        window(id="0123456789abcdef", end=1763800001.0, rssi_median=-61.5, count=2),
        window(id_type="ibeacon", id=IBEACON, rssi_median=-70, count=1),
        window(id="fedcba9876543210", start=1763800001.0, end=1763800002.0, count=7),
    ]
    rows = batch_columns(decode(batch(windows), Batch))
    cols = batch_columns(decode(columnar(windows), Batch))
    for got in (rows, cols):
        assert got.eid_rows.tolist() == [0, 2]
        assert got.eids.tolist() == [0x0123456789ABCDEF, 0xFEDCBA9876543210]
        assert got.other == [(1, IBEACON)]
        assert got.end.tolist() == [1763800001.0, 1763800001.0, 1763800002.0]
        assert got.rssi_median.tolist() == [-61.5, -70.0, -60.0]
        assert got.count.tolist() == [2, 1, 7]
        assert len(got) == 3
    assert cols.eids.dtype == np.uint64


def test_tx_power_column_may_be_left_out() -> None:
    body = json.loads(columnar())
    del body["columns"]["tx_power"]
    assert len(batch_columns(decode(json.dumps(body).encode(), Batch))) == 1


def test_empty_columns() -> None:
    assert len(batch_columns(decode(columnar([]), Batch))) == 0


@pytest.mark.parametrize(
    ("name", "values", "field"),
    [
        ("id", ["0123456789abcdef", "0123456789ABCDEF"], "columns.id[1]"),  # upper case
        ("id", ["0123456789abcde", "0123456789abcdef0"], "columns.id[0]"),  # 15 + 17
        ("id", ["0x23456789abcdef", "0123456789abcdef"], "columns.id[0]"),
        ("id", ["0123456789abcdef", ""], "columns.id[1]"),  # schema: min length
        ("end", [1763800001.0, 1763799999.0], "columns.end[1]"),  # before its start
        ("count", [3, 0], "columns.count[1]"),
        ("count", [3, "3"], "columns.count[1]"),
        ("rssi_max", [-55, -128], "columns.rssi_max[1]"),
        ("rssi_median", [-60, 21], "columns.rssi_median[1]"),
        ("start", [-1.0, 1763800000.0], "columns.start[0]"),
        ("id_type", ["eid", "bluetooth"], "columns.id_type[1]"),
        ("tx_power", [-20, 99], "columns.tx_power[1]"),
        ("rssi_median", [-60], "columns.rssi_median"),  # one value short
        ("count", [3, 3, 3], "columns.count"),  # one value too many
        ("tx_power", [-20], "columns.tx_power"),
    ],
)
def test_errors_name_the_column_and_index(name: str, values: list[Any], field: str) -> None:
    assert field_of(with_column(name, values, [window(), window()])) == field


def test_first_fault_in_window_order() -> None:
    """As row-wise: the first faulty window is named, its id before its end."""
    windows = [window(), window(id="bad", end=1.0), window(id="bad")]
    assert field_of(columnar(windows)) == "columns.id[1]"
    assert field_of(batch(windows)) == "windows[1].id"
    windows = [window(), window(end=1.0), window(id="bad")]
    assert field_of(columnar(windows)) == "columns.end[1]"


def test_ibeacon_ids_are_not_held_to_the_eid_syntax() -> None:
    batch_columns(decode(columnar([window(id_type="ibeacon", id=IBEACON), window()]), Batch))


def test_unknown_and_missing_columns() -> None:
    assert field_of(with_column("name", ["Sylvie"])) == "columns.name"
    body = json.loads(columnar())
    del body["columns"]["rssi_median"]
    assert field_of(json.dumps(body).encode()) == "columns.rssi_median"


def test_exactly_one_form() -> None:
    both = json.loads(columnar())
    both["windows"] = [window()]
    assert field_of(json.dumps(both).encode()) == "columns"
    neither = json.loads(columnar())
    del neither["columns"]
    assert field_of(json.dumps(neither).encode()) == "windows"


def test_too_many_windows() -> None:
    assert len(batch_columns(decode(columnar([window()] * MAX_WINDOWS_PER_BATCH), Batch))) == (
        MAX_WINDOWS_PER_BATCH
    )
    field = field_of(columnar([window()] * (MAX_WINDOWS_PER_BATCH + 1)))
    assert field is not None
    assert field.startswith("columns.")


@given(
    st.lists(
        st.tuples(
            st.one_of(
                st.just("0123456789abcdef"),
                st.text("0123456789abcdefA\n_", min_size=1, max_size=20),
            ),
            st.sampled_from([1763799999.0, 1763800001.0]),
            st.sampled_from(["eid", "ibeacon"]),
        ),
        min_size=1,
        max_size=8,
    )
)
def test_columns_and_rows_name_the_same_fault(cases: list[tuple[str, float, str]]) -> None:
    windows = [window(id=i, end=e, id_type=kind) for i, e, kind in cases]
    row_field = col_field = None
    try:
        batch_columns(decode(batch(windows), Batch))
    except ValidationError as exc:
        row_field = exc.field
    try:
        batch_columns(decode(columnar(windows), Batch))
    except ValidationError as exc:
        col_field = exc.field
    if row_field is None:
        assert col_field is None
    else:
        index, name = row_field.removeprefix("windows[").split("].")
        assert col_field == f"columns.{name}[{index}]"


_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=12,
)
"""Any JSON value, nested (NaN and infinities are not JSON)."""

_PLAUSIBLE = st.one_of(
    st.lists(
        st.sampled_from(["eid", "ibeacon", "EID", ""])
        | st.text(alphabet="0123456789abcdefABCDEF:-", max_size=20)
        | st.floats(allow_nan=False, allow_infinity=False)
        | st.integers(-200, 2**40)
        | st.none(),
        max_size=6,
    ),
    st.binary(max_size=24).map(lambda b: base64.b64encode(b).decode()),  # packed columns
    _JSON,
)
"""Column values near the real ones (lists of ids, times, counts...) or anything at all."""


@given(st.dictionaries(st.sampled_from([*FIELDS, "junk"]), _PLAUSIBLE, max_size=9))
def test_any_columns_body_is_accepted_or_refused_with_a_named_error(
    columns: dict[str, Any],
) -> None:
    body = json.loads(columnar())
    body["columns"] = columns
    refused: ValidationError | None = None
    try:
        parsed = batch_columns(decode(json.dumps(body).encode(), Batch))
    except ValidationError as exc:  # anything else (a crash, a 500) fails the test
        refused = exc
    if refused is not None:
        assert refused.field is None or refused.field.startswith("columns")
        return
    # Accepted: every column has one value per window, and the EIDs parsed.
    end = columns["end"]
    assert len(parsed.end) == (
        len(end) if isinstance(end, list) else len(base64.b64decode(end)) // 8
    )
    assert len(parsed.eids) <= len(parsed.end)
