"""The presence engine's public records and settings (pure, no I/O).

What a caller feeds the engine (:class:`Observation`), what it reads back
(:class:`PresenceEvent` with its :class:`Evidence`), and every setting of the filter with the
reason for its default (:class:`PresenceSettings`). The engine itself is in :mod:`presence`,
which re-exports these names.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = [
    "EventKind",
    "Evidence",
    "Observation",
    "PresenceEvent",
    "PresenceSettings",
    "Via",
]


@dataclass(frozen=True, slots=True)
class Observation:
    """One box's aggregate of one subject over a ~1 s window ending at ``t`` (RSSI in dBm).

    ``tx_power``: the power the phone advertises (Eddystone: dBm at 0 m), if any.
    """

    subject: str
    scanner_id: str
    t: float
    rssi_median: float
    rssi_max: float
    count: int
    tx_power: float | None = None


@dataclass(frozen=True, slots=True)
class Evidence:
    """A box's latest calibrated window median for the subject when an event was decided."""

    scanner_id: str
    smoothed_rssi: float


EventKind = Literal["arrived", "zone_changed", "left"]
Via = Literal["beacon", "check_in", "beacon_proof"]
"""How an event came: the boxes' windows, a check-in tapped in the app (``check_in``), or a
check-in proven by a store beacon the phone ranged (``beacon_proof``)."""


@dataclass(frozen=True, slots=True)
class PresenceEvent:
    """A presence decision about one subject, with the belief behind it.

    ``p_inside``: the probability that the phone is inside the shop; ``p_zone``: that it is in
    ``zone``, given that it is inside.
    """

    kind: EventKind
    subject: str
    zone: str | None
    t: float
    evidence: tuple[Evidence, ...]
    via: Via = "beacon"
    p_inside: float = 1.0
    p_zone: float = 1.0


