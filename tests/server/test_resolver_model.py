"""The compact EID resolver against a brute-force model under random operations."""

from __future__ import annotations

import random

import pytest

from store_server.eid import IdentityError, IdentityRecord, eid_at
from store_server.resolver import EidResolver, build_windows

NOW = 1_763_800_000.0
"""Fixed server time: the test is deterministic."""


def _record(rng: random.Random, subject: str) -> IdentityRecord:
    k = rng.choice([0, 3, 9])
    return IdentityRecord(subject, rng.randbytes(16), k, float(rng.randrange(0, 2**32)) - NOW)


def _expected(record: IdentityRecord, now: float, skew: int) -> set[bytes]:
    """EIDs of windows current-skew .. current+skew, straight from eid_at."""
    step = 2**record.k
    return {eid_at(record, now + d * step) for d in range(-skew, skew + 1)}


@pytest.mark.parametrize("skew", [0, 1, 2])
def test_resolver_matches_model(skew: int) -> None:
    rng = random.Random(skew)
    resolver = EidResolver(skew_windows=skew)
    live: dict[str, IdentityRecord] = {}
    gone: list[IdentityRecord] = []
    now = NOW
    for step in range(300):
        op = rng.random()
        subject = f"c-{rng.randrange(40)}"
        if op < 0.35:
            record = _record(rng, subject)
            if subject in live:
                gone.append(live[subject])
            live[subject] = record
            resolver.upsert(record, now)
        elif op < 0.45 and live:
            batch = [_record(rng, f"c-{rng.randrange(40)}") for _ in range(rng.randrange(1, 6))]
            for record in batch:
                if record.subject in live:
                    gone.append(live[record.subject])
                live[record.subject] = record
            resolver.upsert_many(batch, now)
        elif op < 0.55 and subject in live:
            gone.append(live.pop(subject))
            assert resolver.remove(subject)
        else:
            now += rng.choice([1, 7, 60, 600])
            resolver.advance(now)
        assert sorted(resolver.subjects()) == sorted(live), step
        accepted = {item.eid for item in resolver.entries(now)}
        for record in live.values():
            expected = _expected(record, now, skew)
            assert expected <= accepted, step
            for eid in expected:
                assert resolver.resolve(eid, now) == record.subject
        current_eids = {e for r in live.values() for e in _expected(r, now, skew)}
        for old in gone[-5:]:
            eid = eid_at(old, now)
            if eid not in current_eids:
                assert resolver.resolve(eid, now) is None
                assert eid not in accepted
        assert len(accepted) == len(live) * (2 * skew + 1)


def test_windows_built_elsewhere_build_the_same_resolver() -> None:
    rng = random.Random(7)
    records = [_record(rng, f"c-{i}") for i in range(50)]
    plain = EidResolver()
    plain.upsert_many(records, NOW)
    built = EidResolver()
    built.expect(r.subject for r in records)
    assert len(built) == 50
    assert all(r.subject in built for r in records)
    assert built.resolve(eid_at(records[0], NOW), NOW) is None  # expected, not resolvable yet
    version = built.version
    for start in range(0, 50, 16):
        assert built.install(build_windows(records[start : start + 16], NOW, 1)) == len(
            records[start : start + 16]
        )
    assert built.version == version + 4
    assert built.expected == 0
    assert sorted(i.eid for i in built.entries(NOW)) == sorted(i.eid for i in plain.entries(NOW))
    for record in records:
        assert built.resolve(eid_at(record, NOW), NOW) == record.subject
    # Built a while ago: the windows move on at the next advance, as if built in place.
    late = EidResolver()
    late.expect(r.subject for r in records)
    late.install(build_windows(records, NOW - 2_000, 1))
    late.advance(NOW)
    assert sorted(i.eid for i in late.entries(NOW)) == sorted(i.eid for i in plain.entries(NOW))
    with pytest.raises(IdentityError):
        late.install(build_windows(records[:3], NOW, 2))


def test_install_skips_subjects_removed_or_rekeyed_meanwhile() -> None:
    rng = random.Random(8)
    records = [_record(rng, f"c-{i}") for i in range(4)]
    resolver = EidResolver()
    resolver.expect(r.subject for r in records)
    removals = resolver.removals
    assert resolver.remove("c-0")
    assert resolver.removals == removals + 1
    fresh = _record(rng, "c-1")
    resolver.upsert(fresh, NOW)
    assert resolver.install(build_windows(records, NOW, 1)) == 2
    assert "c-0" not in resolver
    assert resolver.resolve(eid_at(records[0], NOW), NOW) is None
    assert resolver.resolve(eid_at(records[1], NOW), NOW) is None
    assert resolver.resolve(eid_at(fresh, NOW), NOW) == "c-1"
    assert resolver.resolve(eid_at(records[2], NOW), NOW) == "c-2"
    assert sorted(resolver.subjects()) == ["c-1", "c-2", "c-3"]


def test_slots_of_removed_subjects_are_reused_without_a_trace() -> None:
    rng = random.Random(9)
    first = [_record(rng, f"c-{i}") for i in range(6)]
    resolver = EidResolver()
    resolver.upsert_many(first, NOW)
    for record in first[:4]:
        assert resolver.remove(record.subject)
    # Repeats and subjects already held are counted once; the freed slots are taken first.
    later = [_record(rng, f"d-{i}") for i in range(5)]
    resolver.expect([*(r.subject for r in later), "d-0", first[4].subject])
    assert resolver.expected == 5
    assert resolver.install(build_windows(later, NOW, 1)) == 5
    assert sorted(resolver.subjects()) == sorted(r.subject for r in [*first[4:], *later])
    for record in first[:4]:
        assert resolver.resolve(eid_at(record, NOW), NOW) is None
    for record in [*first[4:], *later]:
        assert resolver.resolve(eid_at(record, NOW), NOW) == record.subject
    assert len(resolver.entries(NOW)) == 3 * 7
    # The removed subjects' keys are gone from the key array.
    keys = bytes(resolver._keys)
    assert not any(record.identity_key in keys for record in first[:4])
