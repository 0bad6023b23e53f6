"""services.restore.refusals_after: which refusals of the replaced log a restore applies again."""

from __future__ import annotations

from store_server.consent import ChainedEntry, LogEntry
from store_server.services.restore import refusals_after


def _row(seq: int, action: str, at: float, digest: str | None = None) -> ChainedEntry:
    entry = LogEntry(f"ref{seq}", "greeting", action, None, None, "app", None, at)
    return ChainedEntry(seq, entry, f"prev{seq}", digest or f"hash{seq}")


def test_refusals_past_the_common_prefix() -> None:
    replaced = [_row(1, "grant", 10), _row(2, "withdraw", 20), _row(3, "grant", 30)]
    replaced += [_row(4, "erase", 40), _row(5, "withdraw", 50)]
    restored = replaced[:3]
    assert [e.subject_ref for e in refusals_after(replaced, restored)] == ["ref4", "ref5"]
    assert refusals_after(replaced, replaced) == []


def test_diverged_logs_fall_back_to_time() -> None:
    replaced = [_row(1, "grant", 10), _row(2, "erase", 20), _row(3, "withdraw", 35)]
    restored = [_row(1, "grant", 10), _row(2, "grant", 30, digest="other")]
    assert [e.subject_ref for e in refusals_after(replaced, restored)] == ["ref3"]


def test_an_empty_restored_log_takes_every_refusal() -> None:
    replaced = [_row(1, "grant", 10), _row(2, "erase", 20)]
    assert [e.action for e in refusals_after(replaced, [])] == ["erase"]
