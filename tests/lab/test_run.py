"""The lab's loop with parts of its reality switched off (lab.run.Reality), and the options of
``python -m lab.accuracy`` that switch them.

One diagonal walker on the demo floor, seeded: each part switched off must change what reaches
the engine in the way it says, and nothing else (the random draws stay the same).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import io
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from lab.accuracy import (
    SEEDS_DIR,
    _walkers,
    add_lab_arguments,
    load_floor,
    run_lab_command,
    scenario_misfits,
)
from lab.channel import TIERS, Channel, draw_phones
from lab.floors import FLOORS
from lab.report import PARTS
from lab.run import (
    FULL,
    PHONE_MIDDLE_M,
    SHADOW_DB,
    SHADOW_MIDDLE_DB,
    STEP_S,
    Reality,
    Tally,
    simulate,
)
from store_server.floor import Floor
from store_server.presence import PresenceEngine, PresenceEvent, PresenceSettings

WALK_S = 200.0


class RecordingEngine(PresenceEngine):
    """The real engine, noting when it ticks and what windows it is given."""

    def __init__(self, floor: Floor) -> None:
        super().__init__(floor)
        self.ticks: list[float] = []
        self.windows: list[tuple[float, float]] = []  # (window end, latest tick before it)
        self.medians: list[float] = []
        self.counts: list[int] = []
        self.ends: dict[str, set[float]] = {}  # each box's window ends
        self.tally = Tally()  # what the lab's loop made of the engine's decisions

    def tick(self, now: float, limit: int | None = None) -> list[PresenceEvent]:
        self.ticks.append(now)
        return super().tick(now, limit)

    def observe_many(
        self,
        scanner_id: str,
        subjects: Sequence[str],
        t: Sequence[float],
        rssi_median: Sequence[float],
        count: Sequence[int],
        rssi_max: Sequence[float] | None = None,
        tx_power: Sequence[float | None] | None = None,
        box_window: bool = True,
    ) -> list[str]:
        latest = self.ticks[-1] if self.ticks else 0.0
        self.windows += [(end, latest) for end in t]
        self.medians += list(rssi_median)
        self.counts += list(count)
        self.ends.setdefault(scanner_id, set()).update(t)
        return super().observe_many(
            scanner_id, subjects, t, rssi_median, count, rssi_max, tx_power, box_window
        )


class RecordingChannel(Channel):
    """The real channel, noting the phone heights and the body shadows it is given."""

    heights: list[float]
    shadows: list[float]

    def mean_rssi(
        self,
        b: int,
        x: npt.NDArray[np.float64],
        y: npt.NDArray[np.float64],
        height: npt.NDArray[np.float64],
    ) -> npt.NDArray[np.float64]:
        self.heights += height.tolist()
        return super().mean_rssi(b, x, y, height)

    def readings(
        self,
        mean: npt.NDArray[np.float64],
        shadow_db: npt.NDArray[np.float64],
        model_db: npt.NDArray[np.float64],
        b: int,
        rng: np.random.Generator,
    ) -> npt.NDArray[np.float64]:
        self.shadows += shadow_db.tolist()
        return super().readings(mean, shadow_db, model_db, b, rng)


def walk(reality: Reality = FULL, channel: Channel | None = None) -> RecordingEngine:
    sc = FLOORS["demo"]
    floor = load_floor(SEEDS_DIR / sc.store_file)
    channel = channel or Channel(floor, TIERS["espresense"], np.random.default_rng([5, 1]))
    phones = _walkers(sc, sc.diagonal, 1, "diagonal", np.random.default_rng([5, 2]), 13.0)
    rng = np.random.default_rng([5, 3])
    traits = draw_phones(1, TIERS["espresense"], rng)
    engine = RecordingEngine(floor)
    engine.tally = simulate(floor, channel, engine, phones, traits, WALK_S, rng, reality)
    return engine


@pytest.fixture(scope="module")
def full() -> RecordingEngine:
    return walk()


def test_the_full_lab_ticks_every_second_and_delivers_late(full: RecordingEngine) -> None:
    assert full.ticks == pytest.approx([float(k) for k in range(1, int(WALK_S) + 1)])
    # Some windows reach the engine after a tick later than their end: the wire's delay.
    assert any(end < latest for end, latest in full.windows)


def test_without_delays_each_window_comes_before_the_next_tick(full: RecordingEngine) -> None:
    instant = walk(Reality(delays=False))
    assert instant.windows
    assert all(end > latest for end, latest in instant.windows)
    assert len(instant.windows) == len(full.windows)


def test_another_tick_period() -> None:
    engine = walk(Reality(tick_s=0.5))
    gaps = np.diff(engine.ticks)
    # Ticks come at the first 0.2 s step at or after each half second: 0.4 or 0.6 s apart.
    assert len(engine.ticks) == pytest.approx(2 * WALK_S, abs=1)
    assert set(np.round(gaps, 6)) <= {0.4, 0.6}
    assert all(gap >= STEP_S for gap in gaps)


def test_shorter_box_windows(full: RecordingEngine) -> None:
    half = walk(Reality(window_s=0.5))
    for box, ends in half.ends.items():
        gaps = np.diff(sorted(ends))
        # Each box closes a window every half second on its own clock (gaps: whole halves).
        assert np.allclose(gaps / 0.5, np.round(gaps / 0.5)), box
        assert min(gaps) == pytest.approx(0.5)
    assert all(min(np.diff(sorted(ends))) == pytest.approx(1.0) for ends in full.ends.values())
    # The same advertisements, split into more windows holding fewer each.
    assert sum(half.counts) == pytest.approx(sum(full.counts), rel=0.15)
    assert len(half.windows) > 1.1 * len(full.windows)
    assert np.mean(half.counts) < 0.8 * np.mean(full.counts)


def judged(tolerance_s: float) -> Tally:
    """The diagonal walker's tally with a lag of ``tolerance_s`` forgiven (same draws)."""
    return walk(Reality(tolerance_s=tolerance_s)).tally


