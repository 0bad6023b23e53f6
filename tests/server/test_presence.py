"""The presence engine on hand-written traces: one test per rule and threshold."""

from __future__ import annotations

import dataclasses
import math
import tomllib
from pathlib import Path

import pytest

from store_server.floor import Floor, FloorError, floor_from_dict
from store_server.presence import (
    Evidence,
    Observation,
    PresenceEngine,
    PresenceEvent,
    PresenceSettings,
)

STORE = Path(__file__).resolve().parents[2] / "seeds" / "store.toml"
S = PresenceSettings()
WEAK = -88.0  # what far scanners hear in these traces


@pytest.fixture
def floor() -> Floor:
    with STORE.open("rb") as handle:
        return floor_from_dict(tomllib.load(handle))


@pytest.fixture
def engine(floor: Floor) -> PresenceEngine:
    return PresenceEngine(floor)


def window(
    engine: PresenceEngine, t: float, readings: dict[str, float], subject: str = "a"
) -> list[PresenceEvent]:
    """Feed one 1 s window (one observation per scanner in ``readings``), then tick at ``t``.

    The engine takes its decisions on ``tick``, once per window round, as the service does.
    """
    events: list[PresenceEvent] = []
    for scanner_id, rssi in readings.items():
        obs = Observation(subject, scanner_id, t, rssi, rssi + 2.0, 3)
        events += engine.observe(obs)
    assert events == []  # observe only records
    return engine.tick(t)


def at(floor: Floor, x: float, y: float, **changes: float) -> dict[str, float]:
    """Noise-free readings of a phone at ``(x, y)`` on the engine's log-distance model."""
    readings = {}
    for spec in floor.scanners:
        distance = max(math.hypot(x - spec.position[0], y - spec.position[1]), 0.1)
        readings[spec.id] = (
            S.model_reference_rssi_dbm - 10.0 * S.model_path_loss_exponent * math.log10(distance)
        )
    for scanner_id, delta in changes.items():
        readings[scanner_id.replace("_", "-")] += delta
    return readings


def arrive_in_machines(engine: PresenceEngine, subject: str = "a") -> float:
    """Strong at s-machines (two scanners: the signal rule): arrived at the first window,
    then one more window. Returns the time of the last window."""
    readings = {"s-machines": -60.0, "s-parts": -70.0}
    events = window(engine, 1.0, readings, subject)
    assert [(e.kind, e.zone) for e in events] == [("arrived", "machines")]
    assert window(engine, 2.0, readings, subject) == []
    return 2.0


def test_interior_arrival_at_the_threshold(engine: PresenceEngine) -> None:
    assert S.interior_confirm_s == 0.0  # one window is enough: see PresenceSettings
    readings = {"s-machines": -60.0, "s-entrance": -75.0}
    events = window(engine, 1.0, readings)
    assert len(events) == 1
    event = events[0]
    assert (event.kind, event.subject, event.zone, event.t, event.via) == (
        "arrived",
        "a",
        "machines",
        1.0,
        "beacon",
    )
    # Evidence: every fresh scanner, strongest first, smoothed and calibrated.
    assert event.evidence == (Evidence("s-machines", -60.0), Evidence("s-entrance", -75.0))
    assert engine.present() == {"a": "machines"}


def test_interior_confirmation_time_is_honoured(floor: Floor) -> None:
    engine = PresenceEngine(floor, PresenceSettings(interior_confirm_s=2.0))
    readings = {"s-machines": -60.0, "s-entrance": -75.0}
    assert window(engine, 1.0, readings) == []
    assert window(engine, 2.0, readings) == []
    assert [e.kind for e in window(engine, 3.0, readings)] == ["arrived"]


def test_interior_below_threshold_does_not_arrive(engine: PresenceEngine) -> None:
    weak = S.interior_min_rssi_dbm - 1.0
    for t in range(1, 30):
        assert window(engine, float(t), {"s-machines": weak, "s-entrance": -80.0}) == []
    assert engine.present() == {}


def test_interior_window_below_threshold_does_not_arrive(engine: PresenceEngine) -> None:
    for t in (1.0, 2.0, 3.0):
        assert window(engine, t, {"s-parts": S.interior_min_rssi_dbm - 0.5}) == []
    assert engine.present() == {}


