"""Key wrapping of identity keys under the server master key."""

from __future__ import annotations

import base64

import pytest

from store_server.keywrap import (
    NONCE_BYTES,
    TAG_BYTES,
    KeyWrapError,
    parse_master_key,
    unwrap_key,
    wrap_key,
)

MASTER = bytes(range(32))
OTHER_MASTER = bytes(range(1, 33))
IDENTITY_KEY = bytes.fromhex("00112233445566778899aabbccddeeff")
AAD = b"subject:c-0001"


def test_round_trip() -> None:
    blob = wrap_key(MASTER, IDENTITY_KEY, AAD)
    assert len(blob) == NONCE_BYTES + len(IDENTITY_KEY) + TAG_BYTES
    assert IDENTITY_KEY not in blob
    assert unwrap_key(MASTER, blob, AAD) == IDENTITY_KEY


def test_nonce_is_fresh_per_wrap() -> None:
    first = wrap_key(MASTER, IDENTITY_KEY, AAD)
    second = wrap_key(MASTER, IDENTITY_KEY, AAD)
    assert first[:NONCE_BYTES] != second[:NONCE_BYTES]
    assert first != second


@pytest.mark.parametrize("position", [0, NONCE_BYTES - 1, NONCE_BYTES, NONCE_BYTES + 20, -1])
def test_tampered_byte_is_refused(position: int) -> None:
    blob = bytearray(wrap_key(MASTER, IDENTITY_KEY, AAD))
    blob[position] ^= 0x01
    with pytest.raises(KeyWrapError):
        unwrap_key(MASTER, bytes(blob), AAD)


def test_truncated_blob_is_refused() -> None:
    blob = wrap_key(MASTER, IDENTITY_KEY, AAD)
    with pytest.raises(KeyWrapError):
        unwrap_key(MASTER, blob[:-1], AAD)
    with pytest.raises(KeyWrapError, match="too short"):
        unwrap_key(MASTER, blob[: NONCE_BYTES + TAG_BYTES], AAD)


def test_wrong_aad_is_refused() -> None:
    blob = wrap_key(MASTER, IDENTITY_KEY, AAD)
    with pytest.raises(KeyWrapError):
        unwrap_key(MASTER, blob, b"subject:c-0002")


def test_wrong_master_is_refused() -> None:
    blob = wrap_key(MASTER, IDENTITY_KEY, AAD)
    with pytest.raises(KeyWrapError):
        unwrap_key(OTHER_MASTER, blob, AAD)


def test_error_messages_do_not_contain_key_material() -> None:
    blob = wrap_key(MASTER, IDENTITY_KEY, AAD)
    with pytest.raises(KeyWrapError) as info:
        unwrap_key(OTHER_MASTER, blob, AAD)
    message = str(info.value)
    for secret in (MASTER, OTHER_MASTER, IDENTITY_KEY, blob):
        assert secret.hex() not in message
    assert info.value.__cause__ is None


@pytest.mark.parametrize("bad_master", [b"", bytes(16), bytes(31), bytes(33)])
def test_master_key_must_be_32_bytes(bad_master: bytes) -> None:
    with pytest.raises(KeyWrapError, match="32 bytes"):
        wrap_key(bad_master, IDENTITY_KEY, AAD)
    with pytest.raises(KeyWrapError, match="32 bytes"):
        unwrap_key(bad_master, bytes(64), AAD)


def test_empty_key_is_refused() -> None:
    with pytest.raises(KeyWrapError):
        wrap_key(MASTER, b"", AAD)


def test_parse_master_key_hex() -> None:
    text = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
    assert parse_master_key(text) == MASTER
    assert parse_master_key(f"  {text.upper()}\n") == MASTER


def test_parse_master_key_base64url() -> None:
    key = bytes([0xFB, 0xFF] * 16)  # encodes with '-' and '_' in base64url
    unpadded = "-__7__v_-__7__v_-__7__v_-__7__v_-__7__v_-_8"
    assert base64.urlsafe_b64encode(key).decode().rstrip("=") == unpadded
    assert parse_master_key(unpadded) == key
    assert parse_master_key(unpadded + "=") == key


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("00" * 31, "decodes to 46 bytes"),
        ("00" * 33, "decodes to 49 bytes"),
        ("zz" * 32, "decodes to 48 bytes"),
        ("not a key!", "neither"),
        ("+/+/" * 11, "neither"),
        (base64.urlsafe_b64encode(bytes(16)).decode(), "16 bytes"),
        (base64.urlsafe_b64encode(bytes(45)).decode(), "45 bytes"),
        ("A" * 43 + "===", "neither"),
    ],
)
def test_parse_master_key_errors(text: str, message: str) -> None:
    with pytest.raises(KeyWrapError, match=message):
        parse_master_key(text)
