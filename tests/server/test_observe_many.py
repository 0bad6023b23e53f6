"""PresenceEngine.observe_many leaves the engine exactly as one observe per window would."""

from __future__ import annotations

import tomllib
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from store_server.floor import Floor, floor_from_dict
from store_server.presence import Observation, PresenceEngine

STORE = Path(__file__).resolve().parents[2] / "seeds" / "store.toml"
SCANNERS = ("s-entrance", "s-machines", "s-parts", "s-checkout", "s-unknown")
SUBJECTS = ("a", "b", "c")


def load_floor() -> Floor:
    with STORE.open("rb") as handle:
        return floor_from_dict(tomllib.load(handle))


FLOOR = load_floor()

window = st.tuples(
    st.sampled_from(SUBJECTS),
    st.integers(0, 40).map(lambda n: 1000.0 + n / 2),  # repeats, disorder, > max age apart
    st.sampled_from([-50.0, -60.0, -70.0, -75.0, -90.0, float("nan")]),
    st.sampled_from([1, 3, 0]),
)


def snapshot(engine: PresenceEngine) -> object:
    """Everything the engine holds, as plain values."""
    subjects = {
        name: (
            state.last_seen,
            state.dirty,
            state.arrived,
            {sid: (tuple(tr.windows), tr.last_t) for sid, tr in state.tracks.items()},
        )
        for name, state in engine._subjects.items()
    }
    return subjects, dict(engine._scanner_last), engine._now


@settings(max_examples=150, deadline=None)
@given(
    batches=st.lists(
        st.tuples(st.sampled_from(SCANNERS), st.lists(window, max_size=12)), max_size=8
    )
)
def test_same_state_events_and_taken_windows(
    batches: list[tuple[str, list[tuple[str, float, float, int]]]],
) -> None:
    one = PresenceEngine(FLOOR)
    many = PresenceEngine(FLOOR)
    for scanner_id, windows in batches:
        taken = []
        for subject, t, median, count in windows:
            before = snapshot(one)
            assert one.observe(Observation(subject, scanner_id, t, median, median, count)) == []
            if snapshot(one) != before:
                taken.append(subject)
        got = many.observe_many(
            scanner_id,
            [w[0] for w in windows],
            [w[1] for w in windows],
            [w[2] for w in windows],
            [w[3] for w in windows],
        )
        assert got == taken
        assert snapshot(many) == snapshot(one)
        t = max((w[1] for w in windows), default=1000.0)
        assert many.decide_arrivals(set(got), t) == one.decide_arrivals(set(SUBJECTS), t)
        assert snapshot(many) == snapshot(one)
    assert many.tick(1100.0) == one.tick(1100.0)


def test_a_strong_interior_window_is_taken_then_ignored_when_repeated() -> None:
    engine = PresenceEngine(FLOOR)
    assert engine.observe_many("s-machines", ["a", "a"], [10.0, 10.0], [-50.0, -50.0], [3, 3]) == [
        "a"
    ]
    assert engine.observe_many("s-machines", ["a"], [10.0], [-50.0], [3]) == []
    events = engine.decide_arrivals({"a"}, 10.0)
    assert [(e.kind, e.subject) for e in events] == [("arrived", "a")]
