"""Consent (pure): purposes, versioned texts, active state, and the hash-chained proof log.

Invariant 2 of DESIGN.md: `greeting` and `stock_check` are separate purposes, and nothing
here defaults to granted. Invariant 4: every grant, renewal and withdrawal is appended to a
log whose entries are chained by SHA-256, so that any change to a past entry is detected.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Literal

from store_server.errors import ConsentLogError

Purpose = Literal["greeting", "stock_check"]
PURPOSES: tuple[Purpose, ...] = ("greeting", "stock_check")
Action = Literal["grant", "withdraw", "renew", "erase"]
Scope = Literal["store", "chain"]
# A consent lapses after a year unless renewed (the CNIL's guidance on consent lifetimes).
DEFAULT_CONSENT_DURATION_S = 365 * 24 * 3600
# The first entry of the chain links to this value.
GENESIS_HASH = "0" * 64


@dataclass(frozen=True, slots=True)
class ConsentText:
    purpose: Purpose
    version: int
    text_fr: str
    text_en: str

    @property
    def hash(self) -> str:
        canonical = json.dumps(asdict(self), sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class ActiveConsent:
    purpose: Purpose
    scope: Scope
    text_hash: str
    granted_at: float
    expires_at: float
    store_id: str | None = None
    """The store it was given at (a store-scoped consent counts there only)."""


def is_active(consent: ActiveConsent | None, now: float) -> bool:
    """A consent counts only from its grant until its expiry."""
    return consent is not None and consent.granted_at <= now < consent.expires_at


def active_purposes(consents: Iterable[ActiveConsent], now: float) -> frozenset[Purpose]:
    return frozenset(c.purpose for c in consents if is_active(c, now))


@dataclass(frozen=True, slots=True)
class LogEntry:
    """One consent event as stored (the subject is pseudonymous: see `subject_ref`)."""

    subject_ref: str
    purpose: str
    action: str
    text_hash: str | None
    scope: str | None
    channel: str
    app_version: str | None
    at: float


def subject_ref(pseudonym_key: bytes, customer_id: str) -> str:
    """A keyed pseudonym of the customer, so the log survives erasure without naming anyone."""
    return hmac.new(pseudonym_key, customer_id.encode(), hashlib.sha256).hexdigest()


def entry_hash(prev_hash: str, entry: LogEntry) -> str:
    canonical = json.dumps(asdict(entry), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256((prev_hash + "\n" + canonical).encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class ChainedEntry:
    seq: int
    entry: LogEntry
    prev_hash: str
    entry_hash: str


def verify_chain(rows: Iterable[ChainedEntry]) -> int:
    """Check every link; return the entry count or raise ConsentLogError at the first break."""
    expected_prev = GENESIS_HASH
    count = 0
    for row in rows:
        if row.prev_hash != expected_prev:
            raise ConsentLogError(f"consent log broken at seq {row.seq}: previous hash mismatch")
        if entry_hash(row.prev_hash, row.entry) != row.entry_hash:
            raise ConsentLogError(f"consent log broken at seq {row.seq}: entry was altered")
        expected_prev = row.entry_hash
        count += 1
    return count


# -- signed checkpoints ----------------------------------------------------------------------
# The SHA-256 chain shows any change to one entry, but someone with write access to the file
# can rewrite an entry and recompute every hash after it. A checkpoint signs the chain's head
# (sequence number and entry hash) with a key derived from the master key, which the database
# does not hold: a rewritten or deleted entry up to a checkpoint no longer matches it.

CHECKPOINT_LABEL = b"bulle/consent-checkpoint"


def checkpoint_key(master_key: bytes) -> bytes:
    """The checkpoints' HMAC key, derived from the master key (never stored)."""
    return hmac.new(master_key, CHECKPOINT_LABEL, hashlib.sha256).digest()


@dataclass(frozen=True, slots=True)
class Checkpoint:
    seq: int
    entry_hash: str
    at: float
    mac: str


def checkpoint_mac(key: bytes, seq: int, head_hash: str, at: float) -> str:
    message = f"{seq}\n{head_hash}\n{at!r}".encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def sign_checkpoint(key: bytes, seq: int, head_hash: str, at: float) -> Checkpoint:
    return Checkpoint(seq, head_hash, at, checkpoint_mac(key, seq, head_hash, at))


@dataclass(frozen=True, slots=True)
class Anchoring:
    """What the checkpoints vouch for: entries up to `anchored_seq`, `unanchored` after it."""

    checkpoints: int
    anchored_seq: int
    unanchored: int


def verify_checkpoints(
    rows: Iterable[ChainedEntry], checkpoints: Iterable[Checkpoint], key: bytes
) -> Anchoring:
    """Check every checkpoint's signature and that the entry it names is still there with
    the same hash; raise ConsentLogError at the first that does not hold."""
    hashes = {row.seq: row.entry_hash for row in rows}
    count = 0
    anchored = 0
    for point in checkpoints:
        expected = checkpoint_mac(key, point.seq, point.entry_hash, point.at)
        if not hmac.compare_digest(expected, point.mac):
            raise ConsentLogError(
                f"consent log checkpoint at seq {point.seq} is not signed by this master key"
            )
        if hashes.get(point.seq) != point.entry_hash:
            raise ConsentLogError(
                f"consent log rewritten at seq {point.seq}: the entry no longer matches its"
                " signed checkpoint"
            )
        count += 1
        anchored = max(anchored, point.seq)
    unanchored = sum(1 for seq in hashes if seq > anchored)
    return Anchoring(count, anchored, unanchored)