def test_entrance_dwell_arrives(engine: PresenceEngine) -> None:
    strong = S.entrance_dwell_rssi_dbm + 2.0
    readings = {"s-entrance": strong, "s-machines": -80.0, "s-parts": -80.0}
    assert window(engine, 1.0, readings) == []
    events = window(engine, 1.0 + S.entrance_dwell_s, readings)
    assert [(e.kind, e.zone) for e in events] == [("arrived", "entrance")]


def test_entrance_dwell_interrupted_starts_over(engine: PresenceEngine) -> None:
    strong = S.entrance_dwell_rssi_dbm + 2.0
    weak = S.entrance_dwell_rssi_dbm - 4.0
    trace = [strong, weak, strong, weak, strong, weak]
    for t, rssi in enumerate(trace, start=1):
        assert window(engine, float(t), {"s-entrance": rssi, "s-machines": -82.0}) == []


def test_passer_by_at_the_window_never_arrives(engine: PresenceEngine) -> None:
    # Pressed against the glass in front of the entrance scanner for two minutes.
    for t in range(1, 120):
        readings = {"s-entrance": -69.0, "s-machines": -85.0, "s-parts": -81.0, "s-checkout": -90.0}
        assert window(engine, float(t), readings) == []
    assert engine.present() == {}
    assert engine.tick(119.0 + S.left_timeout_s) == []
    assert len(engine) == 0  # state of the passer-by is dropped


def test_hysteresis_needs_margin(engine: PresenceEngine) -> None:
    t = arrive_in_machines(engine)
    below_margin = -60.0 + S.hysteresis_margin_db - 0.5
    for step in range(1, 60):
        readings = {"s-machines": -60.0, "s-parts": below_margin}
        assert window(engine, t + step, readings) == []
    assert engine.zone_of("a") == "machines"


def test_hysteresis_needs_hold_time(engine: PresenceEngine) -> None:
    t = arrive_in_machines(engine)
    strong = -60.0 + S.hysteresis_margin_db + 2.0
    # Window 1: the median of parts is still its old value; window 2: the challenger leads.
    assert window(engine, t + 1, {"s-machines": -60.0, "s-parts": strong}) == []
    assert window(engine, t + 2, {"s-machines": -60.0, "s-parts": strong}) == []
    challenger_since = t + 2
    events = window(
        engine, challenger_since + S.hysteresis_hold_s, {"s-machines": -60.0, "s-parts": strong}
    )
    assert [(e.kind, e.zone, e.t) for e in events] == [
        ("zone_changed", "parts", challenger_since + S.hysteresis_hold_s)
    ]
    assert events[0].evidence[0] == Evidence("s-parts", strong)


def test_challenger_that_falls_back_resets_the_hold(engine: PresenceEngine) -> None:
    t = arrive_in_machines(engine)
    strong = -60.0 + S.hysteresis_margin_db + 2.0
    # Alternating: the median of three leads for one window at a time, never for the hold.
    pattern = [strong, -75.0] * 6
    for step, rssi in enumerate(pattern, start=1):
        assert window(engine, t + step, {"s-machines": -60.0, "s-parts": rssi}) == []
    assert engine.zone_of("a") == "machines"


def test_one_multipath_window_does_not_move_the_zone(engine: PresenceEngine) -> None:
    t = arrive_in_machines(engine)
    for step in range(1, 4):
        window(engine, t + step, {"s-machines": -60.0, "s-parts": -63.0})
    # A -6 dB multipath hit on the incumbent scanner: the median of three ignores it.
    for step in range(4, 7):
        rssi = -66.0 if step == 4 else -60.0
        assert window(engine, t + step, {"s-machines": rssi, "s-parts": -63.0}) == []
    assert engine.zone_of("a") == "machines"


def test_left_after_timeout(engine: PresenceEngine) -> None:
    t = arrive_in_machines(engine)
    assert engine.tick(t + S.left_timeout_s - 0.1) == []
    events = engine.tick(t + S.left_timeout_s)
    assert [(e.kind, e.subject, e.zone) for e in events] == [("left", "a", "machines")]
    assert len(engine) == 0
    assert engine.tick(t + 2 * S.left_timeout_s) == []


