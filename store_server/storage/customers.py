"""Customers: profile, app identity, preferences, wishlist, the snapshot policy decides on,
"my data" and erasure."""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import time
from typing import Any

from store_server.consent import PURPOSES, LogEntry, is_active
from store_server.errors import ValidationError
from store_server.policy import CustomerSnapshot, Preferences, WishItem
from store_server.storage.consents import (
    append_consent_log,
    consent_log_rows,
    consents_of,
)
from store_server.storage.database import (
    Handle,
    batches,
    customer_lock,
    immediate,
    lock,
    one,
    rows,
    truncate_wal,
)
from store_server.storage.keys import (
    TemporaryKeyRow,
    delete_temporary_keys_of,
    put_temporary_keys,
)
from store_server.storage.visits import retract_open_cards

# Pickup codes: 6 characters from an alphabet without look-alikes (0/O, 1/I/L).
PICKUP_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
PICKUP_CODE_LENGTH = 6

IN_LIST_CHUNK = 500
"""Ids bound per ``IN (...)`` query: well under SQLite's limit on bound variables (999 in
older builds), whatever the number of customers asked about."""

IDENTITY_BATCH_ROWS = 5000
"""Rows fetched at a time when scanning every identity: a few hundred KB of tuples at once."""

# The customer's own columns shown in "my data" (token_hash is a credential, not data about them).
_PROFILE_COLUMNS = (
    "id, created_at, display_name, title, name_form, language, greet_mode, quiet_start,"
    " quiet_end, not_today, pickup_code, legacy_ibeacon, ibeacon_id"
)


def token_hash(token: str) -> str:
    """Bearer tokens and session ids are stored only as their SHA-256."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_pickup_code() -> str:
    return "".join(secrets.choice(PICKUP_ALPHABET) for _ in range(PICKUP_CODE_LENGTH))


@dataclass(frozen=True, slots=True)
class NewCustomer:
    customer_id: str
    token: str


def create_customer(
    db: Handle,
    *,
    key_wrapped_for: Any,
    k: int,
    clock_offset_s: float,
    language: str,
    now: float,
    wrap: str = "master",
    temporary_keys_for: Callable[[str], list[TemporaryKeyRow]] | None = None,
) -> NewCustomer:
    """Create a customer and their app identity; `key_wrapped_for(customer_id)` wraps the key
    (as ``wrap`` says); in chain mode `temporary_keys_for(customer_id)` gives the temporary
    keys stored with it."""
    customer_id = "c_" + secrets.token_hex(12)
    token = secrets.token_urlsafe(32)
    tks = temporary_keys_for(customer_id) if temporary_keys_for is not None else []
    with immediate(db):
        db.execute(
            "INSERT INTO customers (id, token_hash, created_at, language, pickup_code)"
            " VALUES (?, ?, ?, ?, ?)",
            [customer_id, token_hash(token), now, language, new_pickup_code()],
        )
        db.execute(
            "INSERT INTO identities (customer_id, key_wrapped, k, clock_offset_s, created_at,"
            " wrap) VALUES (?, ?, ?, ?, ?, ?)",
            [customer_id, key_wrapped_for(customer_id), k, clock_offset_s, now, wrap],
        )
        put_temporary_keys(db, tks, now)
    return NewCustomer(customer_id, token)


def rotate_identity(
    db: Handle,
    customer_id: str,
    *,
    key_wrapped: bytes,
    k: int,
    clock_offset_s: float,
    now: float,
    wrap: str = "master",
    temporary_keys: list[TemporaryKeyRow] | None = None,
) -> None:
    """Replace a customer's app identity (re-enrollment): the previous key is overwritten,
    and so are its temporary keys (chain mode: replaced by ``temporary_keys``)."""
    with immediate(db):
        db.execute(
            "UPDATE identities SET key_wrapped = ?, k = ?, clock_offset_s = ?, created_at = ?,"
            " wrap = ? WHERE customer_id = ?",
            [key_wrapped, k, clock_offset_s, now, wrap, customer_id],
        )
        delete_temporary_keys_of(db, customer_id)
        put_temporary_keys(db, temporary_keys or [], now)


def set_legacy_ibeacon(db: Handle, customer_id: str, ibeacon_id: str | None) -> None:
    """Enable (with the id assigned now) or disable (forgetting the id) the legacy iBeacon."""
    with immediate(db):
        db.execute(
            "UPDATE customers SET legacy_ibeacon = ?, ibeacon_id = ? WHERE id = ?",
            [int(ibeacon_id is not None), ibeacon_id, customer_id],
        )


def legacy_ibeacon_ids(db: Handle, customer_ids: Iterable[str]) -> dict[str, str]:
    """customer id -> static iBeacon id, for those of ``customer_ids`` who enabled one."""
    ids = list(customer_ids)
    found: dict[str, str] = {}
    for start in range(0, len(ids), IN_LIST_CHUNK):
        chunk = ids[start : start + IN_LIST_CHUNK]
        marks = ",".join("?" * len(chunk))
        for row in db.execute(
            f"SELECT id, ibeacon_id FROM customers WHERE legacy_ibeacon = 1"  # noqa: S608
            f" AND ibeacon_id IS NOT NULL AND id IN ({marks})",
            chunk,
        ):
            found[str(row[0])] = str(row[1])
    return found


def ibeacon_id_of(db: Handle, customer_id: str) -> tuple[bool, str | None]:
    """(whether the customer exists, their static iBeacon id if they have one)."""
    row = one(db, "SELECT ibeacon_id FROM customers WHERE id = ?", [customer_id])
    return (False, None) if row is None else (True, row["ibeacon_id"])


def preferences_row(db: Handle, customer_id: str) -> dict[str, Any] | None:
    """The customer's greeting preferences, pickup code and legacy iBeacon setting."""
    return one(
        db,
        "SELECT display_name, title, name_form, language, greet_mode, quiet_start, quiet_end,"
        " not_today, pickup_code, legacy_ibeacon, ibeacon_id FROM customers WHERE id = ?",
        [customer_id],
    )


