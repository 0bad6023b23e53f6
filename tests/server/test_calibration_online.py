"""Online calibration's pure rules: what is collected, when a fit is used, the walk's steps."""

from __future__ import annotations

import math

import numpy as np
import pytest

from store_server.calibration_online import (
    CHECK_IN_WINDOW_S,
    CHECK_IN_WINDOWS_PER_BOX,
    MIN_SAMPLES_TO_USE,
    REFIT_INTERVAL_S,
    WALK_JOIN_S,
    WALK_MAX_WRONG_CODES,
    WALK_TTL_S,
    WALK_WINDOWS_PER_ZONE,
    WALK_ZONE_MAX_S,
    OnlineCalibration,
    Place,
    box_places,
    zone_places,
)
from store_server.presence import PresenceEngine
from tests.server.presence_helpers import load

REFERENCE, DEFAULT_N = -59.0, 2.7
CODE = "123456"


def learner(**kwargs: bool) -> OnlineCalibration:
    floor = load()
    grid = PresenceEngine(floor).grid
    return OnlineCalibration(
        zone_places(floor, grid), box_places(floor, grid), REFERENCE, DEFAULT_N, **kwargs
    )


def reported(place: Place, offset: float, exponent: float, noise: float = 0.0) -> float:
    """What a box whose true radio is (offset, exponent) reports from ``place``."""
    true = REFERENCE - 10.0 * exponent * math.log10(place.distance_m) - place.walls_db
    return true - offset + noise


def stand(
    cal: OnlineCalibration,
    zone: str,
    t: float,
    truth: dict[str, tuple[float, float]],
    windows: int,
    subject: str = "phone",
    rng: np.random.Generator | None = None,
) -> float:
    """One window per box and second from ``subject`` in the middle of ``zone``."""
    places = zone_places(load(), PresenceEngine(load()).grid)[zone]
    for _ in range(windows):
        t += 1.0
        for box, (offset, exponent) in truth.items():
            noise = float(rng.normal(0.0, 1.5)) if rng is not None else 0.0
            cal.observe(box, [subject], t, [reported(places[box], offset, exponent, noise)], [4])
    return t


TRUTH = {
    "s-entrance": (3.0, 2.2),
    "s-machines": (-2.5, 3.2),
    "s-parts": (1.0, 2.9),
    "s-checkout": (-4.0, 2.4),
}


def test_a_guided_walk_learns_each_box() -> None:
    cal = learner()
    rng = np.random.default_rng(1)
    status = cal.start_walk("margot", CODE, 0.0)
    assert (status.joined, status.zone, status.done_zones) == (False, None, ())
    assert not cal.here("entrance", 1.0)  # nobody joined: nothing to listen to
    assert not cal.join_walk("654321", "phone", 2.0)
    assert cal.join_walk(CODE, "phone", 2.0)
    assert not cal.join_walk(CODE, "someone-else", 3.0)  # one phone per walk
    t = 10.0
    for zone in ("entrance", "machines", "parts", "checkout"):
        assert cal.here(zone, t)
        status = cal.walk_status(t)
        assert status is not None
        assert (status.zone, status.progress) == (zone, 0.0)
        t = stand(cal, zone, t, TRUTH, WALK_WINDOWS_PER_ZONE + 1, rng=rng)
        status = cal.walk_status(t)
        assert status is not None
        assert (status.zone, status.progress) == (None, 1.0)
        assert status.done_zones[-1] == zone
    fits = {f.box_id: f for f in cal.fits(t)}
    assert set(fits) == set(TRUTH)
    for box, (offset, exponent) in TRUTH.items():
        fit = fits[box]
        assert fit.usable, fit
        # A box may be too near its own zone's middle (< 1 m); the step ends when the box
        # hearing best is full, so the others may lack a window.
        assert 3 * (WALK_WINDOWS_PER_ZONE - 1) <= fit.samples <= 4 * WALK_WINDOWS_PER_ZONE
        assert fit.places >= 2  # two zones' middles may be as far from a box
        # The offset and the exponent trade off over the few distances a walk gives (the box's
        # own zone is too near it); what the engine will expect at those places is right.
        assert abs(fit.path_loss_exponent - exponent) < 0.5, fit
        for sample in cal.samples(box):
            place = Place(sample.distance_m, sample.walls_db)
            learned = reported(place, fit.rssi_offset_db, fit.path_loss_exponent)
            assert abs(learned - reported(place, offset, exponent)) < 1.0, (fit, place)
    assert len(cal.take_new()) == sum(f.samples for f in fits.values())
    assert cal.take_new() == []
    assert cal.fits(t + 1.0) == []  # nothing new


def test_a_step_skips_the_first_window_and_stops_when_full() -> None:
    cal = learner()
    cal.start_walk("margot", CODE, 0.0)
    cal.join_walk(CODE, "phone", 0.0)
    cal.here("parts", 5.0)  # the entrance box hears the parts zone from 4 m
    cal.observe("s-entrance", ["phone"], 4.0, [-60.0], [3])  # before the tap
    cal.observe("s-entrance", ["other"], 6.0, [-60.0], [3])  # another phone
    cal.observe("s-entrance", ["phone"], 6.0, [-60.0], [3])  # begun before the tap: skipped
    assert cal.take_new() == []
    for i in range(WALK_WINDOWS_PER_ZONE + 5):
        cal.observe("s-entrance", ["phone"], 7.0 + i, [-60.0], [3])
    taken = cal.take_new()
    assert len(taken) == WALK_WINDOWS_PER_ZONE  # then the manager walks on: not this zone
    assert {s.source for s in taken} == {"walk"}
    assert not cal.listening


