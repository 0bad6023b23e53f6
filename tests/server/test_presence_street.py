"""Property: a phone whose every reading comes from outside the window front never arrives."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from store_server.presence import Observation, PresenceEngine
from tests.server.presence_helpers import channel, load, window_at

FLOORS = {"demo": load(), "corner": load("store-corner.toml")}
CHANNELS = {name: channel(floor) for name, floor in FLOORS.items()}

# A place on the pavement behind the glass (never in front of the door opening): x along the
# front of the shop away from the door by 1 m or more, y from the glass out to the kerb.
spot = st.tuples(st.floats(0.0, 1.0), st.floats(-3.0, -0.2))
window = st.tuples(
    spot,
    st.floats(-3.0, 3.0),  # the window's error, dB
    st.integers(1, 10),  # advertisements in the window
    st.floats(0.0, 1.0),  # share of the boxes that hear it
)


@settings(max_examples=60, deadline=None)
@given(
    floor_name=st.sampled_from(sorted(FLOORS)),
    windows=st.lists(window, min_size=1, max_size=90),
)
def test_readings_from_behind_the_glass_never_arrive(
    floor_name: str, windows: list[tuple[tuple[float, float], float, int, float]]
) -> None:
    floor = FLOORS[floor_name]
    ch = CHANNELS[floor_name]
    door_lo, door_hi = floor.door_x_min - 1.0, floor.door_x_max + 1.0
    stretches = [(0.0, door_lo), (door_hi, floor.width_m)]
    widths = [max(0.0, hi - lo) for lo, hi in stretches]
    engine = PresenceEngine(floor)
    boxes = [spec.id for spec in floor.scanners]
    for step, ((u, y), error, count, share) in enumerate(windows):
        # u picks a point along both stretches of glass either side of the door.
        along = u * sum(widths)
        x = stretches[0][0] + along if along <= widths[0] else stretches[1][0] + along - widths[0]
        t = 1.0 + step
        heard = window_at(ch, (x, y), error)
        for box in boxes[: max(1, round(share * len(boxes)))]:
            rssi = heard[box]
            engine.observe(Observation("p", box, t, rssi, rssi + 2.0, count))
        assert engine.decide_arrivals(["p"], t) == []
        assert [e for e in engine.tick(t) if e.kind == "arrived"] == []
    assert engine.present() == {}
    assert np.isfinite(engine.p_inside("p"))
