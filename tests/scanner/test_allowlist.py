"""Edge allowlist: wire validation, full/delta application, expiry, matching, counters."""

from __future__ import annotations

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from scanner.allowlist import (
    Allowlist,
    AllowlistEntry,
    AllowlistUpdate,
    SightingKey,
)
from scanner.errors import AllowlistError, ScannerError
from scanner.frames import (
    AltBeaconFrame,
    EddystoneEIDFrame,
    EddystoneTLMFrame,
    EddystoneUIDFrame,
    IBeaconFrame,
)

NOW = 1_763_800_000.0
EID_A = "0123456789abcdef"
EID_B = "fedcba9876543210"
IB_UUID = "e2c56db5-dffb-48d2-b060-d0f5a71096e0"
IB_ID = f"{IB_UUID}:1:2"


def eid_frame(hex_id: str) -> EddystoneEIDFrame:
    return EddystoneEIDFrame(-20, bytes.fromhex(hex_id))


def update(
    version: int,
    full: bool,
    entries: list[tuple[str, str, float]],
    removed: list[str],
    box_beacons: bool | None = None,
) -> AllowlistUpdate:
    wire: dict[str, object] = {
        "version": version,
        "full": full,
        "entries": [{"id_type": t, "id": i, "not_after": n} for t, i, n in entries],
        "removed": removed,
    }
    if box_beacons is not None:
        wire["box_beacons"] = box_beacons
    return AllowlistUpdate.from_wire(wire)


def test_from_wire_example_of_the_api_doc() -> None:
    parsed = AllowlistUpdate.from_wire(
        {
            "version": 42,
            "full": True,
            "entries": [{"id_type": "eid", "id": EID_A, "not_after": 1763800512.0}],
            "removed": [],
        }
    )
    assert parsed == AllowlistUpdate(42, True, (AllowlistEntry("eid", EID_A, 1763800512.0),), ())


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        ([], "expected a JSON object"),
        ({"full": True, "entries": []}, "version"),
        ({"version": True, "full": True, "entries": []}, "version"),
        ({"version": -1, "full": True, "entries": []}, "version"),
        ({"version": 1, "full": "yes", "entries": []}, "full"),
        ({"version": 1, "full": True, "entries": {}}, "entries"),
        ({"version": 1, "full": True, "entries": [], "removed": "x"}, "removed"),
        ({"version": 1, "full": True, "entries": [5]}, "entries[0]"),
        (
            {
                "version": 1,
                "full": True,
                "entries": [{"id_type": "eid", "id": "0123456789ABCDEF", "not_after": 1}],
            },
            "entries[0].id",
        ),
        (
            {
                "version": 1,
                "full": True,
                "entries": [{"id_type": "eid", "id": "0123", "not_after": 1}],
            },
            "entries[0].id",
        ),
        (
            {
                "version": 1,
                "full": True,
                "entries": [{"id_type": "mac", "id": EID_A, "not_after": 1}],
            },
            "entries[0].id_type",
        ),
        (
            {
                "version": 1,
                "full": True,
                "entries": [{"id_type": "eid", "id": EID_A, "not_after": "soon"}],
            },
            "entries[0].not_after",
        ),
        (
            {
                "version": 1,
                "full": True,
                "entries": [{"id_type": "ibeacon", "id": f"{IB_UUID}:70000:1", "not_after": 1}],
            },
            "entries[0].id",
        ),
        ({"version": 1, "full": False, "entries": [], "removed": [7]}, "removed[0]"),
        ({"version": 1, "full": False, "entries": [], "removed": ["xyz"]}, "removed[0]"),
    ],
)
def test_from_wire_refuses_bad_data(obj: object, message: str) -> None:
    with pytest.raises(AllowlistError) as caught:
        AllowlistUpdate.from_wire(obj)
    assert message in str(caught.value)
    assert isinstance(caught.value, ScannerError)


def test_match_eid_and_counters() -> None:
    allow = Allowlist()
    allow.apply(update(1, True, [("eid", EID_A, NOW + 512)], []), NOW)
    assert allow.version == 1
    assert len(allow) == 1
    assert allow.match(eid_frame(EID_A), NOW) == SightingKey("eid", EID_A)
    assert allow.match(eid_frame(EID_B), NOW) is None
    assert allow.match(None, NOW) is None
    assert allow.match(IBeaconFrame(IB_UUID, 1, 2, -59), NOW) is None
    assert allow.match(EddystoneTLMFrame(0, 3000, None, 1, 1.0), NOW) is None
    assert allow.passed == {"eddystone_eid": 1}
    assert allow.dropped == {"eddystone_eid": 1, "none": 1, "ibeacon": 1, "eddystone_tlm": 1}


