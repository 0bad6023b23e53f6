"""The batch fast paths: check_batch's whole-batch pass and EidResolver.resolve_int."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from store_server import identity
from store_server.errors import ValidationError
from store_server.ingest import Batch, check_batch, decode
from tests.server.test_ingest import batch, window

GOOD = "0123456789abcdef"
EID_RE = re.compile(r"^[0-9a-f]{16}$")


def first_fault(ids: list[str], ends: list[float]) -> str | None:
    """The reference: the field the per-window rules name first, or None."""
    for index, (eid, end) in enumerate(zip(ids, ends, strict=True)):
        if not EID_RE.fullmatch(eid):
            return f"windows[{index}].id"
        if end < 1763800000.0:
            return f"windows[{index}].end"
    return None


@pytest.mark.parametrize(
    ("ids", "field"),
    [
        ([GOOD, GOOD[:15] + "A"], "windows[1].id"),  # upper case
        ([GOOD[:15], GOOD + "0"], "windows[0].id"),  # 15 + 17 characters: the sum is 32
        ([GOOD + "\n" + GOOD], "windows[0].id"),  # two valid EIDs joined inside one id
        ([GOOD, "0x" + GOOD[2:]], "windows[1].id"),  # int() would accept a prefix
        ([GOOD, "01234567_9abcdef"], "windows[1].id"),  # or an underscore
        ([GOOD + "\n"], "windows[0].id"),  # `$` of a regex would let a final newline pass
    ],
)
def test_bad_eids_are_named(ids: list[str], field: str) -> None:
    parsed = decode(batch([window(id=i) for i in ids]), Batch)
    with pytest.raises(ValidationError) as caught:
        check_batch(parsed)
    assert caught.value.field == field


def test_ibeacon_ids_are_not_held_to_the_eid_syntax() -> None:
    ibeacon = "f7826da6-4fa2-4e98-8024-bc5b71e0893e:1:2"
    check_batch(decode(batch([window(), window(id_type="ibeacon", id=ibeacon)]), Batch))


@given(
    st.lists(
        st.tuples(
            st.one_of(st.just(GOOD), st.text("0123456789abcdefA\n_", min_size=1, max_size=20)),
            st.sampled_from([1763799999.0, 1763800001.0]),
        ),
        min_size=1,
        max_size=8,
    )
)
def test_fast_pass_agrees_with_the_per_window_rules(cases: list[tuple[str, float]]) -> None:
    ids = [c[0] for c in cases]
    ends = [c[1] for c in cases]
    parsed = decode(batch([window(id=i, end=e) for i, e in cases]), Batch)
    expected = first_fault(ids, ends)
    if expected is None:
        check_batch(parsed)
    else:
        with pytest.raises(ValidationError) as caught:
            check_batch(parsed)
        assert caught.value.field == expected


def test_resolve_int_matches_resolve() -> None:
    now = 1_763_800_000.0
    record = identity.IdentityRecord("c-1", bytes(range(16)), 9, 0.0)
    resolver = identity.EidResolver()
    resolver.upsert_many([record], now)
    eid = identity.eid_at(record, now)
    assert resolver.resolve_int(int.from_bytes(eid, "big"), now) == "c-1"
    assert resolver.resolve(eid, now) == "c-1"
    later = now + 10 * 512
    assert resolver.resolve_int(int.from_bytes(eid, "big"), later) is None
    for key in (-1, 2**64 + int.from_bytes(eid, "big"), 0):
        assert resolver.resolve_int(key, now) is None
