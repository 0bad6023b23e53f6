"""AES-128 encryption with a different key in every lane, column-wise with numpy.

Pure module, no I/O. The EID resolver's cold build needs two AES key setups for each of up to
a million customers (identity key -> temporary key -> EIDs). Crypto libraries set up one key
per call, and a Python call per customer costs microseconds, so instead this module runs the
cipher over *columns*: lane ``i`` of every array belongs to customer ``i``, and each step of
FIPS-197 (key expansion, rounds) is a handful of numpy operations over all lanes at once.

The round function is the classic 32-bit table formulation of FIPS-197 section 5 (the "T
tables" that merge SubBytes, ShiftRows and MixColumns): an AES state is four 32-bit words
``(s0, s1, s2, s3)``, each the big-endian reading of one column of the state, and a round is

    t0 = T0[s0.b0] ^ T1[s1.b1] ^ T2[s2.b2] ^ T3[s3.b3] ^ rk0     (and rotations for t1..t3)

where ``.bn`` is byte ``n`` of the word (0: most significant). The tables and the S-box are
computed here from their algebraic definition (multiplicative inverse in GF(2^8) followed by
the affine map), not typed in, and :func:`self_test` checks the result against the FIPS-197
appendix C.1 known answer. The tests compare every entry point with ``cryptography`` on
random keys and blocks.

Side channels: table lookups have data-dependent memory access. This code runs only on the
store server, over keys the server already holds, in bulk start-up builds whose timing is not
observable per key from outside; the per-customer path (re-keying, window advance) keeps using
``store_server.aes`` (OpenSSL).
"""

from __future__ import annotations

import sys
from typing import Final

import numpy as np
import numpy.typing as npt

Words = npt.NDArray[np.uint32]
"""One 32-bit word per lane (or a 2-D array: rows of lanes, broadcast against the keys)."""

ROUNDS: Final = 10
"""AES-128 has 10 rounds (FIPS-197 table 4)."""

ROUND_KEY_WORDS: Final = 4 * (ROUNDS + 1)
"""44 expanded key words: one 4-word round key before the first round and after each round."""

_RCON: Final = (0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80, 0x1B, 0x36)
"""Round constants x^(i-1) in GF(2^8) (FIPS-197 section 5.2), one per key-expansion round."""

_REDUCTION: Final = 0x11B
"""The AES polynomial x^8 + x^4 + x^3 + x + 1 (FIPS-197 section 4.2)."""

_AFFINE_CONSTANT: Final = 0x63
"""Constant of the S-box affine map (FIPS-197 equation 5.1)."""

_BYTE_OFFSET: Final = (3, 2, 1, 0) if sys.byteorder == "little" else (0, 1, 2, 3)
"""Index, within a native uint32 seen as 4 bytes, of byte n (0 = most significant)."""


def _xtime(a: int) -> int:
    """Multiplication by x (i.e. 2) in GF(2^8)."""
    a <<= 1
    return a ^ _REDUCTION if a & 0x100 else a


def _sbox() -> list[int]:
    """The S-box from its definition: inverse in GF(2^8) (0 -> 0), then the affine map."""
    # Powers of the generator 3 give log/antilog tables, hence inverses without a search.
    exp = [0] * 255
    value = 1
    for i in range(255):
        exp[i] = value
        value ^= _xtime(value)  # value * 3
    log = {v: i for i, v in enumerate(exp)}
    box = []
    for a in range(256):
        inverse = 0 if a == 0 else exp[(255 - log[a]) % 255]
        out = inverse
        for shift in range(1, 5):
            out ^= ((inverse << shift) | (inverse >> (8 - shift))) & 0xFF
        box.append(out ^ _AFFINE_CONSTANT)
    return box


_S: Final = _sbox()


def _rotr(word: int, bits: int) -> int:
    return ((word >> bits) | (word << (32 - bits))) & 0xFFFFFFFF


def _table(values: list[int]) -> Words:
    return np.array(values, dtype=np.uint32)


_TE0_LIST: Final = [
    (_xtime(s) << 24) | (s << 16) | (s << 8) | (_xtime(s) ^ s) for s in _S
]  # column (2s, s, s, 3s): SubBytes then the first MixColumns column, as a big-endian word
_TE: Final = tuple(_table([_rotr(w, 8 * n) for w in _TE0_LIST]) for n in range(4))
"""Round tables T0..T3: T(n)[x] is T0[x] rotated right by 8n bits."""

_SB: Final = tuple(_table([s << (24 - 8 * n) for s in _S]) for n in range(4))
"""Final-round tables: the S-box output placed at byte n of a word (no MixColumns)."""


def _byte(words: Words, n: int) -> npt.NDArray[np.uint8]:
    """Byte ``n`` (0 = most significant) of every word: a strided view, no arithmetic."""
    view = words.view(np.uint8)
    return np.ascontiguousarray(view[..., _BYTE_OFFSET[n] :: 4])


def _lookup(table: Words, index: npt.NDArray[np.uint8]) -> Words:
    return np.take(table, index, mode="clip")  # clip: indices are bytes, no bounds check needed


