"""The chain's key flow, pure parts: temporary keys resolve exactly what identity keys do, for
this period and the next, and nothing once they expire; sealing to the key authority."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from store_server import eid
from store_server.keyseal import (
    authority_wrap_key,
    chain_keys,
    generate_authority_key,
    load_private_key,
    seal,
    unseal,
)
from store_server.keywrap import KeyWrapError
from store_server.resolver import EidResolver
from store_server.tempkeys import (
    KEY_HORIZON_S,
    SLOT_SECONDS,
    TemporaryKeyRecord,
    compute_temporary_keys,
    slot_of,
    slots_needed,
)

NOW = 1_800_000_000.0
SKEW = 1
PRIVATE_PEM, PUBLIC_PEM = generate_authority_key()


def _authority_keys(record: eid.IdentityRecord, now: float) -> TemporaryKeyRecord:
    """What the key authority gives a store server for ``record`` at ``now``."""
    slots = slots_needed(now, record.k, record.clock_offset_s, SKEW, KEY_HORIZON_S)
    tks = compute_temporary_keys(record.identity_key, record.k, record.clock_offset_s, slots, SKEW)
    return TemporaryKeyRecord(record.subject, record.k, record.clock_offset_s, tuple(tks))


def test_a_store_server_resolves_this_period_and_the_next_then_nothing() -> None:
    record = eid.IdentityRecord("c_1", eid.new_identity_key(), 9, 12_345.0)
    keys = _authority_keys(record, NOW)
    assert 2 <= len(keys.keys) <= 3  # this slot and the next (and one more near an edge)
    resolver = EidResolver(skew_windows=SKEW)
    resolver.upsert(keys, NOW)
    # Now, and at every rotation through the next period: resolved, and allowlisted.
    t = NOW
    while t < NOW + KEY_HORIZON_S:
        resolver.advance(t)
        broadcast = eid.eid_at(record, t)
        assert resolver.resolve(broadcast, t) == "c_1"
        assert broadcast in {item.eid for item in resolver.entries(t)}
        t += 1 << record.k
    # Past the keys it holds (nothing new from the authority): nothing resolves, nothing listed.
    later = NOW + 3 * SLOT_SECONDS
    resolver.advance(later)
    assert resolver.resolve(eid.eid_at(record, later), later) is None
    assert resolver.entries(later) == []
    assert "c_1" in resolver  # still consenting: recognised again once keys come
    resolver.upsert(_authority_keys(record, later), later)
    assert resolver.resolve(eid.eid_at(record, later), later) == "c_1"


@settings(max_examples=60, deadline=None)
@given(
    offset=st.floats(min_value=-(2.0**33), max_value=2.0**33, allow_nan=False),
    k=st.integers(min_value=0, max_value=15),
    step=st.floats(min_value=0, max_value=KEY_HORIZON_S),
)
def test_temporary_keys_give_the_identity_keys_eids(offset: float, k: int, step: float) -> None:
    """Across slot edges and the counter's wrap: the same allowlist from either key."""
    record = eid.IdentityRecord("c_1", bytes(range(16)), k, offset)
    from_identity = EidResolver(skew_windows=SKEW)
    from_identity.upsert(record, NOW)
    from_temporary = EidResolver(skew_windows=SKEW)
    from_temporary.upsert(_authority_keys(record, NOW), NOW)
    t = NOW + step
    from_identity.advance(t)
    from_temporary.advance(t)
    assert sorted(i.eid for i in from_temporary.entries(t)) == sorted(
        i.eid for i in from_identity.entries(t)
    )
    assert from_temporary.resolve(eid.eid_at(record, t), t) == "c_1"


def test_slots_needed_cover_the_horizon_and_drift() -> None:
    offset = SLOT_SECONDS - NOW % SLOT_SECONDS - 100.0  # the app's slot ends in 100 s
    slots = slots_needed(NOW, 9, offset, SKEW, KEY_HORIZON_S)
    current = slot_of(NOW, offset)
    assert list(slots) == [current, current + 1, current + 2]
    far = SLOT_SECONDS // 2 - NOW % SLOT_SECONDS  # mid-slot: no edge within the drift
    assert len(slots_needed(NOW, 9, far, SKEW, KEY_HORIZON_S)) == 2


def test_a_removed_subject_keeps_no_temporary_key() -> None:
    record = eid.IdentityRecord("c_1", eid.new_identity_key(), 9, 0.0)
    resolver = EidResolver(skew_windows=SKEW)
    resolver.upsert(_authority_keys(record, NOW), NOW)
    assert resolver._tks
    assert resolver.remove("c_1")
    assert resolver._tks == {}
    assert not any(resolver._keys)


def test_sealed_keys_open_with_the_authority_only_for_their_subject() -> None:
    keys = chain_keys(bytes(32), PUBLIC_PEM, None)
    assert keys.private_key is None
    key = eid.new_identity_key()
    blob = seal(keys.public_key, key, b"bulle/identity/c_1")
    private = load_private_key(PRIVATE_PEM)
    assert unseal(private, blob, b"bulle/identity/c_1") == key
    with pytest.raises(KeyWrapError):
        unseal(private, blob, b"bulle/identity/c_2")
    other_private = load_private_key(generate_authority_key()[0])
    with pytest.raises(KeyWrapError):
        unseal(other_private, blob, b"bulle/identity/c_1")
    assert authority_wrap_key(private) == authority_wrap_key(load_private_key(PRIVATE_PEM))
    assert authority_wrap_key(private) != authority_wrap_key(other_private)
    # A public key that is not the private key's is refused.
    with pytest.raises(KeyWrapError):
        chain_keys(bytes(32), generate_authority_key()[1], PRIVATE_PEM)


def test_a_subject_without_keys_yet_is_held_and_moves_rarely() -> None:
    """Consenting, no temporary key yet: held (check-in works), nothing listed, and its empty
    windows are not recomputed every second."""
    resolver = EidResolver(skew_windows=SKEW)
    resolver.upsert(TemporaryKeyRecord("c_1", eid.MAX_ROTATION_EXPONENT, 0.0, ()), NOW)
    assert "c_1" in resolver
    assert resolver.entries(NOW) == []
    before = resolver.eid_computations
    for second in range(1, 120):
        resolver.advance(NOW + second)
    assert resolver.eid_computations - before <= 3
