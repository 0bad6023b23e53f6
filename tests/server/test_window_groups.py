"""StoreServices._window_groups against a plain reference: the fresh resolved windows of a
batch grouped by time, each subject's first window of a time, subjects in slot order (both
the one-time path, the usual batch, and the general one)."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from store_server.identity import EidResolver, IdentityRecord
from store_server.ingest import WindowColumns
from store_server.services.scanners import STALE_WINDOW_S, ScannerGateway

NOW = 1_763_800_000.0
SUBJECTS = 6


@dataclass
class _Holder:
    resolver: EidResolver


RESOLVER = EidResolver()
RESOLVER.upsert_many(
    [IdentityRecord(f"c-{i}", os.urandom(16), 9, 0.0) for i in range(SUBJECTS)], NOW
)
SLOTS = [RESOLVER.slot_of(f"c-{i}") for i in range(SUBJECTS)]

ages = st.sampled_from([0.5, 1.5, STALE_WINDOW_S, STALE_WINDOW_S + 0.5, 100.0])
windows = st.lists(
    st.tuples(st.sampled_from([-1, *range(SUBJECTS)]), ages), min_size=1, max_size=30
)


def reference(
    times: list[float], slots: list[int], medians: list[float], counts: list[int]
) -> list[tuple[float, list[str], list[float], list[int]]]:
    by_time: dict[float, dict[int, int]] = {}
    for row, (t, slot) in enumerate(zip(times, slots, strict=True)):
        if slot >= 0 and NOW - t <= STALE_WINDOW_S:
            by_time.setdefault(t, {}).setdefault(slot, row)  # the first window kept
    return [
        (
            t,
            RESOLVER.subjects_of(sorted(firsts)),
            [medians[firsts[s]] for s in sorted(firsts)],
            [counts[firsts[s]] for s in sorted(firsts)],
        )
        for t, firsts in sorted(by_time.items())
    ]


@settings(max_examples=300, deadline=None)
@given(rows=windows, one_time=st.booleans())
def test_groups_match_the_reference(rows: list[tuple[int, float]], one_time: bool) -> None:
    n = len(rows)
    slots = [SLOTS[i] if i >= 0 else -1 for i, _ in rows]
    ends = [NOW - (rows[0][1] if one_time else age) for _, age in rows]
    medians = [-50.0 - row for row in range(n)]
    counts = [row + 1 for row in range(n)]
    columns = WindowColumns(
        eid_rows=np.arange(n),
        eids=np.zeros(n, dtype=np.uint64),
        other=[],
        end=np.array(ends),
        rssi_median=np.array(medians),
        rssi_max=np.zeros(n),
        count=np.array(counts, dtype=np.int64),
    )
    found = np.array(slots) >= 0
    expected = reference(ends, slots, medians, counts)
    if not found.any():
        assert expected == []
        return
    got = ScannerGateway._window_groups(
        _Holder(RESOLVER),  # type: ignore[arg-type]
        columns,
        columns.end,
        np.array(slots, dtype=np.int64),
        found,
        NOW,
    )
    assert got == expected
