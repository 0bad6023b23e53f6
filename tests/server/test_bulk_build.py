"""The resolver's column-wise bulk build against its one-record-at-a-time path."""

from __future__ import annotations

import math
import random
from array import array

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from store_server import identity
from store_server.identity import (
    LANES_MIN_RECORDS,
    MAX_CLOCK_OFFSET_S,
    EidResolver,
    IdentityColumns,
    IdentityError,
    IdentityRecord,
    _EidTable,
    eid_at,
)

NOW = 1_763_800_000.0
"""Fixed server time: the tests are deterministic."""

COUNT = LANES_MIN_RECORDS + 44
"""Enough records for the column-wise path (asserted below, so a raised threshold shows)."""


def _columns(rng: random.Random, count: int, k_choices: tuple[int, ...]) -> IdentityColumns:
    offsets = array("d")
    for i in range(count):
        if i % 5 == 0:
            # Around a temporary-key roll-over (every 65,536 s) or the 32-bit counter wrap.
            edge = rng.choice((65_536 * rng.randrange(1, 65_536), 2**32))
            offsets.append(edge + rng.uniform(-40_000, 40_000) - NOW)
        elif i % 11 == 0:
            # Clocks before 0 (now + offset < 0) and offsets at the accepted bound.
            offsets.append(
                rng.choice((-NOW - rng.uniform(0, 2**33), MAX_CLOCK_OFFSET_S, -MAX_CLOCK_OFFSET_S))
            )
        else:
            offsets.append(rng.uniform(0, 2**32) - NOW)
    return IdentityColumns(
        [f"c-{i}" for i in range(count)],
        rng.randbytes(16 * count),
        array("B", [rng.choice(k_choices) for _ in range(count)]),
        offsets,
    )


@settings(max_examples=12, deadline=None)
@given(
    seed=st.integers(0, 2**32),
    skew=st.integers(0, 3),
    ks=st.sampled_from([(9,), (0, 1, 2), (15,), (0, 9, 12, 15)]),
    later=st.floats(0, 2**31),
)
def test_lanes_equal_scalar(seed: int, skew: int, ks: tuple[int, ...], later: float) -> None:
    columns = _columns(random.Random(seed), COUNT, ks)
    now = NOW + later
    lanes = identity._window_eids_lanes(columns.keys, columns.ks, columns.offsets, now, skew)
    scalar = identity._window_eids_scalar(columns.keys, columns.ks, columns.offsets, now, skew)
    assert lanes == scalar


def test_lanes_hand_clocks_beyond_float_precision_to_the_scalar_path() -> None:
    rng = random.Random(3)
    columns = _columns(rng, COUNT, (9,))
    offsets = array("d", columns.offsets)
    offsets[7] = 2.0**53  # not a valid identity, but the internal paths must still agree
    offsets[8] = -(2.0**53) - NOW
    args = (columns.keys, columns.ks, offsets, NOW, 1)
    assert identity._window_eids_lanes(*args) == identity._window_eids_scalar(*args)


def _records(columns: IdentityColumns) -> list[IdentityRecord]:
    return [
        IdentityRecord(
            s, bytes(columns.keys[i * 16 : i * 16 + 16]), columns.ks[i], columns.offsets[i]
        )
        for i, s in enumerate(columns.subjects)
    ]


def _state(resolver: EidResolver, now: float) -> set[tuple[bytes, float, str | None]]:
    """Every accepted EID, when it stops being accepted, and whom it resolves to: through the
    hash table, not only the EID array that ``entries`` reads."""
    return {
        (item.eid, item.not_after, resolver.resolve(item.eid, now))
        for item in resolver.entries(now)
    }


