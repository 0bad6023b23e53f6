"""The engine's decisions from a belief (presence_rules.decide), on hand-written beliefs."""

from __future__ import annotations

import math

import numpy as np

from store_server.presence_rules import Subject, decide
from store_server.presence_types import PresenceSettings

ZONES = ("front", "coffee")
SETTINGS = PresenceSettings(
    zone_switch_margin=0.1, zone_switch_margin_standing=0.1, zone_hold_s=2.0, arrive_p=0.8
)
NEVER = -math.inf


def _run(
    state: Subject, beliefs: list[tuple[float, float, float]], settings: PresenceSettings
) -> list[tuple[float, str | None]]:
    """Feed (t, inside, coffee's share of it) in order; the events (t, kind) that came."""
    out_since = math.nan
    events: list[tuple[float, str | None]] = []
    for t, inside, coffee in beliefs:
        zones = np.array([1.0 - coffee, coffee], dtype=np.float32)
        kind, out_since = decide(state, inside, zones, t, out_since, NEVER, settings, ZONES)
        if kind is not None:
            events.append((t, kind))
    return events


def test_arrival_waits_for_the_inside_belief() -> None:
    state = Subject(slot=0, p_walking=1.0)
    events = _run(state, [(1.0, 0.5, 0.0), (2.0, 0.79, 0.0), (3.0, 0.81, 0.9)], SETTINGS)
    assert events == [(3.0, "arrived")]
    assert state.zone == "coffee"


def test_the_shown_zone_changes_only_after_the_challenger_held_long_enough() -> None:
    state = Subject(slot=0, arrived=True, zone="front")
    # Coffee leads for 1.5 s, falls back, then leads again for 2 s: one change, at the end.
    beliefs = [(1.0, 1.0, 0.7), (2.0, 1.0, 0.8), (2.5, 1.0, 0.7), (3.0, 1.0, 0.3)]
    beliefs += [(4.0, 1.0, 0.7), (5.0, 1.0, 0.7), (6.0, 1.0, 0.9)]
    assert _run(state, beliefs, SETTINGS) == [(6.0, "zone_changed")]
    assert state.zone == "coffee"


def test_a_challenger_within_the_margin_never_takes_over() -> None:
    state = Subject(slot=0, arrived=True, zone="front")
    # Coffee leads, but by less than 10 points (0.54 against 0.46): front stays shown.
    beliefs = [(float(t), 1.0, 0.54) for t in range(1, 60)]
    assert _run(state, beliefs, SETTINGS) == []
    assert state.zone == "front"


def test_where_three_zones_meet_the_leader_takes_over_without_a_majority() -> None:
    zones = ("front", "coffee", "parts")
    state = Subject(slot=0, arrived=True, zone="front")
    settings = PresenceSettings(zone_switch_margin=0.1, zone_hold_s=0.0)
    state.p_walking = 1.0
    # The shown zone fell to 0.2; coffee leads with 0.45 of the belief, short of any majority.
    shares = np.array([0.2, 0.45, 0.35], dtype=np.float32)
    kind, _ = decide(state, 1.0, shares, 1.0, math.nan, NEVER, settings, zones)
    assert kind == "zone_changed"
    assert state.zone == "coffee"
    # Parts then leads coffee by 5 points only: coffee stays.
    shares = np.array([0.2, 0.375, 0.425], dtype=np.float32)
    kind, _ = decide(state, 1.0, shares, 2.0, math.nan, NEVER, settings, zones)
    assert kind is None
    assert state.zone == "coffee"


def test_left_needs_the_inside_belief_low_for_the_hold() -> None:
    settings = PresenceSettings(left_p=0.1, left_hold_s=1.0)
    state = Subject(slot=0, arrived=True, zone="front")
    beliefs = [(1.0, 0.05, 0.0), (1.5, 0.5, 0.0), (2.0, 0.05, 0.0), (2.5, 0.05, 0.0)]
    beliefs += [(3.0, 0.05, 0.0)]
    assert _run(state, beliefs, settings) == [(3.0, "left")]


def test_a_standing_customer_needs_a_wider_lead_to_change_zone() -> None:
    settings = PresenceSettings(zone_switch_margin=0.1, zone_switch_margin_standing=0.3)
    state = Subject(slot=0, arrived=True, zone="front", p_walking=0.1)
    # Standing: coffee leads by 20 points (0.6 against 0.4), not enough.
    assert _run(state, [(1.0, 1.0, 0.6), (2.0, 1.0, 0.6)], settings) == []
    assert state.zone == "front"
    # Still standing, coffee leads by 40 points: it takes over.
    assert _run(state, [(3.0, 1.0, 0.7)], settings) == [(3.0, "zone_changed")]
    # Walking: a lead of 20 points is enough.
    state.p_walking = 0.9
    assert _run(state, [(4.0, 1.0, 0.4)], settings) == [(4.0, "zone_changed")]
    assert state.zone == "front"


def test_arrival_needs_the_belief_to_have_seen_a_walk() -> None:
    settings = PresenceSettings(arrive_walked_p=0.3, arrive_walked_within_s=10.0)
    # Walked up to the glass at 0-2 s, then stood: the inside belief rose at 20 s, standing.
    state = Subject(slot=0)
    beliefs = [(t, 0.1, 0.0, 1.0 if t <= 2.0 else 0.05) for t in range(0, 40)]
    beliefs += [(float(t), 0.9, 0.0, 0.05) for t in range(40, 100)]
    assert _run_walking(state, beliefs, settings) == []
    # Walking a few seconds before the belief got inside: arrived at once.
    state = Subject(slot=0)
    beliefs = [(1.0, 0.1, 0.0, 0.9), (2.0, 0.5, 0.0, 0.8), (5.0, 0.6, 0.0, 0.1)]
    beliefs += [(11.0, 0.9, 0.0, 0.05)]
    assert _run_walking(state, beliefs, settings) == [(11.0, "arrived")]
    # ...not if that walk was more than 10 s before.
    state = Subject(slot=0)
    beliefs = [(1.0, 0.1, 0.0, 0.9), (11.5, 0.9, 0.0, 0.05), (20.0, 0.9, 0.0, 0.29)]
    assert _run_walking(state, beliefs, settings) == []


def test_an_inside_belief_that_never_walked_arrives_after_the_standing_hold() -> None:
    # A phone switched on inside, or heard again after the server restarted.
    settings = PresenceSettings(arrive_walked_p=0.3, arrive_standing_s=150.0)
    state = Subject(slot=0)
    beliefs = [(float(t), 0.95, 0.0, 0.05) for t in range(100, 260)]
    assert _run_walking(state, beliefs, settings) == [(250.0, "arrived")]
    # The hold starts again whenever the inside belief falls under arrive_p.
    state = Subject(slot=0)
    beliefs = [(float(t), 0.95 if t != 200 else 0.5, 0.0, 0.05) for t in range(100, 400)]
    assert _run_walking(state, beliefs, settings) == [(351.0, "arrived")]


def _run_walking(
    state: Subject, beliefs: list[tuple[float, float, float, float]], settings: PresenceSettings
) -> list[tuple[float, str | None]]:
    """As ``_run``, with the belief's walking share as a fourth field."""
    events: list[tuple[float, str | None]] = []
    for t, inside, coffee, walking in beliefs:
        state.p_walking = walking
        events += _run(state, [(t, inside, coffee)], settings)
    return events