def test_silent_scanner_neither_moves_nor_removes(engine: PresenceEngine, floor: Floor) -> None:
    standing = at(floor, 3.0, 5.0)
    assert [(e.kind, e.zone) for e in window(engine, 1.0, standing)] == [("arrived", "machines")]
    # s-machines dies; the three others keep hearing the customer where they stand: the
    # position fit works with them alone.
    alive = {k: v for k, v in standing.items() if k != "s-machines"}
    for step in range(2, 200):
        assert window(engine, float(step), alive) == []
    assert engine.zone_of("a") == "machines"


def test_silent_scanner_is_kept_frozen_when_too_few_remain(
    engine: PresenceEngine, floor: Floor
) -> None:
    standing = at(floor, 3.0, 5.0)
    assert [e.kind for e in window(engine, 1.0, standing)] == ["arrived"]
    # s-machines and s-checkout die: two scanners left, too few for a fit; the frozen reading
    # of s-machines keeps the customer in machines rather than moving them to parts.
    alive = {k: standing[k] for k in ("s-entrance", "s-parts")}
    for step in range(2, 200):
        assert window(engine, float(step), alive) == []
        assert engine.tick(float(step) + 0.5) == []
    assert engine.zone_of("a") == "machines"


def test_position_zone_follows_a_walker_across_an_edge(
    engine: PresenceEngine, floor: Floor
) -> None:
    assert [e.zone for e in window(engine, 1.0, at(floor, 3.0, 4.0))] == ["machines"]
    changes = []
    for step, x in enumerate((4.0, 5.0, 5.9, 6.1, 6.3, 7.0, 8.0), start=2):
        changes += [(e.kind, e.zone, e.t) for e in window(engine, float(step), at(floor, x, 4.0))]
    # At x = 6.1 the customer is only 0.1 m into parts: inside the 0.2 m margin.
    assert changes == [("zone_changed", "parts", 6.0)]
    assert engine.zone_of("a") == "parts"


def test_spatial_margin_holds_a_customer_standing_near_an_edge(
    engine: PresenceEngine, floor: Floor
) -> None:
    window(engine, 1.0, at(floor, 5.5, 4.0))
    assert engine.zone_of("a") == "machines"
    inside_margin = 6.0 + S.zone_margin_m - 0.05
    for step in range(2, 30):
        assert window(engine, float(step), at(floor, inside_margin, 4.0)) == []
    assert engine.zone_of("a") == "machines"
    events = window(engine, 30.0, at(floor, 6.0 + S.zone_margin_m + 0.05, 4.0))
    assert [(e.kind, e.zone) for e in events] == [("zone_changed", "parts")]


def test_zone_hold_delays_the_change(floor: Floor) -> None:
    engine = PresenceEngine(floor, PresenceSettings(zone_hold_s=2.0))
    window(engine, 1.0, at(floor, 3.0, 4.0))
    assert window(engine, 2.0, at(floor, 8.0, 4.0)) == []
    assert window(engine, 3.0, at(floor, 8.0, 4.0)) == []
    # Back in machines for one window: the hold starts over.
    assert window(engine, 4.0, at(floor, 3.0, 4.0)) == []
    for t in (5.0, 6.0):
        assert window(engine, t, at(floor, 8.0, 4.0)) == []
    assert [e.zone for e in window(engine, 7.0, at(floor, 8.0, 4.0))] == ["parts"]


def test_position_fit_recovers_the_position(floor: Floor) -> None:
    engine = PresenceEngine(floor)
    for x, y, zone in ((1.0, 7.0, "machines"), (11.0, 3.0, "parts"), (8.0, 7.5, "checkout")):
        engine.forget("a")
        window(engine, 1.0, at(floor, x, y))
        assert engine.zone_of("a") == zone
        fitted = engine._subjects["a"].position  # white-box: the fit itself is under test
        assert fitted is not None
        assert math.hypot(fitted[0] - x, fitted[1] - y) < 0.05


def test_stale_reading_of_a_live_scanner_ages_out(engine: PresenceEngine) -> None:
    t = arrive_in_machines(engine)
    # s-machines stays alive (it hears somebody else) but no longer hears "a".
    zones = []
    for step in range(1, 15):
        events = window(engine, t + step, {"s-machines": -70.0}, subject="b")
        events += window(engine, t + step, {"s-parts": -66.0, "s-entrance": -75.0})
        zones += [e.zone for e in events if e.subject == "a"]
    assert zones == ["parts"]