def test_bulk_build_equals_record_by_record_and_keeps_working() -> None:
    assert COUNT >= LANES_MIN_RECORDS
    rng = random.Random(11)
    columns = _columns(rng, COUNT, (0, 3, 9, 15))
    records = _records(columns)
    bulk = EidResolver()
    bulk.upsert_columns(columns, NOW)
    one_by_one = EidResolver()
    for record in records:
        one_by_one.upsert(record, NOW)
    assert len(bulk) == COUNT
    assert _state(bulk, NOW) == _state(one_by_one, NOW)
    for record in records:
        assert bulk.resolve(eid_at(record, NOW), NOW) == record.subject
    # Both evolve identically afterwards: window changes, removals, re-keys.
    now = NOW
    for step in range(40):
        now += rng.choice((1, 30, 600, 5000))
        assert bulk.advance(now) == one_by_one.advance(now)
        if step % 4 == 0:
            gone = rng.choice(records).subject
            assert bulk.remove(gone) == one_by_one.remove(gone)
        if step % 7 == 0:
            fresh = IdentityRecord(rng.choice(records).subject, rng.randbytes(16), 9, 0.0)
            bulk.upsert(fresh, now)
            one_by_one.upsert(fresh, now)
        assert _state(bulk, now) == _state(one_by_one, now)
    for record in records:
        if record.subject in bulk:
            assert bulk.resolve(eid_at(record, now), now) in (record.subject, None)


def test_bulk_build_over_existing_subjects_and_duplicates_falls_back() -> None:
    rng = random.Random(12)
    columns = _columns(rng, COUNT, (9,))
    resolver = EidResolver()
    resolver.upsert_columns(columns.slice(0, 100), NOW)
    twice = IdentityColumns(
        [*columns.subjects, columns.subjects[5]],
        bytes(columns.keys) + rng.randbytes(16),
        array("B", [*columns.ks, 9]),
        array("d", [*columns.offsets, 0.0]),
    )
    resolver.upsert_columns(twice, NOW)  # 100 held already, one subject twice: last one wins
    reference = EidResolver()
    for record in _records(columns.slice(0, 100)):
        reference.upsert(record, NOW)
    for record in _records(twice):
        reference.upsert(record, NOW)
    assert _state(resolver, NOW) == _state(reference, NOW)
    assert len(resolver) == COUNT


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda c: c.ks.__setitem__(3, 16), "row 3: rotation exponent"),
        (lambda c: c.offsets.__setitem__(4, math.nan), "row 4: clock offset"),
        (lambda c: c.offsets.__setitem__(5, MAX_CLOCK_OFFSET_S * 2), "row 5: clock offset"),
        (lambda c: c.subjects.__setitem__(6, ""), "row 6: subject"),
        (lambda c: c.ks.pop(), "ks must be"),
        (lambda c: c.offsets.pop(), "offsets must be"),
    ],
)
def test_columns_are_checked_row_by_row(change: object, message: str) -> None:
    columns = _columns(random.Random(13), 20, (9,))
    change(columns)  # type: ignore[operator]
    resolver = EidResolver()
    with pytest.raises(IdentityError, match=message):
        resolver.upsert_columns(columns, NOW)
    assert len(resolver) == 0


def test_short_keys_are_refused() -> None:
    columns = _columns(random.Random(14), 20, (9,))
    bad = IdentityColumns(columns.subjects, bytes(columns.keys)[:-1], columns.ks, columns.offsets)
    with pytest.raises(IdentityError, match="16 bytes per subject"):
        EidResolver().upsert_columns(bad, NOW)


def test_records_with_out_of_range_offsets_are_refused() -> None:
    record = IdentityRecord("c", bytes(16), 9, MAX_CLOCK_OFFSET_S + 1)
    with pytest.raises(IdentityError, match="clock offset"):
        EidResolver().upsert(record, NOW)


def test_column_wise_table_fill_with_long_collision_chains() -> None:
    rng = random.Random(15)
    # Low 8 bits from 6 values: the bulk fill's rounds must walk long clusters, wrapping
    # around the end of the cells; deletions afterwards must still find everything.
    eids = array(
        "Q",
        [(rng.getrandbits(56) << 8) | rng.choice((0, 1, 2, 100, 254, 255)) for _ in range(3000)],
    )
    assert len(set(eids)) == len(eids)
    table = _EidTable(eids)
    table.add_range(0, 3000)
    assert len(table) == 3000
    for position, eid in enumerate(eids):
        assert table.find(eid) == position
    removed = set(rng.sample(range(3000), 1500))
    for position in removed:
        assert table.remove(position)
    for position, eid in enumerate(eids):
        assert table.find(eid) == (-1 if position in removed else position)


