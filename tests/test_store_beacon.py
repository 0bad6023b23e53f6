"""The store beacon's values and proof check (store_beacon.proof), shared by box and server."""

from __future__ import annotations

import hashlib
import hmac
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from store_beacon import (
    SLOT_S,
    ProofMatch,
    ProofRefused,
    Refusal,
    StoreBeacon,
    advertised_now,
    key_from_text,
    match_proof,
    minor_for,
    next_slot_at,
    slot_of,
)

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))
CHAIN = uuid.UUID("b0110000-0000-4000-8000-00000000c4a1")
MAJOR = 42
BOXES = ("entrance", "till", "fitting-rooms")
# A time inside slot 5_800_000 (2025-02-19), 100 s after it starts.
NOW = 5_800_000 * SLOT_S + 100.0

keys = st.binary(min_size=16, max_size=64)
majors = st.integers(min_value=0, max_value=0xFFFF)
box_ids = st.text(min_size=1, max_size=40).filter(lambda s: len(s.encode("utf-8")) <= 0xFFFF)
times = st.floats(min_value=SLOT_S * 14, max_value=2**40, allow_nan=False)


def test_known_answer_follows_the_documented_message() -> None:
    """docs/api.md's construction written out byte by byte, and a fixed vector."""
    message = (
        b"bulle-store-beacon-v1"
        + b"\x00\x2a"
        + b"\x00\x08entrance"
        + (5_800_000).to_bytes(8, "big")
    )
    digest = hmac.new(KEY, message, hashlib.sha256).digest()
    assert minor_for(KEY, MAJOR, "entrance", 5_800_000) == int.from_bytes(digest[:2], "big")
    assert minor_for(KEY, MAJOR, "entrance", 5_800_000) == 0xC0A1


def test_slot_boundaries() -> None:
    assert slot_of(0.0) == 0
    assert slot_of(SLOT_S - 0.001) == 0
    assert slot_of(float(SLOT_S)) == 1
    assert next_slot_at(NOW) == 5_800_001 * SLOT_S
    with pytest.raises(ValueError, match="finite"):
        slot_of(float("nan"))


def test_advertised_now_is_the_current_slots_minor() -> None:
    beacon = advertised_now(KEY, CHAIN, MAJOR, "till", NOW)
    assert beacon == StoreBeacon(CHAIN, MAJOR, minor_for(KEY, MAJOR, "till", slot_of(NOW)))


@pytest.mark.parametrize(
    ("heard_at", "current"), [(NOW, True), (NOW - SLOT_S, False), (NOW - 100.0, True)]
)
def test_current_and_previous_slot_accepted(heard_at: float, current: bool) -> None:
    heard = advertised_now(KEY, CHAIN, MAJOR, "till", heard_at)
    assert match_proof(KEY, MAJOR, BOXES, heard, NOW, chain_uuid=CHAIN) == ProofMatch(
        "till", slot_of(heard_at), current=current
    )


def test_a_replay_after_the_previous_slot_is_stale() -> None:
    heard = advertised_now(KEY, CHAIN, MAJOR, "till", NOW - 2 * SLOT_S)
    assert match_proof(KEY, MAJOR, BOXES, heard, NOW) == ProofRefused(Refusal.STALE)
    # Much later it is no box's minor at all any more.
    assert match_proof(KEY, MAJOR, BOXES, heard, NOW + 20 * SLOT_S) in (
        ProofRefused(Refusal.UNKNOWN_MINOR),
        ProofRefused(Refusal.STALE),  # the rare collision with a later slot's minor
    )


