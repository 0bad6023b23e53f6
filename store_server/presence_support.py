"""Beliefs kept on their support: only the cells that hold some of a belief are stored and moved.

A subject's belief is nearly always concentrated: with a box or more hearing it, all but a few
dozen to a few hundred of the floor's cells hold less than a millionth of its largest cell
(bench/presence: 19-33 cells of 2,372 with 20 boxes; the demo floor with 4 boxes: 65 of 600 at
the median, 221 at the 90th percentile). Each update therefore works on a block of rows over the
union of their supports, widened by the cells a walker can reach in the steps to come, and
stores back each row's cells above ``belief_floor`` of its largest (the rest, at most
``belief_floor`` x the cells of the block, is dropped and the row normalised again) in 16 bits
a value (:func:`pack`; the arithmetic is in single floats). The motion
tables and the box model are cut down to the block's cells, so the filter's arithmetic
(:mod:`presence_filter`) runs unchanged on fewer columns. Pure numpy, no I/O.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from store_server.presence_filter import PREDICT_ROWS, BeliefTable, Motion, predict
from store_server.presence_grid import FloorGrid
from store_server.presence_likelihood import BoxModel

__all__ = [
    "Weigh",
    "block_of",
    "pack",
    "place_keys",
    "restrict",
    "restrict_motion",
    "store_rows",
    "support",
    "unpack",
    "update_rows",
]

# Subjects updated together, over the union of their beliefs' cells: neighbours on the floor
# share most cells, so the block costs little more than one (bench/presence, 1,000 phones:
# 11.7 % of a core by 8, 10.0 % by 16, 9.4 % by 32). A block never holds more than PREDICT_ROWS
# beliefs on every cell (new phones): 1.2 MB on a 2,400-cell floor.
UPDATE_ROWS = 32

# Rounds a single float to its upper 16 bits (bfloat16: 8 significant bits, the same range).
ROUND_HALF = np.uint32(0x8000)
HALF_BITS = np.uint32(16)


def pack(values: npt.NDArray[np.float32]) -> npt.NDArray[np.uint16]:
    """Non-negative single floats as bfloat16 bits (the upper half, rounded: 8 significant
    bits, relative error at most 0.4 %, every exponent kept): half the memory of single floats,
    and two integer operations each way where numpy's half floats take 5-60 ns a value."""
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32)
    packed: npt.NDArray[np.uint16] = ((bits + ROUND_HALF) >> HALF_BITS).astype(np.uint16)
    return packed


def unpack(packed: npt.NDArray[np.uint16]) -> npt.NDArray[np.float32]:
    """What :func:`pack` stored, as single floats."""
    values: npt.NDArray[np.float32] = (packed.astype(np.uint32) << HALF_BITS).view(np.float32)
    return values


Weigh = Callable[[npt.NDArray[np.float32], npt.NDArray[np.intp], BoxModel], npt.NDArray[np.float32]]
"""Weighs the pending windows of the table rows given into a block of beliefs (rows, 2 H, C')
with the box model cut to its C' cells, normalises it in place, returns the belief per cell."""


def update_rows(
    table: BeliefTable,
    slots: npt.NDArray[np.intp],
    steps: npt.NDArray[np.intp],
    motion: Motion,
    model: BoxModel,
    weigh: Weigh,
    floor: float,
    places: npt.NDArray[np.int64],
    sums: npt.NDArray[np.float32],
) -> npt.NDArray[np.float32]:
    """Move the beliefs of ``slots`` on by their ``steps``, weigh their windows in (``weigh``),
    store each back on its support (over ``floor`` of its largest cell) with its place key,
    and return each updated belief's products with the columns of ``sums`` (C, K), then its
    walking share (rows, K + 1)."""
    size = motion.step_to.shape[0] - 1
    headings = int(motion.go.shape[0])
    out = np.empty((slots.size, sums.shape[1] + 1), dtype=np.float32)
    r0 = 0
    while r0 < slots.size:
        block = slice(r0, r0 + UPDATE_ROWS)
        cells = [table.cells[r] for r in slots[block]]
        union = support(cells, int(steps[block].max()), motion)
        if len(cells) * union.size > PREDICT_ROWS * size:
            # Spread beliefs (new phones): no larger a block than PREDICT_ROWS dense rows.
            block = slice(r0, r0 + PREDICT_ROWS)
            cells = cells[:PREDICT_ROWS]
            union = support(cells, int(steps[block].max()), motion)
        r0 = block.stop
        rows = slots[block]
        belief = block_of(cells, [table.values[r] for r in rows], union, 2 * headings)
        if union.size < size:
            part_motion = restrict_motion(motion, union)
            part_model = restrict(model, union, size, headings)
        else:
            part_motion, part_model = motion, model
        for count in np.unique(steps[block]):
            if count > 0:
                chosen = steps[block] == count
                part = belief[chosen]
                predict(part, int(count), part_motion)
                belief[chosen] = part
        where = weigh(belief, rows, part_model)
        kept_cells, kept_values = store_rows(belief, where, union, floor)
        for r, row_cells, row_values in zip(rows, kept_cells, kept_values, strict=True):
            table.cells[r], table.values[r] = row_cells, row_values
        table.place[rows] = places[union[np.argmax(where, axis=1)]]
        out[block, :-1] = where @ sums[union]
        out[block, -1] = belief[:, headings:].sum(axis=(1, 2))
    return out