def test_growth_rehashes_column_wise_without_losing_entries() -> None:
    rng = random.Random(16)
    eids = array("Q", [rng.getrandbits(64) for _ in range(5000)])
    table = _EidTable(eids)
    for position in range(len(eids)):  # grows 64 -> 16384 cells, the big steps column-wise
        table.add(position)
    assert len(table) == len(eids)
    for position, eid in enumerate(eids):
        assert table.find(eid) == position


def test_lanes_in_many_chunks_equal_scalar(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(identity, "LANES_CHUNK", 64)
    columns = _columns(random.Random(17), 1000, (0, 9, 15))
    args = (columns.keys, columns.ks, columns.offsets, NOW, 1)
    assert identity._window_eids_lanes(*args) == identity._window_eids_scalar(*args)


def test_bulk_build_in_chunks_equals_record_by_record(monkeypatch: pytest.MonkeyPatch) -> None:
    """The build computes and places EIDs in bounded chunks (the last one scalar-sized): the
    result must be the one-by-one resolver's, before and after the windows move on."""
    monkeypatch.setattr(identity, "BUILD_CHUNK", 300)
    monkeypatch.setattr(identity, "PLACE_CHUNK", 700)
    rng = random.Random(18)
    columns = _columns(rng, 1000, (0, 9, 15))  # chunks of 300, 300, 300, 100 records
    bulk = EidResolver()
    bulk.upsert_columns(columns, NOW)
    one_by_one = EidResolver()
    records = _records(columns)
    for record in records:
        one_by_one.upsert(record, NOW)
    assert len(bulk._table) == 3 * len(records)
    assert _state(bulk, NOW) == _state(one_by_one, NOW)
    for record in records:
        assert bulk.resolve(eid_at(record, NOW), NOW) == record.subject
    now = NOW
    for _ in range(10):
        now += rng.choice((1, 600, 5000))
        assert bulk.advance(now) == one_by_one.advance(now)
        assert _state(bulk, now) == _state(one_by_one, now)


def test_growth_rehashes_in_chunks_without_losing_entries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(identity, "PLACE_CHUNK", 1000)
    rng = random.Random(19)
    eids = array("Q", [rng.getrandbits(64) for _ in range(5000)])
    table = _EidTable(eids)
    for position in range(len(eids)):  # the later rehashes place the held cells in chunks
        table.add(position)
    assert len(table) == len(eids)
    for position, eid in enumerate(eids):
        assert table.find(eid) == position


def _delta(resolver: EidResolver) -> tuple[set[tuple[bytes, float]], set[bytes]] | None:
    """The last version's delta, as sets (the order of its items carries no meaning)."""
    delta = resolver.changes_since(resolver.version - 1)
    if delta is None:
        return None
    return {(i.eid, i.not_after) for i in delta.added}, set(delta.removed)


def test_column_wise_advance_equals_one_by_one(monkeypatch: pytest.MonkeyPatch) -> None:
    """Many subjects changing window at once are recomputed column-wise; the result is the
    same as recomputing them one by one (the scalar path, forced by a huge threshold)."""
    rng = random.Random(18)
    columns = _columns(rng, 3 * COUNT, (0, 1, 3, 9, 15))
    lanes = EidResolver(skew_windows=2)
    lanes.upsert_columns(columns, NOW)
    scalar = EidResolver(skew_windows=2)
    scalar.upsert_columns(columns, NOW)
    now = NOW
    for _ in range(25):
        now += rng.choice((1, 2, 8, 40, 700, 70_000))  # slides, jumps and TK roll-overs
        with monkeypatch.context() as patch:
            patch.setattr(identity, "LANES_MIN_RECORDS", 10**9)
            changed_scalar = scalar.advance(now)
        assert lanes.advance(now) == changed_scalar
        assert _state(lanes, now) == _state(scalar, now)
        assert _delta(lanes) == _delta(scalar)
    assert lanes.eid_computations == scalar.eid_computations