def test_the_lag_forgiven_is_the_tolerance() -> None:
    # A tolerance shorter than a step of the truth forgives nothing: every wrong zone counts.
    none = judged(0.1)
    goals = judged(2.0)
    long = judged(6.0)
    assert none.samples == goals.samples == long.samples > 0
    assert none.wrong == goals.wrong == long.wrong  # the same walk, the same shown zones
    assert none.wrong_tolerant == none.wrong
    assert none.wrong > goals.wrong_tolerant > long.wrong_tolerant


def test_without_bursts_more_windows(full: RecordingEngine) -> None:
    assert len(walk(Reality(bursts=False)).windows) > len(full.windows)


def test_without_bodies_boxes_read_higher(full: RecordingEngine) -> None:
    bare = walk(Reality(bodies=False))
    assert np.mean(bare.medians) > np.mean(full.medians) + 1.0


# Six walkers start 13 s apart: all have walked in and stood by the first stop by then.
RECORD_S = 100.0


@functools.cache
def recorded(reality: Reality, phones: int = 1) -> RecordingChannel:
    """Walkers of the demo floor's diagonal through the recording channel (each reality once)."""
    sc = FLOORS["demo"]
    floor = load_floor(SEEDS_DIR / sc.store_file)
    channel = RecordingChannel(floor, TIERS["espresense"], np.random.default_rng([5, 1]))
    channel.heights, channel.shadows = [], []
    walkers = _walkers(sc, sc.diagonal, phones, "diagonal", np.random.default_rng([5, 2]), 13.0)
    rng = np.random.default_rng([5, 3])
    traits = draw_phones(phones, TIERS["espresense"], rng)
    simulate(floor, channel, PresenceEngine(floor), walkers, traits, RECORD_S, rng, reality)
    return channel


def test_without_body_spread_every_body_is_the_middle_one() -> None:
    full = recorded(FULL, phones=6)
    bodies = {round(v, 6) for v in full.shadows if v > 0.0}
    # Six walkers, six bodies of their own within the lab's range...
    assert len(bodies) == 6
    assert all(SHADOW_DB[0] <= v <= SHADOW_DB[1] for v in bodies)
    same = recorded(Reality(body_spread=False), phones=6)
    # ...or all the middle one, shadowing the same boxes at the same moments.
    assert {v for v in same.shadows if v > 0.0} == {SHADOW_MIDDLE_DB}
    assert [v > 0.0 for v in same.shadows] == [v > 0.0 for v in full.shadows]
    none = recorded(Reality(bodies=False, body_spread=False)).shadows
    assert none
    assert not any(none)


def test_the_middle_body_and_height_are_the_engines_assumptions() -> None:
    # Without body_spread and pockets the lab's reality is the one the engine models.
    assert PresenceSettings().body_shadow_db == SHADOW_MIDDLE_DB
    assert PresenceSettings().phone_height_m == PHONE_MIDDLE_M


def test_without_pockets_every_phone_at_the_middle_height() -> None:
    full = recorded(FULL, phones=6)
    # Phones in a pocket and in the hand...
    assert set(full.heights) == {0.8, 1.2}
    bare = recorded(Reality(pockets=False), phones=6)
    # ...or all at the height the engine assumes, with the same readings taken.
    assert set(bare.heights) == {PHONE_MIDDLE_M}
    assert len(bare.heights) == len(full.heights)