def test_entry_is_valid_strictly_before_not_after() -> None:
    allow = Allowlist()
    allow.apply(update(1, True, [("eid", EID_A, NOW + 10)], []), NOW)
    assert allow.match(eid_frame(EID_A), NOW + 9.999) is not None
    assert allow.match(eid_frame(EID_A), NOW + 10) is None
    assert allow.expire(NOW + 9) == 0
    assert allow.expire(NOW + 10) == 1
    assert len(allow) == 0


def test_expired_entries_are_not_added() -> None:
    allow = Allowlist()
    allow.apply(update(1, True, [("eid", EID_A, NOW - 1), ("eid", EID_B, NOW + 1)], []), NOW)
    assert allow.entries() == (AllowlistEntry("eid", EID_B, NOW + 1),)


def test_ibeacon_matches_only_in_legacy_mode() -> None:
    entries = [("ibeacon", IB_ID, NOW + 60)]
    frame = IBeaconFrame(IB_UUID, 1, 2, -59)
    off = Allowlist()
    off.apply(update(1, True, entries, []), NOW)
    assert off.match(frame, NOW) is None
    legacy = Allowlist(legacy_ibeacon=True)
    legacy.apply(update(1, True, entries, []), NOW)
    assert legacy.match(frame, NOW) == SightingKey("ibeacon", IB_ID)
    assert legacy.match(IBeaconFrame(IB_UUID, 1, 3, -59), NOW) is None
    assert legacy.passed == {"ibeacon": 1}


def test_delta_adds_replaces_and_removes() -> None:
    allow = Allowlist(legacy_ibeacon=True)
    allow.apply(update(1, True, [("eid", EID_A, NOW + 5), ("ibeacon", IB_ID, NOW + 5)], []), NOW)
    allow.apply(
        update(2, False, [("eid", EID_A, NOW + 50), ("eid", EID_B, NOW + 50)], [IB_ID]), NOW
    )
    assert allow.version == 2
    assert allow.entries() == (
        AllowlistEntry("eid", EID_A, NOW + 50),
        AllowlistEntry("eid", EID_B, NOW + 50),
    )
    allow.apply(update(3, False, [], [EID_A]), NOW)
    assert allow.match(eid_frame(EID_A), NOW) is None
    assert allow.match(eid_frame(EID_B), NOW) == SightingKey("eid", EID_B)


def test_older_delta_is_ignored_but_older_full_applies() -> None:
    allow = Allowlist()
    allow.apply(update(5, True, [("eid", EID_A, NOW + 60)], []), NOW)
    allow.apply(update(4, False, [("eid", EID_B, NOW + 60)], [EID_A]), NOW)
    assert allow.version == 5
    assert allow.entries() == (AllowlistEntry("eid", EID_A, NOW + 60),)
    allow.apply(update(1, True, [("eid", EID_B, NOW + 60)], []), NOW)
    assert allow.version == 1
    assert allow.entries() == (AllowlistEntry("eid", EID_B, NOW + 60),)


def test_frames_of_other_types_never_match_even_with_equal_bytes() -> None:
    allow = Allowlist(legacy_ibeacon=True)
    allow.apply(update(1, True, [("eid", EID_A, NOW + 60)], []), NOW)
    raw = bytes.fromhex(EID_A)
    assert allow.match(EddystoneUIDFrame(-20, raw + b"\x00\x00", raw[:6]), NOW) is None
    assert allow.match(AltBeaconFrame(1, raw * 2 + raw[:4], -59, 0), NOW) is None


_eid_hex = st.binary(min_size=8, max_size=8).map(bytes.hex)
_entries = st.lists(
    st.tuples(st.just("eid"), _eid_hex, st.floats(NOW - 100, NOW + 1000)), max_size=8
)


@given(_entries, st.binary(min_size=8, max_size=8), st.floats(NOW - 200, NOW + 2000))
def test_foreign_eid_never_matches(
    entries: list[tuple[str, str, float]], foreign: bytes, now: float
) -> None:
    assume(foreign.hex() not in {e[1] for e in entries})
    allow = Allowlist(legacy_ibeacon=True)
    allow.apply(update(1, True, entries, []), NOW)
    assert allow.match(EddystoneEIDFrame(-20, foreign), now) is None
    assert allow.passed.total() == 0


@given(_entries, st.floats(NOW - 200, NOW + 2000))
def test_expired_entries_never_match(entries: list[tuple[str, str, float]], now: float) -> None:
    allow = Allowlist()
    allow.apply(update(1, True, entries, []), NOW)
    latest = {}
    for _, ident, not_after in entries:
        latest[ident] = not_after
    for ident, not_after in latest.items():
        key = allow.match(eid_frame(ident), now)
        if not_after <= max(now, NOW):
            assert key is None
        else:
            assert key == SightingKey("eid", ident)


