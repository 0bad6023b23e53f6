"""Boxes may close windows shorter than a second (the scanners' ``window_s``): the same
advertisements split into more windows must not be taken as more evidence."""

from __future__ import annotations

import numpy as np

from store_server.presence import Observation, PresenceEngine
from store_server.presence_likelihood import pooled_weights
from store_server.presence_types import PresenceSettings
from tests.server.presence_helpers import channel, load, window_at

CORNER = load("store-corner.toml")
# A customer standing in the corner floor's back zone, 0.6 m from the coffee zone; a box far
# off (the repairs room's, behind its wall) does not hear them.
SPOT = (3.4, 4.0)
ADVERTS_PER_S = 6


def test_two_windows_pool_like_one_of_their_advertisements() -> None:
    settings = PresenceSettings()
    one, one_value = pooled_weights(np.array([[10.0]]), np.array([[-700.0]]), settings)
    two, two_value = pooled_weights(
        np.array([[5.0 + 5.0]]), np.array([[-5 * 68 - 5 * 72.0]]), settings
    )
    assert two == one
    assert two_value / two == one_value / one == -70.0
    single, _ = pooled_weights(np.array([[5.0]]), np.array([[-350.0]]), settings)
    # The model's own error counts once: two windows weigh much less than twice one.
    assert single < two < 1.3 * single
    nothing, nothing_value = pooled_weights(np.zeros((1, 1)), np.zeros((1, 1)), settings)
    assert nothing == 0.0
    assert nothing_value == 0.0


def _stand(window_s: float, seconds: float = 60.0) -> np.ndarray:
    """The belief after ``seconds`` of windows of ``window_s`` from every box that hears the
    phone (the same readings whatever the window length, split among the windows); every box
    closes every window."""
    engine = PresenceEngine(CORNER)
    rng = np.random.default_rng(3)
    heard = {box: rssi for box, rssi in window_at(channel(CORNER), SPOT).items() if rssi > -93.0}
    per_window = max(1, round(ADVERTS_PER_S * window_s))
    noise = rng.normal(0.0, 2.0, (int(seconds) + 1, len(heard)))
    t = window_s
    while t <= seconds + 1e-9:
        second = int(t - 1e-9)
        for k, (box, rssi) in enumerate(heard.items()):
            value = rssi + float(noise[second, k])
            engine.observe(Observation("a", box, t, value, value + 2.0, per_window))
        for box in engine.calibration():
            engine.box_listened(box, t)
        engine.decide_arrivals(["a"], t)
        if abs(t - round(t)) < 1e-9:
            engine.tick(t)
        t = round(t + window_s, 6)
    belief = engine.belief("a")
    assert belief is not None
    return belief


def test_half_second_windows_give_about_the_belief_of_one_second_windows() -> None:
    whole, halves = _stand(1.0), _stand(0.5)
    # Total variation distance: how much of the belief sits elsewhere.
    assert 0.5 * float(np.abs(whole - halves).sum()) < 0.15