def expand_keys(key: tuple[Words, Words, Words, Words]) -> list[Words]:
    """The 44 round-key words of every lane (FIPS-197 section 5.2), from the key's 4 words."""
    words = [np.ascontiguousarray(w) for w in key]
    sb0, sb1, sb2, sb3 = _SB
    for rcon in _RCON:
        last = words[-1]
        # SubWord(RotWord(last)) ^ Rcon: byte 1 moves to byte 0, ..., byte 0 to byte 3.
        temp = _lookup(sb0, _byte(last, 1))
        temp ^= _lookup(sb1, _byte(last, 2))
        temp ^= _lookup(sb2, _byte(last, 3))
        temp ^= _lookup(sb3, _byte(last, 0))
        temp ^= np.uint32(rcon << 24)
        w0 = words[-4] ^ temp
        w1 = words[-3] ^ w0
        w2 = words[-2] ^ w1
        w3 = words[-1] ^ w2
        words += [w0, w1, w2, w3]
    return words


def encrypt(
    round_keys: list[Words], state: tuple[Words, Words, Words, Words], out_words: int = 4
) -> list[Words]:
    """Encrypt one block per lane; returns the first ``out_words`` words of the ciphertext.

    ``state`` words may have more dimensions than the round keys (e.g. ``(windows, lanes)``
    against ``(lanes,)``): numpy broadcasting encrypts several blocks under each lane's key.
    """
    te0, te1, te2, te3 = _TE
    s0, s1, s2, s3 = (np.ascontiguousarray(state[i] ^ round_keys[i]) for i in range(4))
    for r in range(1, ROUNDS):
        rk = 4 * r
        b0 = [_byte(s, 0) for s in (s0, s1, s2, s3)]
        b1 = [_byte(s, 1) for s in (s0, s1, s2, s3)]
        b2 = [_byte(s, 2) for s in (s0, s1, s2, s3)]
        b3 = [_byte(s, 3) for s in (s0, s1, s2, s3)]
        t = []
        for c in range(4):  # column c takes row n from column c + n (ShiftRows)
            word = _lookup(te0, b0[c])
            word ^= _lookup(te1, b1[(c + 1) % 4])
            word ^= _lookup(te2, b2[(c + 2) % 4])
            word ^= _lookup(te3, b3[(c + 3) % 4])
            word ^= round_keys[rk + c]
            t.append(word)
        s0, s1, s2, s3 = t
    columns = (s0, s1, s2, s3)
    out = []
    sb0, sb1, sb2, sb3 = _SB
    for c in range(out_words):
        word = _lookup(sb0, _byte(columns[c], 0))
        word ^= _lookup(sb1, _byte(columns[(c + 1) % 4], 1))
        word ^= _lookup(sb2, _byte(columns[(c + 2) % 4], 2))
        word ^= _lookup(sb3, _byte(columns[(c + 3) % 4], 3))
        word ^= round_keys[4 * ROUNDS + c]
        out.append(word)
    return out


def words_of(blocks: npt.NDArray[np.uint8]) -> tuple[Words, Words, Words, Words]:
    """The 4 big-endian words of each 16-byte row of ``blocks`` (shape ``(lanes, 16)``)."""
    if blocks.ndim != 2 or blocks.shape[1] != 16:
        raise ValueError("blocks must have shape (lanes, 16)")
    as_words = np.ascontiguousarray(blocks).view(">u4").astype(np.uint32)
    return tuple(np.ascontiguousarray(as_words[:, i]) for i in range(4))  # type: ignore[return-value]


def blocks_of(words: list[Words]) -> npt.NDArray[np.uint8]:
    """Inverse of :func:`words_of`: ``(lanes, 4 * len(words))`` bytes, big-endian words."""
    return np.stack(words, axis=-1).astype(">u4").view(np.uint8).reshape(len(words[0]), -1)


def ecb(keys: bytes, blocks: bytes) -> bytes:
    """AES-128-ECB of block ``i`` under key ``i`` (16 bytes each, same count): for tests."""
    if len(keys) != len(blocks) or len(keys) % 16:
        raise ValueError("keys and blocks must be the same number of 16-byte rows")
    if not keys:
        return b""
    k = np.frombuffer(keys, dtype=np.uint8).reshape(-1, 16)
    b = np.frombuffer(blocks, dtype=np.uint8).reshape(-1, 16)
    return blocks_of(encrypt(expand_keys(words_of(k)), words_of(b))).tobytes()


_SELF_TEST_KEY: Final = bytes.fromhex("000102030405060708090a0b0c0d0e0f")
"""FIPS-197 appendix C.1 AES-128 key."""

_SELF_TEST_PLAIN: Final = bytes.fromhex("00112233445566778899aabbccddeeff")
"""FIPS-197 appendix C.1 plaintext."""

_SELF_TEST_CIPHER: Final = bytes.fromhex("69c4e0d86a7b0430d8cdb78070b4c55a")
"""FIPS-197 appendix C.1 ciphertext."""


def self_test() -> bool:
    """True if the FIPS-197 appendix C.1 vector comes out right (twice, in two lanes)."""
    return ecb(_SELF_TEST_KEY * 2, _SELF_TEST_PLAIN * 2) == _SELF_TEST_CIPHER * 2
