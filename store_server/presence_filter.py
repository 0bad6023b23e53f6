"""The filter's motion step and its bookkeeping: the belief table, each box's windows (pure).

:mod:`presence` owns the beliefs and the decisions; this module holds the belief table, what
each box's windows left pending, and the motion step of a grid hidden Markov model over the
floor's cells; :mod:`presence_likelihood` weighs the readings in. Beliefs have the shape
(rows, 2 H, cells): standing facing each of the H headings, then walking in each.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from store_server.floor import Floor
from store_server.presence_grid import FloorGrid, build_grid
from store_server.presence_likelihood import pooled_weights
from store_server.presence_types import PresenceSettings

__all__ = [
    "MISS_WINDOW_S",
    "NEVER",
    "BeliefTable",
    "BoxWindows",
    "Motion",
    "count_misses",
    "motion_model",
    "pending_weights",
    "predict",
    "shared_grid",
]

# Latest time of a subject never updated.
NEVER = -math.inf
# The window length the miss evidence is stated for (the scanners' default window_s): a box
# closing shorter windows gives each empty one that share of a one-second window's misses.
MISS_WINDOW_S = 1.0
# A box whose learned window length is under this closes windows shorter than the second
# the settings were measured with: its windows are pooled between updates.
POOL_WINDOWS_UNDER_S = 0.9
# Each gap between two windows of a box moves its learned window length by this share: a box
# sends nothing when it heard nobody, so an odd long gap must not undo what many short ones say.
WINDOW_LEARN_RATE = 0.2
# Beliefs are moved this many rows at a time: 8 rows of 16 layers of 2,400 cells (1.2 MB) stay
# in cache (bench/presence: 19 ms for 100 rows and two steps, 26 ms by 2 rows, 36 ms by 32).
PREDICT_ROWS = 8
# No belief at all: a subject's cells and values before it has any.
NO_CELLS: npt.NDArray[np.int32] = np.zeros(0, dtype=np.int32)
GRID_CACHE_FLOORS = 4
"""Grids kept for reuse: a server has one floor, but restarts and tests build many engines on it
(building one costs 0.1-0.4 s of Python on a 2-core machine)."""


@dataclass(slots=True)
class BeliefTable:
    """Every subject's belief and the windows recorded since its last update (one row a
    subject slot), as the sums the Gaussian likelihood needs.

    A belief is kept only on its support (:mod:`presence_support`): the cells holding more
    than ``belief_floor`` of its largest cell, ``cells[slot]`` (sorted), and their values by
    layer, ``values[slot]`` (len(cells), 2 H): standing, then walking, by heading, in 16 bits
    a value (``presence_support.pack``).
    """

    weight: npt.NDArray[np.float64]  # (slots, B) sum of 1/variance, window by window
    weighted: npt.NDArray[np.float64]  # (slots, B) sum of reading/variance, window by window
    count: npt.NDArray[np.float64]  # (slots, B) advertisements in the pending windows
    count_rssi: npt.NDArray[np.float64]  # (slots, B) their sum of window median x count
    latest: npt.NDArray[np.float64]  # (slots, B) latest calibrated median (evidence)
    latest_t: npt.NDArray[np.float64]  # (slots, B)
    cells: list[npt.NDArray[np.int32]]  # per slot: the cells of the belief's support
    values: list[npt.NDArray[np.uint16]]  # per slot: (len(cells), 2 H), 16 bits a value
    place: npt.NDArray[np.int64]  # (slots,) where the belief peaks, as a spatial sort key
    misses: npt.NDArray[np.float64]  # (slots, B) advertisements each box missed
    adverts: npt.NDArray[np.float64]  # (slots,) count of the latest window heard, any box
    updated_t: npt.NDArray[np.float64]  # (slots,) time the belief stands for
    last_seen: npt.NDArray[np.float64]  # (slots,) latest window time, any box
    check_in_t: npt.NDArray[np.float64]  # (slots,) latest check-in
    out_since: npt.NDArray[np.float64]  # (slots,) since when the belief says "out" (NaN: not)
    pending: npt.NDArray[np.bool_]  # (slots,) windows not yet in the belief
    deep: npt.NDArray[np.bool_]  # (slots,) the latest belief is far from every door
    used: npt.NDArray[np.bool_]  # (slots,) the slot holds a subject
    free: list[int] = field(default_factory=list)

    @classmethod
    def empty(cls, slots: int, boxes: int) -> BeliefTable:
        """A table of ``slots`` free rows for ``boxes`` boxes."""
        return cls(
            weight=np.zeros((slots, boxes)),
            weighted=np.zeros((slots, boxes)),
            count=np.zeros((slots, boxes)),
            count_rssi=np.zeros((slots, boxes)),
            latest=np.zeros((slots, boxes)),
            latest_t=np.full((slots, boxes), NEVER),
            cells=[NO_CELLS] * slots,
            values=[np.zeros((0, 0), dtype=np.uint16)] * slots,
            place=np.zeros(slots, dtype=np.int64),
            misses=np.zeros((slots, boxes)),
            adverts=np.zeros(slots),
            updated_t=np.full(slots, NEVER),
            last_seen=np.full(slots, NEVER),
            check_in_t=np.full(slots, NEVER),
            out_since=np.full(slots, math.nan),
            pending=np.zeros(slots, dtype=bool),
            deep=np.zeros(slots, dtype=bool),
            used=np.zeros(slots, dtype=bool),
            free=list(range(slots - 1, -1, -1)),
        )

    @property
    def slots(self) -> int:
        return int(self.updated_t.shape[0])

    def clear_pending(self, rows: npt.NDArray[np.intp] | int) -> None:
        """Forget the windows and misses ``rows`` gathered since their last update."""
        for sums in (self.weight, self.weighted, self.count, self.count_rssi, self.misses):
            sums[rows] = 0.0
        self.pending[rows] = False

    def grown(self, more: int) -> BeliefTable:
        """This table with ``more`` free rows at the end (taken lowest first)."""
        n = self.slots
        table = BeliefTable.empty(n + more, self.count.shape[1])
        for item in dataclasses.fields(self):
            value = getattr(self, item.name)
            if isinstance(value, np.ndarray):
                getattr(table, item.name)[:n] = value
        table.cells[:n] = self.cells
        table.values[:n] = self.values
        table.free = list(range(n + more - 1, n - 1, -1)) + self.free
        return table


@functools.lru_cache(maxsize=GRID_CACHE_FLOORS)
def shared_grid(
    floor: Floor,
    cell_m: float,
    street_margin_m: float,
    phone_height_m: float,
    door_entry_weight: float,
) -> FloorGrid:
    """`build_grid`, once per floor and settings; its arrays are made read-only, since engines
    share them."""
    grid = build_grid(floor, cell_m, street_margin_m, phone_height_m, door_entry_weight)
    for item in dataclasses.fields(grid):
        value = getattr(grid, item.name)
        if isinstance(value, np.ndarray):
            value.setflags(write=False)
    return grid


def pending_weights(
    table: BeliefTable,
    rows: npt.NDArray[np.intp],
    short: npt.NDArray[np.bool_],
    settings: PresenceSettings,
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Each box's weight and weighted reading of the pending windows of ``rows``: window by
    window for boxes that close one-second windows (what the settings were measured with),
    pooled for the ``short`` ones that close shorter windows."""
    weight, weighted = table.weight[rows], table.weighted[rows]
    if not short.any():
        return weight, weighted
    pooled, pooled_weighted = pooled_weights(table.count[rows], table.count_rssi[rows], settings)
    return np.where(short, pooled, weight), np.where(short, pooled_weighted, weighted)


