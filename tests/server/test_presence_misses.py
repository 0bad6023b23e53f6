"""Evidence beyond each box's readings, on hand-written traces: a box that closed a window
without the phone while other boxes heard it says "far from me" (or lost)."""

from __future__ import annotations

import numpy as np

from lab.channel import SENSITIVITY_DBM
from store_server.presence import Observation, PresenceEngine, PresenceSettings
from tests.server.presence_helpers import Path_, channel, line, load, window_at

CORNER = load("store-corner.toml")
OFF = PresenceSettings(advert_miss_p=1.0)


def _drive_decoded(
    engine: PresenceEngine, path: Path_, until: float, facing: tuple[float, float] = (0.0, 0.0)
) -> None:
    """One window a second from each box that decodes the phone (mean RSSI over the boxes'
    sensitivity, 7.5 dB less behind a body ``facing`` that way); every box closes its window,
    heard or not."""
    ch = channel(CORNER)
    boxes = {spec.id: spec.position for spec in CORNER.scanners}
    t = 1.0
    while t <= until:
        here = path(t - 0.5)
        if here is not None:
            for box, rssi in window_at(ch, here).items():
                bx, by = boxes[box]
                if (bx - here[0]) * facing[0] + (by - here[1]) * facing[1] < 0.0:
                    rssi -= 7.5
                if rssi >= SENSITIVITY_DBM:
                    engine.observe(Observation("a", box, t, rssi, rssi + 2.0, 3))
            for box in engine.calibration():
                engine.box_listened(box, t)
            engine.decide_arrivals(["a"], t)
        engine.tick(t)
        t += 1.0


def _zone_belief(engine: PresenceEngine, zone: str) -> float:
    belief = engine.belief("a")
    assert belief is not None
    share = engine.grid.zone_share[:, engine.grid.zone_ids.index(zone)]
    return float(belief @ share)


REPAIRS_WALK = line(
    [
        (0.0, 7.25, -2.5),
        (2.5, 7.25, 0.0),
        (8.0, 2.0, 4.0),
        (14.0, 1.6, 7.5),
        (17.0, 1.6, 9.2),
        (60.0, 1.6, 9.2),
    ]
)


def test_a_box_that_cannot_hear_the_repairs_room_places_the_phone_there() -> None:
    # The front box is behind three walls from the repairs room: it never decodes the phone
    # there. The customer walked in northwards and stands facing north, the boxes behind the
    # body reading 7.5 dB less: "behind the wall" and "below it, the body in the way" then
    # look alike from the boxes that hear the phone, and the front box's silence, while the
    # other boxes hear the phone, is what tells them apart.
    ch = channel(CORNER)
    assert window_at(ch, (1.6, 9.2))["c-front"] < SENSITIVITY_DBM
    with_misses = PresenceEngine(CORNER)
    _drive_decoded(with_misses, REPAIRS_WALK, 60.0, facing=(0.0, 1.0))
    without = PresenceEngine(CORNER, OFF)
    _drive_decoded(without, REPAIRS_WALK, 60.0, facing=(0.0, 1.0))
    assert with_misses.zone_of("a") == "repairs"
    assert without.zone_of("a") == "back"
    assert _zone_belief(with_misses, "repairs") > 0.9


def test_a_silent_phone_gets_no_misses() -> None:
    # A silent burst: nobody hears the phone, so the boxes' windows without it say nothing
    # (the phone was not advertising), and the belief is what the motion alone makes of it.
    standing = line([(0.0, 7.0, 4.0), (30.0, 7.0, 4.0)])
    engines = [PresenceEngine(CORNER), PresenceEngine(CORNER, OFF)]
    for engine in engines:
        _drive_decoded(engine, standing, 10.0)
        for t in (12.0, 13.0, 14.0, 15.0):
            for box in engine.calibration():
                engine.box_listened(box, t)
            engine.tick(t)
        engine.observe(Observation("a", "c-coffee", 16.0, -70.0, -68.0, 3))
        engine.tick(16.0)
    a, b = (e.belief("a") for e in engines)
    assert a is not None
    assert b is not None
    # The two differ only by the misses of the last windows heard (none: every box heard).
    assert np.allclose(a, b, atol=1e-5)


def test_one_miss_from_a_box_next_to_the_phone_is_only_a_lost_window() -> None:
    # Standing beside the coffee box, which misses one window (its advertisements lost): the
    # phone is still shown there, a miss never rules a cell out.
    engine = PresenceEngine(CORNER)
    standing = line([(0.0, 7.0, 5.0), (30.0, 7.0, 5.0)])
    _drive_decoded(engine, standing, 10.0)
    assert engine.zone_of("a") == "coffee"
    ch = channel(CORNER)
    for box, rssi in window_at(ch, (7.0, 5.0)).items():
        if box != "c-coffee":
            engine.observe(Observation("a", box, 11.0, rssi, rssi + 2.0, 3))
    engine.box_listened("c-coffee", 11.0)
    engine.tick(11.0)
    assert engine.zone_of("a") == "coffee"
    assert _zone_belief(engine, "coffee") > 0.5


def test_a_phone_known_only_by_its_proofs_gets_no_misses() -> None:
    # An iPhone does not advertise to the boxes: it is known by the beacons it measured
    # (check-in proofs, box_window=False). The boxes' windows, full of other phones, lack it
    # every second; that says nothing about where it is.
    ch = channel(CORNER)
    beliefs = []
    for settings in (PresenceSettings(), OFF):
        engine = PresenceEngine(CORNER, settings)
        for t in (1.0, 2.0, 3.0, 4.0, 5.0):
            for box, rssi in window_at(ch, (7.0, 5.0)).items():
                engine.observe_many(box, ["iphone"], [t], [rssi], [1], box_window=False)
            for box, rssi in window_at(ch, (2.0, 4.0)).items():
                engine.observe_many(box, ["android"], [t + 0.5], [rssi], [3])
            engine.tick(t + 0.5)
        beliefs.append(engine.belief("iphone"))
    assert beliefs[0] is not None
    assert beliefs[1] is not None
    assert np.allclose(beliefs[0], beliefs[1], atol=1e-6)
