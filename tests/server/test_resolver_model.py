"""The compact EID resolver against a brute-force model under random operations."""

from __future__ import annotations

import random

import pytest

from store_server.identity import EidResolver, IdentityRecord, eid_at

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
