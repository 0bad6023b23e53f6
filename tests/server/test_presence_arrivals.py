"""``PresenceEngine.decide_arrivals``: arrivals decided as soon as the windows are given."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from store_server.floor import Floor, floor_from_dict
from store_server.presence import Observation, PresenceEngine, PresenceEvent, PresenceSettings

STORE = Path(__file__).resolve().parents[2] / "seeds" / "store.toml"
S = PresenceSettings()


@pytest.fixture(scope="module")
def floor() -> Floor:
    with STORE.open("rb") as handle:
        return floor_from_dict(tomllib.load(handle))


def feed(
    engine: PresenceEngine, t: float, readings: dict[str, float], subject: str = "a"
) -> list[PresenceEvent]:
    """Observe one window per scanner at ``t``, then decide arrivals at ``t`` (as ingest does)."""
    for scanner_id, rssi in readings.items():
        assert engine.observe(Observation(subject, scanner_id, t, rssi, rssi + 2.0, 3)) == []
    return engine.decide_arrivals([subject], t)


def test_interior_arrival_without_waiting_for_the_tick(floor: Floor) -> None:
    engine = PresenceEngine(floor)
    events = feed(engine, 10.0, {"s-machines": -60.0, "s-entrance": -75.0})
    assert [(e.kind, e.subject, e.zone, e.t) for e in events] == [
        ("arrived", "a", "machines", 10.0)
    ]
    assert engine.present() == {"a": "machines"}
    # The tick that follows does not announce it again.
    assert engine.tick(10.5) == []
    assert feed(engine, 11.0, {"s-machines": -60.0}) == []


def test_only_subjects_with_new_windows_are_decided(floor: Floor) -> None:
    engine = PresenceEngine(floor)
    engine.observe(Observation("a", "s-machines", 5.0, -60.0, -58.0, 3))
    # "b" has no state and "a" is not named: nothing is decided.
    assert engine.decide_arrivals(["b"], 5.0) == []
    assert engine.present() == {}
    assert [e.subject for e in engine.decide_arrivals(["a", "b"], 5.0)] == ["a"]
    # Decided already: naming it again without a new window emits nothing.
    assert engine.decide_arrivals(["a"], 5.0) == []


def test_entrance_dwell_counts_window_times_not_tick_times(floor: Floor) -> None:
    engine = PresenceEngine(floor)
    strong = S.entrance_dwell_rssi_dbm + 2.0
    readings = {"s-entrance": strong, "s-machines": -80.0}
    assert feed(engine, 1.0, readings) == []
    # The server's tick runs on the wall clock, after the first window and just after the end
    # of the second one (whose batch is still on its way): it must not confirm anything.
    assert engine.tick(1.03) == []
    assert engine.tick(2.01) == []
    events = feed(engine, 1.0 + S.entrance_dwell_s, readings)
    assert [(e.kind, e.zone, e.t) for e in events] == [("arrived", "entrance", 2.0)]


def test_passer_by_never_arrives(floor: Floor) -> None:
    engine = PresenceEngine(floor)
    for t in range(1, 120):
        readings = {"s-entrance": -69.0, "s-machines": -85.0, "s-parts": -81.0, "s-checkout": -90.0}
        assert feed(engine, float(t), readings) == []
        assert engine.tick(t + 0.5) == []
    assert engine.present() == {}


def test_zone_changes_stay_with_the_tick(floor: Floor) -> None:
    engine = PresenceEngine(floor)
    readings = {"s-machines": -60.0, "s-parts": -70.0}
    assert [e.kind for e in feed(engine, 1.0, readings)] == ["arrived"]
    strong = -60.0 + S.hysteresis_margin_db + 2.0
    moved = {"s-machines": -60.0, "s-parts": strong}
    ticked: list[PresenceEvent] = []
    for t in range(2, 8):
        # A present subject: decide_arrivals has nothing to say, even when the zone moves...
        assert feed(engine, float(t), moved) == []
        # ...the tick of the window round decides the zone, as before.
        ticked += engine.tick(float(t))
    assert [(e.kind, e.zone) for e in ticked] == [("zone_changed", "parts")]
    assert engine.zone_of("a") == "parts"


def test_subject_past_its_left_deadline_is_left_to_the_tick(floor: Floor) -> None:
    engine = PresenceEngine(floor)
    engine.observe(Observation("a", "s-machines", 1.0, -60.0, -58.0, 3))
    assert engine.decide_arrivals(["a"], 1.0 + S.left_timeout_s) == []
    assert engine.tick(1.0 + S.left_timeout_s) == []
    assert len(engine) == 0


ROUND = st.tuples(
    st.floats(min_value=-90.0, max_value=-50.0, allow_nan=False),
    st.floats(min_value=-90.0, max_value=-50.0, allow_nan=False),
    st.booleans(),
)


@settings(max_examples=60, deadline=None)
@given(rounds=st.lists(ROUND, min_size=1, max_size=25))
def test_same_decisions_as_deciding_on_the_tick_alone(
    floor: Floor, rounds: list[tuple[float, float, bool]]
) -> None:
    """Two scanners (the signal rule, no position fit): deciding arrivals on each window and
    then ticking gives exactly the events of ticking alone, as the accuracy lab does."""
    by_tick = PresenceEngine(floor)
    at_once = PresenceEngine(floor)
    seen_tick: list[PresenceEvent] = []
    seen_now: list[PresenceEvent] = []
    for step, (entrance, machines, heard) in enumerate(rounds, start=1):
        t = float(step)
        readings = {"s-entrance": entrance}
        if heard:
            readings["s-machines"] = machines
        for scanner_id, rssi in readings.items():
            by_tick.observe(Observation("a", scanner_id, t, rssi, rssi, 2))
            at_once.observe(Observation("a", scanner_id, t, rssi, rssi, 2))
        seen_tick += by_tick.tick(t)
        seen_now += at_once.decide_arrivals(["a"], t)
        seen_now += at_once.tick(t)
    assert seen_now == seen_tick
