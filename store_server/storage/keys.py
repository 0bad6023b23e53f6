"""Keys of a chain: the temporary keys store servers resolve EIDs with, and the key
authority's view of the identity keys (chain mode; docs/privacy.md, "Chain mode").

A chain's store server reads ``eid_temporary_keys`` only. The functions reading
``identities.key_wrapped`` here are the key authority's (on PostgreSQL its role alone may).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from store_server.storage.database import Handle, immediate, rows

IN_LIST_CHUNK = 500
"""Ids bound per ``IN (...)`` query (well under SQLite's limit on bound variables)."""


@dataclass(frozen=True, slots=True)
class TemporaryKeyRow:
    """One stored temporary key (still wrapped)."""

    customer_id: str
    slot: int
    tk_wrapped: bytes
    k: int
    clock_offset_s: float
    not_after: float


@dataclass(frozen=True, slots=True)
class AuthorityIdentity:
    """A consenting customer's identity as the key authority reads it, with the slots whose
    temporary keys are already stored."""

    customer_id: str
    key_wrapped: bytes
    wrap: str
    k: int
    clock_offset_s: float
    slots: frozenset[int]


def _temporary_key(row: Any) -> TemporaryKeyRow:
    return TemporaryKeyRow(
        str(row[0]), int(row[1]), bytes(row[2]), int(row[3]), float(row[4]), float(row[5])
    )


_TK_COLUMNS = "customer_id, slot, tk_wrapped, k, clock_offset_s, not_after"


def put_temporary_keys(db: Handle, keys: Iterable[TemporaryKeyRow], now: float) -> int:
    """Store temporary keys (inside the caller's transaction); a key of a customer and slot
    already stored is replaced (a re-enrollment's new key). How many were written."""
    written = 0
    for key in keys:
        db.execute(
            "INSERT INTO eid_temporary_keys (customer_id, slot, tk_wrapped, k, clock_offset_s,"
            " not_after, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (customer_id, slot) DO UPDATE SET tk_wrapped = excluded.tk_wrapped,"
            " k = excluded.k, clock_offset_s = excluded.clock_offset_s,"
            " not_after = excluded.not_after, created_at = excluded.created_at",
            [
                key.customer_id,
                key.slot,
                key.tk_wrapped,
                key.k,
                key.clock_offset_s,
                key.not_after,
                now,
            ],
        )
        written += 1
    return written


def store_temporary_keys(db: Handle, keys: list[TemporaryKeyRow], now: float) -> int:
    """:func:`put_temporary_keys` in a transaction of its own, for customers still enrolled."""
    with immediate(db):
        live = _existing_customers(db, {key.customer_id for key in keys})
        return put_temporary_keys(db, [key for key in keys if key.customer_id in live], now)


def _existing_customers(db: Handle, customer_ids: set[str]) -> set[str]:
    ids = sorted(customer_ids)
    found: set[str] = set()
    for start in range(0, len(ids), IN_LIST_CHUNK):
        chunk = ids[start : start + IN_LIST_CHUNK]
        marks = ",".join("?" * len(chunk))
        found.update(
            str(row[0])
            for row in db.execute(f"SELECT id FROM customers WHERE id IN ({marks})", chunk)  # noqa: S608
        )
    return found


def temporary_keys_of(db: Handle, customer_ids: Iterable[str], now: float) -> list[TemporaryKeyRow]:
    """The stored temporary keys of these customers still of use at ``now``."""
    ids = list(customer_ids)
    found: list[TemporaryKeyRow] = []
    for start in range(0, len(ids), IN_LIST_CHUNK):
        chunk = ids[start : start + IN_LIST_CHUNK]
        marks = ",".join("?" * len(chunk))
        found += [
            _temporary_key(row)
            for row in db.execute(
                f"SELECT {_TK_COLUMNS} FROM eid_temporary_keys"  # noqa: S608
                f" WHERE not_after > ? AND customer_id IN ({marks})",
                [now, *chunk],
            )
        ]
    return found


def all_temporary_keys(db: Handle, now: float) -> list[TemporaryKeyRow]:
    """Every stored temporary key still of use at ``now`` (a chain server's start-up)."""
    return [
        _temporary_key(row)
        for row in db.execute(
            f"SELECT {_TK_COLUMNS} FROM eid_temporary_keys WHERE not_after > ?",  # noqa: S608
            [now],
        )
    ]


def temporary_keys_since(db: Handle, since: float, now: float) -> list[TemporaryKeyRow]:
    """The temporary keys stored at or after ``since`` and still of use at ``now``."""
    return [
        _temporary_key(row)
        for row in db.execute(
            f"SELECT {_TK_COLUMNS} FROM eid_temporary_keys"  # noqa: S608
            " WHERE created_at >= ? AND not_after > ?",
            [since, now],
        )
    ]


def delete_temporary_keys_of(db: Handle, customer_id: str) -> None:
    """Drop the customer's temporary keys (inside the caller's transaction)."""
    db.execute("DELETE FROM eid_temporary_keys WHERE customer_id = ?", [customer_id])


def identities_for_authority(db: Handle, now: float) -> list[AuthorityIdentity]:
    """Every customer with an active consent at any store: their wrapped identity key and
    the slots already stored (the key authority's read; its role alone may read keys)."""
    slots: dict[str, set[int]] = {}
    for customer_id, slot in db.execute(
        "SELECT customer_id, slot FROM eid_temporary_keys WHERE not_after > ?", [now]
    ):
        slots.setdefault(str(customer_id), set()).add(int(slot))
    return [
        AuthorityIdentity(
            str(row[0]),
            bytes(row[1]),
            str(row[2]),
            int(row[3]),
            float(row[4]),
            frozenset(slots.get(str(row[0]), ())),
        )
        for row in db.execute(
            "SELECT i.customer_id, i.key_wrapped, i.wrap, i.k, i.clock_offset_s"
            " FROM identities i WHERE EXISTS (SELECT 1 FROM consents c"
            " WHERE c.customer_id = i.customer_id AND c.granted_at <= ? AND c.expires_at > ?)",
            [now, now],
        )
    ]


def adopt_identity(db: Handle, customer_id: str, before: bytes, key_wrapped: bytes) -> bool:
    """Replace a sealed (or master-wrapped) identity key by the authority's wrap of it
    (inside the caller's transaction), unless it changed meanwhile (a re-enrollment); True if
    replaced."""
    return bool(
        db.execute(
            "UPDATE identities SET key_wrapped = ?, wrap = 'authority'"
            " WHERE customer_id = ? AND wrap <> 'authority' AND key_wrapped = ?",
            [key_wrapped, customer_id, before],
        ).rowcount
    )


def record_authority_run(
    db: Handle,
    adopted: list[tuple[str, bytes, bytes]],
    keys: list[TemporaryKeyRow],
    now: float,
) -> tuple[int, int]:
    """One authority run's writes in one transaction: the adopted identities, the new
    temporary keys (of customers still enrolled), and the purge of keys out of use or of
    customers who no longer consent anywhere. (identities adopted, keys written)."""
    with immediate(db):
        done = sum(adopt_identity(db, cid, sealed, wrapped) for cid, sealed, wrapped in adopted)
        live = _existing_customers(db, {key.customer_id for key in keys})
        written = put_temporary_keys(db, [key for key in keys if key.customer_id in live], now)
        purge_temporary_keys(db, now)
    return done, written


UNDECIDED_GRACE_S = 3600.0
"""The temporary keys written at enrollment are kept this long without a consent: the
customer reads the texts and decides in the same app session, and is recognised at once."""


def purge_temporary_keys(db: Handle, now: float) -> int:
    """Delete temporary keys past use, and those of customers without an active consent
    (past UNDECIDED_GRACE_S) (inside the caller's transaction); how many."""
    gone = db.execute("DELETE FROM eid_temporary_keys WHERE not_after <= ?", [now]).rowcount
    gone += db.execute(
        "DELETE FROM eid_temporary_keys WHERE created_at < ? AND NOT EXISTS (SELECT 1"
        " FROM consents c WHERE c.customer_id = eid_temporary_keys.customer_id"
        " AND c.granted_at <= ? AND c.expires_at > ?)",
        [now - UNDECIDED_GRACE_S, now, now],
    ).rowcount
    return int(gone)


def temporary_key_count(db: Handle) -> int:
    return int(rows(db, "SELECT count(*) AS n FROM eid_temporary_keys")[0]["n"])