def test_without_multipath_no_reading_is_low() -> None:
    floor = load_floor(SEEDS_DIR / FLOORS["demo"].store_file)
    with_it = TIERS["espresense"]
    without = dataclasses.replace(with_it, multipath_share=0.0)
    mean = np.full(2000, -70.0)
    none = np.zeros(2000)
    low = Channel(floor, with_it, np.random.default_rng(1)).readings(
        mean, none, none, 0, np.random.default_rng(2)
    )
    clean = Channel(floor, without, np.random.default_rng(1)).readings(
        mean, none, none, 0, np.random.default_rng(2)
    )
    assert np.all(low <= clean)
    assert np.mean(low < clean) == pytest.approx(with_it.multipath_share, abs=0.03)


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_lab_arguments(parser)
    return parser.parse_args(argv)


def test_diagnosis_options() -> None:
    args = parse(
        "--without",
        "bodies,delays",
        "--tick-s",
        "0.5",
        "--window-s",
        "0.5",
        "--tolerance-s",
        "4",
        "--set",
        "arrive_p=0.7",
    )
    assert args.without == ("bodies", "delays")
    assert args.tick_s == 0.5
    assert args.window_s == 0.5
    assert args.tolerance_s == 4.0
    assert args.set == [("arrive_p", 0.7)]
    assert parse("--set", "tx_power_reference_dbm=none").set == [("tx_power_reference_dbm", None)]
    assert parse("--set", "miss_adverts_max=2").set == [("miss_adverts_max", 2)]
    defaults = parse()
    assert (
        defaults.without,
        defaults.tick_s,
        defaults.window_s,
        defaults.tolerance_s,
        defaults.set,
    ) == ((), FULL.tick_s, FULL.window_s, 2.0, [])
    numbers = {"tick_s", "window_s", "tolerance_s"}
    assert set(PARTS) == {f.name for f in dataclasses.fields(Reality)} - numbers


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (("--without", "wings"), "unknown part wings: choose among bodies"),
        (("--tick-s", "0"), "not a positive number of seconds"),
        (("--window-s", "-1"), "not a positive number of seconds"),
        (("--tolerance-s", "none"), "not a positive number of seconds"),
        (("--set", "arrive_p"), "expected NAME=VALUE"),
        (("--set", "no_such=1"), "expected NAME=VALUE"),
        (("--set", "arrive_p=high"), "arrive_p: not a number"),
    ],
)
def test_bad_diagnosis_options_are_named(
    argv: tuple[str, ...], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        parse(*argv)
    assert says in capsys.readouterr().err


LAYOUT = Path(__file__).resolve().parents[2] / "lab" / "layouts" / "demo-two-boxes-per-zone.toml"


def test_the_two_box_layout_is_the_demo_floor_with_more_boxes() -> None:
    shipped = load_floor(SEEDS_DIR / FLOORS["demo"].store_file)
    more = load_floor(LAYOUT)
    for name in ("outline", "doors", "window_front", "walkable", "walls", "zones"):
        assert getattr(more, name) == getattr(shipped, name), name
    assert (more.pavement_y_min, more.pavement_y_max) == (
        shipped.pavement_y_min,
        shipped.pavement_y_max,
    )
    assert set(shipped.scanners) < set(more.scanners)
    per_zone = Counter(box.zone for box in more.scanners)
    assert per_zone == dict.fromkeys((zone.id for zone in shipped.zones), 2)
    assert scenario_misfits(more, FLOORS["demo"]) == []


def test_a_store_file_the_scenarios_do_not_fit_is_named(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stop:
        run_lab_command(parse("--floor", "corner", "--store", str(LAYOUT)), io.StringIO())
    said = str(stop.value.code)
    assert f"--store: {LAYOUT}: the corner floor's scenarios do not fit this shop" in said
    assert "(1.6, 9) is not walkable ground of this shop" in said


def test_a_store_file_that_is_not_one_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.toml"
    with pytest.raises(SystemExit) as stop:
        run_lab_command(parse("--store", str(missing)), io.StringIO())
    assert f"--store: {missing}: " in str(stop.value.code)
    broken = tmp_path / "broken.toml"
    broken.write_text("[floor]\nwidth_m = -1\n", encoding="utf-8")
    with pytest.raises(SystemExit) as stop:
        run_lab_command(parse("--store", str(broken)), io.StringIO())
    # The store file's own check names the key at fault.
    assert str(stop.value.code) == f"lab.accuracy: --store: {broken}: store: expected a table"