def place_keys(grid: FloorGrid) -> npt.NDArray[np.int64]:
    """A key per cell (and one more, last, for "nowhere yet") that sorts cells close on the floor
    close together (Morton order of the cell's column and row): subjects updated together in
    that order share most of their cells."""
    i = np.round((grid.x - grid.x.min()) / grid.cell_m).astype(np.int64)
    j = np.round((grid.y - grid.y.min()) / grid.cell_m).astype(np.int64)
    key = np.zeros(grid.size, dtype=np.int64)
    for bit in range(16):
        key |= ((i >> bit) & 1) << (2 * bit)
        key |= ((j >> bit) & 1) << (2 * bit + 1)
    return np.append(key, np.int64(1) << 40)


def support(cells: list[npt.NDArray[np.int32]], steps: int, motion: Motion) -> npt.NDArray[np.intp]:
    """The sorted cells of the rows' supports together, and every cell a walker reaches from
    them in ``steps`` steps (the only cells the motion step can put belief in)."""
    size = motion.step_to.shape[0] - 1
    mark = np.zeros(size + 1, dtype=bool)
    for row in cells:
        mark[row] = True
    reached = np.flatnonzero(mark[:size])
    for _ in range(steps):
        mark[motion.step_to[reached]] = True
        mark[size] = False
        reached = np.flatnonzero(mark[:size])
    return reached


def block_of(
    cells: list[npt.NDArray[np.int32]],
    values: list[npt.NDArray[np.uint16]],
    union: npt.NDArray[np.intp],
    layers: int,
) -> npt.NDArray[np.float32]:
    """The rows' beliefs (``values`` as :func:`pack` stores them) as a dense block (rows,
    layers, len(union)) over ``union``."""
    block = np.zeros((len(cells), layers, union.size), dtype=np.float32)
    counts = [row.size for row in cells]
    if sum(counts):
        where = np.searchsorted(union, np.concatenate(cells))
        rows = np.repeat(np.arange(len(cells)), counts)
        block[rows, :, where] = unpack(np.concatenate(values))
    return block


def store_rows(
    block: npt.NDArray[np.float32],
    where: npt.NDArray[np.float32],
    union: npt.NDArray[np.intp],
    floor: float,
) -> tuple[list[npt.NDArray[np.int32]], list[npt.NDArray[np.uint16]]]:
    """Each row's support in ``block`` (its cells of ``union`` holding more than ``floor`` of its
    largest in ``where``, the belief per cell) and its values there, normalised again and
    packed (:func:`pack`)."""
    keep = where > floor * where.max(axis=1, keepdims=True)
    rows, columns = np.nonzero(keep)
    kept = block[rows, :, columns]  # (pairs, layers)
    total = np.bincount(rows, weights=kept.sum(axis=1), minlength=block.shape[0])
    kept /= np.maximum(total, np.finfo(np.float32).tiny)[rows, None].astype(np.float32)
    bounds = np.cumsum(np.bincount(rows, minlength=block.shape[0]))[:-1]
    cells = union[columns].astype(np.int32)
    return (
        [part.copy() for part in np.split(cells, bounds)],
        [part.copy() for part in np.split(pack(kept), bounds)],
    )


def restrict_motion(motion: Motion, union: npt.NDArray[np.intp]) -> Motion:
    """``motion`` on the cells ``union`` only (a step from a cell outside it carries nothing)."""
    size = motion.step_to.shape[0] - 1
    local = np.full(size + 1, union.size, dtype=np.intp)
    local[union] = np.arange(union.size)
    step_from = local[motion.step_from[:, union]]
    headings = step_from.shape[0]
    step_to = local[motion.step_to[np.append(union, size)]]
    return dataclasses.replace(
        motion,
        step_from=step_from,
        step_ok=motion.step_ok[:, union],
        go_ok=motion.go_ok[:, union],
        go_blocked=motion.go_blocked[:, union],
        flat_from=(np.arange(headings)[:, None] * (union.size + 1) + step_from).ravel(),
        step_to=step_to,
    )


def restrict(model: BoxModel, union: npt.NDArray[np.intp], size: int, headings: int) -> BoxModel:
    """A copy of ``model`` whose arrays over the ``size`` cells (last axis of
    ``size``, or ``headings`` x ``size`` by heading) hold only the columns ``union``."""
    changes = {}
    for item in dataclasses.fields(model):
        value = getattr(model, item.name)
        if not isinstance(value, np.ndarray) or value.ndim == 0:
            continue
        last = value.shape[-1]
        if last == size:
            changes[item.name] = value[..., union]
        elif last == headings * size:
            by_heading = value.reshape(*value.shape[:-1], headings, size)[..., union]
            changes[item.name] = by_heading.reshape(*value.shape[:-1], headings * union.size)
    return dataclasses.replace(model, **changes)
