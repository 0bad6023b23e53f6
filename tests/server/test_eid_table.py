"""The resolver's flat EID index against a dict, with keys forced into long collision chains."""

from __future__ import annotations

import random
from array import array

from store_server.identity import _EidTable


def _check(table: _EidTable, eids: array[int], model: dict[int, int]) -> None:
    assert len(table) == len(model)
    for eid, position in model.items():
        assert table.find(eid) == position
    for position in range(len(eids)):
        if eids[position] not in model:
            assert table.find(eids[position]) == -1


def test_random_inserts_and_removals_match_a_dict() -> None:
    rng = random.Random(7)
    # Few distinct low bits: every probe sequence runs through long clusters, and removals
    # must shift the rest of a cluster back (including across the end of the cell array).
    eids = array("Q", [(rng.getrandbits(56) << 8) | rng.choice((0, 1, 62, 63)) for _ in range(400)])
    assert len(set(eids)) == len(eids)
    table = _EidTable(eids)
    model: dict[int, int] = {}
    held: list[int] = []
    for step in range(4000):
        if held and (rng.random() < 0.45 or len(held) == len(eids)):
            position = held.pop(rng.randrange(len(held)))
            assert table.remove(position)
            assert not table.remove(position)
            del model[eids[position]]
        else:
            position = rng.choice([p for p in range(len(eids)) if eids[p] not in model])
            table.add(position)
            held.append(position)
            model[eids[position]] = position
        if step % 97 == 0:
            _check(table, eids, model)
    _check(table, eids, model)


def test_bulk_range_then_unknown_keys_miss() -> None:
    rng = random.Random(8)
    eids = array("Q", [rng.getrandbits(64) for _ in range(3000)])
    table = _EidTable(eids)
    table.add_range(1000, 3000)
    table.add_range(0, 1000)
    _check(table, eids, {eid: p for p, eid in enumerate(eids)})
    held = set(eids)
    for _ in range(2000):
        probe = rng.getrandbits(64)
        if probe not in held:
            assert table.find(probe) == -1