def customer_by_token(db: Handle, token: str) -> str | None:
    row = one(db, "SELECT id FROM customers WHERE token_hash = ?", [token_hash(token)])
    return None if row is None else str(row["id"])


def identity_rows(db: Handle, customer_ids: Iterable[str] | None = None) -> list[dict[str, Any]]:
    if customer_ids is None:
        return rows(db, "SELECT customer_id, key_wrapped, k, clock_offset_s FROM identities")
    ids = list(customer_ids)
    found: list[dict[str, Any]] = []
    for start in range(0, len(ids), IN_LIST_CHUNK):
        chunk = ids[start : start + IN_LIST_CHUNK]
        marks = ",".join("?" * len(chunk))
        found += rows(
            db,
            f"SELECT customer_id, key_wrapped, k, clock_offset_s FROM identities"  # noqa: S608
            f" WHERE customer_id IN ({marks})",
            chunk,
        )
    return found


def identity_batches(
    db: Handle,
) -> Iterator[list[tuple[str, bytes, int, float]]]:
    """Every stored identity as ``(customer_id, key_wrapped, k, clock_offset_s)`` tuples, in
    batches (a cursor, no row dicts). Consume it in the database thread."""
    yield from batches(
        db,
        "SELECT customer_id, key_wrapped, k, clock_offset_s FROM identities",
        IDENTITY_BATCH_ROWS,
    )


def identity_rowid_range(db: Handle) -> tuple[int, int]:
    """The lowest and highest rowid of the identities table ((0, -1) when it is empty)."""
    low, high = db.execute("SELECT min(rowid), max(rowid) FROM identities").fetchone()
    return (0, -1) if low is None else (int(low), int(high))


def identities_between(db: Handle, first: int, last: int) -> list[tuple[str, bytes, int, float]]:
    """The identities whose rowid is in ``first..last``, as ``(customer_id, key_wrapped, k,
    clock_offset_s)`` tuples (one range of a start-up build)."""
    cursor = db.execute(
        "SELECT customer_id, key_wrapped, k, clock_offset_s FROM identities"
        " WHERE rowid BETWEEN ? AND ?",
        [first, last],
    )
    return [tuple(row) for row in cursor.fetchall()]


def _parse_time(value: str | None) -> time | None:
    return None if value is None else time.fromisoformat(value)


