"""Eddystone-EID computation and the EID resolver."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from store_server.eid import (
    DEFAULT_ROTATION_EXPONENT,
    IdentityError,
    IdentityRecord,
    beacon_time,
    clock_offset,
    compute_eid,
    eid_at,
    eid_block,
    new_identity_key,
    temporary_key,
    temporary_key_block,
    window_bounds_server_time,
    window_index,
    window_start,
)
from store_server.resolver import HISTORY_VERSIONS, AllowlistItem, EidResolver

# Published vector of an independent implementation (a Node.js Eddystone scanner's test suite,
# which uses the key 00112233445566778899AABBCCDDEEFF): T = 1518080946, K = 12.
PUBLISHED_IK = bytes.fromhex("00112233445566778899aabbccddeeff")
PUBLISHED_T = 1518080946
PUBLISHED_K = 12
PUBLISHED_TK = bytes.fromhex("b7c2d909d27d22df8343271162480210")
PUBLISHED_EID = bytes.fromhex("7dd8169dae94258c")

# The other literals below were computed once with _reference_eid (a step-by-step transcription
# of eid-computation.md) and pasted here.
IK = bytes.fromhex("e2a5c2cfa7e9a2a5c1d3b4f6a8c0e1d2")
TK_SLOT_0 = bytes.fromhex("c133cb87615e22fe34fb186cbd105114")
TK_SLOT_1 = bytes.fromhex("112d450fbc83214ac5c89b91e23a4669")
TK_SLOT_FFFF = bytes.fromhex("a626e1866fc146609e92c77dd1aac40d")

K9 = DEFAULT_ROTATION_EXPONENT
WINDOW = 2**K9


def _aes_ecb(key: bytes, block: bytes) -> bytes:
    encryptor = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    return encryptor.update(block) + encryptor.finalize()


def _reference_eid(ik: bytes, k: int, t: int) -> tuple[bytes, bytes, bytes, bytes]:
    """Straight from the specification text: (TK input, TK, EID input, EID)."""
    tk_input = b"\x00" * 11 + b"\xff" + b"\x00\x00" + ((t >> 16) & 0xFFFF).to_bytes(2, "big")
    tk = _aes_ecb(ik, tk_input)
    eid_input = b"\x00" * 11 + bytes([k]) + ((t >> k) << k).to_bytes(4, "big")
    return tk_input, tk, eid_input, _aes_ecb(tk, eid_input)[:8]


# ---- EID vectors ----------------------------------------------------------------------------


def test_published_vector() -> None:
    assert temporary_key(PUBLISHED_IK, PUBLISHED_T) == PUBLISHED_TK
    assert compute_eid(PUBLISHED_IK, PUBLISHED_K, PUBLISHED_T) == PUBLISHED_EID
    assert _reference_eid(PUBLISHED_IK, PUBLISHED_K, PUBLISHED_T) == (
        bytes.fromhex("0000000000000000000000ff00005a7c"),
        PUBLISHED_TK,
        bytes.fromhex("00000000000000000000000c5a7c1000"),
        PUBLISHED_EID,
    )


def test_input_blocks_are_laid_out_as_specified() -> None:
    assert temporary_key_block(PUBLISHED_T) == bytes.fromhex("0000000000000000000000ff00005a7c")
    assert eid_block(PUBLISHED_K, PUBLISHED_T) == bytes.fromhex("00000000000000000000000c5a7c1000")
    assert temporary_key_block(2**32 - 1) == bytes.fromhex("0000000000000000000000ff0000ffff")
    assert eid_block(15, 2**32 - 1) == bytes.fromhex("00000000000000000000000fffff8000")
    assert eid_block(0, 2**32 - 1) == bytes.fromhex("000000000000000000000000ffffffff")


@pytest.mark.parametrize(
    ("k", "t", "tk_input", "tk", "eid_input", "eid"),
    [
        # Temporary-key roll-over: 65535 is the last second of slot 0, 65536 the first of slot 1.
        (
            9,
            65535,
            "0000000000000000000000ff00000000",
            TK_SLOT_0,
            "0000000000000000000000090000fe00",
            "f237b3d9ba9e26ca",
        ),
        (
            9,
            65536,
            "0000000000000000000000ff00000001",
            TK_SLOT_1,
            "00000000000000000000000900010000",
            "782d32ab735ad279",
        ),
        (
            9,
            0,
            "0000000000000000000000ff00000000",
            TK_SLOT_0,
            "00000000000000000000000900000000",
            "49759144e6d441b2",
        ),
        # k = 0: every second is its own window.
        (
            0,
            1,
            "0000000000000000000000ff00000000",
            TK_SLOT_0,
            "00000000000000000000000000000001",
            "30f8a6105e77a40c",
        ),
        (
            0,
            2,
            "0000000000000000000000ff00000000",
            TK_SLOT_0,
            "00000000000000000000000000000002",
            "61f4448a493fdc1c",
        ),
        # Top of the 32-bit counter.
        (
            15,
            2**32 - 1,
            "0000000000000000000000ff0000ffff",
            TK_SLOT_FFFF,
            "00000000000000000000000fffff8000",
            "55904f74b6740780",
        ),
        (
            9,
            2**32 - 1,
            "0000000000000000000000ff0000ffff",
            TK_SLOT_FFFF,
            "000000000000000000000009fffffe00",
            "ea9c1f708edb2abf",
        ),
    ],
)
def test_literal_vectors(
    k: int, t: int, tk_input: str, tk: bytes, eid_input: str, eid: str
) -> None:
    expected = (bytes.fromhex(tk_input), tk, bytes.fromhex(eid_input), bytes.fromhex(eid))
    assert _reference_eid(IK, k, t) == expected
    assert temporary_key_block(t) == expected[0]
    assert temporary_key(IK, t) == tk
    assert eid_block(k, t) == expected[2]
    assert compute_eid(IK, k, t) == expected[3]


def test_temporary_key_rolls_over_at_65536() -> None:
    assert temporary_key(IK, 65535) == TK_SLOT_0
    assert temporary_key(IK, 65536) == TK_SLOT_1
    assert compute_eid(IK, K9, 65535) != compute_eid(IK, K9, 65536)


def test_low_bits_are_cleared() -> None:
    t = 65536
    eid = bytes.fromhex("782d32ab735ad279")
    assert compute_eid(IK, K9, t) == eid
    assert compute_eid(IK, K9, t + WINDOW - 1) == eid
    assert compute_eid(IK, K9, t + WINDOW) == bytes.fromhex("92e1f3848e85dfd3")
    # k = 15: the last window of the counter spans 2**32 - 2**15 .. 2**32 - 1.
    assert compute_eid(IK, 15, 2**32 - 2**15) == bytes.fromhex("55904f74b6740780")
    assert compute_eid(IK, 15, 2**32 - 2**15 - 1) == bytes.fromhex("9599c119ff0a26cc")
    # k = 0: consecutive seconds differ.
    assert compute_eid(IK, 0, 1) != compute_eid(IK, 0, 2)


@settings(max_examples=60, deadline=None)
@given(
    ik=st.binary(min_size=16, max_size=16),
    k=st.integers(0, 15),
    t=st.integers(0, 2**32 - 1),
)
def test_matches_reference_implementation(ik: bytes, k: int, t: int) -> None:
    assert compute_eid(ik, k, t) == _reference_eid(ik, k, t)[3]


@pytest.mark.parametrize(
    ("ik", "k", "t"),
    [
        (bytes(15), 9, 0),
        (bytes(17), 9, 0),
        (bytearray(16), 9, 0),
        (IK, -1, 0),
        (IK, 16, 0),
        (IK, True, 0),
        (IK, 9, -1),
        (IK, 9, 2**32),
        (IK, 9, 1.0),
    ],
)
def test_invalid_inputs_raise(ik: bytes, k: int, t: int) -> None:
    with pytest.raises(IdentityError):
        compute_eid(ik, k, t)


def test_identity_error_is_a_value_error() -> None:
    assert issubclass(IdentityError, ValueError)


def test_new_identity_key() -> None:
    keys = {new_identity_key() for _ in range(8)}
    assert len(keys) == 8
    assert all(len(key) == 16 for key in keys)


def test_record_repr_hides_the_key() -> None:
    record = IdentityRecord("c-1", IK, K9, 0.0)
    assert IK.hex() not in repr(record)
    assert repr(IK) not in repr(record)


# ---- time -----------------------------------------------------------------------------------


def test_beacon_time_and_windows() -> None:
    offset = clock_offset(1000, 1_763_800_000.25)
    assert offset == 1000 - 1_763_800_000.25
    assert beacon_time(1_763_800_000.25, offset) == 1000
    assert beacon_time(1_763_800_010.0, offset) == 1009  # floor(1009.75)
    # The counter wraps modulo 2**32.
    assert beacon_time(100.0, 2**32 - 50.0) == 50
    assert window_start(1000, K9) == 512
    assert window_start(2**32 - 1, 15) == 2**32 - 2**15
    assert window_index(100.0, K9, 1000.0) == 2
    assert window_bounds_server_time(2, K9, 1000.0) == (24.0, 536.0)
    with pytest.raises(IdentityError):
        clock_offset(2**32, 0.0)


# ---- resolver -------------------------------------------------------------------------------

NOW = 1_763_800_000.0


def _record(subject: str, app_counter: int, key: bytes = IK, k: int = K9) -> IdentityRecord:
    return IdentityRecord(subject, key, k, clock_offset(app_counter, NOW))


def _eid_of_window(record: IdentityRecord, window: int) -> bytes:
    return compute_eid(record.identity_key, record.k, (window << record.k) % 2**32)


def test_current_and_neighbour_eids_resolve() -> None:
    record = _record("c-1", 70_000)
    resolver = EidResolver()
    resolver.upsert(record, NOW)
    assert len(resolver) == 1
    assert resolver.resolve(eid_at(record, NOW), NOW) == "c-1"
    current = window_index(NOW, K9, record.clock_offset_s)
    assert resolver.resolve(_eid_of_window(record, current - 1), NOW) == "c-1"
    assert resolver.resolve(_eid_of_window(record, current + 1), NOW) == "c-1"
    assert resolver.resolve(_eid_of_window(record, current - 2), NOW) is None
    assert resolver.resolve(_eid_of_window(record, current + 2), NOW) is None


def test_previous_window_resolves_only_within_skew() -> None:
    record = _record("c-1", 512 * 200)  # the counter is at the start of a window at NOW
    resolver = EidResolver(skew_windows=1)
    resolver.upsert(record, NOW)
    previous = eid_at(record, NOW - 1)
    assert resolver.resolve(previous, NOW) == "c-1"
    # One window later, even without advance, the previous-window EID is two windows old.
    later = NOW + WINDOW
    assert resolver.resolve(previous, later - 0.001) == "c-1"
    assert resolver.resolve(previous, later) is None
    resolver.advance(later)
    assert resolver.resolve(previous, later) is None
    assert resolver.resolve(eid_at(record, later), later) == "c-1"


def test_zero_skew_accepts_only_the_current_window() -> None:
    record = _record("c-1", 512 * 200 + 10)
    resolver = EidResolver(skew_windows=0)
    resolver.upsert(record, NOW)
    assert resolver.resolve(eid_at(record, NOW), NOW) == "c-1"
    assert resolver.resolve(eid_at(record, NOW - WINDOW), NOW) is None
    assert resolver.resolve(eid_at(record, NOW + WINDOW), NOW) is None
    assert len(resolver.entries(NOW)) == 1


def test_expired_eids_never_resolve() -> None:
    record = _record("c-1", 512 * 300 + 100)
    resolver = EidResolver()
    resolver.upsert(record, NOW)
    eid_now = eid_at(record, NOW)
    for windows_later in (2, 3, 10, 1000):
        then = NOW + windows_later * WINDOW
        assert resolver.resolve(eid_now, then) is None  # stale table
        resolver.advance(then)
        assert resolver.resolve(eid_now, then) is None
        assert resolver.resolve(eid_at(record, then), then) == "c-1"


def test_future_eid_does_not_resolve_before_its_skew() -> None:
    record = _record("c-1", 512 * 300 + 100)
    resolver = EidResolver()
    resolver.upsert(record, NOW)
    # Ask about a time well before the table was built: the table's EIDs are in the future.
    assert resolver.resolve(eid_at(record, NOW), NOW - 3 * WINDOW) is None


@settings(max_examples=200, deadline=None)
@given(eid=st.binary(min_size=8, max_size=8), dt=st.floats(-2000, 2000))
def test_random_eids_never_resolve(eid: bytes, dt: float) -> None:
    resolver = _RANDOM_RESOLVER
    assume(eid not in _RANDOM_TABLE)
    assert resolver.resolve(eid, NOW + dt) is None


def _build_random_resolver() -> tuple[EidResolver, set[bytes]]:
    resolver = EidResolver()
    records = [_record(f"c-{i}", 1000 * i, key=bytes([i]) * 16) for i in range(1, 20)]
    resolver.upsert_many(records, NOW)
    return resolver, {item.eid for item in resolver.entries(NOW)}


_RANDOM_RESOLVER, _RANDOM_TABLE = _build_random_resolver()


def test_entries_and_not_after() -> None:
    record = _record("c-1", 512 * 200 + 12)
    resolver = EidResolver()
    resolver.upsert(record, NOW)
    items = resolver.entries(NOW)
    current = window_index(NOW, K9, record.clock_offset_s)
    expected = {
        _eid_of_window(record, w): window_bounds_server_time(w + 1, K9, record.clock_offset_s)[1]
        for w in (current - 1, current, current + 1)
    }
    assert {item.eid: item.not_after for item in items} == expected
    # The window started 12 s before NOW: the current EID is accepted until the end of the next.
    assert expected[eid_at(record, NOW)] == NOW - 12 + 2 * WINDOW
    # Entries are filtered by validity at the time asked, even without advance.
    later = NOW - 12 + WINDOW
    assert {item.eid for item in resolver.entries(later)} == {
        _eid_of_window(record, current),
        _eid_of_window(record, current + 1),
    }


def test_upsert_rekey_drops_old_eids() -> None:
    old = _record("c-1", 70_000)
    resolver = EidResolver()
    resolver.upsert(old, NOW)
    old_eids = {item.eid for item in resolver.entries(NOW)}
    version = resolver.version
    new = _record("c-1", 70_000, key=new_identity_key())
    resolver.upsert(new, NOW)
    assert len(resolver) == 1
    assert resolver.version == version + 1
    for eid in old_eids:
        assert resolver.resolve(eid, NOW) is None
    assert resolver.resolve(eid_at(new, NOW), NOW) == "c-1"
    delta = resolver.changes_since(version)
    assert delta is not None
    assert set(delta.removed) == old_eids
    assert {item.eid for item in delta.added} == {item.eid for item in resolver.entries(NOW)}


def test_identical_upsert_changes_nothing() -> None:
    record = _record("c-1", 70_000)
    resolver = EidResolver()
    resolver.upsert(record, NOW)
    version = resolver.version
    computed = resolver.eid_computations
    resolver.upsert(_record("c-1", 70_000), NOW)
    assert resolver.version == version
    assert resolver.eid_computations == computed


def test_remove_drops_all_eids_and_bumps_version() -> None:
    keep = _record("c-keep", 5_000, key=bytes(range(16)))
    gone = _record("c-gone", 9_000)
    resolver = EidResolver()
    resolver.upsert_many([keep, gone], NOW)
    gone_eids = {item.eid for item in resolver.entries(NOW)} - {
        _eid_of_window(keep, w)
        for w in range(
            window_index(NOW, K9, keep.clock_offset_s) - 1,
            window_index(NOW, K9, keep.clock_offset_s) + 2,
        )
    }
    assert len(gone_eids) == 3
    version = resolver.version
    assert resolver.remove("c-gone") is True
    assert resolver.version == version + 1
    assert len(resolver) == 1
    assert "c-gone" not in resolver
    for eid in gone_eids:
        assert resolver.resolve(eid, NOW) is None
    assert resolver.resolve(eid_at(keep, NOW), NOW) == "c-keep"
    assert gone_eids.isdisjoint(item.eid for item in resolver.entries(NOW))
    delta = resolver.changes_since(version)
    assert delta == resolver.changes_since(version)
    assert delta is not None
    assert set(delta.removed) == gone_eids
    assert delta.added == ()
    # Removing again is a no-op.
    assert resolver.remove("c-gone") is False
    assert resolver.version == version + 1
    # Advancing past the removed subject's window boundary does not bring it back.
    resolver.advance(NOW + 3 * WINDOW)
    assert all(resolver.resolve(eid_at(gone, NOW + t), NOW + t) is None for t in (0, 3 * WINDOW))


def test_changes_since_merges_deltas() -> None:
    a = _record("c-a", 1_000, key=bytes([1]) * 16)
    b = _record("c-b", 2_000, key=bytes([2]) * 16)
    resolver = EidResolver()
    assert resolver.version == 0
    assert resolver.changes_since(0) == resolver.changes_since(resolver.version)
    resolver.upsert(a, NOW)
    v1 = resolver.version
    a_eids = {item.eid for item in resolver.entries(NOW)}
    resolver.upsert(b, NOW)
    b_items = {item.eid: item for item in resolver.entries(NOW) if item.eid not in a_eids}
    resolver.remove("c-a")
    delta = resolver.changes_since(v1)
    assert delta is not None
    assert delta.version == resolver.version == v1 + 2
    assert {item.eid: item for item in delta.added} == b_items
    assert set(delta.removed) == a_eids
    # From the very start: a was added then removed, so it is only in `removed`.
    delta0 = resolver.changes_since(0)
    assert delta0 is not None
    assert {item.eid for item in delta0.added} == set(b_items)
    assert set(delta0.removed) == a_eids
    # Up to date: an empty delta at the current version.
    assert resolver.changes_since(resolver.version) == type(delta)(resolver.version, (), ())
    # A version from the future (another server run) needs a full list.
    assert resolver.changes_since(resolver.version + 1) is None
    assert resolver.changes_since(-1) is None


def test_changes_since_too_old_returns_none() -> None:
    resolver = EidResolver()
    record = _record("c-1", 70_000)
    for _ in range(HISTORY_VERSIONS // 2 + 1):
        resolver.upsert(record, NOW)
        resolver.remove("c-1")
    assert resolver.version > HISTORY_VERSIONS
    assert resolver.changes_since(0) is None
    assert resolver.changes_since(resolver.version - HISTORY_VERSIONS - 1) is None
    assert resolver.changes_since(resolver.version - HISTORY_VERSIONS) is not None


def test_advance_is_incremental() -> None:
    # c-early changes window 100 s after NOW, c-late 400 s after NOW.
    early = _record("c-early", 512 * 100 + 412, key=bytes([1]) * 16)
    late = _record("c-late", 512 * 100 + 112, key=bytes([2]) * 16)
    resolver = EidResolver()
    resolver.upsert_many([early, late], NOW)
    assert resolver.eid_computations == 6
    version = resolver.version
    assert resolver.advance(NOW + 99) is False
    assert resolver.version == version
    assert resolver.eid_computations == 6
    assert resolver.advance(NOW + 100) is True
    assert resolver.version == version + 1
    assert resolver.eid_computations == 7  # one new window of one subject
    delta = resolver.changes_since(version)
    assert delta is not None
    assert [item.eid for item in delta.added] == [eid_at(early, NOW + 100 + WINDOW)]
    assert list(delta.removed) == [eid_at(early, NOW - 412 - 1)]  # window 99
    assert resolver.advance(NOW + 100) is False
    assert resolver.advance(NOW + 400) is True
    assert resolver.eid_computations == 8
    assert resolver.resolve(eid_at(late, NOW + 400 + WINDOW), NOW + 400) == "c-late"


def test_advance_follows_a_beacon_across_rollovers() -> None:
    """A simulated app stays resolvable across the temporary-key roll-over and counter wrap."""
    for app_counter in (65_536 - 1_000, 2**32 - 1_000):
        record = _record("c-1", app_counter)
        resolver = EidResolver()
        resolver.upsert(record, NOW)
        seen = set()
        for second in range(0, 3_000, 7):
            now = NOW + second
            resolver.advance(now)
            eid = eid_at(record, now)
            seen.add(eid)
            assert resolver.resolve(eid, now) == "c-1", (app_counter, second)
            accepted = {item.eid for item in resolver.entries(now)}
            assert eid in accepted
            assert len(accepted) == 3
        assert len(seen) >= 5


def test_resolver_rejects_bad_input() -> None:
    with pytest.raises(IdentityError):
        EidResolver(skew_windows=-1)
    resolver = EidResolver()
    with pytest.raises(IdentityError):
        resolver.upsert(IdentityRecord("c-1", bytes(15), K9, 0.0), NOW)
    with pytest.raises(IdentityError):
        resolver.upsert(IdentityRecord("", IK, K9, 0.0), NOW)
    with pytest.raises(IdentityError):
        resolver.upsert(IdentityRecord("c-1", IK, 16, 0.0), NOW)
    with pytest.raises(IdentityError):
        resolver.upsert(IdentityRecord("c-1", IK, K9, float("nan")), NOW)
    assert len(resolver) == 0
    assert resolver.version == 0


def test_allowlist_items_are_opaque() -> None:
    item = AllowlistItem(b"\x01" * 8, NOW)
    assert set(item.__slots__) == {"eid", "not_after"}
