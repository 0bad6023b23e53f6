"""Eddystone-EID temporary keys for a chain (pure; AES from ``cryptography`` via ``eid``).

The EID of a rotation window is computed from the temporary key of its 2**16 s slot of the
app's counter (``eid``). In chain mode a store server holds temporary keys only, never the
identity key they come from: the key authority (or the server that enrolls the customer,
for that moment only) computes them for the slots a customer needs from now to a horizon,
and a temporary key is of no use once its slot's windows have passed.

Slots are counted unwrapped (``floor(server_now + clock_offset_s) >> 16``, a Python
integer), like windows in ``eid``; the key itself is that of the slot reduced to the
counter's 16 top bits.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from store_server.eid import (
    EID_BYTES,
    IDENTITY_KEY_BYTES,
    MAX_CLOCK_OFFSET_S,
    TEMPORARY_KEY_SHIFT,
    IdentityError,
    check_exponent,
    check_key,
    eid_block,
    encrypt_blocks,
    temporary_key_of_slot,
)

SLOT_SECONDS = 1 << TEMPORARY_KEY_SHIFT
"""A temporary key is valid for one slot of 65,536 s (about 18.2 h) of the app's counter."""

KEY_HORIZON_S = SLOT_SECONDS
"""Temporary keys are computed from now to one slot ahead ("this period and the next"): a
store server keeps recognising customers for at least this long without the authority."""

_SLOT_MASK = (1 << 16) - 1
"""The counter is 32-bit: its slot number, the top 16 bits, wraps at 2**16."""

MISSING = b""
"""The EID of a window whose slot's temporary key is not held: resolves nothing."""


@dataclass(frozen=True, slots=True)
class TemporaryKey:
    """One customer's temporary key for one slot, and when it stops being of any use."""

    slot: int
    key: bytes = field(repr=False)
    not_after: float


@dataclass(frozen=True, slots=True)
class TemporaryKeyRecord:
    """What a chain's store server knows about one customer: temporary keys, no identity key."""

    subject: str
    k: int
    clock_offset_s: float
    keys: tuple[TemporaryKey, ...] = field(repr=False)

    def check(self) -> None:
        """IdentityError naming the first invalid field, if any."""
        check_exponent(self.k)
        if not isinstance(self.subject, str) or not self.subject:
            raise IdentityError("subject must be a non-empty string")
        offset = self.clock_offset_s
        if isinstance(offset, bool) or not isinstance(offset, int | float):
            raise IdentityError("clock offset must be a number")
        if not abs(offset) <= MAX_CLOCK_OFFSET_S:
            raise IdentityError("clock offset must be finite and within ±2**34 s")
        for tk in self.keys:
            check_key(tk.key)

    def by_slot(self) -> dict[int, bytes]:
        return {tk.slot: tk.key for tk in self.keys}


def slot_of(server_now: float, clock_offset_s: float) -> int:
    """The unwrapped slot of the app's counter at ``server_now``."""
    return math.floor(server_now + clock_offset_s) >> TEMPORARY_KEY_SHIFT


def slot_not_after(slot: int, k: int, clock_offset_s: float, skew: int) -> float:
    """Server time after which no window of ``slot`` is accepted any more (its last window
    plus ``skew`` windows of drift)."""
    return ((slot + 1) << TEMPORARY_KEY_SHIFT) + (skew << k) - clock_offset_s


def slots_needed(
    server_now: float, k: int, clock_offset_s: float, skew: int, horizon_s: float
) -> range:
    """The slots whose windows are accepted at some instant from ``server_now`` to
    ``server_now + horizon_s`` (``skew`` windows either side)."""
    drift = skew << k
    first = math.floor(server_now + clock_offset_s - drift) >> TEMPORARY_KEY_SHIFT
    last = math.floor(server_now + horizon_s + clock_offset_s + drift) >> TEMPORARY_KEY_SHIFT
    return range(first, last + 1)


def compute_temporary_keys(
    identity_key: bytes, k: int, clock_offset_s: float, slots: Iterable[int], skew: int
) -> list[TemporaryKey]:
    """The temporary keys of ``slots`` (the authority's work, or enrollment's)."""
    check_key(identity_key)
    return [
        TemporaryKey(
            slot,
            temporary_key_of_slot(identity_key, slot & _SLOT_MASK),
            slot_not_after(slot, k, clock_offset_s, skew),
        )
        for slot in slots
    ]


def window_eids_from_keys(keys: Mapping[int, bytes], k: int, windows: range) -> list[bytes]:
    """The EIDs of consecutive unwrapped ``windows`` from the temporary keys held by slot;
    :data:`MISSING` for a window whose slot's key is not held (expired or not yet given)."""
    eids: list[bytes] = []
    by_slot: dict[int, list[int]] = {}
    for window in windows:
        by_slot.setdefault((window << k) >> TEMPORARY_KEY_SHIFT, []).append(window)
    for slot, in_slot in by_slot.items():
        tk = keys.get(slot)
        if tk is None or len(tk) != IDENTITY_KEY_BYTES:
            eids.extend(MISSING for _ in in_slot)
            continue
        out = encrypt_blocks(tk, b"".join(eid_block(k, (w << k) & 0xFFFFFFFF) for w in in_slot))
        eids.extend(out[i : i + EID_BYTES] for i in range(0, len(out), 2 * EID_BYTES))
    return eids
