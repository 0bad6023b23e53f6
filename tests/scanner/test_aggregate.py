"""Window aggregation on hand-written sighting sequences."""

from __future__ import annotations

import pytest

from scanner.aggregate import MAX_SAMPLES_PER_WINDOW, Aggregator, WindowAggregate
from scanner.allowlist import SightingKey

A = SightingKey("eid", "0123456789abcdef")
B = SightingKey("eid", "fedcba9876543210")
T0 = 1_763_800_000.0


def test_count_max_median_and_wire_form() -> None:
    agg = Aggregator(1.0)
    for rssi, offset in [(-60, 0.1), (-55, 0.4), (-70, 0.9)]:
        agg.add(A, rssi, -20, T0 + offset)
    assert agg.flush(T0 + 0.99) == []
    [window] = agg.flush(T0 + 1.0)
    assert window == WindowAggregate("eid", A.id, T0, T0 + 1.0, 3, -55, -60.0, -20)
    assert window.to_wire() == {
        "id_type": "eid",
        "id": "0123456789abcdef",
        "start": 1763800000.0,
        "end": 1763800001.0,
        "count": 3,
        "rssi_max": -55,
        "rssi_median": -60.0,
        "tx_power": -20,
    }
    assert agg.flush(T0 + 100) == []
    assert len(agg) == 0


def test_even_count_median_is_the_mean_of_the_middle_pair() -> None:
    agg = Aggregator(1.0)
    for rssi in (-61, -50, -70, -64):
        agg.add(A, rssi, None, T0 + 0.5)
    [window] = agg.flush_all()
    assert window.rssi_median == -62.5
    assert window.tx_power is None


def test_windows_are_aligned_to_multiples_of_window_s() -> None:
    agg = Aggregator(2.0)
    agg.add(A, -60, None, T0 + 1.9)  # window [T0, T0 + 2)
    agg.add(A, -61, None, T0 + 2.0)  # window [T0 + 2, T0 + 4)
    agg.add(B, -62, None, T0 + 3.5)
    agg.add(A, -63, None, T0 + 3.99)
    first = agg.flush(T0 + 2.0)
    assert [(w.id, w.start, w.end, w.count) for w in first] == [(A.id, T0, T0 + 2.0, 1)]
    rest = agg.flush(T0 + 4.0)
    assert [(w.id, w.start, w.count, w.rssi_max) for w in rest] == [
        (A.id, T0 + 2.0, 2, -61),
        (B.id, T0 + 2.0, 1, -62),
    ]


def test_tx_power_keeps_the_latest_known_value() -> None:
    agg = Aggregator(1.0)
    agg.add(A, -60, None, T0)
    agg.add(A, -60, -21, T0 + 0.1)
    agg.add(A, -60, None, T0 + 0.2)
    assert agg.flush_all()[0].tx_power == -21


def test_readings_outside_the_wire_range_never_enter_a_window() -> None:
    """HCI's 127 ("RSSI not available") is not a reading; a power outside -127..20 is unknown:
    neither may make the server refuse the batch (docs/api.md ranges)."""
    agg = Aggregator(1.0)
    agg.add(A, 127, -20, T0)
    agg.add(A, -128, -20, T0 + 0.1)
    agg.add(A, 21, -20, T0 + 0.2)
    agg.add(A, -60, 21, T0 + 0.3)
    agg.add(A, -127, -128, T0 + 0.4)
    agg.add(B, 20, 127, T0 + 0.5)
    assert agg.unusable == 3
    windows = {w.id: w for w in agg.flush_all()}
    assert (windows[A.id].count, windows[A.id].rssi_max, windows[A.id].tx_power) == (2, -60, None)
    assert (windows[B.id].count, windows[B.id].rssi_max, windows[B.id].tx_power) == (1, 20, None)


def test_samples_are_bounded_but_count_and_max_see_everything() -> None:
    agg = Aggregator(1.0)
    # The first MAX_SAMPLES_PER_WINDOW samples are -80; the flood after them is stronger.
    for _ in range(MAX_SAMPLES_PER_WINDOW):
        agg.add(A, -80, None, T0)
    for _ in range(10_000):
        agg.add(A, -40, None, T0 + 0.5)
    [window] = agg.flush_all()
    assert window.count == MAX_SAMPLES_PER_WINDOW + 10_000
    assert window.rssi_max == -40
    assert window.rssi_median == -80.0


def test_flush_all_returns_everything_in_order() -> None:
    agg = Aggregator(1.0)
    agg.add(B, -50, None, T0 + 5.2)
    agg.add(A, -50, None, T0 + 5.7)
    agg.add(B, -50, None, T0 + 1.0)
    assert [(w.start, w.id) for w in agg.flush_all()] == [
        (T0 + 1.0, B.id),
        (T0 + 5.0, A.id),
        (T0 + 5.0, B.id),
    ]
    assert agg.flush_all() == []


@pytest.mark.parametrize("window_s", [0.0, -1.0, float("nan"), float("inf")])
def test_window_must_be_positive(window_s: float) -> None:
    with pytest.raises(ValueError, match="window_s"):
        Aggregator(window_s)