@dataclass(slots=True)
class BoxWindows:
    """When each box closed its latest window, and how long its windows are (the scanner's
    ``window_s``), learned from the gaps between their ends."""

    latest: npt.NDArray[np.float64]  # (B,) end of each box's latest window
    length: npt.NDArray[np.float64]  # (B,) each box's learned window length

    @classmethod
    def start(cls, boxes: int) -> BoxWindows:
        return cls(np.full(boxes, NEVER), np.full(boxes, MISS_WINDOW_S))

    @property
    def short(self) -> npt.NDArray[np.bool_]:
        """The boxes that close windows shorter than a second (pooled between updates)."""
        result: npt.NDArray[np.bool_] = self.length < POOL_WINDOWS_UNDER_S
        return result

    def closed(self, b: int, t: float) -> float:
        """Box ``b`` closed a window ending at ``t`` (later than its latest): the share of a
        one-second window's misses its empty windows carry (1 for one-second windows)."""
        gap = t - self.latest[b]
        if math.isfinite(gap):
            # A box that heard nobody sends no window: gaps of several windows say little.
            seen = min(gap, MISS_WINDOW_S)
            self.length[b] += WINDOW_LEARN_RATE * (seen - self.length[b])
        self.latest[b] = t
        window = float(self.length[b])
        return window / MISS_WINDOW_S if window < POOL_WINDOWS_UNDER_S else 1.0


def count_misses(
    table: BeliefTable, b: int, t: float, settings: PresenceSettings, share: float = 1.0
) -> None:
    """Box ``b`` closed a window ending at ``t``: each subject it did not hear in it that
    another box heard within ``miss_heard_within_s`` before gets that window's advertisements
    (its latest window's count, at most ``miss_adverts_max``) as misses from box ``b``, times
    ``share``: the box's window length against one second (a half-second window without the
    phone says half as much)."""
    others = np.delete(table.latest_t, b, axis=1)
    if others.shape[1] == 0:
        return
    heard = others.max(axis=1) >= t - settings.miss_heard_within_s
    missed = table.used & heard & (table.latest_t[:, b] < t)
    table.misses[missed, b] += share * np.minimum(table.adverts[missed], settings.miss_adverts_max)


