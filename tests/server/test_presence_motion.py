"""The motion and body rules of the presence filter: headings, walking speed, walls, the body's
shadow and the arrival hold, each on a hand-written belief or trace."""

from __future__ import annotations

import numpy as np

from store_server.presence import Observation, PresenceEngine, PresenceSettings
from store_server.presence_filter import motion_model, predict
from store_server.presence_grid import HEADINGS, MOVES
from tests.server.presence_helpers import channel, drive, first, line, load

DEMO = load()
CORNER = load("store-corner.toml")


def _cell(engine: PresenceEngine, x: float, y: float) -> int:
    grid = engine.grid
    return int(np.argmin((grid.x - x) ** 2 + (grid.y - y) ** 2))


def _walker(engine: PresenceEngine, x: float, y: float, heading: int) -> np.ndarray:
    """A belief: certainly at (x, y), walking in ``heading`` (an index of HEADINGS)."""
    belief = np.zeros((1, 2 * len(HEADINGS), engine.grid.size), dtype=np.float32)
    belief[0, len(HEADINGS) + heading, _cell(engine, x, y)] = 1.0
    return belief


def _mean(engine: PresenceEngine, belief: np.ndarray) -> tuple[float, float]:
    where = belief[0].sum(axis=0)
    return float(where @ engine.grid.x), float(where @ engine.grid.y)


def test_a_walker_keeps_its_heading_at_walking_pace() -> None:
    engine = PresenceEngine(DEMO, PresenceSettings(stop_walking_p=0.0, turn_p=0.0))
    east = HEADINGS.index(1)
    assert MOVES[HEADINGS[east]] == (1, 0)
    belief = _walker(engine, 2.25, 4.25, east)
    predict(belief, 4, motion_model(engine.grid, engine.settings))  # two seconds
    x, y = _mean(engine, belief)
    # 1 m/s for 2 s, straight on: about 2 m east, hardly any sideways.
    assert 3.6 < x < 4.4
    assert abs(y - 4.25) < 0.3
    assert abs(float(belief.sum()) - 1.0) < 1e-5


def test_a_random_walk_would_lag_behind() -> None:
    # The same two seconds with headings forgotten at every step: the belief spreads and
    # lags; the heading is what lets the filter follow someone walking in through a door.
    settings = PresenceSettings(stop_walking_p=0.0, turn_p=0.0, sharp_turn_p=1.0)
    engine = PresenceEngine(DEMO, settings)
    belief = _walker(engine, 2.25, 4.25, HEADINGS.index(1))
    predict(belief, 4, motion_model(engine.grid, settings))
    assert _mean(engine, belief)[0] < 3.0


def test_walking_into_a_wall_stops_there_facing_it() -> None:
    engine = PresenceEngine(CORNER, PresenceSettings(start_walking_p=0.0, turn_p=0.0))
    north = HEADINGS.index(3)
    # Under the repairs wall (y = 8), left of its opening: the wall stops the walker.
    belief = _walker(engine, 0.25, 7.75, north)
    predict(belief, 6, motion_model(engine.grid, engine.settings))
    where = belief[0].sum(axis=0)
    assert float(where[engine.grid.y > 8.0].sum()) < 1e-6
    standing_north = float(belief[0, north].sum())
    assert standing_north > 0.9


def test_nobody_walks_in_through_the_window() -> None:
    engine = PresenceEngine(DEMO, PresenceSettings(stop_walking_p=0.0))
    north = HEADINGS.index(3)
    belief = _walker(engine, 2.25, -0.25, north)  # on the pavement, facing the glass
    predict(belief, 20, motion_model(engine.grid, engine.settings))
    inside = float(belief[0].sum(axis=0) @ engine.grid.inside)
    # Ten seconds: only by walking along to the door (3 m away) and in.
    assert inside < 0.2


