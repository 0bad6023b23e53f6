"""Scanner request signing (store_server.signing): the literal wire format and every refusal."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from store_server.errors import AuthenticationError
from store_server.signing import (
    NonceStore,
    SignedHeaders,
    content_digest,
    read_headers,
    sign,
    signing_string,
    verify,
)

SECRET = "s3cret-of-the-entrance-scanner"
NOW = 1_763_800_000
NONCE = "0123456789abcdef0123456789abcdef"
PATH = "/api/scanner/v1/batches"
BODY = b'{"batch_id":"4b0d0c3e"}'


def test_content_digest_of_empty_body() -> None:
    # SHA-256 of the empty string, base64: the RFC 9530 example value.
    assert content_digest(b"") == "sha-256=:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=:"


def test_content_digest_of_body() -> None:
    expected = base64.b64encode(hashlib.sha256(BODY).digest()).decode()
    assert content_digest(BODY) == f"sha-256=:{expected}:"


def test_signing_string_literal() -> None:
    text = signing_string(
        "get", "/api/scanner/v1/allowlist?since=3&wait=20", "s-entrance", "1763800000", NONCE, "d"
    )
    assert text == (
        b"bulle-v1\nGET\n/api/scanner/v1/allowlist?since=3&wait=20\ns-entrance\n"
        b"1763800000\n0123456789abcdef0123456789abcdef\nd"
    )


def test_sign_matches_independent_hmac() -> None:
    message = b"bulle-v1\nPOST\n/x\ns\n1\nn\nd"
    mac = hmac.new(SECRET.encode("utf-8"), message, hashlib.sha256).digest()
    assert sign(SECRET, message) == base64.b64encode(mac).decode()
    assert sign(SECRET + "x", message) != sign(SECRET, message)


def headers_for(
    *,
    method: str = "POST",
    path: str = PATH,
    body: bytes = BODY,
    timestamp: int = NOW,
    nonce: str = NONCE,
    secret: str = SECRET,
    scanner_id: str = "s-entrance",
) -> SignedHeaders:
    """Sign independently of the module under test (the scanner's side of docs/api.md)."""
    digest = "sha-256=:" + base64.b64encode(hashlib.sha256(body).digest()).decode() + ":"
    text = "\n".join(("bulle-v1", method, path, scanner_id, str(timestamp), nonce, digest)).encode()
    signature = base64.b64encode(hmac.new(secret.encode(), text, hashlib.sha256).digest()).decode()
    return read_headers(
        {
            "X-Bulle-Scanner": scanner_id,
            "X-Bulle-Timestamp": str(timestamp),
            "X-Bulle-Nonce": nonce,
            "Content-Digest": digest,
            "X-Bulle-Signature": signature,
        }
    )


def check(
    signed: SignedHeaders,
    *,
    method: str = "POST",
    path: str = PATH,
    body: bytes = BODY,
    now: float = NOW,
    nonces: NonceStore | None = None,
) -> None:
    verify(
        signed,
        secret=SECRET,
        method=method,
        path_qs=path,
        body=body,
        now=now,
        tolerance_s=60,
        nonces=nonces or NonceStore(120),
    )


def code_of(signed: SignedHeaders, **kwargs: object) -> str:
    with pytest.raises(AuthenticationError) as info:
        check(signed, **kwargs)  # type: ignore[arg-type]
    assert info.value.status == 401
    return info.value.code


def test_valid_request_is_accepted() -> None:
    check(headers_for())
    check(
        headers_for(method="GET", path="/api/scanner/v1/allowlist", body=b""),
        method="GET",
        path="/api/scanner/v1/allowlist",
        body=b"",
    )


@pytest.mark.parametrize(
    "missing",
    [
        "X-Bulle-Scanner",
        "X-Bulle-Timestamp",
        "X-Bulle-Nonce",
        "Content-Digest",
        "X-Bulle-Signature",
    ],
)
def test_missing_header_is_unsigned(missing: str) -> None:
    headers = {
        "X-Bulle-Scanner": "s-entrance",
        "X-Bulle-Timestamp": str(NOW),
        "X-Bulle-Nonce": NONCE,
        "Content-Digest": content_digest(BODY),
        "X-Bulle-Signature": "c2ln",
    }
    del headers[missing]
    with pytest.raises(AuthenticationError) as info:
        read_headers(headers)
    assert info.value.code == "unsigned"
    assert missing in info.value.message


def test_short_nonce_is_unsigned() -> None:
    assert code_of(headers_for(nonce="abc")) == "unsigned"


@pytest.mark.parametrize(
    ("timestamp", "now", "code"),
    [
        (NOW - 61, NOW, "stale"),
        (NOW + 61, NOW, "stale"),
        (NOW - 60, NOW, None),
        (NOW + 60, NOW, None),
    ],
)
def test_timestamp_window(timestamp: int, now: int, code: str | None) -> None:
    signed = headers_for(timestamp=timestamp)
    if code is None:
        check(signed, now=now)
    else:
        assert code_of(signed, now=now) == code


def test_non_integer_timestamp_is_stale() -> None:
    signed = headers_for()
    bad = SignedHeaders(signed.scanner_id, "17638e5", signed.nonce, signed.digest, signed.signature)
    assert code_of(bad) == "stale"


def test_body_change_is_bad_digest() -> None:
    assert code_of(headers_for(), body=BODY + b" ") == "bad_digest"


@pytest.mark.parametrize(
    ("kwargs", "check_kwargs"),
    [
        ({"secret": "another-secret"}, {}),
        ({}, {"method": "PUT"}),
        ({}, {"path": PATH + "?x=1"}),
        ({"scanner_id": "s-parts"}, {}),
    ],
)
def test_wrong_key_or_request_line_is_bad_signature(
    kwargs: dict[str, str], check_kwargs: dict[str, str]
) -> None:
    signed = headers_for(**kwargs)  # type: ignore[arg-type]
    if "scanner_id" in kwargs:
        # A header claiming another scanner than the one signed for.
        signed = SignedHeaders(
            "s-entrance", signed.timestamp, signed.nonce, signed.digest, signed.signature
        )
    assert code_of(signed, **check_kwargs) == "bad_signature"


def test_reused_nonce_is_replayed() -> None:
    nonces = NonceStore(120)
    signed = headers_for()
    check(signed, nonces=nonces)
    assert code_of(signed, nonces=nonces, now=NOW + 1) == "replayed"


def test_same_nonce_of_another_scanner_is_not_a_replay() -> None:
    nonces = NonceStore(120)
    check(headers_for(), nonces=nonces)
    other = headers_for(scanner_id="s-parts")
    verify(
        other,
        secret=SECRET,
        method="POST",
        path_qs=PATH,
        body=BODY,
        now=NOW,
        tolerance_s=60,
        nonces=nonces,
    )


def test_bad_signature_does_not_burn_the_nonce() -> None:
    nonces = NonceStore(120)
    forged = headers_for(secret="wrong")
    assert code_of(forged, nonces=nonces) == "bad_signature"
    check(headers_for(), nonces=nonces)


def test_nonce_store_expiry_with_explicit_time() -> None:
    store = NonceStore(ttl_s=120)
    assert store.use("a", 1000.0)
    assert not store.use("a", 1000.0)
    assert not store.use("a", 1120.0)  # exactly ttl later: still remembered
    assert store.use("b", 1100.0)
    assert store.use("a", 1120.5)  # forgotten past the ttl
    assert not store.use("a", 1121.0)
    assert not store.use("b", 1219.0)
