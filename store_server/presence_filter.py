"""The filter's two steps on a block of beliefs: move them on, weigh readings in (pure, numpy).

:mod:`presence` owns the beliefs and the decisions; this module holds only the arithmetic of a
grid hidden Markov model over the floor's cells, so that each step can be read (and checked) on
its own. Beliefs have the shape (rows, 2, cells): standing, walking.
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
from store_server.presence_types import PresenceSettings

__all__ = [
    "NEVER",
    "BeliefTable",
    "BoxModel",
    "box_log_likelihood",
    "mixture_log_l",
    "predict",
    "shared_grid",
]

# Latest time of a subject never updated.
NEVER = -math.inf
GRID_CACHE_FLOORS = 4
"""Grids kept for reuse: a server has one floor, but restarts and tests build many engines on it
(building one costs 0.1-0.4 s of Python on a 2-core machine)."""


@dataclass(slots=True)
class BeliefTable:
    """Every subject's belief and the windows recorded since its last update (one row a
    subject slot), as the sums the Gaussian likelihood needs."""

    weight: npt.NDArray[np.float64]  # (slots, B) sum of 1/variance
    weighted: npt.NDArray[np.float64]  # (slots, B) sum of reading/variance
    latest: npt.NDArray[np.float64]  # (slots, B) latest calibrated median (evidence)
    latest_t: npt.NDArray[np.float64]  # (slots, B)
    belief: npt.NDArray[np.float32]  # (slots, 2, C): [standing, walking]
    updated_t: npt.NDArray[np.float64]  # (slots,) time the belief stands for
    last_seen: npt.NDArray[np.float64]  # (slots,) latest window time, any box
    check_in_t: npt.NDArray[np.float64]  # (slots,) latest check-in
    out_since: npt.NDArray[np.float64]  # (slots,) since when the belief says "out" (NaN: not)
    pending: npt.NDArray[np.bool_]  # (slots,) windows not yet in the belief
    used: npt.NDArray[np.bool_]  # (slots,) the slot holds a subject
    free: list[int] = field(default_factory=list)

    @classmethod
    def empty(cls, slots: int, boxes: int, size: int) -> BeliefTable:
        """A table of ``slots`` free rows for ``boxes`` boxes over ``size`` cells."""
        return cls(
            weight=np.zeros((slots, boxes)),
            weighted=np.zeros((slots, boxes)),
            latest=np.zeros((slots, boxes)),
            latest_t=np.full((slots, boxes), NEVER),
            belief=np.zeros((slots, 2, size), dtype=np.float32),
            updated_t=np.full(slots, NEVER),
            last_seen=np.full(slots, NEVER),
            check_in_t=np.full(slots, NEVER),
            out_since=np.full(slots, math.nan),
            pending=np.zeros(slots, dtype=bool),
            used=np.zeros(slots, dtype=bool),
            free=list(range(slots - 1, -1, -1)),
        )


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
    """What each box is expected to read in each cell: (boxes, cells) means and squares."""

    mean: npt.NDArray[np.float64]
    mean_sq: npt.NDArray[np.float64]
    mean32: npt.NDArray[np.float32]
    mean_sq32: npt.NDArray[np.float32]


def predict(
    belief: npt.NDArray[np.float32],
    steps: int,
    start_walking_p: float,
    stop_walking_p: float,
    move_from: npt.NDArray[np.intp],
    move_p: npt.NDArray[np.float32],
) -> None:
    """Move ``belief`` (rows, 2, C) on by ``steps`` steps, in place: walkers step to a
    neighbouring cell (``move_from``/``move_p``, index C being "nowhere"), people start and
    stop walking."""
    start, stop = start_walking_p, stop_walking_p
    rows, _, size = belief.shape
    padded = np.zeros((rows, size + 1), dtype=np.float32)
    for _ in range(steps):
        padded[:, :size] = belief[:, 1]
        moved = np.einsum("rck,ck->rc", padded[:, move_from], move_p)
        standing = belief[:, 0]
        belief[:, 1] = start * standing + (1.0 - stop) * moved
        belief[:, 0] = (1.0 - start) * standing + stop * moved


def box_log_likelihood(
    belief: npt.NDArray[np.float32],
    weight: npt.NDArray[np.float64],
    weighted: npt.NDArray[np.float64],
    settings: PresenceSettings,
    model: BoxModel,
) -> npt.NDArray[np.float64]:
    """Log-likelihood (rows, C) of the pending readings in each cell, up to a constant per row.

    ``weight`` and ``weighted`` (rows, B) are each box's sum of 1/variance and of
    reading/variance since the last update.
    """
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
        log_l = weighted @ model.mean - 0.5 * (weight @ model.mean_sq)
    if settings.common_offset_sigma_db > 0.0 and not exact:
        # The same unknown offset on every box of one update (the phone's model, a pocket,
        # the body when every box is behind), integrated out: with reading weights w_b,
        # residuals e_b and offset variance t2, the log-likelihood gains
        # (sum w_b e_b)^2 / 2 (1/t2 + sum w_b) (Sherman-Morrison on the covariance).
        spread = 1.0 / settings.common_offset_sigma_db**2 + weight.sum(axis=1, keepdims=True)
        residual = weighted.sum(axis=1, keepdims=True) - weight @ model.mean
        log_l += 0.5 * residual * residual / spread
    return log_l


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
