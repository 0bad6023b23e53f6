"""AES-128-ECB over whole blocks with a fresh key per call: the primitive of Eddystone-EID.

The EID resolver sets up two AES keys per subject (identity key, then temporary key) and
encrypts one to three blocks with each, so the cost that matters is the key setup, not the
throughput. This module serves the per-subject work (re-keying, window advance, the standalone
EID tool); bulk builds of many subjects go column-wise through :mod:`store_server.aes_lanes`
instead. Through ``cryptography``'s object API one ``Cipher(...).encryptor().update()`` costs
about 3.8 µs, mostly Python object construction around OpenSSL; calling OpenSSL's
``EVP_EncryptInit_ex`` / ``EVP_EncryptUpdate`` directly on one reused context costs about 1.3
µs (bench/identity). ``cryptography`` is the default; with ``BULLE_AES_BACKEND=libcrypto`` this
module uses the system's libcrypto through ``ctypes`` instead, once it passes a known-answer
self-test at import (it falls back to ``cryptography`` otherwise). Both give identical output;
the tests run the vectors through whichever is active and compare the two backends directly.

No key material is kept after a call returns except inside OpenSSL's reusable context (the
last key schedule, overwritten by the next call).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import threading
from collections.abc import Callable

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

logger = logging.getLogger(__name__)

BACKEND_ENV = "BULLE_AES_BACKEND"
"""Environment variable forcing a backend: ``cryptography`` or ``libcrypto``."""

_BLOCK = 16
"""AES block size in bytes."""

_BUFFER_BYTES = 256
"""Reusable output buffer per thread: the resolver encrypts at most a few blocks per call."""

_SELF_TEST_KEY = bytes.fromhex("000102030405060708090a0b0c0d0e0f")
"""FIPS-197 appendix C.1 AES-128 key."""

_SELF_TEST_PLAIN = bytes.fromhex("00112233445566778899aabbccddeeff")
"""FIPS-197 appendix C.1 plaintext."""

_SELF_TEST_CIPHER = bytes.fromhex("69c4e0d86a7b0430d8cdb78070b4c55a")
"""FIPS-197 appendix C.1 ciphertext: the known answer checked before trusting libcrypto."""

_ECB = modes.ECB()  # noqa: S305  (single-block PRF use mandated by the EID spec)
"""One shared, stateless mode object: saves an allocation per cipher context."""

EcbFunction = Callable[[bytes, bytes], bytes]
DerivedFunction = Callable[[bytes, bytes, bytes], bytes]


class AesBackendError(RuntimeError):
    """The libcrypto backend failed a call (never expected once the self-test passed)."""


def ecb_cryptography(key: bytes, blocks: bytes) -> bytes:
    """AES-128-ECB through ``cryptography`` (ECB keeps no partial block: no finalize)."""
    return Cipher(algorithms.AES128(key), _ECB).encryptor().update(blocks)


class _Context:
    """One thread's EVP context and output buffer, wrapped once as ctypes arguments."""

    __slots__ = ("handle", "out", "written", "written_ref")

    def __init__(self, handle: int) -> None:
        self.handle = ctypes.c_void_p(handle)
        self.out = ctypes.create_string_buffer(_BUFFER_BYTES)
        self.written = ctypes.c_int()
        self.written_ref = ctypes.byref(self.written)


