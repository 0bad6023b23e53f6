"""The filter's two steps on a block of beliefs: move them on, weigh readings in (pure, numpy).

:mod:`presence` owns the beliefs and the decisions; this module holds only the arithmetic of a
grid hidden Markov model over the floor's cells, so that each step can be read (and checked) on
its own. Beliefs have the shape (rows, 1 + H, cells): standing, then walking in each of the H
headings.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from store_server.floor import Floor
from store_server.presence_grid import HEADINGS, MOVES, FloorGrid, build_grid
from store_server.presence_types import PresenceSettings

__all__ = [
    "MEDIAN_VARIANCE_FACTOR",
    "MISS_WINDOW_S",
    "NEVER",
    "BeliefTable",
    "BoxModel",
    "BoxWindows",
    "Motion",
    "body_share",
    "box_log_likelihood",
    "box_model",
    "count_misses",
    "miss_log_likelihood",
    "mixture_log_l",
    "motion_model",
    "pending_weights",
    "pooled_weights",
    "predict",
    "shared_grid",
    "weigh_in",
    "window_weight",
]

# Latest time of a subject never updated.
NEVER = -math.inf
# Median of k readings: its variance is pi/2 times that of one reading over k.
MEDIAN_VARIANCE_FACTOR = math.pi / 2.0
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


@dataclass(frozen=True, slots=True)
class BoxModel:
    """What each box is expected to read in each cell: (boxes, cells) means and squares, and
    (boxes, H x cells) for a person facing each heading (boxes behind the body read less)."""

    mean: npt.NDArray[np.float64]
    mean_sq: npt.NDArray[np.float64]
    mean32: npt.NDArray[np.float32]
    mean_sq32: npt.NDArray[np.float32]
    facing: npt.NDArray[np.float32]
    facing_sq: npt.NDArray[np.float32]
    miss: npt.NDArray[np.float64]  # (B, C) log-chance that a box misses a window, per cell
    miss_facing: npt.NDArray[np.float32]  # (B, H x C) the same for a person facing each way
    # With ``body_shadow_sd_db`` (else (B, 0)): the body's share between each cell (by heading)
    # and each box, and that share times ``facing`` and ``facing_sq``.
    behind: npt.NDArray[np.float32]
    behind_facing: npt.NDArray[np.float32]
    behind_facing_sq: npt.NDArray[np.float32]


def box_model(
    mean: npt.NDArray[np.float64], behind: npt.NDArray[np.float64], settings: PresenceSettings
) -> BoxModel:
    """The model of boxes expecting ``mean`` (B, C) from each cell, ``body_shadow_db`` less
    where the body stands between (``behind``, (B, H, C))."""
    facing = (mean[:, None, :] - settings.body_shadow_db * behind).reshape(mean.shape[0], -1)
    facing32 = facing.astype(np.float32)
    mean_sq = mean * mean
    if settings.body_shadow_sd_db > 0.0:
        share = behind.reshape(mean.shape[0], -1).astype(np.float32)
    else:
        share = np.zeros((mean.shape[0], 0), dtype=np.float32)
    return BoxModel(
        mean=mean.copy(),
        mean_sq=mean_sq,
        mean32=mean.astype(np.float32),
        mean_sq32=mean_sq.astype(np.float32),
        facing=facing32,
        facing_sq=facing32 * facing32,
        miss=miss_log_likelihood(mean, settings),
        miss_facing=miss_log_likelihood(facing, settings).astype(np.float32),
        behind=share,
        behind_facing=share * facing32 if share.size else share,
        behind_facing_sq=share * facing32 * facing32 if share.size else share,
    )


def body_share(floor: Floor, grid: FloorGrid, fade_deg: float) -> npt.NDArray[np.float64]:
    """(B, H, C): how much of the body stands between each cell and each box, for a person
    facing each heading: 0 in front, 1 straight behind, fading over ``fade_deg`` around the
    side (a heading stands for its 45-degree sector, and the side of a body shades less)."""
    if fade_deg <= 0.0:
        return grid.behind.astype(np.float64)
    headings = len(HEADINGS)
    result = np.zeros((len(floor.scanners), headings, grid.size))
    for b, spec in enumerate(floor.scanners):
        to_box = np.arctan2(spec.position[1] - grid.y, spec.position[0] - grid.x)
        for h, k in enumerate(HEADINGS):
            dx, dy = MOVES[k]
            off = np.abs(np.angle(np.exp(1j * (to_box - math.atan2(dy, dx)))))
            result[b, h] = np.clip((np.degrees(off) - 90.0 + fade_deg / 2.0) / fade_deg, 0.0, 1.0)
    return result


def window_weight(
    count: npt.NDArray[np.float64], settings: PresenceSettings
) -> npt.NDArray[np.float64]:
    """1/variance of a window median of ``count`` (>= 1) advertisements: the model's own
    error (``model_sigma_db``) plus the median's reading noise."""
    read_var = settings.reading_sigma_db**2 * MEDIAN_VARIANCE_FACTOR
    weight: npt.NDArray[np.float64] = 1.0 / (settings.model_sigma_db**2 + read_var / count)
    return weight