def test_a_step_ends_after_its_longest_time() -> None:
    cal = learner()
    cal.start_walk("margot", CODE, 0.0)
    cal.join_walk(CODE, "phone", 0.0)
    cal.here("parts", 10.0)
    for i in range(3):
        cal.observe("s-entrance", ["phone"], 11.0 + i, [-60.0], [3])
    status = cal.walk_status(10.0 + WALK_ZONE_MAX_S + 1.0)
    assert status is not None
    assert status.zone is None
    assert status.progress == pytest.approx(2 / WALK_WINDOWS_PER_ZONE)
    assert status.done_zones == ("parts",)
    assert not cal.listening


def test_the_join_code_and_the_walk_lapse() -> None:
    cal = learner()
    cal.start_walk("margot", CODE, 0.0)
    assert not cal.join_walk(CODE, "phone", WALK_JOIN_S + 1.0)
    cal.start_walk("margot", CODE, 0.0)
    assert cal.join_walk(f" {CODE} ", "phone", 1.0)
    assert cal.walk_status(WALK_TTL_S + 1.0) is None
    cal.start_walk("margot", CODE, 0.0)
    for guess in range(WALK_MAX_WRONG_CODES):
        assert not cal.join_walk(f"{guess:06d}", "guesser", 1.0)
    assert not cal.join_walk(CODE, "phone", 2.0)  # too many guesses: the walk takes nobody
    assert not cal.here("parts", WALK_TTL_S + 2.0)


def test_check_ins_give_a_few_windows_each() -> None:
    cal = learner()
    assert not cal.check_in("c1", "nowhere", 0.0)
    assert cal.check_in("c1", "entrance", 100.0)
    for i in range(6):
        cal.observe("s-parts", ["c1"], 101.0 + i, [-62.0], [2])
    cal.observe("s-entrance", ["c1"], 102.0, [-50.0], [2])  # its own zone: under 1 m, no sample
    cal.observe("s-machines", ["c1"], 100.0 + CHECK_IN_WINDOW_S + 0.5, [-75.0], [2])  # too late
    taken = cal.take_new()
    assert len(taken) == CHECK_IN_WINDOWS_PER_BOX
    assert {(s.box_id, s.source) for s in taken} == {("s-parts", "check_in")}
    assert not cal.listening
    fit = cal.fit("s-parts", 110.0)
    assert fit is not None
    assert not fit.usable  # three samples from one place
    assert fit.places == 1


def test_check_ins_can_be_left_out() -> None:
    cal = learner(from_check_ins=False)
    assert not cal.check_in("c1", "parts", 0.0)
    assert not cal.listening


def test_a_fit_from_one_place_or_disagreeing_samples_is_not_used() -> None:
    cal = learner()
    places = zone_places(load(), PresenceEngine(load()).grid)
    cal.load([])
    for i in range(MIN_SAMPLES_TO_USE * 2):
        cal.check_in(f"c{i}", "entrance", float(i))
        cal.observe(
            "s-parts", [f"c{i}"], i + 0.5, [reported(places["entrance"]["s-parts"], 0, 2.7)], [3]
        )
    fit = cal.fit("s-parts", 100.0)
    assert fit is not None
    assert (fit.places, fit.usable) == (1, False)
    # Two places whose readings contradict any log-distance radio: wrong taps.
    wild = learner()
    for i in range(MIN_SAMPLES_TO_USE * 2):
        zone = ("entrance", "machines")[i % 2]
        wild.check_in(f"c{i}", zone, float(i))
        wild.observe("s-parts", [f"c{i}"], i + 0.5, [-40.0 - 30.0 * (i % 4 < 2)], [3])
    fit = wild.fit("s-parts", 100.0)
    assert fit is not None
    assert fit.places == 2
    assert fit.residual_db > 6.0
    assert not fit.usable


def test_check_in_fits_wait_for_the_refit_interval() -> None:
    cal = learner()
    cal.check_in("c1", "entrance", 0.0)
    cal.observe("s-parts", ["c1"], 1.0, [-62.0], [3])
    assert [f.box_id for f in cal.fits(1.0)] == ["s-parts"]
    cal.check_in("c2", "entrance", 2.0)
    cal.observe("s-parts", ["c2"], 3.0, [-62.0], [3])
    assert cal.fits(3.0) == []
    assert [f.samples for f in cal.fits(1.0 + REFIT_INTERVAL_S)] == [2]


def test_boxes_hearing_each_other_are_samples_of_the_listener() -> None:
    cal = learner()
    place = box_places(load(), PresenceEngine(load()).grid)["s-parts"]["s-checkout"]
    # The advertiser sends 4 dB above the reference at 1 m: that is taken out.
    rssi = reported(place, 2.0, 2.7) + 4.0
    assert cal.box_heard("s-parts", "s-checkout", 5.0, rssi, REFERENCE + 4.0)
    assert not cal.box_heard("s-parts", "s-parts", 5.0, rssi, REFERENCE)
    [sample] = cal.take_new()
    assert sample.source == "box"
    assert sample.rssi_dbm == pytest.approx(reported(place, 2.0, 2.7))


def test_forgetting_the_phone_ends_the_walk_and_reset_drops_samples() -> None:
    cal = learner()
    cal.start_walk("margot", CODE, 0.0)
    cal.join_walk(CODE, "phone", 0.0)
    cal.here("entrance", 1.0)
    stand(cal, "entrance", 1.0, TRUTH, 5)
    cal.forget("phone")
    assert cal.walk_status(10.0) is None
    assert not cal.listening
    assert cal.samples("s-parts")
    cal.reset("s-parts")
    assert cal.samples("s-parts") == []
    assert cal.samples("s-machines")
    cal.reset()
    assert cal.samples("s-machines") == []
    assert cal.fits(100.0) == []
