"""Verification of signed scanner requests (pure; the wire format is in docs/api.md)."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass

from store_server.errors import AuthenticationError

SIGNATURE_SCHEME = "bulle-v1"
HEADER_SCANNER = "X-Bulle-Scanner"
HEADER_TIMESTAMP = "X-Bulle-Timestamp"
HEADER_NONCE = "X-Bulle-Nonce"
HEADER_DIGEST = "Content-Digest"
HEADER_SIGNATURE = "X-Bulle-Signature"
_REQUIRED = (HEADER_SCANNER, HEADER_TIMESTAMP, HEADER_NONCE, HEADER_DIGEST, HEADER_SIGNATURE)
# Nonces are 128-bit random hex strings: 32 characters.
NONCE_LENGTH = 32
_HEX = frozenset("0123456789abcdef")  # lower case, as docs/api.md specifies
# Unix seconds fit in 11 digits until the year 5138: anything longer is refused before it is
# turned into a number (a 400-digit integer overflows a float).
TIMESTAMP_MAX_DIGITS = 11
# Bound on remembered nonces; at 100 requests/s per scanner x 20 scanners x 120 s this holds
# every nonce that could still be inside the timestamp window.
MAX_REMEMBERED_NONCES = 500_000


def content_digest(body: bytes) -> str:
    """The RFC 9530 Content-Digest value for `body`."""
    return "sha-256=:" + base64.b64encode(hashlib.sha256(body).digest()).decode() + ":"


def signing_string(
    method: str, path_qs: str, scanner_id: str, timestamp: str, nonce: str, digest: str
) -> bytes:
    lines = (SIGNATURE_SCHEME, method.upper(), path_qs, scanner_id, timestamp, nonce, digest)
    return "\n".join(lines).encode()


def sign(secret: str, message: bytes) -> str:
    mac = hmac.new(secret.encode(), message, hashlib.sha256).digest()
    return base64.b64encode(mac).decode()


@dataclass(frozen=True, slots=True)
class SignedHeaders:
    scanner_id: str
    timestamp: str
    nonce: str
    digest: str
    signature: str


def read_headers(headers: Mapping[str, str]) -> SignedHeaders:
    """Extract the signature headers or raise `unsigned`."""
    missing = [name for name in _REQUIRED if not headers.get(name)]
    if missing:
        raise AuthenticationError(
            f"request is not signed: missing {', '.join(missing)}", code="unsigned"
        )
    return SignedHeaders(
        scanner_id=headers[HEADER_SCANNER],
        timestamp=headers[HEADER_TIMESTAMP],
        nonce=headers[HEADER_NONCE],
        digest=headers[HEADER_DIGEST],
        signature=headers[HEADER_SIGNATURE],
    )


class NonceStore:
    """Remembers nonces for twice the timestamp tolerance (pure, explicit time)."""

    def __init__(self, ttl_s: float) -> None:
        self._ttl = ttl_s
        self._seen: OrderedDict[str, float] = OrderedDict()

    def use(self, key: str, now: float) -> bool:
        """Record `key`; False when it was already used (a replay)."""
        while self._seen:
            oldest_key, at = next(iter(self._seen.items()))
            if now - at <= self._ttl and len(self._seen) < MAX_REMEMBERED_NONCES:
                break
            del self._seen[oldest_key]
        if key in self._seen:
            return False
        self._seen[key] = now
        return True


def verify(
    signed: SignedHeaders,
    *,
    secret: str,
    method: str,
    path_qs: str,
    body: bytes,
    now: float,
    tolerance_s: float,
    nonces: NonceStore,
) -> None:
    """Raise AuthenticationError (with the code of docs/api.md) unless the request is genuine."""
    raw = signed.timestamp
    if not (raw.isascii() and raw.isdigit() and len(raw) <= TIMESTAMP_MAX_DIGITS):
        raise AuthenticationError(
            f"timestamp must be Unix seconds (at most {TIMESTAMP_MAX_DIGITS} digits)",
            code="stale",
        )
    timestamp = int(raw)
    if abs(now - timestamp) > tolerance_s:
        raise AuthenticationError(
            "request timestamp is too far from the server clock (check the scanner's NTP)",
            code="stale",
        )
    if len(signed.nonce) != NONCE_LENGTH or not _HEX.issuperset(signed.nonce):
        raise AuthenticationError("nonce must be 32 lower-case hex characters", code="unsigned")
    if not hmac.compare_digest(content_digest(body), signed.digest):
        raise AuthenticationError("Content-Digest does not match the body", code="bad_digest")
    expected = sign(
        secret,
        signing_string(
            method, path_qs, signed.scanner_id, signed.timestamp, signed.nonce, signed.digest
        ),
    )
    if not hmac.compare_digest(expected, signed.signature):
        raise AuthenticationError("signature does not match", code="bad_signature")
    if not nonces.use(f"{signed.scanner_id}:{signed.nonce}", now):
        raise AuthenticationError("nonce already used", code="replayed")