def preferences_of(row: dict[str, Any]) -> Preferences:
    return Preferences(
        display_name=row["display_name"],
        title=row["title"],
        name_form=row["name_form"],
        language=row["language"],
        greet_mode=row["greet_mode"],
        quiet_start=_parse_time(row["quiet_start"]),
        quiet_end=_parse_time(row["quiet_end"]),
        not_today=row["not_today"],
    )


def set_preferences(db: Handle, customer_id: str, values: dict[str, Any]) -> None:
    allowed = {
        "display_name",
        "title",
        "name_form",
        "language",
        "greet_mode",
        "quiet_start",
        "quiet_end",
        "not_today",
    }
    unknown = set(values) - allowed
    if unknown:
        raise ValidationError("unknown preference", field=sorted(unknown)[0])
    if not values:
        return
    assignments = ", ".join(f"{key} = ?" for key in values)
    with immediate(db):
        db.execute(
            f"UPDATE customers SET {assignments} WHERE id = ?",  # noqa: S608 (keys allow-listed)
            [*values.values(), customer_id],
        )


def set_wishlist(db: Handle, customer_id: str, skus: list[str], now: float) -> None:
    known = {str(r["sku"]) for r in rows(db, "SELECT sku FROM catalog")}
    for index, sku in enumerate(skus):
        if sku not in known:
            raise ValidationError(f"unknown item {sku!r}", field=f"skus[{index}]")
    with immediate(db):
        db.execute("DELETE FROM wishlist WHERE customer_id = ?", [customer_id])
        for sku in dict.fromkeys(skus):
            db.execute(
                "INSERT INTO wishlist (customer_id, sku, added_at) VALUES (?, ?, ?)",
                [customer_id, sku, now],
            )


def snapshot(db: Handle, customer_id: str, store_id: str, now: float) -> CustomerSnapshot | None:
    row = one(db, "SELECT * FROM customers WHERE id = ?", [customer_id])
    if row is None:
        return None
    purposes = frozenset(
        c.purpose for c in consents_of(db, customer_id, store_id) if is_active(c, now)
    )
    wishlist = tuple(
        WishItem(w["sku"], w["name_fr"], w["name_en"], w["count"], w["aisle"])
        for w in rows(
            db,
            "SELECT w.sku, c.name_fr, c.name_en, s.count, s.aisle FROM wishlist w"
            " JOIN catalog c ON c.sku = w.sku"
            " LEFT JOIN stock s ON s.sku = w.sku AND s.store_id = ?"
            " WHERE w.customer_id = ? ORDER BY w.added_at, w.sku",
            [store_id, customer_id],
        )
    )
    return CustomerSnapshot(
        customer_id, purposes, preferences_of(row), wishlist, row["pickup_code"]
    )


def customer_data(db: Handle, customer_id: str, subject: str, now: float) -> dict[str, Any] | None:
    """Every record held about the customer (GDPR Art. 15), or None if there is no such customer."""
    profile = one(db, f"SELECT {_PROFILE_COLUMNS} FROM customers WHERE id = ?", [customer_id])  # noqa: S608
    if profile is None:
        return None
    # The static iBeacon id the store keeps while legacy mode is on (null otherwise).
    profile["legacy_ibeacon"] = bool(profile["legacy_ibeacon"])
    consents = [
        {
            "purpose": c.purpose,
            "scope": c.scope,
            "store_id": c.store_id,
            "text_hash": c.text_hash,
            "granted_at": c.granted_at,
            "expires_at": c.expires_at,
            "active": is_active(c, now),
        }
        for c in consents_of(db, customer_id)
    ]
    history = [
        {
            "seq": e.seq,
            "action": e.entry.action,
            "purpose": e.entry.purpose,
            "scope": e.entry.scope,
            "text_hash": e.entry.text_hash,
            "channel": e.entry.channel,
            "app_version": e.entry.app_version,
            "at": e.entry.at,
            "entry_hash": e.entry_hash,
        }
        for e in consent_log_rows(db, subject)
    ]
    cards = [
        {**{k: v for k, v in r.items() if k != "payload"}, "payload": json.loads(r["payload"])}
        for r in rows(
            db,
            "SELECT id, store_id, kind, created_at, state, acked_by, acked_at, payload FROM cards"
            " WHERE customer_id = ? ORDER BY created_at",
            [customer_id],
        )
    ]
    messages = [
        {"id": r["id"], "store_id": r["store_id"], "at": r["at"], **json.loads(r["body"])}
        for r in rows(
            db,
            "SELECT id, store_id, at, body FROM messages WHERE customer_id = ? ORDER BY at",
            [customer_id],
        )
    ]
    return {
        "profile": profile,
        "identity": one(
            db,
            "SELECT k AS rotation_exponent, created_at FROM identities WHERE customer_id = ?",
            [customer_id],
        ),
        "consents": consents,
        "consent_history": history,
        "wishlist": rows(
            db,
            "SELECT w.sku, c.name_fr, c.name_en, w.added_at FROM wishlist w"
            " JOIN catalog c ON c.sku = w.sku WHERE w.customer_id = ? ORDER BY w.added_at, w.sku",
            [customer_id],
        ),
        "visits": rows(
            db,
            "SELECT id, store_id, arrived_at, left_at, zone, via FROM visits WHERE customer_id = ?"
            " ORDER BY arrived_at",
            [customer_id],
        ),
        "decisions": rows(
            db,
            "SELECT id, store_id, visit_id, at, outcome, reason FROM decisions"
            " WHERE customer_id = ?"
            " ORDER BY at",
            [customer_id],
        ),
        "cards": cards,
        "messages": messages,
        "access_log": rows(
            db,
            "SELECT store_id, staff_user, card_id, action, at FROM access_log"
            " WHERE customer_id = ?"
            " ORDER BY at, id",
            [customer_id],
        ),
    }