@dataclass(frozen=True, slots=True)
class Motion:
    """The motion model's tables: per step, a walker of heading ``h`` steps to its neighbour
    that way with ``go[h]`` (speed), keeps or changes heading by ``turn`` (H, H), and people
    start (``start``, heading at random) and stop (``stop``) walking."""

    step_from: npt.NDArray[np.intp]  # (H, C) source of a step into each cell (C: none)
    step_ok: npt.NDArray[np.float32]  # (H, C) share of a step from each cell allowed
    go: npt.NDArray[np.float32]  # (H,) chance of a step per walking step
    turn: npt.NDArray[np.float32]  # (H, H) new heading (row) from old heading (column)
    start: float
    stop: float
    stand_turn: float
    go_ok: npt.NDArray[np.float32]  # (H, C) go x step_ok: the share of a walker that steps
    go_blocked: npt.NDArray[np.float32]  # (H, C) the share that walks into a wall and stops
    linger: npt.NDArray[np.float32]  # (H, 1) the share that stays in its cell, walking
    flat_from: npt.NDArray[np.intp]  # (H x C,) step_from into a flat (H x (C + 1)) block
    step_to: npt.NDArray[np.intp]  # (C + 1, H) the cell a step from each cell reaches (C: none)


def motion_model(grid: FloorGrid, settings: PresenceSettings) -> Motion:
    """The motion tables of ``grid`` under ``settings``."""
    headings = grid.step_from.shape[0]
    length = np.array([grid.cell_m * (math.sqrt(2.0) if h % 2 else 1.0) for h in range(headings)])
    go = np.minimum(1.0, settings.walking_speed_mps * settings.step_s / length)
    turn = np.full((headings, headings), settings.sharp_turn_p / headings)
    for h in range(headings):
        turn[h, h] += 1.0 - settings.turn_p - settings.sharp_turn_p
        turn[(h + 1) % headings, h] += settings.turn_p / 2.0
        turn[(h - 1) % headings, h] += settings.turn_p / 2.0
    size = grid.size
    step_to = np.full((size + 1, headings), size, dtype=np.intp)
    for h in range(headings):
        sources = grid.step_from[h]
        ok = sources < size
        step_to[sources[ok], h] = np.flatnonzero(ok)
    return Motion(
        step_from=grid.step_from,
        step_ok=grid.step_ok,
        go=go.astype(np.float32),
        turn=turn.astype(np.float32),
        start=settings.start_walking_p,
        stop=settings.stop_walking_p,
        stand_turn=settings.standing_turn_p,
        go_ok=(go[:, None] * grid.step_ok).astype(np.float32),
        go_blocked=(go[:, None] * (1.0 - grid.step_ok)).astype(np.float32),
        linger=(1.0 - go)[:, None].astype(np.float32),
        flat_from=(np.arange(headings)[:, None] * (size + 1) + grid.step_from).ravel(),
        step_to=step_to,
    )


def predict(belief: npt.NDArray[np.float32], steps: int, motion: Motion) -> None:
    """Move ``belief`` (rows, 2 H, C: standing facing each of the H headings, then walking in
    each) on by ``steps`` steps, in place. A walker steps on in its heading (or lingers, at
    ``go``); a step into a wall or a shelf stops it there, facing it; walkers turn; people
    start walking (any heading) and stop (facing where they went); standing people turn.

    Rows are moved ``PREDICT_ROWS`` at a time, so that the arrays of one block stay in cache.
    """
    rows, layers, size = belief.shape
    h = layers // 2
    keep = 1.0 - motion.stop
    turn = (keep * motion.turn).astype(np.float32)
    stay = (1.0 - motion.start) * (1.0 - motion.stand_turn)
    face = (1.0 - motion.start) * motion.stand_turn / h
    for r0 in range(0, rows, PREDICT_ROWS):
        part = belief[r0 : r0 + PREDICT_ROWS]
        n = part.shape[0]
        padded = np.zeros((n, h * (size + 1)), dtype=np.float32)
        steppers = padded.reshape(n, h, size + 1)[:, :, :size]
        for _ in range(steps):
            standing = part[:, :h]
            walking = part[:, h:]
            np.multiply(walking, motion.go_ok, out=steppers)
            moved = np.take(padded, motion.flat_from, axis=1).reshape(n, h, size)
            moved += walking * motion.linger
            turned = np.matmul(turn, moved)
            still = standing.sum(axis=1)
            standing *= stay
            standing += walking * motion.go_blocked
            standing += turned * (motion.stop / keep)
            standing += (still * face)[:, None, :]
            walking[:] = turned
            walking += (still * (motion.start / h))[:, None, :]
