"""Boxes hearing each other: which box sent a store beacon window (the key, the window's slot or
the previous one), which pairs of boxes are samples, and what the samples weigh (pure)."""

from __future__ import annotations

import math
import uuid

import numpy as np
import pytest

from store_beacon import SLOT_S, minor_for, slot_of
from store_server.box_beacons import CACHED_SLOTS, BoxBeacons, Heard, parse_beacon_id
from store_server.calibration import Calibrator
from store_server.calibration_online import (
    BOX_PAIR_WEIGHT,
    BOX_SAMPLE_INTERVAL_S,
    BOX_SAMPLES_PER_PAIR,
    OnlineCalibration,
    Place,
    box_places,
    zone_places,
)
from store_server.presence import PresenceEngine
from tests.server.presence_helpers import load

CHAIN = uuid.UUID("6f1e2d3c-1b2a-4c5d-8e9f-00000000b011")
MAJOR = 4242
KEY = bytes(range(32))
BOXES = ("s-entrance", "s-machines", "s-parts", "s-checkout")
T = 1_763_800_000.0
REFERENCE, DEFAULT_N = -59.0, 2.7


def ident(box: str, t: float, *, slot_delta: int = 0, major: int = MAJOR) -> str:
    return f"{CHAIN}:{major}:{minor_for(KEY, MAJOR, box, slot_of(t) + slot_delta)}"


def test_parse_beacon_id() -> None:
    assert parse_beacon_id(f"{CHAIN}:42:65535") == (CHAIN, 42, 65535)
    for bad in (
        f"{CHAIN}:42:65536",
        f"{CHAIN}:70000:1",
        f"{str(CHAIN).upper()}:42:1",
        f"{CHAIN}:042:1",
        f"{CHAIN}:42",
        "0123456789abcdef",
        "",
    ):
        assert parse_beacon_id(bad) is None, bad


def test_a_window_is_matched_to_the_box_of_its_slot_or_the_previous_one() -> None:
    beacons = BoxBeacons(KEY, CHAIN, MAJOR, BOXES)
    for box in BOXES:
        assert beacons.speaker(ident(box, T), T) == Heard("heard", box)
        # A box whose clock is a little behind still broadcasts the previous slot's minor.
        assert beacons.speaker(ident(box, T, slot_delta=-1), T) == Heard("heard", box)
    # Two slots ago (a box's clock far behind, or a replay), or one ahead: unknown.
    for delta in (-2, 1):
        assert beacons.speaker(ident("s-parts", T, slot_delta=delta), T) == Heard("unknown_minor")
    assert beacons.speaker(ident("s-parts", T, major=MAJOR + 1), T) == Heard("other_store")
    other_chain = ident("s-parts", T).replace(str(CHAIN), str(uuid.uuid4()))
    assert beacons.speaker(other_chain, T) == Heard("other_store")
    assert beacons.speaker("not a beacon", T) == Heard("malformed")
    # A box of another store's floor (same key and major: a mistake) is not one of these.
    assert beacons.speaker(ident("elsewhere", T), T).box_id is None
    # Another key's minors are unknown.
    other = BoxBeacons(bytes(range(32, 64)), CHAIN, MAJOR, BOXES)
    for box in BOXES:
        assert other.speaker(ident(box, T), T) == Heard("unknown_minor")


def test_a_minor_two_boxes_share_names_neither() -> None:
    """16 bits: among 1,000 boxes some share a slot's minor; such a window is dropped."""
    slot = slot_of(T)
    seen: dict[int, str] = {}
    pair = None
    for i in range(1000):
        box = f"b{i}"
        minor = minor_for(KEY, MAJOR, box, slot)
        if minor in seen:
            pair = (seen[minor], box, minor)
            break
        seen[minor] = box
    assert pair is not None
    first, second, minor = pair
    beacons = BoxBeacons(KEY, CHAIN, MAJOR, [first, second])
    assert beacons.speaker(f"{CHAIN}:{MAJOR}:{minor}", T).outcome == "ambiguous"
    assert BoxBeacons(KEY, CHAIN, MAJOR, [first]).speaker(f"{CHAIN}:{MAJOR}:{minor}", T) == Heard(
        "heard", first
    )


