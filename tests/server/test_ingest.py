"""Scanner body validation (store_server.ingest): decode, field paths, batch checks."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from store_server.errors import ValidationError
from store_server.ingest import MAX_WINDOWS_PER_BATCH, Batch, Heartbeat, check_batch, decode


def window(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id_type": "eid",
        "id": "0123456789abcdef",
        "start": 1763800000.0,
        "end": 1763800001.0,
        "count": 3,
        "rssi_max": -55,
        "rssi_median": -60,
        "tx_power": -20,
    }
    base.update(changes)
    return base


def batch(windows: list[dict[str, Any]] | None = None, **changes: Any) -> bytes:
    body: dict[str, Any] = {
        "batch_id": "4b0d0c3e-6f6e-4a51-9d55-2f7d3d7f1a10",
        "store_id": "demo-store",
        "scanner_id": "s-entrance",
        "windows": [window()] if windows is None else windows,
    }
    body.update(changes)
    return json.dumps(body).encode()


def field_of(body: bytes, kind: type[object] = Batch) -> str | None:
    def run() -> None:
        decoded = decode(body, kind)
        if isinstance(decoded, Batch):
            check_batch(decoded)

    with pytest.raises(ValidationError) as info:
        run()
    assert info.value.status == 422
    return info.value.field


def test_decode_valid_batch() -> None:
    decoded = decode(batch([window(), window(id="fedcba9876543210", tx_power=None)]), Batch)
    check_batch(decoded)
    assert decoded.batch_id == "4b0d0c3e-6f6e-4a51-9d55-2f7d3d7f1a10"
    assert decoded.store_id == "demo-store"
    assert len(decoded.windows) == 2
    first = decoded.windows[0]
    assert (first.id, first.count, first.rssi_max, first.rssi_median) == (
        "0123456789abcdef",
        3,
        -55,
        -60.0,
    )
    assert decoded.windows[1].tx_power is None


def test_doc_example_decodes() -> None:
    example = (
        b'{"batch_id": "4b0d0c3e-6f6e-4a51-9d55-2f7d3d7f1a10", "store_id": "demo-store",'
        b' "scanner_id": "s-entrance", "windows": [{"id_type": "eid", "id": "0123456789abcdef",'
        b' "start": 1763800000.0, "end": 1763800001.0, "count": 3, "rssi_max": -55,'
        b' "rssi_median": -60, "tx_power": -20}]}'
    )
    check_batch(decode(example, Batch))


@pytest.mark.parametrize(
    ("windows", "field"),
    [
        ([window(count="3")], "windows[0].count"),
        ([window(), window(count=0)], "windows[1].count"),
        ([window(rssi_max=-200)], "windows[0].rssi_max"),
        ([window(id_type="uid")], "windows[0].id_type"),
        ([window(start=-1.0)], "windows[0].start"),
        ([window(tx_power="x")], "windows[0].tx_power"),
    ],
)
def test_errors_name_the_field_path(windows: list[dict[str, Any]], field: str) -> None:
    assert field_of(batch(windows)) == field


def test_error_message_names_the_path() -> None:
    with pytest.raises(ValidationError) as info:
        decode(batch([window(count="3")]), Batch)
    assert "windows[0].count" in info.value.message
    assert "int" in info.value.message


def test_missing_field() -> None:
    body = json.loads(batch())
    del body["windows"][0]["rssi_median"]
    with pytest.raises(ValidationError) as info:
        decode(json.dumps(body).encode(), Batch)
    assert "rssi_median" in info.value.message


@pytest.mark.parametrize(
    ("body", "name"), [(batch([window(name="Sylvie")]), "name"), (batch(extra=1), "extra")]
)
def test_unknown_field_refused(body: bytes, name: str) -> None:
    with pytest.raises(ValidationError) as info:
        decode(body, Batch)
    assert f"unknown field `{name}`" in info.value.message


@pytest.mark.parametrize(
    ("body", "field"),
    [(batch([window(name="Sylvie")]), "windows[0].name"), (batch(extra=1), "extra")],
)
def test_unknown_field_path_names_the_field(body: bytes, field: str) -> None:
    assert field_of(body) == field


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"batch_id": "short"}, "batch_id"),
        ({"batch_id": "has spaces in it"}, "batch_id"),
        ({"store_id": ""}, "store_id"),
    ],
)
def test_top_level_fields(change: dict[str, Any], field: str) -> None:
    assert field_of(batch(**change)) == field


def test_too_many_windows_refused() -> None:
    assert field_of(batch([window()] * (MAX_WINDOWS_PER_BATCH + 1))) == "windows"
    check_batch(decode(batch([window()] * MAX_WINDOWS_PER_BATCH), Batch))


def test_not_json() -> None:
    with pytest.raises(ValidationError, match="not valid JSON") as info:
        decode(b"{windows: []", Batch)
    assert info.value.field is None


@pytest.mark.parametrize(
    "eid", ["0123456789ABCDEF", "0123456789abcde", "0123456789abcdef0", "0123456789abcdeg"]
)
def test_check_batch_eid_syntax(eid: str) -> None:
    assert field_of(batch([window(), window(id=eid)])) == "windows[1].id"


def test_check_batch_ibeacon_id_not_held_to_eid_syntax() -> None:
    ident = "e2c56db5-dffb-48d2-b060-d0f5a71096e0:1:2"
    check_batch(decode(batch([window(id_type="ibeacon", id=ident)]), Batch))


def test_check_batch_end_before_start() -> None:
    assert field_of(batch([window(start=10.0, end=9.0)])) == "windows[0].end"
    check_batch(decode(batch([window(start=10.0, end=10.0)]), Batch))


def heartbeat(**changes: Any) -> bytes:
    body: dict[str, Any] = {
        "store_id": "demo-store",
        "scanner_id": "s-entrance",
        "version": "0.1.0",
        "adapter": "powered",
        "frames_seen_per_s": 12.5,
        "frames_passed_per_s": 0.8,
        "outbox_depth": 0,
        "outbox_dropped": 0,
        "last_upload_at": 1763800000.0,
        "watchdog_restarts": 0,
        "allowlist_version": 42,
        "sent_at": 1763800001.0,
    }
    body.update(changes)
    return json.dumps(body).encode()


def test_heartbeat_decodes() -> None:
    hb = decode(heartbeat(last_upload_at=None), Heartbeat)
    assert hb.adapter == "powered"
    assert hb.last_upload_at is None
    assert hb.allowlist_version == 42


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"adapter": "broken"}, "adapter"),
        ({"outbox_depth": -1}, "outbox_depth"),
        ({"frames_seen_per_s": "fast"}, "frames_seen_per_s"),
    ],
)
def test_heartbeat_errors_name_the_field(change: dict[str, Any], field: str) -> None:
    assert field_of(heartbeat(**change), Heartbeat) == field


_VALUE = st.one_of(
    st.sampled_from(["eid", "ibeacon", "EID", "", "0123456789abcdef"]),
    st.text(alphabet="0123456789abcdefABCDEF:-", max_size=20),
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(-200, 2**40),
    st.booleans(),
    st.none(),
    st.lists(st.integers(), max_size=2),
)
"""Field values near the real ones (ids, times, counts...) or of another type."""

WINDOW_FIELDS = ("id_type", "id", "start", "end", "count", "rssi_max", "rssi_median", "tx_power")


@given(
    st.lists(
        st.dictionaries(st.sampled_from([*WINDOW_FIELDS, "junk"]), _VALUE, max_size=9),
        max_size=4,
    )
)
def test_any_windows_are_accepted_or_refused_with_a_named_error(
    windows: list[dict[str, Any]],
) -> None:
    body = json.loads(batch())
    body["windows"] = [window() | w for w in windows]
    refused: ValidationError | None = None
    try:
        parsed = decode(json.dumps(body).encode(), Batch)
        check_batch(parsed)
    except ValidationError as exc:  # anything else (a crash, a 500) fails the test
        refused = exc
    if refused is not None:
        assert refused.field is not None
        assert refused.field.startswith("windows[")
        return
    assert len(parsed.windows) == len(windows)
    for w in parsed.windows:
        assert w.start <= w.end
        assert w.id_type != "eid" or len(bytes.fromhex(w.id)) == 8
