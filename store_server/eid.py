"""Eddystone-EID computation (pure; AES from ``cryptography``).

The Eddystone-EID specification (``eid-computation.md``):

* temporary key ``TK = AES-128-ECB(IK, 0x00*11 | 0xFF | 0x00 0x00 | (T >> 16) as BE16)``;
* ``EID = AES-128-ECB(TK, 0x00*11 | K | (T with its K low bits cleared) as BE32)[:8]``;

where ``T`` is the beacon's 32-bit seconds counter and ``K`` the rotation exponent. The app's
counter differs from the server clock by an offset recorded at enrollment
(``clock_offset_s = app_counter - server_now``).

Windows are counted *unwrapped* (``j = floor(server_now + clock_offset_s) >> K``, a Python
integer) and reduced to the 32-bit counter (``(j << K) mod 2**32``) only to compute an EID,
so the counter's wrap-around needs no special case. The only randomness is
:func:`new_identity_key`.
"""

from __future__ import annotations

import functools
import math
import secrets
import struct
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

IDENTITY_KEY_BYTES = 16
"""AES-128 identity key length fixed by the specification."""

EID_BYTES = 8
"""The EID is the leading 64 bits of the AES output (specification)."""

MAX_ROTATION_EXPONENT = 15
"""The specification limits K to 0..15 (rotation every 1 s to about 9 h)."""

DEFAULT_ROTATION_EXPONENT = 9
"""New ID every 512 s: short enough that a passer-by cannot be followed across visits or
across the day, long enough that a scanner's allowlist changes only a few times an hour."""

COUNTER_MODULUS = 2**32
"""The beacon time counter is a 32-bit seconds counter (specification)."""

TEMPORARY_KEY_SHIFT = 16
"""The temporary key depends on the top 16 bits of the counter: it changes every 65,536 s."""

MAX_CLOCK_OFFSET_S = 2.0**34
"""Largest accepted |app counter - server time|: the counter is 32-bit and server time stays
below 2**34 s until the year 2514, so any larger offset is corrupt input."""

TEMPORARY_KEY_CACHE_SIZE = 4096
"""Temporary keys kept by :func:`temporary_key` (one per identity key and 2**16 s slot);
the resolver keeps each subject's own, so this only serves one-off computations."""

_TK_BLOCK = struct.Struct(">11xB2xH")
"""Temporary-key input block: 11 zero bytes, salt 0xFF, 2 zero bytes, BE16 top of counter."""

_TK_SALT = 0xFF
"""Salt byte of the temporary-key input block (specification)."""

_EID_BLOCK = struct.Struct(">11xBI")
"""EID input block: 11 zero bytes, K, BE32 counter with its K low bits cleared."""

_AES_BLOCK_BYTES = 16
"""Each EID input block gives one 16-byte output block."""

_COUNTER_MASK = COUNTER_MODULUS - 1
"""Reduces an unwrapped counter value to the app's 32-bit counter."""

_ECB = modes.ECB()  # noqa: S305
"""ECB is what the specification prescribes: one AES block per input, never a message."""


class IdentityError(ValueError):
    """Invalid identity input (key length, rotation exponent, counter range, record)."""


@dataclass(frozen=True, slots=True)
class IdentityRecord:
    """What the server knows about one enrolled app. ``subject`` is an opaque customer id."""

    subject: str
    identity_key: bytes = field(repr=False)
    k: int
    clock_offset_s: float

    def check(self) -> None:
        """IdentityError naming the first invalid field, if any."""
        check_key(self.identity_key)
        check_exponent(self.k)
        if not isinstance(self.subject, str) or not self.subject:
            raise IdentityError("subject must be a non-empty string")
        offset = self.clock_offset_s
        if isinstance(offset, bool) or not isinstance(offset, int | float):
            raise IdentityError("clock offset must be a number")
        if not abs(offset) <= MAX_CLOCK_OFFSET_S:  # NaN fails too
            raise IdentityError("clock offset must be finite and within ±2**34 s")


def check_key(identity_key: bytes) -> None:
    if not isinstance(identity_key, bytes) or len(identity_key) != IDENTITY_KEY_BYTES:
        raise IdentityError("identity key must be 16 bytes")


def check_exponent(k: int) -> None:
    if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k <= MAX_ROTATION_EXPONENT:
        raise IdentityError("rotation exponent must be an integer in 0..15")


def _check_counter(beacon_time: int) -> None:
    if (
        isinstance(beacon_time, bool)
        or not isinstance(beacon_time, int)
        or not 0 <= beacon_time < COUNTER_MODULUS
    ):
        raise IdentityError("beacon time must be an integer in 0..2**32-1")


def encrypt_blocks(key: bytes, blocks: bytes) -> bytes:
    """AES-128-ECB of whole blocks (ECB keeps no partial block: nothing to finalize)."""
    return Cipher(algorithms.AES128(key), _ECB).encryptor().update(blocks)