def test_check_in_arrives_at_once(engine: PresenceEngine, floor: Floor) -> None:
    events = engine.check_in("ios", 10.0)
    assert [(e.kind, e.zone, e.via, e.t) for e in events] == [
        ("arrived", floor.door_zone(), "check_in", 10.0)
    ]
    assert engine.check_in("ios", 11.0) == []
    moved = engine.check_in("ios", 12.0, zone="checkout")
    assert [(e.kind, e.zone, e.via) for e in moved] == [("zone_changed", "checkout", "check_in")]
    # Present without any beacon for the check-in period, then left.
    assert engine.tick(12.0 + S.check_in_present_s - 1.0) == []
    assert [e.kind for e in engine.tick(12.0 + S.check_in_present_s)] == ["left"]


def test_check_in_with_zone_and_unknown_zone(engine: PresenceEngine) -> None:
    events = engine.check_in("x", 1.0, zone="parts")
    assert [(e.kind, e.zone) for e in events] == [("arrived", "parts")]
    with pytest.raises(FloorError):
        engine.check_in("y", 1.0, zone="attic")


def test_forget_drops_everything_silently(engine: PresenceEngine) -> None:
    t = arrive_in_machines(engine)
    engine.forget("a")
    assert len(engine) == 0
    assert engine.present() == {}
    assert engine.zone_of("a") is None
    assert engine.tick(t + 10 * S.left_timeout_s) == []
    # Seen again later: starts from nothing, arrives again.
    assert [e.kind for e in window(engine, t + 400.0, {"s-machines": -60.0})] == ["arrived"]


def test_out_of_order_and_old_observations_ignored(engine: PresenceEngine) -> None:
    t = arrive_in_machines(engine)
    before = engine.present()
    # Out of order for the same scanner: ignored, the smoothed value does not change.
    assert engine.observe(Observation("a", "s-parts", t - 0.5, -40.0, -40.0, 3)) == []
    assert engine.observe(Observation("a", "s-parts", t, -40.0, -40.0, 3)) == []
    for step in range(1, 4):
        window(engine, t + step, {"s-machines": -60.0, "s-parts": -70.0})
    assert engine.zone_of("a") == "machines"
    # Too old for the engine's clock: ignored, not even a new subject is created.
    engine.tick(t + 20.0)
    stale_t = t + 20.0 - S.max_observation_age_s - 1.0
    assert engine.observe(Observation("late", "s-machines", stale_t, -50.0, -50.0, 5)) == []
    assert len(engine) == 1
    assert engine.present() == before


def test_unknown_scanner_ignored(engine: PresenceEngine) -> None:
    assert engine.observe(Observation("a", "s-rogue", 1.0, -40.0, -40.0, 3)) == []
    assert len(engine) == 0


def test_calibration_offset_is_added(floor: Floor) -> None:
    scanners = tuple(
        dataclasses.replace(s, rssi_offset_db=6.0) if s.id == "s-parts" else s
        for s in floor.scanners
    )
    engine = PresenceEngine(dataclasses.replace(floor, scanners=scanners))
    readings = {"s-machines": -62.0, "s-parts": -65.0}
    events = window(engine, 1.0, readings)
    assert [(e.kind, e.zone) for e in events] == [("arrived", "parts")]
    assert events[0].evidence[0] == Evidence("s-parts", -59.0)


def test_memory_is_bounded_per_subject(engine: PresenceEngine) -> None:
    for t in range(1, 1000):
        window(engine, float(t), {"s-machines": -60.0, "s-parts": -70.0})
    assert len(engine) == 1
    state = engine._subjects["a"]  # white-box: the bound itself is the point of this test
    assert all(len(track.windows) <= S.smoothing_windows for track in state.tracks.values())


def test_settings_reject_nonsense() -> None:
    with pytest.raises(ValueError, match="smoothing_windows"):
        PresenceSettings(smoothing_windows=0)
    with pytest.raises(ValueError, match="left_timeout_s"):
        PresenceSettings(left_timeout_s=-1.0)