def test_the_slots_minors_are_computed_once_and_bounded() -> None:
    beacons = BoxBeacons(KEY, CHAIN, MAJOR, BOXES)
    for k in range(3 * CACHED_SLOTS):
        t = T + k * SLOT_S
        assert beacons.speaker(ident("s-checkout", t), t) == Heard("heard", "s-checkout")
        assert len(beacons._slots) <= CACHED_SLOTS
    # A batch from a box's backlog (an hour old) is matched in its own slot.
    old = T - 3600.0
    assert beacons.speaker(ident("s-entrance", old), old) == Heard("heard", "s-entrance")


def test_box_places_are_the_3d_distance_and_line_of_sight_first() -> None:
    demo = load()
    places = box_places(demo, PresenceEngine(demo).grid)
    entrance, parts = demo.scanners[0], demo.scanners[2]
    place = places[entrance.id][parts.id]
    assert place.distance_m == pytest.approx(
        math.dist((*entrance.position, entrance.height_m), (*parts.position, parts.height_m))
    )
    assert all(len(p) == 3 and entrance.id not in p for p in [places[entrance.id]])
    corner = load("store-corner.toml")
    grid = PresenceEngine(corner).grid
    first = box_places(corner, grid)
    clear = box_places(corner, grid, pairs="line_of_sight")
    every = box_places(corner, grid, pairs="all")
    # The repairs room's box sees no other box: it learns through the walls.
    assert clear["c-repairs"] == {}
    assert first["c-repairs"] == every["c-repairs"]
    assert all(p.walls_db > 0 for p in first["c-repairs"].values())
    # The others see two boxes each: those only.
    for box in ("c-front", "c-coffee", "c-back"):
        assert first[box] == clear[box]
        assert len(clear[box]) == 2
        assert all(p.walls_db == 0 for p in clear[box].values())
        assert "c-repairs" in every[box]


def learner() -> OnlineCalibration:
    floor = load()
    grid = PresenceEngine(floor).grid
    return OnlineCalibration(
        zone_places(floor, grid), box_places(floor, grid), REFERENCE, DEFAULT_N
    )


def heard(place: Place, offset: float, exponent: float) -> float:
    return REFERENCE - 10.0 * exponent * math.log10(place.distance_m) - place.walls_db - offset


def test_one_window_a_minute_per_pair_the_latest_kept() -> None:
    cal = learner()
    place = box_places(load(), PresenceEngine(load()).grid)["s-parts"]["s-machines"]
    rssi = heard(place, 0.0, 2.7)
    assert cal.box_heard("s-parts", "s-machines", T, rssi, REFERENCE)
    assert not cal.box_heard("s-parts", "s-machines", T + 1.0, rssi, REFERENCE)
    assert not cal.box_heard("s-parts", "s-machines", T - 1.0, rssi, REFERENCE)  # a backlog
    assert cal.box_heard("s-parts", "s-entrance", T + 1.0, rssi, REFERENCE)  # another pair
    assert not cal.box_heard("s-parts", "s-parts", T + 2.0, rssi, REFERENCE)
    assert not cal.box_heard("s-parts", "nobody", T + 2.0, rssi, REFERENCE)
    for k in range(1, 2 * BOX_SAMPLES_PER_PAIR):
        assert cal.box_heard("s-parts", "s-machines", T + k * BOX_SAMPLE_INTERVAL_S, rssi, -59)
    rows = [s for s in cal.samples("s-parts") if s.distance_m == place.distance_m]
    assert len(rows) == BOX_SAMPLES_PER_PAIR
    assert rows[0].at == T + BOX_SAMPLES_PER_PAIR * BOX_SAMPLE_INTERVAL_S  # the latest
    assert cal.sources("s-parts") == {"box": BOX_SAMPLES_PER_PAIR + 1}
    # Read back from storage with more than the cap: the cap applies again.
    fresh = learner()
    fresh.load(cal.samples("s-parts") * 2)
    assert len(fresh.samples("s-parts")) == BOX_SAMPLES_PER_PAIR + 2  # the other pair's two