_aes_ecb = encrypt_blocks


def temporary_key_block(beacon_time: int) -> bytes:
    """The 16-byte block encrypted with the identity key to get the temporary key."""
    return _TK_BLOCK.pack(_TK_SALT, beacon_time >> TEMPORARY_KEY_SHIFT)


def eid_block(k: int, beacon_time: int) -> bytes:
    """The 16-byte block encrypted with the temporary key to get the EID."""
    return _EID_BLOCK.pack(k, window_start(beacon_time, k))


def temporary_key_of_slot(identity_key: bytes, slot: int) -> bytes:
    """The temporary key of 2**16 s slot ``slot`` (``T >> 16``), not cached."""
    return _aes_ecb(identity_key, _TK_BLOCK.pack(_TK_SALT, slot))


_cached_temporary_key = functools.lru_cache(maxsize=TEMPORARY_KEY_CACHE_SIZE)(temporary_key_of_slot)


def temporary_key(identity_key: bytes, beacon_time: int) -> bytes:
    """The temporary key for a counter value (cached per identity key and ``T >> 16``)."""
    check_key(identity_key)
    _check_counter(beacon_time)
    return _cached_temporary_key(identity_key, beacon_time >> TEMPORARY_KEY_SHIFT)


def compute_eid(identity_key: bytes, k: int, beacon_time: int) -> bytes:
    """The 8-byte Eddystone-EID broadcast at counter value ``beacon_time`` with exponent ``k``."""
    check_key(identity_key)
    check_exponent(k)
    _check_counter(beacon_time)
    tk = _cached_temporary_key(identity_key, beacon_time >> TEMPORARY_KEY_SHIFT)
    return _aes_ecb(tk, eid_block(k, beacon_time))[:EID_BYTES]


def window_eids(
    identity_key: bytes, k: int, windows: range, tk: tuple[int, bytes] | None = None
) -> tuple[list[bytes], tuple[int, bytes]]:
    """The EIDs of consecutive unwrapped ``windows`` of one app, and the last temporary key.

    ``tk`` is a ``(slot, key)`` pair computed before (the caller's cache): it is reused when
    the windows fall in its 2**16 s slot. One AES call per temporary key in use, over all the
    windows' blocks at once. Inputs are not checked (see :class:`IdentityRecord`).
    """
    counters = [(window << k) & _COUNTER_MASK for window in windows]
    eids: list[bytes] = []
    start = 0
    while start < len(counters):
        slot = counters[start] >> TEMPORARY_KEY_SHIFT
        stop = start + 1
        while stop < len(counters) and counters[stop] >> TEMPORARY_KEY_SHIFT == slot:
            stop += 1
        if tk is None or tk[0] != slot:
            tk = (slot, temporary_key_of_slot(identity_key, slot))
        out = _aes_ecb(tk[1], b"".join([_EID_BLOCK.pack(k, c) for c in counters[start:stop]]))
        eids.extend(out[i : i + EID_BYTES] for i in range(0, len(out), _AES_BLOCK_BYTES))
        start = stop
    if tk is None:  # no window at all
        tk = (-1, b"")
    return eids, tk


def new_identity_key() -> bytes:
    """A fresh random 128-bit identity key (the module's only randomness)."""
    return secrets.token_bytes(IDENTITY_KEY_BYTES)


def clock_offset(app_counter: int, server_now: float) -> float:
    """The offset recorded at enrollment: ``app_counter - server_now``."""
    _check_counter(app_counter)
    return app_counter - server_now


def beacon_time(server_now: float, clock_offset_s: float) -> int:
    """The app's 32-bit seconds counter at server time ``server_now``."""
    return math.floor(server_now + clock_offset_s) % COUNTER_MODULUS


def window_start(beacon_time: int, k: int) -> int:
    """The counter value that starts the rotation window holding ``beacon_time``."""
    return beacon_time & ~((1 << k) - 1)


def window_index(server_now: float, k: int, clock_offset_s: float) -> int:
    """Unwrapped index of the rotation window current at ``server_now`` (not reduced mod 2**32)."""
    return math.floor(server_now + clock_offset_s) >> k


def window_bounds_server_time(window: int, k: int, clock_offset_s: float) -> tuple[float, float]:
    """Server-time ``[start, end)`` of unwrapped window ``window`` of an app."""
    return (window << k) - clock_offset_s, ((window + 1) << k) - clock_offset_s


def eid_at(record: IdentityRecord, server_now: float) -> bytes:
    """The EID the app of ``record`` broadcasts at ``server_now`` (for simulators and tests)."""
    return compute_eid(
        record.identity_key, record.k, beacon_time(server_now, record.clock_offset_s)
    )
