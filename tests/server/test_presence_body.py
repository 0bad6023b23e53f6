"""Each person's body is their own (``body_shadow_sd_db``): a box behind the body is judged
with the body's spread added to its window's, and nothing changes while it is off."""

from __future__ import annotations

import numpy as np
import pytest

from store_server.presence_likelihood import box_log_likelihood, box_model
from store_server.presence_types import PresenceSettings

# Two boxes, three cells, two headings. Box 0 is straight behind the body in the last cell
# facing heading 1 and half behind in the middle one; box 1 is behind in the first cell facing
# heading 0. Box 1 is the only one of its kind that the phone was not heard by in one row.
MEAN = np.array([[-60.0, -65.0, -70.0], [-75.0, -70.0, -62.0]])
BEHIND = np.array([[[0.0, 0.0, 0.0], [0.0, 0.5, 1.0]], [[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]]])
READING = np.array([[-68.0, -71.0], [-64.0, 0.0]])
WEIGHT = np.array([[0.2, 0.35], [0.15, 0.0]])


def _log_l(settings: PresenceSettings) -> np.ndarray:
    model = box_model(MEAN, BEHIND, settings)
    belief = np.ones((2, 4, 3), dtype=np.float32)
    log_l = box_log_likelihood(belief, WEIGHT, WEIGHT * READING, settings, model)
    flat: np.ndarray = log_l.reshape(2, -1).astype(np.float64)
    return flat - flat.max(axis=1, keepdims=True)


def _direct(settings: PresenceSettings) -> np.ndarray:
    """The same, box by box: in front of the body a window weighs w = 1/v, behind it
    1/(v + sd^2); a cell half behind takes half of each term."""
    sd2 = settings.body_shadow_sd_db**2
    out = np.zeros((2, 2, 3))
    for row in range(2):
        total_w = np.zeros((2, 3))
        total_we = np.zeros((2, 3))
        for b in range(2):
            w = WEIGHT[row, b]
            if w == 0.0:
                continue
            expected = MEAN[b][None, :] - settings.body_shadow_db * BEHIND[b]
            residual = READING[row, b] - expected
            s = BEHIND[b]
            for share, weight in ((1.0 - s, w), (s, 1.0 / (1.0 / w + sd2))):
                out[row] += share * (-0.5 * weight * residual**2 + 0.5 * np.log(weight))
                total_w += share * weight
                total_we += share * weight * residual
        if settings.common_offset_sigma_db > 0.0:
            spread = 1.0 / settings.common_offset_sigma_db**2 + total_w
            out[row] += 0.5 * total_we**2 / spread - 0.5 * np.log(spread)
    flat = out.reshape(2, -1)
    return flat - flat.max(axis=1, keepdims=True)


def test_off_by_default_and_then_the_body_is_of_known_depth() -> None:
    settings = PresenceSettings()
    assert settings.body_shadow_sd_db == 0.0
    assert box_model(MEAN, BEHIND, settings).behind.size == 0
    assert np.allclose(_log_l(settings), _direct(settings), atol=2e-3)


@pytest.mark.parametrize("offset_sd", [0.0, 2.5])
def test_a_box_behind_the_body_weighs_less(offset_sd: float) -> None:
    settings = PresenceSettings(body_shadow_sd_db=2.5, common_offset_sigma_db=offset_sd)
    assert np.allclose(_log_l(settings), _direct(settings), atol=2e-3)
    # Facing heading 1 in the last cell box 0 should read -77.5 dB behind the body; it read
    # -68 dB (a shallow body). Facing heading 0 there it is in front, expected at -70 dB.
    behind_cell, front_cell = 1 * 3 + 2, 0 * 3 + 2
    fixed = _log_l(PresenceSettings(common_offset_sigma_db=offset_sd))[0]
    uncertain = _log_l(settings)[0]
    gap_fixed = fixed[front_cell] - fixed[behind_cell]
    gap_uncertain = uncertain[front_cell] - uncertain[behind_cell]
    assert 0.0 < gap_uncertain < 0.8 * gap_fixed


def test_a_negative_spread_is_refused() -> None:
    with pytest.raises(ValueError, match="body_shadow_sd_db must not be negative"):
        PresenceSettings(body_shadow_sd_db=-1.0)