@dataclass(frozen=True, slots=True)
class PresenceSettings:
    """Every setting of the filter, with the reason for its default (measured by the lab)."""

    # Cells of 0.5 m: a customer 0.5 m from a zone edge is a cell away from it, and a 25 x 20 m
    # shop stays under 2,500 cells (the cost of an update grows with the cells).
    cell_m: float = 0.5
    # The belief moves every 0.5 s: at 1 m/s a walker crosses a cell per step.
    step_s: float = 0.5
    # A walker keeps going in its heading at about this speed (people walk at 1-1.4 m/s and
    # browse slower): entering through the door is followed within a second or two.
    walking_speed_mps: float = 1.0
    # Per step, a walker veers by 45 degrees with this chance...
    turn_p: float = 0.15
    # ...or turns to any heading (a corner, a shelf) with this one.
    sharp_turn_p: float = 0.05
    # Per step, a standing person turns to face another way with this chance.
    standing_turn_p: float = 0.02
    # A body between the phone and a box costs 5-10 dB: the belief knows which way the person
    # faces (the heading they walked, kept when they stop), so boxes behind read this much less.
    body_shadow_db: float = 7.5
    # The shadow fades in over this angle around the side of the body (0: all or nothing at 90
    # degrees): a heading stands for its 45-degree sector. 45 ended the corner floor's edge
    # flaps but made a demo dweller flap mid-zone (0 -> 6 per hour); with 22.5 (and
    # miss_adverts_max 3) they are 3.0 per hour (seed 1, 9.1 with neither), none mid-zone.
    body_fade_deg: float = 22.5
    # How far each person's body is from body_shadow_db (people differ by 5-10 dB): a window of
    # a box behind the body has this spread added to its own. Off (0): lab, with model_sigma_db
    # 2, 2.5 tracked boundaries better but let more of the pavement in (field tier, corner floor
    # 0 / 17 / 17 / 33 -> 17 / 25 / 33 / 75 per 10,000, seeds 1-4) and said "left" for a walker
    # still inside (seed 4); docs/presence.md, "Lab figures".
    body_shadow_sd_db: float = 0.0
    # The pavement modelled beyond each side of the shop: a passer-by is tracked from 3 m away.
    street_margin_m: float = 3.0
    # A phone in a hand (1.2 m) or a pocket (0.8 m): the 3-D distance to a box on a shelf or
    # the ceiling is computed from 1 m.
    phone_height_m: float = 1.0
    # Per step, a standing person starts walking with this chance (about 25 s standing).
    start_walking_p: float = 0.02
    # Per step, a walker stops with this chance (about 5 s between stops).
    stop_walking_p: float = 0.1
    # A step from the pavement into the shop weighs as much as a step along it: just outside an
    # open door and just inside look alike to the boxes, so any penalty here is paid in seconds
    # of arrival (lab: 0.3 delayed arrivals by seconds); passers-by are kept out by the glass
    # and the walls, which they cannot cross.
    door_entry_weight: float = 1.0
    # A phone first heard could already be inside (switched on, or the server restarted);
    # nearly all are first heard on the pavement.
    first_inside_p: float = 0.01
    # The phone's RSSI 1 m from a calibrated box (a typical Android phone).
    reference_rssi_dbm: float = -59.0
    # Path-loss exponent of a shop with shelving and people (2.0 is free space); per box it can
    # be calibrated.
    path_loss_exponent: float = 2.7
    # Spread of one advertisement's RSSI around the model (ESPresense's figure).
    reading_sigma_db: float = 2.5
    # What the model gets wrong whatever the count: position within a cell, body, hand or
    # pocket, phone model. It keeps a window of many advertisements from being trusted blindly.
    # Lab: 2.5 tracked better (corner diagonal 7.7 / 8.3 -> 6.8 / 7.8 %, seeds 1 / 2) but
    # doubled the field tier's street arrivals and added a corner edge flap (3.0 -> 4.04/h).
    model_sigma_db: float = 3.0
    # A box decodes nothing weaker than this (ESP32 and Raspberry Pi adapters: about -95 dBm): a
    # box that closed a window without the phone while other boxes heard it says "far from me".
    box_sensitivity_dbm: float = -95.0
    # ...unless the advertisement was lost, which a box in range of the phone does with this
    # chance (5-30 % of advertisements are lost). 1: misses say nothing. Lab: 0.15 let a window
    # shopper arrive on the corner floor (seeds 1 and 2) and gave a false "left" (field tier).
    advert_miss_p: float = 0.3
    # A window without the phone counts as this many missed advertisements at most (as many as
    # the phone's latest window held): they share the phone's place and body, so a window is
    # never trusted like many. Lab: 3 (with body_fade_deg 22.5) against 1 (with 0): corner
    # diagonal 8.5 / 9.6 -> 7.7 / 8.3 % (seeds 1 / 2), field street arrivals about halved;
    # 3 without the fade let a window shopper arrive (corner, seed 2).
    miss_adverts_max: int = 3
    # A box's window counts as a miss only if another box heard the phone in a window ending
    # less than this before it: the phone was advertising, not in a silent burst.
    miss_heard_within_s: float = 1.0
    # The older body model: each reading shadowed at random with this chance (moment-matched).
    # Off: the body now follows the heading (body_shadow_db), and both would count it twice...
    shadow_p: float = 0.0
    # ...and costs 5-10 dB (2.4 GHz through a torso).
    shadow_mean_db: float = 7.5
    shadow_sd_db: float = 1.5
    # Weigh the shadow mixture cell by cell on the cells holding more than this share of the
    # belief's largest; 0: the moment-matched form against the moved belief. Off: cell by cell
    # (1e-6) was better on diagonals (lab, seed 1: demo 6.4 % vs 7.4 %, corner 12.7 % vs 17.2 %)
    # but gave 4 false "left" on the corner floor and worse boundaries on the demo floor.
    shadow_support: float = 0.0
    # The same unknown offset on every box at once (phone model, pocket) can be integrated out
    # with this spread (dB). Off (0): walking in through the door also raises every box's level
    # together; in the field tier 6 dB kept nearly every window shopper out but arrival p95
    # became 8-25 s (lab, both floors, seeds 1-3).
    common_offset_sigma_db: float = 0.0
    # Tx power advertised by the phone that the reference RSSI stands for (dBm at 0 m); None:
    # the advertised power is not used (phones misreport it too often to rely on by default).
    tx_power_reference_dbm: float | None = None
    # Inside the shop with this belief: arrived. Lab: in the espresense tier nobody on the
    # pavement arrives at 0.8; 0.95 neither kept window shoppers out in the field tier nor
    # kept short visits (42-65 % detected on the corner floor); 0.7 detected more short visits
    # on the corner floor (90 / 92 -> 93 / 95 %) but let more of the pavement arrive in the
    # field tier (demo 0 / 25 -> 17 / 25, corner 83 / 75 -> 100 / 108 per 10,000).
    arrive_p: float = 0.8
    # ...held for this long. Off: at 1.5 s window shoppers still arrived in the field tier (their
    # belief is steadily, not briefly, wrong) and arrival took 1-2 s longer.
    arrive_hold_s: float = 0.0
    # ...and only if the belief saw the phone walk (at least `arrive_walked_p` of it in its
    # walking layers) within `arrive_walked_within_s`: nobody gets in without walking through a
    # door, while a window shopper's belief that leaks inside does so standing. Lab, corner
    # floor, full size: the 18 window shoppers who arrived (seeds 1 and 2) had at most 0.1 of
    # their belief walking in the 10 s before; walk-ins 0.72 or more. 0.3 let field-tier window
    # shoppers arrive as they walked away from the glass, the belief already inside.
    arrive_walked_p: float = 0.5
    arrive_walked_within_s: float = 10.0
    # A belief inside that never walked (a walk in that went unheard; a new belief starts
    # walking, so a phone first heard inside arrives at once) arrives once the inside belief
    # has held this long: longer than a window shopper stands at the glass (30-120 s).
    arrive_standing_s: float = 150.0
    # Another zone must hold this much more of the inside belief than the shown zone to take
    # it over (hysteresis in probability) while the belief says the customer walks... An
    # absolute share (0.65) was the old rule: where three zones meet no zone reaches it and a
    # stale zone stayed shown; lab, seeds 1-4: boundary mis-id 24-39 % -> 13-27 %.
    zone_switch_margin: float = 0.1
    # ...and this much while it says they stand: someone standing does not change zones, and
    # an uncalibrated box (field tier) sways a standing belief across a nearby edge. Lab, field
    # tier, seeds 1 / 2: edge flaps 13 / 3 (demo) and 18 / 2 (corner) per hour with 0.1, 5 / 1
    # and 7 / 2 with 0.3; espresense boundary mis-id 2-4 points higher.
    zone_switch_margin_standing: float = 0.3
    # ...continuously for this long (hysteresis in time). Off: a 1 s hold lags a walker past
    # the 2 s the lab tolerates (demo diagonal mis-id 1.4-1.9 % -> 3.2-4.9 %, seeds 1-4), and
    # a hold for standing beliefs only cost more mis-id than the standing margin for fewer
    # flaps cut.
    zone_hold_s: float = 0.0
    # Inside with less than this belief: walking out through a door...
    left_p: float = 0.1
    # ...for this long (two windows), so one odd window does not end a visit.
    left_hold_s: float = 1.0
    # No window at all for 10 s: gone. Above the 2-5 s silent bursts of a pocketed phone plus a
    # second of advertising and losses; keeps "left" within 15 s of walking out.
    silence_left_s: float = 10.0
    # ...unless the belief, at its latest update, put less than `door_near_p` of the phone within
    # `door_near_m` of a door or outside: nobody leaves but through a door, and a pocketed
    # phone deep in the shop can go quiet for two bursts in a row. Then gone after this long.
    # Lab, seed 4: a dweller in the middle of a zone was said to have left after 10 s of
    # silence (both floors); walkers still leave within 15 s, by the door.
    silence_inside_s: float = 20.0
    door_near_m: float = 3.0
    door_near_p: float = 0.05
    # A check-in keeps the customer present 15 min even without a beacon (iOS cannot advertise
    # in the background), unless beacons keep them present longer.
    check_in_present_s: float = 900.0
    # The belief does not say "left" within a minute of a check-in: the customer said so.
    check_in_trust_s: float = 60.0
    # Windows more than 10 s behind the engine's clock (an outbox drained after an outage)
    # describe the past, not presence now.
    max_observation_age_s: float = 10.0
    # A box's latest window is shown as evidence for 5 s.
    evidence_age_s: float = 5.0
    # A belief keeps only the cells holding more than this share of its largest cell (the rest
    # is dropped and the belief normalised again): an update then costs the few dozen to few
    # hundred cells a phone can be in, not the whole floor (bench/presence). Lab: no figure
    # changed between 1e-6 and keeping every cell (docs/presence.md).
    belief_floor: float = 1e-6
    # The belief moves at most 20 steps (10 s) between two updates: after that it no longer
    # changes much, and the cost of an update stays bounded.
    max_steps: int = 20

    def __post_init__(self) -> None:
        for name in ("cell_m", "step_s", "walking_speed_mps", "reading_sigma_db", "model_sigma_db"):
            if getattr(self, name) <= 0.0:
                raise ValueError(f"{name} must be positive")
        if self.path_loss_exponent <= 0.0:
            raise ValueError("path_loss_exponent must be positive")
        for name in (
            "start_walking_p",
            "stop_walking_p",
            "turn_p",
            "sharp_turn_p",
            "standing_turn_p",
            "door_entry_weight",
            "shadow_p",
            "advert_miss_p",
            "first_inside_p",
            "arrive_p",
            "arrive_walked_p",
            "zone_switch_margin",
            "zone_switch_margin_standing",
            "left_p",
            "door_near_p",
            "belief_floor",
        ):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1")
        for name in (
            "street_margin_m",
            "common_offset_sigma_db",
            "shadow_mean_db",
            "shadow_sd_db",
            "body_shadow_db",
            "body_fade_deg",
            "body_shadow_sd_db",
            "shadow_support",
            "zone_hold_s",
            "miss_heard_within_s",
            "arrive_hold_s",
            "arrive_walked_within_s",
            "arrive_standing_s",
            "left_hold_s",
            "silence_left_s",
            "silence_inside_s",
            "door_near_m",
            "check_in_present_s",
            "check_in_trust_s",
            "max_observation_age_s",
            "evidence_age_s",
        ):
            if getattr(self, name) < 0.0:
                raise ValueError(f"{name} must not be negative")
        if self.miss_adverts_max < 1:
            raise ValueError("miss_adverts_max must be at least 1")
        if self.max_steps < 1:
            raise ValueError("max_steps must be at least 1")