@dataclass(frozen=True, slots=True)
class Erasure:
    erased: bool
    retracted_cards: tuple[str, ...]


def erase_customer(
    db: Handle,
    *,
    customer_id: str,
    subject_ref: str,
    channel: str,
    app_version: str | None,
    now: float,
) -> Erasure:
    """Delete the customer and everything that cascades from them; keep a pseudonymous proof.

    The consent log keeps its entries (they name only the keyed pseudonym) and gains one
    'erase' entry per purpose. After the commit the WAL is checkpointed and truncated, so the
    deleted rows (zeroed by secure_delete in the main file) do not survive in the -wal file.
    """
    with immediate(db):
        lock(db, customer_lock(customer_id))
        if one(db, "SELECT 1 AS x FROM customers WHERE id = ?", [customer_id]) is None:
            return Erasure(False, ())
        cards = retract_open_cards(db, customer_id, now)
        for purpose in PURPOSES:
            append_consent_log(
                db, LogEntry(subject_ref, purpose, "erase", None, None, channel, app_version, now)
            )
        db.execute("DELETE FROM customers WHERE id = ?", [customer_id])
    truncate_wal(db)
    return Erasure(True, cards)


def customer_ids(db: Handle) -> list[str]:
    """Every customer's id (a restore matches them with the consent log's pseudonyms)."""
    return [row["id"] for row in rows(db, "SELECT id FROM customers ORDER BY id")]


# Customers deleted per statement when forgetting enrollments (SQLite's variable limit).
_DELETE_CHUNK = 500


def unconsented_before(db: Handle, cutoff: float) -> list[str]:
    """Customers enrolled before `cutoff` who hold no consent now."""
    return [
        str(row["id"])
        for row in rows(
            db,
            "SELECT id FROM customers c WHERE created_at < ?"
            " AND NOT EXISTS (SELECT 1 FROM consents WHERE customer_id = c.id)",
            [cutoff],
        )
    ]


def forget_enrollments(db: Handle, customer_ids: list[str]) -> int:
    """Delete these customers (and, by cascade, their keys, preferences and wishlist) if they
    still hold no consent; nothing goes to the consent log (they never gave any)."""
    deleted = 0
    with immediate(db):
        for start in range(0, len(customer_ids), _DELETE_CHUNK):
            chunk = customer_ids[start : start + _DELETE_CHUNK]
            marks = ", ".join("?" for _ in chunk)
            sql = (
                f"DELETE FROM customers WHERE id IN ({marks})"  # noqa: S608 (placeholders only)
                " AND NOT EXISTS (SELECT 1 FROM consents WHERE customer_id = customers.id)"
            )
            deleted += db.execute(sql, chunk).rowcount
    return deleted
