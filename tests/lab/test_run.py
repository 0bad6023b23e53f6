"""The lab's loop with parts of its reality switched off (lab.run.Reality), and the options of
``python -m lab.accuracy`` that switch them.

One diagonal walker on the demo floor, seeded: each part switched off must change what reaches
the engine in the way it says, and nothing else (the random draws stay the same).
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Sequence

import numpy as np
import pytest

from lab.accuracy import SEEDS_DIR, _walkers, add_lab_arguments, load_floor
from lab.channel import TIERS, Channel, draw_phones
from lab.floors import FLOORS
from lab.report import PARTS
from lab.run import FULL, STEP_S, Reality, simulate
from store_server.floor import Floor
from store_server.presence import PresenceEngine, PresenceEvent

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


def walk(reality: Reality = FULL) -> RecordingEngine:
    sc = FLOORS["demo"]
    floor = load_floor(SEEDS_DIR / sc.store_file)
    channel = Channel(floor, TIERS["espresense"], np.random.default_rng([5, 1]))
    phones = _walkers(sc, sc.diagonal, 1, "diagonal", np.random.default_rng([5, 2]), 13.0)
    rng = np.random.default_rng([5, 3])
    traits = draw_phones(1, TIERS["espresense"], rng)
    engine = RecordingEngine(floor)
    simulate(floor, channel, engine, phones, traits, WALK_S, rng, reality)
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


def test_without_bursts_more_windows(full: RecordingEngine) -> None:
    assert len(walk(Reality(bursts=False)).windows) > len(full.windows)


def test_without_bodies_boxes_read_higher(full: RecordingEngine) -> None:
    bare = walk(Reality(bodies=False))
    assert np.mean(bare.medians) > np.mean(full.medians) + 1.0


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
        "--set",
        "arrive_p=0.7",
    )
    assert args.without == ("bodies", "delays")
    assert args.tick_s == 0.5
    assert args.window_s == 0.5
    assert args.set == [("arrive_p", 0.7)]
    assert parse("--set", "tx_power_reference_dbm=none").set == [("tx_power_reference_dbm", None)]
    assert parse("--set", "miss_adverts_max=2").set == [("miss_adverts_max", 2)]
    defaults = parse()
    assert (defaults.without, defaults.tick_s, defaults.window_s, defaults.set) == (
        (),
        FULL.tick_s,
        FULL.window_s,
        [],
    )
    assert set(PARTS) == {f.name for f in dataclasses.fields(Reality)} - {"tick_s", "window_s"}


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (("--without", "wings"), "unknown part wings: choose among bodies"),
        (("--tick-s", "0"), "not a positive number of seconds"),
        (("--window-s", "-1"), "not a positive number of seconds"),
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
