"""What the boxes' readings say of each cell: the box model and the likelihood (pure, numpy).

:mod:`presence_filter` moves the beliefs on and keeps their windows; this module weighs the
readings in: each box's expected RSSI per cell and heading (the body behind the heading, the
walls), the weight of a window, the silence of a box that missed the phone, and the update of
a block of beliefs by all of it. Beliefs have the shape (rows, 2 H, cells).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from store_server.floor import Floor
from store_server.presence_grid import HEADINGS, MOVES, FloorGrid
from store_server.presence_types import PresenceSettings

__all__ = [
    "MEDIAN_VARIANCE_FACTOR",
    "BoxModel",
    "body_share",
    "box_log_likelihood",
    "box_model",
    "miss_log_likelihood",
    "mixture_log_l",
    "pooled_weights",
    "weigh_in",
    "window_weight",
]

# Median of k readings: its variance is pi/2 times that of one reading over k.
MEDIAN_VARIANCE_FACTOR = math.pi / 2.0


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