def pooled_weights(
    count: npt.NDArray[np.float64],
    count_rssi: npt.NDArray[np.float64],
    settings: PresenceSettings,
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Each box's weight (1/variance) and weighted reading (reading/variance) of the pending
    windows, pooled: their advertisements averaged as one window of them all, so the model's
    own error (``model_sigma_db``) counts once per box and update, however many windows the
    box closed in between (half-second windows are not twice the evidence of one-second
    ones)."""
    heard = count > 0.0
    safe = np.where(heard, count, 1.0)
    weight = np.where(heard, window_weight(safe, settings), 0.0)
    return weight, weight * (count_rssi / safe)


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


def miss_log_likelihood(
    mean: npt.NDArray[np.float64], settings: PresenceSettings
) -> npt.NDArray[np.float64]:
    """Log-chance, for each expected RSSI in ``mean``, that a box misses one advertisement of
    the phone: lost (``advert_miss_p``), or too weak to decode (under ``box_sensitivity_dbm``,
    a reading spreading as ``reading_sigma_db`` and ``model_sigma_db`` together)."""
    spread = math.hypot(settings.reading_sigma_db, settings.model_sigma_db)
    z = (mean - settings.box_sensitivity_dbm) / (spread * math.sqrt(2.0))
    decoded = 0.5 * (1.0 + _erf(z))
    heard = (1.0 - settings.advert_miss_p) * decoded
    result: npt.NDArray[np.float64] = np.log(np.maximum(1.0 - heard, 1e-12))
    return result


def _erf(z: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """The error function (Abramowitz and Stegun 7.1.26, within 1.5e-7), elementwise."""
    sign = np.sign(z)
    a = np.abs(z)
    t = 1.0 / (1.0 + 0.3275911 * a)
    poly = t * (
        0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429)))
    )
    result: npt.NDArray[np.float64] = sign * (1.0 - poly * np.exp(-a * a))
    return result


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


def box_log_likelihood(
    belief: npt.NDArray[np.float32],
    weight: npt.NDArray[np.float64],
    weighted: npt.NDArray[np.float64],
    settings: PresenceSettings,
    model: BoxModel,
    misses: npt.NDArray[np.float64] | None = None,
) -> npt.NDArray[np.float64]:
    """Log-likelihood (rows, C), or (rows, H, C) by heading with ``body_shadow_db``, of the
    pending readings in each cell, up to a constant per row.

    ``weight`` and ``weighted`` (rows, B) are each box's sum of 1/variance and of
    reading/variance since the last update; ``misses`` (rows, B) the windows each box closed
    without the phone while other boxes heard it (each weighs ``model.miss``).
    """
    missed = misses is not None and bool(misses.any())
    exact = settings.shadow_p > 0.0 and settings.shadow_support > 0.0
    if exact:
        log_l = mixture_log_l(belief, weight, weighted, settings, model.mean)
    elif settings.shadow_p > 0.0:
        # A body or a pocket between the phone and a box costs it shadow_mean_db: each
        # box's reading is a mixture of "clear" and "shadowed". Against what the moved
        # belief expects of that box (its mean and spread over the cells), the chance that
        # the reading is shadowed is weighed, and the reading is corrected by that share of
        # the loss, its variance widened by what the correction leaves unsure (moment
        # matching: the likelihood stays one Gaussian per box, two matrix products).
        heard = weight > 0.0
        where = belief.sum(axis=1)
        expected = (where @ model.mean32.T).astype(np.float64)
        spread = np.maximum(
            (where @ model.mean_sq32.T).astype(np.float64) - expected * expected, 0.0
        )
        safe_w = np.where(heard, weight, 1.0)
        mean_r = np.where(heard, weighted / safe_w, expected)
        base = 1.0 / safe_w + spread
        loss, loss_var = settings.shadow_mean_db, settings.shadow_sd_db**2
        clear = -0.5 * (mean_r - expected) ** 2 / base - 0.5 * np.log(base)
        shaded_var = base + loss_var
        shaded = -0.5 * (mean_r - expected + loss) ** 2 / shaded_var - 0.5 * np.log(shaded_var)
        odds = np.log(settings.shadow_p / (1.0 - settings.shadow_p)) + shaded - clear
        share = 1.0 / (1.0 + np.exp(-np.clip(odds, -50.0, 50.0)))
        corrected = mean_r + share * loss
        unsure = share * (1.0 - share) * loss * loss + share * loss_var
        weight = np.where(heard, 1.0 / (1.0 / safe_w + unsure), 0.0)
        weighted = weight * corrected
    if not exact:
        if settings.body_shadow_db > 0.0:
            w32, wd32 = weight.astype(np.float32), weighted.astype(np.float32)
            log_l32 = wd32 @ model.facing - 0.5 * (w32 @ model.facing_sq)
            if model.behind.size:
                log_l32 += _uncertain_body(weight, weighted, settings, model)
            elif settings.common_offset_sigma_db > 0.0:
                spread32 = 1.0 / settings.common_offset_sigma_db**2 + w32.sum(axis=1)
                residual32 = wd32.sum(axis=1)[:, None] - w32 @ model.facing
                log_l32 += 0.5 * residual32 * residual32 / spread32[:, None]
            if missed and misses is not None:
                log_l32 += misses.astype(np.float32) @ model.miss_facing
            return log_l32.astype(np.float64).reshape(weight.shape[0], -1, belief.shape[2])
        log_l = weighted @ model.mean - 0.5 * (weight @ model.mean_sq)
    if settings.common_offset_sigma_db > 0.0 and not exact:
        # The same unknown offset on every box of one update (the phone's model, a pocket,
        # the body when every box is behind), integrated out: with reading weights w_b,
        # residuals e_b and offset variance t2, the log-likelihood gains
        # (sum w_b e_b)^2 / 2 (1/t2 + sum w_b) (Sherman-Morrison on the covariance).
        spread = 1.0 / settings.common_offset_sigma_db**2 + weight.sum(axis=1, keepdims=True)
        residual = weighted.sum(axis=1, keepdims=True) - weight @ model.mean
        log_l += 0.5 * residual * residual / spread
    if missed and misses is not None:
        log_l += misses @ model.miss
    return log_l


def _uncertain_body(
    weight: npt.NDArray[np.float64],
    weighted: npt.NDArray[np.float64],
    settings: PresenceSettings,
    model: BoxModel,
) -> npt.NDArray[np.float32]:
    """What ``body_shadow_sd_db`` adds to the log-likelihood (rows, H x C) of the readings with
    a body of known depth: a box's reading r of weight w = 1/v is judged with weight
    w' = 1/(v + sd^2) where the body stands between (share s of the body, by heading and cell),
    each box's term mixed as (1 - s) x front + s x behind. With ``common_offset_sigma_db``, the
    shared offset is integrated out against those weights."""
    heard = weight > 0.0
    safe = np.where(heard, weight, 1.0)
    mean_r = np.where(heard, weighted / safe, 0.0)
    behind_w = np.where(heard, 1.0 / (1.0 / safe + settings.body_shadow_sd_db**2), 0.0)
    less = behind_w - weight  # <= 0: what a box behind the body loses of its weight
    # Per box: s x [(w' - w) r mu - (w' - w) mu^2 / 2 - (w' - w) r^2 / 2 + log(w' / w) / 2].
    kept = np.where(heard, behind_w / safe, 1.0)
    level = np.where(heard, -0.5 * less * mean_r * mean_r + 0.5 * np.log(kept), 0.0)
    less32, less_r32 = less.astype(np.float32), (less * mean_r).astype(np.float32)
    added: npt.NDArray[np.float32] = (
        less_r32 @ model.behind_facing
        - 0.5 * (less32 @ model.behind_facing_sq)
        + level.astype(np.float32) @ model.behind
    )
    if settings.common_offset_sigma_db > 0.0:
        w32, wd32 = weight.astype(np.float32), weighted.astype(np.float32)
        spread = (
            np.float32(1.0 / settings.common_offset_sigma_db**2)
            + w32.sum(axis=1)[:, None]
            + less32 @ model.behind
        )
        residual = (
            wd32.sum(axis=1)[:, None]
            - w32 @ model.facing
            + less_r32 @ model.behind
            - less32 @ model.behind_facing
        )
        added += 0.5 * residual * residual / spread - 0.5 * np.log(spread)
    return added


def mixture_log_l(
    belief: npt.NDArray[np.float32],
    weight: npt.NDArray[np.float64],
    weighted: npt.NDArray[np.float64],
    settings: PresenceSettings,
    mean: npt.NDArray[np.float64],
) -> npt.NDArray[np.float64]:
    """Log-likelihood of each cell, each box's reading clear or shadowed, cell by cell.

    Only cells holding belief (over ``shadow_support`` of the row's largest) are weighed:
    the others get nothing, as if the belief had not reached them (it can only spread there
    by moving, step by step). The cost is proportional to the cells holding belief.
    """
    where = belief.sum(axis=1)
    support = where > settings.shadow_support * where.max(axis=1, keepdims=True)
    rows, cells = np.nonzero(support)
    heard = weight > 0.0
    safe_w = np.where(heard, weight, 1.0)
    mean_r = np.where(heard, weighted / safe_w, 0.0)
    residual = mean_r[rows] - mean.T[cells]  # (pairs, boxes)
    variance = 1.0 / safe_w[rows]
    loss, loss_var = settings.shadow_mean_db, settings.shadow_sd_db**2
    clear = (
        math.log(1.0 - settings.shadow_p)
        - 0.5 * residual * residual / variance
        - 0.5 * np.log(variance)
    )
    shaded_var = variance + loss_var
    shifted = residual + loss
    shaded = (
        math.log(settings.shadow_p)
        - 0.5 * shifted * shifted / shaded_var
        - 0.5 * np.log(shaded_var)
    )
    per_box = np.where(heard[rows], np.logaddexp(clear, shaded), 0.0)
    log_l = np.full(where.shape, -np.inf)
    log_l[rows, cells] = per_box.sum(axis=1)
    return log_l


def weigh_in(
    belief: npt.NDArray[np.float32],
    weight: npt.NDArray[np.float64],
    weighted: npt.NDArray[np.float64],
    settings: PresenceSettings,
    model: BoxModel,
    misses: npt.NDArray[np.float64] | None = None,
) -> npt.NDArray[np.float32]:
    """Weigh the pending readings (and ``misses``) into ``belief`` (rows, 2 H, C) in place and
    normalise it; returns the belief per cell (rows, C)."""
    log_l = box_log_likelihood(belief, weight, weighted, settings, model, misses)
    if log_l.ndim == 2:
        log_l = log_l[:, None, :]
    log_l -= log_l.max(axis=(1, 2), keepdims=True)
    likelihood = np.exp(log_l).astype(np.float32)
    h = belief.shape[1] // 2
    belief[:, :h] *= likelihood
    belief[:, h:] *= likelihood
    total = belief.sum(axis=(1, 2))
    lost = total <= 0.0
    if lost.any():
        # The windows contradict every reachable cell: start over from the windows alone.
        fresh = np.broadcast_to(likelihood[lost], (int(lost.sum()), h, belief.shape[2]))
        belief[lost] = np.concatenate([fresh, fresh], axis=1)
        total[lost] = belief[lost].sum(axis=(1, 2))
    belief /= total[:, None, None]
    where: npt.NDArray[np.float32] = belief.sum(axis=1)
    return where
