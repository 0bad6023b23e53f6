"""The pure bookkeeping of legacy static iBeacon ids: maps, entries and versioned removals."""

from __future__ import annotations

import itertools
import re

from store_server.static_ids import STATIC_ID_TTL_S, StaticIds, new_ibeacon_id

ID_A = "f7826da6-4fa2-4e98-8024-bc5b71e0893e:1:2"
ID_B = "f7826da6-4fa2-4e98-8024-bc5b71e0893e:3:4"
ID_C = "f7826da6-4fa2-4e98-8024-bc5b71e0893e:5:6"


def counter(start: int = 1) -> itertools.count[int]:
    return itertools.count(start)


def test_update_serves_wanted_ids_and_records_one_version_per_change() -> None:
    static = StaticIds()
    versions = counter()
    assert static.update(["alice", "bob"], {"alice": ID_A, "bob": ID_B}, versions.__next__)
    assert dict(static.customer_of) == {ID_A: "alice", ID_B: "bob"}
    assert sorted(static.customers()) == ["alice", "bob"]
    assert len(static) == 2
    # One change took exactly one version.
    assert next(versions) == 2


def test_update_without_change_takes_no_version() -> None:
    static = StaticIds()
    static.update(["alice"], {"alice": ID_A}, counter().__next__)
    calls: list[int] = []

    def next_version() -> int:
        calls.append(1)
        return 99

    assert not static.update(["alice", "alice"], {"alice": ID_A}, next_version)
    assert not static.update(["nobody"], {}, next_version)
    assert calls == []


def test_customer_missing_from_wanted_loses_their_id_others_keep_theirs() -> None:
    static = StaticIds()
    versions = counter()
    static.update(["alice", "bob"], {"alice": ID_A, "bob": ID_B}, versions.__next__)
    assert static.update(["alice"], {}, versions.__next__)
    assert dict(static.customer_of) == {ID_B: "bob"}
    assert static.customers() == ["bob"]


def test_replaced_id_is_removed_and_new_one_served() -> None:
    static = StaticIds()
    versions = counter()
    static.update(["alice"], {"alice": ID_A}, versions.__next__)
    static.update(["alice"], {"alice": ID_C}, versions.__next__)
    assert dict(static.customer_of) == {ID_C: "alice"}
    assert static.removed_since(1) == [ID_A]


def test_entries_carry_the_ttl_from_now() -> None:
    static = StaticIds()
    static.update(["alice"], {"alice": ID_A}, counter().__next__)
    assert static.entries(1000.0) == [
        {"id_type": "ibeacon", "id": ID_A, "not_after": 1000.0 + STATIC_ID_TTL_S}
    ]
    assert StaticIds().entries(1000.0) == []


def test_removed_since_counts_only_later_versions_and_skips_re_added_ids() -> None:
    static = StaticIds()
    static.update(["alice", "bob"], {"alice": ID_A, "bob": ID_B}, lambda: 10)
    static.update(["alice"], {}, lambda: 11)
    static.update(["bob"], {}, lambda: 12)
    assert static.removed_since(9) == [ID_A, ID_B]
    assert static.removed_since(11) == [ID_B]
    assert static.removed_since(12) == []
    # Served again after its removal: not reported as removed.
    static.update(["alice"], {"alice": ID_A}, lambda: 13)
    assert static.removed_since(9) == [ID_B]


def test_history_is_bounded() -> None:
    static = StaticIds(history_versions=2)
    static.update(["alice"], {"alice": ID_A}, lambda: 1)
    static.update(["alice"], {}, lambda: 2)
    static.update(["bob"], {"bob": ID_B}, lambda: 3)
    static.update(["carol"], {"carol": ID_C}, lambda: 4)
    # The removal at version 2 fell out of the two kept changes.
    assert static.removed_since(0) == []


def test_new_ibeacon_id_has_the_scanner_allowlist_form() -> None:
    pattern = re.compile(
        r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}:(\d+):(\d+)"
    )
    ids = {new_ibeacon_id() for _ in range(20)}
    assert len(ids) == 20
    for static_id in ids:
        match = pattern.fullmatch(static_id)
        assert match is not None
        assert all(0 <= int(part) < 2**16 for part in match.groups())