def test_the_body_shadows_the_boxes_behind() -> None:
    # Standing between two boxes, facing the machines box: the entrance box, behind the body,
    # reads 7.5 dB less. With the body in the model the belief stays where the phone is; a
    # model without the body puts the phone several metres too far from the entrance box.
    ch = channel(DEMO)
    here = (3.0, 3.0)
    heading = np.array([0.0, 1.0])
    x, y = np.array([here[0]]), np.array([here[1]])
    readings = {}
    for b, spec in enumerate(DEMO.scanners):
        rssi = float(ch.mean_rssi(b, x, y, np.array([1.0]))[0])
        behind = np.dot(np.array(spec.position) - np.array(here), heading) < 0.0
        readings[spec.id] = rssi - (7.5 if behind else 0.0)

    def error(settings: PresenceSettings) -> float:
        engine = PresenceEngine(DEMO, settings)
        engine.check_in("a", 0.0, "machines")
        for t in range(1, 31):
            for box, rssi in readings.items():
                engine.observe(Observation("a", box, float(t), rssi, rssi, 5))
            engine.tick(float(t))
        belief = engine.belief("a")
        assert belief is not None
        mx, my = float(belief @ engine.grid.x), float(belief @ engine.grid.y)
        return float(np.hypot(mx - here[0], my - here[1]))

    # The windows' body is all or nothing at 90 degrees, so is the model's here: with the
    # default fade (body_fade_deg), the parts box, 80 degrees off the heading, is expected
    # 0.6 dB lower than these noise-free windows say, and that alone moves the belief 1.6 m
    # (four boxes leave the position loose along some directions).
    sharp = PresenceSettings(body_fade_deg=0.0)
    assert error(sharp) < 0.8
    assert error(PresenceSettings(body_shadow_db=0.0)) > error(sharp) + 0.3


def test_arrival_waits_for_the_belief_to_hold() -> None:
    path = line([(0.0, 6.0, -2.5), (2.5, 6.0, 0.0), (6.0, 4.5, 3.0), (40.0, 3.0, 5.0)])
    quick = first(drive(PresenceEngine(DEMO), channel(DEMO), path, 20.0), "arrived")
    held = PresenceEngine(DEMO, PresenceSettings(arrive_hold_s=2.0))
    late = first(drive(held, channel(DEMO), path, 20.0), "arrived")
    assert quick is not None
    assert late is not None
    assert late.t >= quick.t + 2.0 - 1e-9


def test_every_setting_is_documented() -> None:
    import dataclasses
    from pathlib import Path

    page = (Path(__file__).resolve().parents[2] / "docs" / "presence.md").read_text("utf-8")
    table = page[page.index("### Settings (`PresenceSettings`)") :]
    for item in dataclasses.fields(PresenceSettings):
        assert f"`{item.name}`" in table, item.name


def test_the_body_shadow_can_fade_in_around_the_side() -> None:
    # A person at (3, 3) facing north (the box at (3, 5.5) ahead, the one at (6, 1.2) behind
    # and to the side): all or nothing at 90 degrees by default; with body_fade_deg the side
    # shades part of the way, a box straight behind fully.
    from store_server.presence_likelihood import body_share

    engine = PresenceEngine(DEMO)
    cell = _cell(engine, 3.25, 3.25)
    north = HEADINGS.index(3)
    sharp = body_share(DEMO, engine.grid, 0.0)[:, north, cell]
    faded = body_share(DEMO, engine.grid, 45.0)[:, north, cell]
    boxes = [spec.id for spec in DEMO.scanners]
    machines, entrance, parts = (boxes.index(b) for b in ("s-machines", "s-entrance", "s-parts"))
    assert sharp[machines] == 0.0
    assert faded[machines] == 0.0
    assert sharp[entrance] == 1.0
    assert faded[entrance] == 1.0
    # The parts box is 80 degrees off the heading: in front, but within the fade.
    assert sharp[parts] == 0.0
    assert 0.0 < faded[parts] < 0.5
