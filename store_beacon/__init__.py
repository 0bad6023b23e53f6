"""The store beacon: what a shop's boxes broadcast and how the server checks a phone's proof.

Pure (no I/O, time passed in), shared by the scanner (which broadcasts) and the store server
(which checks a check-in's proof); neither imports the other. docs/api.md, "Store beacon".
"""

from store_beacon.proof import (
    DOMAIN,
    MAX_MAJOR,
    MIN_KEY_BYTES,
    SLOT_S,
    ProofMatch,
    ProofRefused,
    Refusal,
    StoreBeacon,
    advertised_now,
    key_from_text,
    match_proof,
    minor_for,
    next_slot_at,
    slot_of,
)

__all__ = [
    "DOMAIN",
    "MAX_MAJOR",
    "MIN_KEY_BYTES",
    "SLOT_S",
    "ProofMatch",
    "ProofRefused",
    "Refusal",
    "StoreBeacon",
    "advertised_now",
    "key_from_text",
    "match_proof",
    "minor_for",
    "next_slot_at",
    "slot_of",
]