class _LibcryptoEcb:
    """AES-128-ECB through libcrypto's EVP API, one reused context per thread.

    The two hot functions are called without ``argtypes``: every argument passed is already
    a ctypes object, ``bytes``, ``None`` or a small ``int``, whose default conversions are
    exactly the C types (pointer, pointer, NULL, int); that saves ctypes' per-argument
    ``from_param`` checks, about 40 % of a call. Lengths are checked in Python first.
    """

    def __init__(self, lib: ctypes.CDLL) -> None:
        self._new = lib.EVP_CIPHER_CTX_new
        self._new.restype = ctypes.c_void_p
        self._new.argtypes = []
        cipher = lib.EVP_aes_128_ecb
        cipher.restype = ctypes.c_void_p
        cipher.argtypes = []
        self._cipher = ctypes.c_void_p(cipher())
        # lib["name"] gives a fresh function object (attribute access is cached and shared).
        self._init = lib["EVP_EncryptInit_ex"]
        self._update = lib["EVP_EncryptUpdate"]
        self._local = threading.local()

    def _context(self) -> _Context:
        context: _Context | None = getattr(self._local, "context", None)
        if context is None:
            handle = self._new()
            if not handle:
                raise AesBackendError("EVP_CIPHER_CTX_new failed")
            context = _Context(handle)
            if self._init(context.handle, self._cipher, None, None, None) != 1:
                raise AesBackendError("EVP_EncryptInit_ex failed")
            self._local.context = context
        return context

    def __call__(self, key: bytes, blocks: bytes) -> bytes:
        context = self._context()
        n = len(blocks)
        if type(key) is not bytes or len(key) != _BLOCK or type(blocks) is not bytes or n % _BLOCK:
            raise AesBackendError("key must be 16 bytes and input whole blocks")
        out = context.out if n <= _BUFFER_BYTES else ctypes.create_string_buffer(n)
        if (
            self._init(context.handle, None, None, key, None) != 1
            or self._update(context.handle, out, context.written_ref, blocks, n) != 1
            or context.written.value != n
        ):
            raise AesBackendError("EVP_EncryptUpdate failed")
        return ctypes.string_at(out, n)

    def derived(self, key: bytes, key_block: bytes, blocks: bytes) -> bytes:
        """``ecb(ecb(key, key_block), blocks)`` in one call: the derived key never leaves C."""
        try:
            context: _Context = self._local.context
        except AttributeError:
            context = self._context()
        n = len(blocks)
        if (
            type(key) is not bytes
            or len(key) != _BLOCK
            or type(key_block) is not bytes
            or len(key_block) != _BLOCK
            or type(blocks) is not bytes
            or n % _BLOCK
            or n > _BUFFER_BYTES
        ):
            raise AesBackendError("key must be 16 bytes and input whole blocks")
        init = self._init
        update = self._update
        handle = context.handle
        out = context.out
        written = context.written_ref
        if (
            init(handle, None, None, key, None) != 1
            or update(handle, out, written, key_block, _BLOCK) != 1
            or init(handle, None, None, out, None) != 1
            or update(handle, out, written, blocks, n) != 1
        ):
            raise AesBackendError("EVP_EncryptUpdate failed")
        return ctypes.string_at(out, n)


def derived_cryptography(key: bytes, key_block: bytes, blocks: bytes) -> bytes:
    """``ecb(ecb(key, key_block), blocks)`` through ``cryptography``."""
    return ecb_cryptography(ecb_cryptography(key, key_block), blocks)


def _load_libcrypto() -> _LibcryptoEcb | None:
    name = ctypes.util.find_library("crypto")
    if name is None:
        return None
    try:
        ecb = _LibcryptoEcb(ctypes.CDLL(name))
        expected = ecb_cryptography(_SELF_TEST_CIPHER, _SELF_TEST_PLAIN)
        if (
            ecb(_SELF_TEST_KEY, _SELF_TEST_PLAIN * 2) != _SELF_TEST_CIPHER * 2
            or ecb.derived(_SELF_TEST_KEY, _SELF_TEST_PLAIN, _SELF_TEST_PLAIN) != expected
        ):
            logger.warning("libcrypto AES failed its known-answer test; using cryptography")
            return None
    except (OSError, AttributeError, AesBackendError) as exc:
        logger.info("libcrypto AES unavailable (%s); using cryptography", exc)
        return None
    return ecb


def _select() -> tuple[str, EcbFunction, DerivedFunction]:
    # `cryptography` unless the operator opts in: the ctypes path is faster but binds OpenSSL
    # by hand, which a maintained library does better; only very large stores need the speed.
    wanted = os.environ.get(BACKEND_ENV, "").strip().lower()
    if wanted == "libcrypto":
        fast = _load_libcrypto()
        if fast is not None:
            return "libcrypto", fast, fast.derived
        logger.warning("%s=libcrypto, but libcrypto is unusable", BACKEND_ENV)
    return "cryptography", ecb_cryptography, derived_cryptography


BACKEND, ecb, derived = _select()
"""The active backend's name, ``ecb(key, blocks)`` and ``derived(key, key_block, blocks)``."""
