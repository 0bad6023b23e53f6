"""Beliefs kept on their support (store_server/presence_support.py): the mass is kept, the
motion on a block's cells is the motion on the whole floor, and an engine that drops the cells
under ``belief_floor`` decides as one that keeps every cell."""

from __future__ import annotations

import numpy as np

from store_server.presence import PresenceEngine, PresenceSettings
from store_server.presence_filter import motion_model, predict
from store_server.presence_grid import HEADINGS
from store_server.presence_support import (
    block_of,
    pack,
    place_keys,
    restrict_motion,
    store_rows,
    support,
    unpack,
)
from tests.server.presence_helpers import channel, drive, line, load

DEMO = load()
CORNER = load("store-corner.toml")
LAYERS = 2 * len(HEADINGS)
# In at the door, across the shop, out again.
VISIT = line(
    [(0.0, 6.0, -2.5), (2.5, 6.0, 0.0), (8.0, 2.0, 4.0), (14.0, 6.0, 0.5), (17.0, 6.0, -2.5)]
)


def _cell(engine: PresenceEngine, x: float, y: float) -> int:
    grid = engine.grid
    return int(np.argmin((grid.x - x) ** 2 + (grid.y - y) ** 2))


def test_support_reaches_every_cell_a_walker_can_and_no_other() -> None:
    engine = PresenceEngine(CORNER)
    motion = motion_model(engine.grid, engine.settings)
    start = _cell(engine, 3.25, 4.25)
    belief = np.zeros((1, LAYERS, engine.grid.size), dtype=np.float32)
    belief[0, len(HEADINGS) :, start] = 1.0 / len(HEADINGS)  # walking, any heading
    predict(belief, 3, motion)
    reached = np.flatnonzero(belief[0].sum(axis=0) > 0.0)
    cells = support([np.array([start], dtype=np.int32)], 3, motion)
    assert set(reached) <= set(cells)
    # Three steps of at most one cell (diagonals included): a 7 x 7 square at most.
    assert cells.size <= 49
    assert set(support([np.array([start], dtype=np.int32)], 0, motion)) == {start}


def test_the_motion_on_a_block_of_cells_is_the_motion_on_the_floor() -> None:
    engine = PresenceEngine(CORNER)
    motion = motion_model(engine.grid, engine.settings)
    rng = np.random.default_rng(3)
    # Two people near the repairs wall and its opening, any mix of standing and walking.
    starts = [_cell(engine, 0.75, 7.25), _cell(engine, 4.25, 7.75)]
    dense = np.zeros((2, LAYERS, engine.grid.size), dtype=np.float32)
    for row, cell in enumerate(starts):
        # As stored: 16 bits a value.
        dense[row, :, cell] = unpack(pack(rng.dirichlet(np.ones(LAYERS)).astype(np.float32)))
    cells = [np.array([c], dtype=np.int32) for c in starts]
    values = [pack(dense[row, :, [c]]) for row, c in enumerate(starts)]
    union = support(cells, 4, motion)
    block = block_of(cells, values, union, LAYERS)
    predict(block, 4, restrict_motion(motion, union))
    predict(dense, 4, motion)
    np.testing.assert_allclose(block, dense[:, :, union], atol=1e-7)
    outside = np.setdiff1d(np.arange(engine.grid.size), union)
    assert float(dense[:, :, outside].sum()) == 0.0


def test_stored_rows_keep_the_mass_and_only_cells_over_the_floor() -> None:
    union = np.array([3, 5, 8, 9], dtype=np.intp)
    block = np.zeros((2, LAYERS, 4), dtype=np.float32)
    block[0, 0] = [0.5, 0.3, 1e-9, 0.2 - 1e-9]
    block[0, 1] = [0.0, 1e-30, 0.0, 0.0]  # far under a half float's range: kept all the same
    block[1, LAYERS - 1] = [0.0, 1.0, 0.0, 0.0]
    where = block.sum(axis=1)
    cells, values = store_rows(block, where, union, 1e-6)
    assert [list(c) for c in cells] == [[3, 5, 9], [5]]
    assert values[0].shape == (3, LAYERS)
    assert values[0].dtype == np.uint16  # half the memory of single floats
    for row in values:
        assert abs(float(unpack(row).sum()) - 1.0) < 4e-3
    # Each value within bfloat16's rounding (8 significant bits).
    expected = block[0][:, [0, 1, 3]].T
    np.testing.assert_allclose(unpack(values[0]), expected / expected.sum(), rtol=4e-3)
    assert float(unpack(values[0])[1, 1]) > 0.0
    # The same rows, back in a block over other cells.
    again = block_of(cells, values, np.array([1, 3, 5, 9], dtype=np.intp), LAYERS)
    assert again.dtype == np.float32
    assert abs(float(again[0, 0, 1]) - 0.5) < 2e-3
    assert again[1, LAYERS - 1, 2] == 1.0


def test_pack_rounds_to_the_nearest_and_keeps_every_exponent() -> None:
    values = np.array([0.0, 1.0, 1e-30, 1e-6, 0.3, 1.0 + 2.0**-9, 1.0 + 2.0**-8], np.float32)
    back = unpack(pack(values))
    np.testing.assert_allclose(back, values, rtol=2.0**-8)
    assert back[0] == 0.0
    assert back[1] == 1.0
    assert back[-2] == 1.0  # a quarter of the spacing (2**-7 at 1): down
    assert back[-1] == 1.0 + 2.0**-7  # halfway: up


def test_places_close_on_the_floor_sort_close() -> None:
    engine = PresenceEngine(DEMO)
    keys = place_keys(engine.grid)
    assert keys.size == engine.grid.size + 1
    assert keys[-1] > keys[:-1].max()  # "nowhere yet" sorts last
    near = abs(keys[_cell(engine, 3.25, 3.25)] - keys[_cell(engine, 3.75, 3.25)])
    far = abs(keys[_cell(engine, 3.25, 3.25)] - keys[_cell(engine, 9.25, 5.25)])
    assert near < far


def test_dropping_the_cells_under_the_floor_changes_no_decision() -> None:
    for floor in (DEMO, CORNER):
        sparse = PresenceEngine(floor)
        dense = PresenceEngine(floor, PresenceSettings(belief_floor=0.0))
        rng_a, rng_b = np.random.default_rng(5), np.random.default_rng(5)
        ch = channel(floor)
        a = drive(sparse, ch, VISIT, 40.0, rng=rng_a, sigma=2.5)
        b = drive(dense, ch, VISIT, 40.0, rng=rng_b, sigma=2.5)
        assert [(e.kind, e.zone, e.t) for e in a] == [(e.kind, e.zone, e.t) for e in b]
        assert any(e.kind == "arrived" for e in a)


def test_a_settled_belief_holds_few_cells() -> None:
    engine = PresenceEngine(DEMO)
    drive(engine, channel(DEMO), line([(0.0, 3.0, 3.0), (30.0, 3.0, 3.0)]), 20.0)
    state = engine._subjects["a"]
    kept = engine._table.values[state.slot]
    assert kept.shape[0] < engine.grid.size // 3
    belief = engine.belief("a")
    assert belief is not None
    assert abs(float(belief.sum()) - 1.0) < 1e-5


def test_rows_are_added_a_block_at_a_time_and_reused() -> None:
    engine = PresenceEngine(DEMO)
    for i in range(70):
        engine.check_in(f"p{i}", 1.0, "machines")
    assert engine._table.slots == 128  # two blocks of 64, not a doubling past the need
    for i in range(70):
        engine.forget(f"p{i}")
    for i in range(128):
        engine.check_in(f"q{i}", 2.0)
    assert engine._table.slots == 128
