"""Wrapping of identity keys with the server master key (AES-256-GCM).

Pure crypto, no I/O. A wrapped key is ``nonce (12 bytes) || ciphertext+tag``; the associated
data binds it to its subject, so a blob copied onto another customer's row does not unwrap.
Key material never appears in messages or logs.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import os
import re

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

logger = logging.getLogger(__name__)

MASTER_KEY_BYTES = 32
"""AES-256 master key: the configuration holds 32 random bytes."""

NONCE_BYTES = 12
"""96-bit GCM nonce, the size GCM is specified for (random nonces are safe for far more than
the number of keys a store ever wraps)."""

TAG_BYTES = 16
"""Full-length GCM authentication tag appended by AESGCM."""

_HEX_MASTER_KEY_CHARS = 2 * MASTER_KEY_BYTES
"""A hex master key spells each of the 32 bytes with two characters."""

_BASE64URL = re.compile(r"[A-Za-z0-9_-]+={0,2}")
"""The base64url alphabet (RFC 4648 section 5), optional padding."""


class KeyWrapError(ValueError):
    """A key could not be wrapped or unwrapped, or a master key is malformed."""


def _check_master(master_key: bytes) -> AESGCM:
    if not isinstance(master_key, bytes) or len(master_key) != MASTER_KEY_BYTES:
        raise KeyWrapError("master key must be 32 bytes")
    return AESGCM(master_key)


def wrap_key(master_key: bytes, key: bytes, aad: bytes) -> bytes:
    """Encrypt ``key`` under ``master_key``; ``aad`` (e.g. the subject id) is authenticated."""
    aead = _check_master(master_key)
    if not isinstance(key, bytes) or not key:
        raise KeyWrapError("key to wrap must be non-empty bytes")
    nonce = os.urandom(NONCE_BYTES)
    return nonce + aead.encrypt(nonce, key, aad)


def unwrap_key(master_key: bytes, blob: bytes, aad: bytes) -> bytes:
    """Decrypt a blob made by :func:`wrap_key`; KeyWrapError on tamper, wrong key or aad."""
    return KeyUnwrapper(master_key)(blob, aad)


class KeyUnwrapper:
    """:func:`unwrap_key` for many blobs under one master key: the cipher is set up once
    (the bulk load at start-up unwraps one key per opted-in customer)."""

    __slots__ = ("_aead",)

    def __init__(self, master_key: bytes) -> None:
        self._aead = _check_master(master_key)

    def __call__(self, blob: bytes, aad: bytes) -> bytes:
        if not isinstance(blob, bytes) or len(blob) <= NONCE_BYTES + TAG_BYTES:
            raise KeyWrapError("wrapped key is too short")
        try:
            return self._aead.decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], aad)
        except InvalidTag:
            raise KeyWrapError(
                "wrapped key does not authenticate (tampered, wrong master key or wrong subject)"
            ) from None


def parse_master_key(text: str) -> bytes:
    """Decode a configured master key: 64 hex characters, or base64url of 32 bytes."""
    value = text.strip()
    if not value:
        raise KeyWrapError("master key is empty: expected 64 hex characters or base64url")
    if len(value) == _HEX_MASTER_KEY_CHARS:
        try:
            return bytes.fromhex(value)
        except ValueError:
            pass  # 64 characters that are not hex: may still be base64url
    if not _BASE64URL.fullmatch(value):
        raise KeyWrapError(
            "master key is neither 64 hex characters nor base64url: check the configuration"
        )
    try:
        padded = value + "=" * (-len(value) % 4)
        decoded = base64.b64decode(padded, altchars=b"-_", validate=True)
    except (binascii.Error, ValueError):
        raise KeyWrapError(
            "master key is neither 64 hex characters nor base64url: check the configuration"
        ) from None
    if len(decoded) != MASTER_KEY_BYTES:
        raise KeyWrapError(
            f"master key decodes to {len(decoded)} bytes, expected {MASTER_KEY_BYTES}: "
            "use 64 hex characters or base64url of 32 bytes"
        )
    return decoded


def aad(kind: str, subject: str) -> bytes:
    """The associated data a wrapped secret is bound to: its kind and its owner's id, so a
    blob copied onto another row (or another kind of row) does not unwrap."""
    return f"bulle/{kind}/{subject}".encode()


def scanner_aad(scanner_id: str) -> bytes:
    return aad("scanner", scanner_id)


def derive_key(master_key: bytes, label: str) -> bytes:
    """A key for one use (``label``) derived from the master key (HMAC-SHA-256)."""
    return hmac.new(master_key, b"bulle/" + label.encode(), hashlib.sha256).digest()


def pseudonym_key(master_key: bytes) -> bytes:
    """The key of the consent log's subject references (see consent.subject_ref)."""
    return derive_key(master_key, "consent-pseudonym")
