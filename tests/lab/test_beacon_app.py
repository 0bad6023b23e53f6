"""The reference app's store-beacon protocol and the phone OS around it (pure, explicit time)."""

from __future__ import annotations

import uuid

from lab.beacon_app import (
    RANGING_BUDGET_S,
    AppState,
    BeaconCheckInApp,
    PostProof,
    RangedBeacon,
    Region,
    RegionMonitor,
    StartRanging,
    StopRanging,
)

CHAIN = uuid.UUID("6f1e2d3c-1b2a-4c5d-8e9f-00000000b011")
OTHER = uuid.UUID(int=CHAIN.int ^ 1)
REGION = Region(CHAIN, 4)
T0 = 1_800_000_000.0


def test_enter_range_post_then_stop_once_checked_in() -> None:
    app = BeaconCheckInApp(REGION)
    assert app.region_entered(T0) == [StartRanging()]
    # Faint, foreign or unknown (iOS's 0) beacons: nothing worth posting.
    faint = [
        RangedBeacon(CHAIN, 4, 10, -90),
        RangedBeacon(OTHER, 4, 11, -50),
        RangedBeacon(CHAIN, 5, 12, -50),
        RangedBeacon(CHAIN, 4, 13, 0),
    ]
    assert app.ranged(faint, T0 + 1) == []
    heard = [RangedBeacon(CHAIN, 4, 21, -75), RangedBeacon(CHAIN, 4, 22, -61)]
    (post,) = app.ranged(heard, T0 + 2)
    assert isinstance(post, PostProof)
    assert post.body == {
        "beacons": [
            {"uuid": str(CHAIN).upper(), "major": 4, "minor": 22, "rssi": -61, "seen_at": T0 + 2},
            {"uuid": str(CHAIN).upper(), "major": 4, "minor": 21, "rssi": -75, "seen_at": T0 + 2},
        ]
    }
    assert app.ranged(heard, T0 + 2.5) == []  # one post at a time
    assert app.answered(200, {"checked_in": False, "reason": "not_inside"}, T0 + 2.6) == []
    assert app.state is AppState.RANGING
    assert isinstance(app.ranged(heard, T0 + 3)[0], PostProof)
    answer = {"checked_in": True, "via": "beacon_proof", "zone": "parts"}
    assert app.answered(200, answer, T0 + 3.2) == [StopRanging()]
    assert (app.state, app.zone, app.checked_in_at) == (AppState.CHECKED_IN, "parts", T0 + 3.2)
    assert app.ranged(heard, T0 + 4) == []
    assert app.region_exited(T0 + 60) == []
    assert app.region_entered(T0 + 120) == [StartRanging()]  # a new visit, a new attempt


def test_a_curable_refusal_is_retried_once_then_the_app_gives_up() -> None:
    app = BeaconCheckInApp(REGION)
    app.region_entered(T0)
    near = [RangedBeacon(CHAIN, 4, 7, -60)]
    stale = {"error": {"code": "beacon_stale", "message": "..."}}
    app.ranged(near, T0 + 1)
    assert app.answered(403, stale, T0 + 1.1) == []
    assert app.state is AppState.RANGING
    app.ranged(near, T0 + 2)
    assert app.answered(403, stale, T0 + 2.1) == [StopRanging()]
    assert (app.state, app.refusal) == (AppState.GAVE_UP, "beacon_stale")


def test_other_answers_end_the_attempt() -> None:
    for status, body, state in (
        (403, {"error": {"code": "beacon_wrong_store"}}, AppState.GAVE_UP),
        (429, {"error": {"code": "rate_limited"}}, AppState.GAVE_UP),
        (200, {"checked_in": False, "reason": "no_consent"}, AppState.NOT_CHECKED_IN),
    ):
        app = BeaconCheckInApp(REGION)
        app.region_entered(T0)
        app.ranged([RangedBeacon(CHAIN, 4, 7, -60)], T0 + 1)
        assert app.answered(status, body, T0 + 2) == [StopRanging()]
        assert app.state is state


def test_background_ranging_stops_after_its_budget() -> None:
    app = BeaconCheckInApp(REGION)
    app.region_entered(T0)
    faint = [RangedBeacon(CHAIN, 4, 7, -95)]
    assert app.ranged(faint, T0 + RANGING_BUDGET_S - 1) == []
    assert app.ranged(faint, T0 + RANGING_BUDGET_S) == [StopRanging()]
    assert app.state is AppState.GAVE_UP


def test_the_os_enters_after_a_delay_ranges_each_second_and_exits_after_30_s() -> None:
    os = RegionMonitor(Region(CHAIN), entry_delay_s=1.0)
    box = {"s-1": (CHAIN, 4, 99, -70)}
    assert os.heard(T0, box) == []
    assert os.heard(T0 + 0.5, {"s-2": (OTHER, 4, 1, -40)}) == []
    assert os.heard(T0 + 1.0, box) == [("enter", None)]
    os.perform([StartRanging()])
    assert os.heard(T0 + 1.25, box) == []
    assert os.heard(T0 + 1.5, {"s-1": (CHAIN, 4, 99, -60)}) == []
    (ranged,) = os.heard(T0 + 2.25, box)
    assert ranged == ("ranged", [RangedBeacon(CHAIN, 4, 99, -67)])  # averaged, as iOS does
    os.perform([StopRanging()])
    assert os.heard(T0 + 20, {}) == []
    assert os.heard(T0 + 32.25, {}) == [("exit", None)]
    assert not os.inside
