"""The consent change feed's pure rules: what to apply from a read, and when the view is fresh."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from store_server.changefeed import (
    HOLE_GRACE_S,
    ConsentView,
    FeedCursor,
    FeedEntry,
    plan,
)


def _e(seq: int, ref: str = "a", action: str = "withdraw", at: float = 0.0) -> FeedEntry:
    return FeedEntry(seq, ref, action, at)  # type: ignore[arg-type]


# -- plan ----------------------------------------------------------------------------------


def test_withdrawals_and_erasures_are_applied_in_log_order() -> None:
    out = plan(FeedCursor(0), [_e(2, "b", "erase"), _e(1, "a"), _e(3, "c")], now=100.0)
    assert out.leaving == (("a", "withdrawn"), ("b", "erased"), ("c", "withdrawn"))
    assert out.cursor == FeedCursor(3)
    assert out.granted_since is None


def test_entries_at_or_below_the_cursor_are_not_applied_again() -> None:
    out = plan(FeedCursor(5), [_e(4, "old"), _e(5, "old"), _e(6, "new")], now=0.0)
    assert out.leaving == (("new", "withdrawn"),)
    assert out.cursor.seq == 6


def test_an_erasure_wins_over_a_withdrawal_of_the_same_subject() -> None:
    out = plan(FeedCursor(0), [_e(1, "a", "erase"), _e(2, "a", "withdraw")], now=0.0)
    assert out.leaving == (("a", "erased"),)
    out = plan(FeedCursor(0), [_e(1, "a", "withdraw"), _e(2, "a", "erase")], now=0.0)
    assert out.leaving == (("a", "erased"),)


def test_grants_report_the_earliest_grant_time() -> None:
    entries = [_e(1, "a", "grant", at=50.0), _e(2, "b", "renew", at=40.0), _e(3, "c", at=60.0)]
    out = plan(FeedCursor(0), entries, now=100.0)
    assert out.granted_since == 40.0
    assert out.leaving == (("c", "withdrawn"),)


def test_a_gap_opens_holes_that_are_read_again() -> None:
    out = plan(FeedCursor(1), [_e(4)], now=10.0)
    assert out.cursor.seq == 4
    assert set(out.cursor.holes) == {2, 3}
    assert out.cursor.read_after == 1  # the next read starts below the oldest hole


def test_a_late_commit_filling_a_hole_is_applied_once() -> None:
    cursor = plan(FeedCursor(1), [_e(3, "b")], now=10.0).cursor
    # The next read returns the late entry 2 and entry 3 again.
    out = plan(cursor, [_e(2, "late"), _e(3, "b")], now=11.0)
    assert out.leaving == (("late", "withdrawn"),)
    assert out.cursor == FeedCursor(3)
    assert out.cursor.read_after == 3


def test_holes_are_given_up_after_the_grace_period() -> None:
    cursor = plan(FeedCursor(0), [_e(2)], now=0.0).cursor
    assert cursor.holes == {1: 0.0}
    still = plan(cursor, [_e(2)], now=HOLE_GRACE_S - 0.1).cursor
    assert 1 in still.holes
    gone = plan(still, [_e(2)], now=HOLE_GRACE_S).cursor
    assert gone.holes == {}
    assert gone.read_after == 2


def test_nothing_read_keeps_the_cursor() -> None:
    out = plan(FeedCursor(7), [], now=0.0)
    assert out.cursor == FeedCursor(7)
    assert out.leaving == ()


@settings(deadline=None)  # pure and fast, but the machine is shared
@given(st.lists(st.integers(min_value=1, max_value=40), unique=True), st.randoms())
def test_reading_in_any_split_applies_each_withdrawal_exactly_once(
    seqs: list[int], rnd: object
) -> None:
    """Whatever the order of commits and reads, each entry is applied once, none is lost
    (within the grace period)."""
    import random

    assert isinstance(rnd, random.Random)
    committed: list[int] = []
    order = list(seqs)
    rnd.shuffle(order)  # commit order differs from sequence order (slow writers)
    cursor = FeedCursor(0)
    applied: list[str] = []
    for seq in order:
        committed.append(seq)
        visible = [_e(s, f"s{s}") for s in committed if s > cursor.read_after]
        out = plan(cursor, visible, now=0.0)
        applied += [ref for ref, _ in out.leaving]
        cursor = out.cursor
    assert sorted(applied) == sorted(f"s{s}" for s in seqs)


# -- the view ------------------------------------------------------------------------------


def test_a_new_view_is_stale_until_a_first_catch_up() -> None:
    view = ConsentView(30.0)
    assert view.status(0.0).state == "stale"
    view.caught_up(0.0)
    assert view.fresh(0.0)


def test_the_view_goes_stale_past_the_bound() -> None:
    view = ConsentView(30.0)
    view.caught_up(100.0)
    assert view.fresh(130.0)
    status = view.status(130.5)
    assert status.state == "stale"
    assert status.age_s == pytest.approx(30.5)


def test_the_bound_is_measured_from_the_start_of_the_catch_up() -> None:
    view = ConsentView(30.0)
    view.caught_up(100.0)  # a catch-up that started at 100 and finished much later
    assert not view.fresh(131.0)


def test_losing_the_database_is_down_at_once() -> None:
    view = ConsentView(30.0)
    view.caught_up(100.0)
    view.lost(101.0)
    assert view.status(101.0).state == "down"


def test_after_a_reconnection_nothing_is_fresh_before_a_new_catch_up() -> None:
    view = ConsentView(30.0)
    view.caught_up(100.0)
    view.lost(101.0)
    view.reconnected()
    assert view.status(102.0).state == "recovering"
    # A catch-up that had started before the loss does not count.
    view.caught_up(100.5)
    assert view.status(102.0).state == "recovering"
    view.caught_up(102.0)
    assert view.fresh(102.5)


def test_a_catch_up_after_the_loss_proves_the_database_answers() -> None:
    view = ConsentView(30.0)
    view.lost(5.0)
    view.caught_up(6.0)
    assert view.fresh(6.0)


def test_an_older_catch_up_never_moves_freshness_back() -> None:
    view = ConsentView(30.0)
    view.caught_up(100.0)
    view.caught_up(90.0)
    assert view.status(100.0).age_s == 0.0


def test_the_bound_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        ConsentView(0)
