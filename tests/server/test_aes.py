"""The two AES backends of store_server.aes agree (the EID vectors run on the active one)."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from store_server import aes

LIBCRYPTO = ctypes.util.find_library("crypto")

blocks = st.integers(1, 8).flatmap(lambda n: st.binary(min_size=16 * n, max_size=16 * n))
keys = st.binary(min_size=16, max_size=16)


def test_fips197_known_answer_on_the_active_backend() -> None:
    key = bytes.fromhex("000102030405060708090a0b0c0d0e0f")
    plain = bytes.fromhex("00112233445566778899aabbccddeeff")
    assert aes.ecb(key, plain).hex() == "69c4e0d86a7b0430d8cdb78070b4c55a"
    assert aes.ecb_cryptography(key, plain).hex() == "69c4e0d86a7b0430d8cdb78070b4c55a"


@pytest.mark.skipif(LIBCRYPTO is None, reason="no system libcrypto")
@settings(max_examples=200, deadline=None)
@given(key=keys, key_block=keys, data=blocks)
def test_libcrypto_matches_cryptography(key: bytes, key_block: bytes, data: bytes) -> None:
    assert LIBCRYPTO is not None
    fast = aes._LibcryptoEcb(ctypes.CDLL(LIBCRYPTO))
    assert fast(key, data) == aes.ecb_cryptography(key, data)
    if len(data) <= 256:
        assert fast.derived(key, key_block, data) == aes.derived_cryptography(key, key_block, data)


@pytest.mark.skipif(LIBCRYPTO is None, reason="no system libcrypto")
def test_libcrypto_rejects_partial_blocks() -> None:
    assert LIBCRYPTO is not None
    fast = aes._LibcryptoEcb(ctypes.CDLL(LIBCRYPTO))
    with pytest.raises(aes.AesBackendError):
        fast(bytes(16), bytes(15))
    with pytest.raises(aes.AesBackendError):
        fast(bytes(15), bytes(16))


def _backend_with(value: str | None) -> str:
    env = {k: v for k, v in os.environ.items() if k != aes.BACKEND_ENV}
    if value is not None:
        env[aes.BACKEND_ENV] = value
    out = subprocess.run(
        [sys.executable, "-c", "from store_server import aes; print(aes.BACKEND)"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


def test_default_backend_is_cryptography_and_libcrypto_is_opt_in() -> None:
    assert _backend_with(None) == "cryptography"
    assert _backend_with("cryptography") == "cryptography"
    assert _backend_with("libcrypto") == ("libcrypto" if LIBCRYPTO is not None else "cryptography")