@given(_entries, _entries, st.lists(_eid_hex, max_size=4), st.integers(0, 10), st.integers(0, 10))
def test_delta_then_full_equals_full(
    delta: list[tuple[str, str, float]],
    full: list[tuple[str, str, float]],
    removed: list[str],
    delta_version: int,
    full_version: int,
) -> None:
    only_full = Allowlist()
    only_full.apply(update(full_version, True, full, []), NOW)
    both = Allowlist()
    both.apply(update(delta_version, False, delta, removed), NOW)
    both.apply(update(full_version, True, full, []), NOW)
    assert both.entries() == only_full.entries()
    assert both.version == only_full.version == full_version


def test_dropped_frames_leave_no_trace_but_a_counter(caplog: pytest.LogCaptureFixture) -> None:
    canary = bytes.fromhex("c0ffeec0ffeec0ff")
    allow = Allowlist()
    allow.apply(update(2, True, [("eid", EID_A, NOW + 60)], []), NOW)
    allow.apply(update(1, False, [("eid", canary.hex(), NOW + 60)], []), NOW)  # stale delta
    with caplog.at_level("DEBUG", logger="scanner"):
        for _ in range(100):
            assert allow.match(EddystoneEIDFrame(-20, canary), NOW) is None
            assert allow.match(IBeaconFrame(IB_UUID, 1, 2, -59), NOW) is None
    assert caplog.records == []
    assert allow.dropped == {"eddystone_eid": 100, "ibeacon": 100}
    assert canary.hex() not in repr(allow.entries())


STORE_UUID = "b0110000-0000-4000-8000-00000000c4a1"


def test_another_box_store_beacon_passes_as_a_store_beacon_window() -> None:
    """The store's UUID and major pass whatever the list holds (a box, not a customer);
    another store's, another chain's and a plain iBeacon are dropped as before."""
    allow = Allowlist(store_beacon=(STORE_UUID, 42))
    allow.apply(update(1, True, [], [], box_beacons=True), NOW)
    key = allow.match(IBeaconFrame(STORE_UUID, 42, 49313, -59), NOW)
    assert key == SightingKey("store_beacon", f"{STORE_UUID}:42:49313")
    assert allow.match(IBeaconFrame(STORE_UUID, 42, 49313, -59), NOW) is key  # built once
    assert allow.match(IBeaconFrame(STORE_UUID, 43, 49313, -59), NOW) is None
    assert allow.match(IBeaconFrame(IB_UUID, 42, 49313, -59), NOW) is None
    assert allow.passed == {"store_beacon": 2}
    assert allow.dropped == {"ibeacon": 2}
    # Without the store's beacon configured, nothing of it passes.
    assert Allowlist().match(IBeaconFrame(STORE_UUID, 42, 1, -59), NOW) is None


def test_store_beacon_before_legacy_ibeacon() -> None:
    allow = Allowlist(legacy_ibeacon=True, store_beacon=(STORE_UUID, 42))
    allow.apply(
        update(1, True, [("ibeacon", f"{STORE_UUID}:42:7", NOW + 60)], [], box_beacons=True), NOW
    )
    assert allow.match(IBeaconFrame(STORE_UUID, 42, 7, -59), NOW) == SightingKey(
        "store_beacon", f"{STORE_UUID}:42:7"
    )


def test_store_beacons_wait_for_a_server_that_takes_them() -> None:
    """A server of an earlier release refuses a batch holding a ``store_beacon`` window, and the
    customers' windows of that batch with it: the box sends them only once the server's
    allowlist answer says ``box_beacons``, and stops when an answer no longer says it (a
    server put back to an earlier release)."""
    allow = Allowlist(store_beacon=(STORE_UUID, 42))
    frame = IBeaconFrame(STORE_UUID, 42, 49313, -59)
    assert allow.match(frame, NOW) is None  # no answer yet
    allow.apply(update(1, True, [], []), NOW)  # an older server: no such field
    assert allow.match(frame, NOW) is None
    allow.apply(update(2, False, [], [], box_beacons=True), NOW)
    assert allow.match(frame, NOW) is not None
    allow.apply(update(1, True, [], []), NOW)  # rolled back: a full list without the field
    assert allow.match(frame, NOW) is None
    assert allow.passed == {"store_beacon": 1}
    assert allow.dropped == {"store_beacon": 3}


def test_box_beacons_must_be_a_boolean() -> None:
    wire = {"version": 1, "full": True, "entries": [], "removed": [], "box_beacons": "yes"}
    with pytest.raises(AllowlistError, match="box_beacons"):
        AllowlistUpdate.from_wire(wire)