def test_other_store_other_chain_and_forged_minor_refused() -> None:
    heard = advertised_now(KEY, CHAIN, MAJOR, "till", NOW)
    other_store = StoreBeacon(CHAIN, MAJOR + 1, heard.minor)
    assert match_proof(KEY, MAJOR, BOXES, other_store, NOW) == ProofRefused(Refusal.WRONG_STORE)
    other_chain = StoreBeacon(uuid.uuid4(), MAJOR, heard.minor)
    assert match_proof(KEY, MAJOR, BOXES, other_chain, NOW, chain_uuid=CHAIN) == ProofRefused(
        Refusal.WRONG_CHAIN
    )
    # Another store's box, with another key, under the same major: not ours.
    foreign = advertised_now(OTHER_KEY, CHAIN, MAJOR, "till", NOW)
    assert foreign.minor != heard.minor
    assert isinstance(match_proof(KEY, MAJOR, BOXES, foreign, NOW), ProofRefused)
    # A box that is not (or no longer) the store's.
    assert match_proof(KEY, MAJOR, ("entrance",), heard, NOW) == ProofRefused(Refusal.UNKNOWN_MINOR)
    assert match_proof(KEY, MAJOR, BOXES, StoreBeacon(CHAIN, MAJOR, 70_000), NOW) == (
        ProofRefused(Refusal.UNKNOWN_MINOR)
    )


def test_forged_minors_rarely_pass() -> None:
    """Of the minors tried, only the 2 slots x 3 boxes' own are accepted."""
    expected = {
        minor_for(KEY, MAJOR, b, s) for b in BOXES for s in (slot_of(NOW) - 1, slot_of(NOW))
    }
    # Every 37th minor (1,772 forgeries, a fraction of a second) and the right ones.
    tried = set(range(0, 0x10000, 37)) | expected
    accepted = {
        minor
        for minor in tried
        if isinstance(
            match_proof(KEY, MAJOR, BOXES, StoreBeacon(CHAIN, MAJOR, minor), NOW), ProofMatch
        )
    }
    assert accepted == expected


def test_bad_inputs_raise() -> None:
    with pytest.raises(ValueError, match="16 bytes"):
        minor_for(b"short", MAJOR, "till", 1)
    with pytest.raises(ValueError, match="major"):
        minor_for(KEY, 70_000, "till", 1)
    with pytest.raises(ValueError, match="box id"):
        minor_for(KEY, MAJOR, "", 1)
    with pytest.raises(ValueError, match="slot"):
        minor_for(KEY, MAJOR, "till", -1)


def test_key_from_text() -> None:
    assert key_from_text(KEY.hex() + "\n") == KEY
    assert key_from_text("  " + KEY.hex().upper() + "\nsecond line\n") == KEY
    for bad in ("", "zz" * 16, "00" * 15):
        with pytest.raises(ValueError, match="store beacon key") as raised:
            key_from_text(bad)
        assert bad[:8] not in str(raised.value) or not bad


@given(keys, majors, box_ids, times)
def test_property_a_box_is_recognised_in_its_slot_and_the_next(
    key: bytes, major: int, box: str, heard_at: float
) -> None:
    heard = advertised_now(key, CHAIN, major, box, heard_at)
    assert 0 <= heard.minor <= 0xFFFF
    for later, current in ((heard_at, True), (next_slot_at(heard_at), False)):
        found = match_proof(key, major, [box], heard, later)
        assert found == ProofMatch(box, slot_of(heard_at), current=current)
    assert isinstance(match_proof(key, major, [box], heard, heard_at + 2 * SLOT_S), ProofRefused)


@given(keys, majors, box_ids, st.integers(min_value=0, max_value=2**40))
def test_property_minor_depends_on_every_input(key: bytes, major: int, box: str, slot: int) -> None:
    minor = minor_for(key, major, box, slot)
    assert minor == minor_for(key, major, box, slot)
    # Changing one input changes the HMAC; a 16-bit minor collides 1 in 65536: over four
    # variations, at least three must differ.
    variants = (
        minor_for(key + b"\x00", major, box, slot),
        minor_for(key, major ^ 1, box, slot),
        minor_for(key, major, box + "x", slot),
        minor_for(key, major, box, slot + 1),
    )
    assert sum(v != minor for v in variants) >= 3
