"""The key authority's keys (pure; RSA-OAEP and HKDF from ``cryptography``).

In chain mode the customers' identity keys are readable by the key authority only. A store
server that enrolls a customer seals the new identity key to the authority's public key
(RSA-OAEP with SHA-256, the subject bound as the OAEP label) and keeps nothing it could
open again. The authority opens sealed keys once and re-wraps them (AES-256-GCM,
``keywrap``) under a key derived from its private key with HKDF, so that its regular runs
cost one AES operation per customer rather than one RSA decryption.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from store_server.keywrap import MASTER_KEY_BYTES, KeyWrapError, aad, derive_key

AUTHORITY_KEY_BITS = 3072
"""RSA modulus size: 128-bit security (NIST SP 800-57), valid beyond 2030."""

PUBLIC_EXPONENT = 65537
"""The standard RSA public exponent (``cryptography``'s recommendation)."""

_WRAP_INFO = b"bulle/authority-identity-wrap"
"""HKDF context of the authority's identity-wrapping key (one use, one label)."""


def _oaep(label: bytes) -> padding.OAEP:
    return padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=label)


def generate_authority_key() -> tuple[bytes, bytes]:
    """A new authority key pair as PEM: (private key, PKCS#8 unencrypted; public key)."""
    key = rsa.generate_private_key(public_exponent=PUBLIC_EXPONENT, key_size=AUTHORITY_KEY_BITS)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, public


def load_private_key(pem: bytes) -> rsa.RSAPrivateKey:
    """The authority's private key from PEM; KeyWrapError if it is not an RSA private key."""
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise KeyWrapError("not a PEM private key without a passphrase") from None
    if not isinstance(key, rsa.RSAPrivateKey) or key.key_size < AUTHORITY_KEY_BITS:
        raise KeyWrapError(f"the authority key must be RSA of at least {AUTHORITY_KEY_BITS} bits")
    return key


def load_public_key(pem: bytes) -> rsa.RSAPublicKey:
    """The authority's public key from PEM (a private key's file gives its public half)."""
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        return load_private_key(pem).public_key()
    if not isinstance(key, rsa.RSAPublicKey) or key.key_size < AUTHORITY_KEY_BITS:
        raise KeyWrapError(f"the authority key must be RSA of at least {AUTHORITY_KEY_BITS} bits")
    return key


def seal(public_key: rsa.RSAPublicKey, key: bytes, aad: bytes) -> bytes:
    """Encrypt ``key`` to the authority; ``aad`` (the subject) is bound as the OAEP label."""
    if not isinstance(key, bytes) or not key:
        raise KeyWrapError("key to seal must be non-empty bytes")
    return public_key.encrypt(key, _oaep(aad))


def unseal(private_key: rsa.RSAPrivateKey, blob: bytes, aad: bytes) -> bytes:
    """Open a blob made by :func:`seal`; KeyWrapError on tamper, wrong key or wrong subject."""
    try:
        return private_key.decrypt(blob, _oaep(aad))
    except ValueError:
        raise KeyWrapError(
            "sealed key does not open (tampered, other authority or subject)"
        ) from None


def authority_wrap_key(private_key: rsa.RSAPrivateKey) -> bytes:
    """The AES-256 key under which the authority keeps the identity keys it opened."""
    material = private_key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return HKDF(
        algorithm=hashes.SHA256(), length=MASTER_KEY_BYTES, salt=None, info=_WRAP_INFO
    ).derive(material)


@dataclass(frozen=True, slots=True)
class ChainKeys:
    """What a chain's server holds of the key flow: the authority's public key (to seal the
    keys of customers it enrolls), the temporary-key wrapping key (derived from the master
    key, which a chain's servers share), and, on the key authority only, its private key."""

    public_key: rsa.RSAPublicKey = field(repr=False)
    tk_key: bytes = field(repr=False)
    private_key: rsa.RSAPrivateKey | None = field(default=None, repr=False)


def chain_keys(master_key: bytes, public_pem: bytes | None, private_pem: bytes | None) -> ChainKeys:
    """The chain keys from the configured PEM files' contents (the private key, when given,
    also gives the public one); KeyWrapError if a key is malformed or they do not match."""
    private = load_private_key(private_pem) if private_pem else None
    if public_pem:
        public = load_public_key(public_pem)
        if private is not None and public.public_numbers() != private.public_key().public_numbers():
            raise KeyWrapError("the public key is not the private key's")
    elif private is not None:
        public = private.public_key()
    else:
        raise KeyWrapError("no authority key given")
    return ChainKeys(public, temporary_keys_key(master_key), private)


def temporary_keys_key(master_key: bytes) -> bytes:
    """The key wrapping the stored temporary keys (one use of the master key)."""
    return derive_key(master_key, "temporary-keys")


def temporary_key_aad(customer_id: str, slot: int) -> bytes:
    """Associated data binding a wrapped temporary key to its customer and slot."""
    return aad("temporary-key", f"{customer_id}/{slot}")
