"""Column-wise AES-128 (one key per lane) against the FIPS-197 vector and ``cryptography``."""

from __future__ import annotations

import numpy as np
import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from hypothesis import given, settings
from hypothesis import strategies as st

from store_server import aes_lanes


def _reference(key: bytes, block: bytes) -> bytes:
    encryptor = Cipher(algorithms.AES128(key), modes.ECB()).encryptor()
    return encryptor.update(block)


def test_fips_197_appendix_c1() -> None:
    key = bytes.fromhex("000102030405060708090a0b0c0d0e0f")
    plain = bytes.fromhex("00112233445566778899aabbccddeeff")
    assert aes_lanes.ecb(key, plain) == bytes.fromhex("69c4e0d86a7b0430d8cdb78070b4c55a")
    assert aes_lanes.self_test()


def test_sbox_entries_from_fips_197_figure_7() -> None:
    # The S-box is computed from its definition; spot-check it against the published table.
    assert [aes_lanes._S[x] for x in (0x00, 0x01, 0x53, 0x9A, 0xFF)] == [
        0x63,
        0x7C,
        0xED,
        0xB8,
        0x16,
    ]
    assert sorted(aes_lanes._S) == list(range(256))  # a permutation


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(st.binary(min_size=16, max_size=16), st.binary(min_size=16, max_size=16)),
        min_size=1,
        max_size=70,
    )
)
def test_every_lane_matches_cryptography(pairs: list[tuple[bytes, bytes]]) -> None:
    keys = b"".join(k for k, _ in pairs)
    blocks = b"".join(b for _, b in pairs)
    out = aes_lanes.ecb(keys, blocks)
    assert [out[i * 16 : (i + 1) * 16] for i in range(len(pairs))] == [
        _reference(k, b) for k, b in pairs
    ]


def test_several_blocks_per_key_broadcast_and_truncated_output() -> None:
    rng = np.random.default_rng(5)
    keys = rng.integers(0, 256, size=(300, 16), dtype=np.uint8)
    blocks = rng.integers(0, 256, size=(3, 300, 16), dtype=np.uint8)
    round_keys = aes_lanes.expand_keys(aes_lanes.words_of(keys))
    state = tuple(
        np.stack([aes_lanes.words_of(blocks[row])[i] for row in range(3)]) for i in range(4)
    )
    high, low = aes_lanes.encrypt(round_keys, state, out_words=2)  # type: ignore[arg-type]
    for row in range(3):
        for lane in (0, 1, 150, 299):
            expected = _reference(keys[lane].tobytes(), blocks[row, lane].tobytes())[:8]
            got = int(high[row, lane]).to_bytes(4, "big") + int(low[row, lane]).to_bytes(4, "big")
            assert got == expected


def test_bad_shapes_are_refused() -> None:
    with pytest.raises(ValueError, match="same number"):
        aes_lanes.ecb(bytes(32), bytes(16))
    assert aes_lanes.ecb(b"", b"") == b""