def test_boxes_alone_learn_a_known_radio() -> None:
    """Boxes that hear each other with a known radio (no noise): what the engine then expects
        over the shop's cells comes within 1.75 dB RMS of it (1.0-1.5 here, against 2.2-5.1 with the
    defaults) and under 0.6 times the defaults' error;
        a speaker advertising 4 dB more than the reference is taken as such. (Box-to-box
        distances here are all 3-7 m: offset and exponent trade along a ridge there, and the
        prior, which knows rooms, picks the point; the exponent itself is within 0.6.)"""
    demo = load()
    places = box_places(demo, PresenceEngine(demo).grid)
    truth = {"s-entrance": (3.0, 3.0), "s-machines": (-2.5, 2.3), "s-parts": (4.0, 2.8)}
    truth["s-checkout"] = (-3.5, 2.9)
    cal = learner()
    for k in range(BOX_SAMPLES_PER_PAIR):
        for listener, (offset, exponent) in truth.items():
            for speaker in truth:
                if speaker != listener:
                    loud = 4.0 if speaker == "s-machines" else 0.0
                    rssi = heard(places[listener][speaker], offset, exponent) + loud
                    t = T + k * BOX_SAMPLE_INTERVAL_S
                    assert cal.box_heard(listener, speaker, t, rssi, REFERENCE + loud)
    fits = {f.box_id: f for f in cal.fits(T + 3600)}
    floor_grid = PresenceEngine(demo).grid
    for b, (box, (offset, exponent)) in enumerate(truth.items()):
        fit = fits[box]
        assert fit.usable, fit
        assert fit.samples == 3 * BOX_SAMPLES_PER_PAIR
        # What the engine then expects over the shop's cells, against the truth.
        log_d = floor_grid.log_distance[b][floor_grid.inside]

        def rms(o: float, n: float, log_d: np.ndarray = log_d) -> float:
            error = 10.0 * log_d * (n - exponent) + o - offset  # noqa: B023
            return float(np.sqrt((error**2).mean()))

        learned = rms(fit.rssi_offset_db, fit.path_loss_exponent)
        assert learned < 1.75, (box, fit)
        assert learned < 0.6 * rms(0.0, DEFAULT_N), (box, fit)
        assert abs(fit.path_loss_exponent - exponent) < 0.6, (box, fit)


def test_a_pair_weighs_its_weight_whatever_its_count() -> None:
    """Twenty windows of one pair weigh BOX_PAIR_WEIGHT samples, as one window of it does."""
    many, one = Calibrator(REFERENCE, DEFAULT_N), Calibrator(REFERENCE, DEFAULT_N)
    for _ in range(20):
        many.add("b", 4.0, 0.0, -80.0, BOX_PAIR_WEIGHT / 20)
    many.add("b", 8.0, 0.0, -85.0, BOX_PAIR_WEIGHT)
    one.add("b", 4.0, 0.0, -80.0, BOX_PAIR_WEIGHT)
    one.add("b", 8.0, 0.0, -85.0, BOX_PAIR_WEIGHT)
    a, b = many.fit("b"), one.fit("b")
    assert a is not None
    assert b is not None
    assert (a.rssi_offset_db, a.path_loss_exponent) == pytest.approx(
        (b.rssi_offset_db, b.path_loss_exponent), abs=0.01
    )
    # A weight of zero is no sample.
    none = Calibrator(REFERENCE, DEFAULT_N)
    none.add("b", 4.0, 0.0, -80.0, 0.0)
    assert none.fit("b") is None
