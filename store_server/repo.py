"""Database operations (run on the database thread through `Database.run`).

Each function takes the sqlite-utils Database first and does one unit of work; functions
that write use `immediate()` so that they are atomic and durable before they return.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import secrets
import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import time
from typing import Any, cast

import sqlite_utils

from store_server.consent import (
    GENESIS_HASH,
    PURPOSES,
    ActiveConsent,
    ChainedEntry,
    ConsentText,
    LogEntry,
    Purpose,
    Scope,
    entry_hash,
    is_active,
)
from store_server.db import immediate
from store_server.errors import NotFoundError, ValidationError
from store_server.policy import CustomerSnapshot, Preferences, WishItem

# Pickup codes: 6 characters from an alphabet without look-alikes (0/O, 1/I/L).
PICKUP_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
PICKUP_CODE_LENGTH = 6


def token_hash(token: str) -> str:
    """Bearer tokens and session ids are stored only as their SHA-256."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_pickup_code() -> str:
    return "".join(secrets.choice(PICKUP_ALPHABET) for _ in range(PICKUP_CODE_LENGTH))


def rows(db: sqlite_utils.Database, sql: str, params: Iterable[Any] = ()) -> list[dict[str, Any]]:
    return list(db.query(sql, list(params)))


def one(db: sqlite_utils.Database, sql: str, params: Iterable[Any] = ()) -> dict[str, Any] | None:
    found = rows(db, sql, params)
    return found[0] if found else None


# -- consent texts ---------------------------------------------------------------------------


def ensure_consent_texts(db: sqlite_utils.Database, texts: Iterable[ConsentText]) -> None:
    with immediate(db):
        for text in texts:
            db.execute(
                "INSERT OR IGNORE INTO consent_texts (hash, purpose, version, text_fr, text_en)"
                " VALUES (?, ?, ?, ?, ?)",
                [text.hash, text.purpose, text.version, text.text_fr, text.text_en],
            )


def current_consent_texts(db: sqlite_utils.Database) -> list[dict[str, Any]]:
    return rows(
        db,
        "SELECT hash, purpose, version, text_fr, text_en FROM consent_texts t"
        " WHERE version = (SELECT max(version) FROM consent_texts u WHERE u.purpose = t.purpose)"
        " ORDER BY purpose",
    )


# -- customers -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NewCustomer:
    customer_id: str
    token: str


def create_customer(
    db: sqlite_utils.Database,
    *,
    key_wrapped_for: Any,
    k: int,
    clock_offset_s: float,
    language: str,
    now: float,
) -> NewCustomer:
    """Create a customer and their app identity; `key_wrapped_for(customer_id)` wraps the key."""
    customer_id = "c_" + secrets.token_hex(12)
    token = secrets.token_urlsafe(32)
    with immediate(db):
        db.execute(
            "INSERT INTO customers (id, token_hash, created_at, language, pickup_code)"
            " VALUES (?, ?, ?, ?, ?)",
            [customer_id, token_hash(token), now, language, new_pickup_code()],
        )
        db.execute(
            "INSERT INTO identities (customer_id, key_wrapped, k, clock_offset_s, created_at)"
            " VALUES (?, ?, ?, ?, ?)",
            [customer_id, key_wrapped_for(customer_id), k, clock_offset_s, now],
        )
    return NewCustomer(customer_id, token)


def rotate_identity(
    db: sqlite_utils.Database,
    customer_id: str,
    *,
    key_wrapped: bytes,
    k: int,
    clock_offset_s: float,
    now: float,
) -> None:
    """Replace a customer's app identity (re-enrollment): the previous key is overwritten."""
    with immediate(db):
        db.execute(
            "UPDATE identities SET key_wrapped = ?, k = ?, clock_offset_s = ?, created_at = ?"
            " WHERE customer_id = ?",
            [key_wrapped, k, clock_offset_s, now, customer_id],
        )


def set_legacy_ibeacon(db: sqlite_utils.Database, customer_id: str, ibeacon_id: str | None) -> None:
    """Enable (with the id assigned now) or disable (forgetting the id) the legacy iBeacon."""
    with immediate(db):
        db.execute(
            "UPDATE customers SET legacy_ibeacon = ?, ibeacon_id = ? WHERE id = ?",
            [int(ibeacon_id is not None), ibeacon_id, customer_id],
        )


def data_version(db: sqlite_utils.Database) -> int:
    """SQLite's ``PRAGMA data_version``: it changes when another connection commits."""
    return int(db.execute("PRAGMA data_version").fetchone()[0])


IN_LIST_CHUNK = 500
"""Ids bound per ``IN (...)`` query: well under SQLite's limit on bound variables (999 in
older builds), whatever the number of customers asked about."""


def legacy_ibeacon_ids(db: sqlite_utils.Database, customer_ids: Iterable[str]) -> dict[str, str]:
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


def customer_by_token(db: sqlite_utils.Database, token: str) -> str | None:
    row = one(db, "SELECT id FROM customers WHERE token_hash = ?", [token_hash(token)])
    return None if row is None else str(row["id"])


def identity_rows(
    db: sqlite_utils.Database, customer_ids: Iterable[str] | None = None
) -> list[dict[str, Any]]:
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


IDENTITY_BATCH_ROWS = 5000
"""Rows fetched at a time when scanning every identity: a few hundred KB of tuples at once."""


def identity_batches(
    db: sqlite_utils.Database,
) -> Iterator[list[tuple[str, bytes, int, float]]]:
    """Every stored identity as ``(customer_id, key_wrapped, k, clock_offset_s)`` tuples, in
    batches (a cursor, no row dicts). Consume it in the database thread."""
    cursor = db.execute("SELECT customer_id, key_wrapped, k, clock_offset_s FROM identities")
    while batch := cursor.fetchmany(IDENTITY_BATCH_ROWS):
        yield batch


# A consent counts at a store when it covers the whole chain, or was given at that store
# (NULL: given before store ids were recorded, i.e. at this server's own store).
_SCOPE_MATCH = "(scope = 'chain' OR store_id IS NULL OR store_id = ?)"


def consents_of(
    db: sqlite_utils.Database, customer_id: str, store_id: str | None = None
) -> list[ActiveConsent]:
    """The customer's consent rows; with `store_id`, only those that count at that store."""
    sql = "SELECT * FROM consents WHERE customer_id = ?"
    params: list[Any] = [customer_id]
    if store_id is not None:
        sql += " AND " + _SCOPE_MATCH
        params.append(store_id)
    return [
        ActiveConsent(
            purpose=cast(Purpose, row["purpose"]),
            scope=cast(Scope, row["scope"]),
            text_hash=row["text_hash"],
            granted_at=row["granted_at"],
            expires_at=row["expires_at"],
        )
        for row in rows(db, sql, params)
    ]


def consenting_customer_ids(
    db: sqlite_utils.Database, now: float, store_id: str | None = None
) -> list[str]:
    sql = "SELECT DISTINCT customer_id FROM consents WHERE granted_at <= ? AND expires_at > ?"
    params: list[Any] = [now, now]
    if store_id is not None:
        sql += " AND " + _SCOPE_MATCH
        params.append(store_id)
    # Straight from the cursor: no row dict per customer (100k of them at start-up).
    return [str(row[0]) for row in db.execute(sql, params)]


def next_consent_expiry(
    db: sqlite_utils.Database, now: float, store_id: str | None = None
) -> float | None:
    """The earliest instant after `now` at which an active consent lapses (None: none)."""
    sql = "SELECT min(expires_at) AS t FROM consents WHERE granted_at <= ? AND expires_at > ?"
    params: list[Any] = [now, now]
    if store_id is not None:
        sql += " AND " + _SCOPE_MATCH
        params.append(store_id)
    row = one(db, sql, params)
    return None if row is None or row["t"] is None else float(row["t"])


def append_consent_log(db: sqlite_utils.Database, entry: LogEntry) -> str:
    """Append one entry to the chain (inside the caller's transaction); return its hash."""
    last = one(db, "SELECT entry_hash FROM consent_log ORDER BY seq DESC LIMIT 1")
    prev = GENESIS_HASH if last is None else str(last["entry_hash"])
    digest = entry_hash(prev, entry)
    db.execute(
        "INSERT INTO consent_log (subject_ref, purpose, action, text_hash, scope, channel,"
        " app_version, at, prev_hash, entry_hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            entry.subject_ref,
            entry.purpose,
            entry.action,
            entry.text_hash,
            entry.scope,
            entry.channel,
            entry.app_version,
            entry.at,
            prev,
            digest,
        ],
    )
    return digest


def consent_log_rows(db: sqlite_utils.Database, subject: str | None = None) -> list[ChainedEntry]:
    sql = "SELECT * FROM consent_log"
    params: list[Any] = []
    if subject is not None:
        sql += " WHERE subject_ref = ?"
        params.append(subject)
    return [
        ChainedEntry(
            seq=row["seq"],
            entry=LogEntry(
                subject_ref=row["subject_ref"],
                purpose=row["purpose"],
                action=row["action"],
                text_hash=row["text_hash"],
                scope=row["scope"],
                channel=row["channel"],
                app_version=row["app_version"],
                at=row["at"],
            ),
            prev_hash=row["prev_hash"],
            entry_hash=row["entry_hash"],
        )
        for row in rows(db, sql + " ORDER BY seq", params)
    ]


def grant_consent(
    db: sqlite_utils.Database,
    *,
    customer_id: str,
    subject_ref: str,
    purpose: Purpose,
    text_hash: str,
    scope: Scope,
    channel: str,
    app_version: str | None,
    now: float,
    duration_s: float,
    store_id: str | None = None,
) -> ActiveConsent:
    if purpose not in PURPOSES:
        raise ValidationError(f"unknown purpose {purpose!r}", field="purpose")
    text = one(db, "SELECT purpose FROM consent_texts WHERE hash = ?", [text_hash])
    if text is None or text["purpose"] != purpose:
        raise ValidationError(
            "text_hash does not name a consent text of this purpose", field="text_hash"
        )
    with immediate(db):
        existing = one(
            db,
            "SELECT granted_at, expires_at FROM consents WHERE customer_id = ? AND purpose = ?",
            [customer_id, purpose],
        )
        action = "renew" if existing is not None and existing["expires_at"] > now else "grant"
        db.execute(
            "INSERT OR REPLACE INTO consents (customer_id, purpose, scope, text_hash, granted_at,"
            " expires_at, store_id) VALUES (?, ?, ?, ?, ?, ?, ?)",
            [customer_id, purpose, scope, text_hash, now, now + duration_s, store_id],
        )
        append_consent_log(
            db, LogEntry(subject_ref, purpose, action, text_hash, scope, channel, app_version, now)
        )
    return ActiveConsent(purpose, scope, text_hash, now, now + duration_s)


@dataclass(frozen=True, slots=True)
class Withdrawal:
    remaining: frozenset[Purpose]
    retracted_cards: tuple[str, ...]


def withdraw_consent(
    db: sqlite_utils.Database,
    *,
    customer_id: str,
    subject_ref: str,
    purposes: Iterable[Purpose],
    channel: str,
    app_version: str | None,
    now: float,
    store_id: str | None = None,
) -> Withdrawal:
    """Withdraw, log, and retract the customer's open cards, in one transaction."""
    with immediate(db):
        for purpose in purposes:
            deleted = db.execute(
                "DELETE FROM consents WHERE customer_id = ? AND purpose = ?",
                [customer_id, purpose],
            ).rowcount
            if deleted:
                append_consent_log(
                    db,
                    LogEntry(
                        subject_ref, purpose, "withdraw", None, None, channel, app_version, now
                    ),
                )
        cards = retract_open_cards(db, customer_id, now)
        remaining = frozenset(
            c.purpose for c in consents_of(db, customer_id, store_id) if is_active(c, now)
        )
    return Withdrawal(remaining, cards)


def retract_open_cards(db: sqlite_utils.Database, customer_id: str, now: float) -> tuple[str, ...]:
    ids = tuple(
        str(row["id"])
        for row in rows(
            db, "SELECT id FROM cards WHERE customer_id = ? AND state = 'open'", [customer_id]
        )
    )
    db.execute(
        "UPDATE cards SET state = 'retracted', acked_at = ?"
        " WHERE customer_id = ? AND state = 'open'",
        [now, customer_id],
    )
    return ids


# -- my data and erasure ---------------------------------------------------------------------

# The customer's own columns shown in "my data" (token_hash is a credential, not data about them).
_PROFILE_COLUMNS = (
    "id, created_at, display_name, title, name_form, language, greet_mode, quiet_start,"
    " quiet_end, not_today, pickup_code"
)


def customer_data(
    db: sqlite_utils.Database, customer_id: str, subject: str, now: float
) -> dict[str, Any] | None:
    """Every record held about the customer (GDPR Art. 15), or None if there is no such customer."""
    profile = one(db, f"SELECT {_PROFILE_COLUMNS} FROM customers WHERE id = ?", [customer_id])  # noqa: S608
    if profile is None:
        return None
    consents = [
        {
            "purpose": c.purpose,
            "scope": c.scope,
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
            "SELECT id, kind, created_at, state, acked_by, acked_at, payload FROM cards"
            " WHERE customer_id = ? ORDER BY created_at",
            [customer_id],
        )
    ]
    messages = [
        {"id": r["id"], "at": r["at"], **json.loads(r["body"])}
        for r in rows(
            db, "SELECT id, at, body FROM messages WHERE customer_id = ? ORDER BY at", [customer_id]
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
            "SELECT id, arrived_at, left_at, zone, via FROM visits WHERE customer_id = ?"
            " ORDER BY arrived_at",
            [customer_id],
        ),
        "decisions": rows(
            db,
            "SELECT id, visit_id, at, outcome, reason FROM decisions WHERE customer_id = ?"
            " ORDER BY at",
            [customer_id],
        ),
        "cards": cards,
        "messages": messages,
        "access_log": rows(
            db,
            "SELECT staff_user, card_id, action, at FROM access_log WHERE customer_id = ?"
            " ORDER BY at, id",
            [customer_id],
        ),
    }


@dataclass(frozen=True, slots=True)
class Erasure:
    erased: bool
    retracted_cards: tuple[str, ...]


def erase_customer(
    db: sqlite_utils.Database,
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
        if one(db, "SELECT 1 AS x FROM customers WHERE id = ?", [customer_id]) is None:
            return Erasure(False, ())
        cards = retract_open_cards(db, customer_id, now)
        for purpose in PURPOSES:
            append_consent_log(
                db, LogEntry(subject_ref, purpose, "erase", None, None, channel, app_version, now)
            )
        db.execute("DELETE FROM customers WHERE id = ?", [customer_id])
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return Erasure(True, cards)


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


def set_preferences(db: sqlite_utils.Database, customer_id: str, values: dict[str, Any]) -> None:
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


def set_wishlist(db: sqlite_utils.Database, customer_id: str, skus: list[str], now: float) -> None:
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


def snapshot(
    db: sqlite_utils.Database, customer_id: str, store_id: str, now: float
) -> CustomerSnapshot | None:
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


# -- catalog ---------------------------------------------------------------------------------


def upsert_stock(db: sqlite_utils.Database, store_id: str, items: Iterable[dict[str, Any]]) -> int:
    count = 0
    with immediate(db):
        for item in items:
            db.execute(
                "INSERT INTO catalog (sku, name_fr, name_en) VALUES (?, ?, ?)"
                " ON CONFLICT(sku) DO UPDATE SET name_fr = excluded.name_fr,"
                " name_en = excluded.name_en",
                [item["sku"], item["name_fr"], item["name_en"]],
            )
            db.execute(
                "INSERT INTO stock (store_id, sku, count, aisle) VALUES (?, ?, ?, ?)"
                " ON CONFLICT(store_id, sku) DO UPDATE SET count = excluded.count,"
                " aisle = excluded.aisle",
                [store_id, item["sku"], item["count"], item["aisle"]],
            )
            count += 1
    return count


# -- scanners --------------------------------------------------------------------------------


def add_scanner(
    db: sqlite_utils.Database, scanner_id: str, store_id: str, secret_wrapped: bytes, now: float
) -> None:
    with immediate(db):
        db.execute(
            "INSERT INTO scanners (id, store_id, secret_wrapped, created_at) VALUES (?, ?, ?, ?)"
            " ON CONFLICT(id) DO UPDATE SET secret_wrapped = excluded.secret_wrapped,"
            " store_id = excluded.store_id, revoked_at = NULL",
            [scanner_id, store_id, secret_wrapped, now],
        )


def scanner_row(db: sqlite_utils.Database, scanner_id: str) -> dict[str, Any] | None:
    return one(db, "SELECT * FROM scanners WHERE id = ?", [scanner_id])


def revoke_scanner(db: sqlite_utils.Database, scanner_id: str, now: float) -> None:
    with immediate(db):
        if not db.execute(
            "UPDATE scanners SET revoked_at = ? WHERE id = ?", [now, scanner_id]
        ).rowcount:
            raise NotFoundError(f"no scanner {scanner_id!r}")


def record_heartbeat(
    db: sqlite_utils.Database, scanner_id: str, body: dict[str, Any], now: float
) -> None:
    with immediate(db):
        db.execute(
            "UPDATE scanners SET last_heartbeat = ?, last_seen_at = ? WHERE id = ?",
            [json.dumps(body), now, scanner_id],
        )


def batch_result(db: sqlite_utils.Database, scanner_id: str, batch_id: str) -> int | None:
    row = one(
        db,
        "SELECT accepted FROM scanner_batches WHERE scanner_id = ? AND batch_id = ?",
        [scanner_id, batch_id],
    )
    return None if row is None else int(row["accepted"])


def record_batch(
    db: sqlite_utils.Database, scanner_id: str, batch_id: str, accepted: int, now: float
) -> bool:
    """Record a batch as committed; False when it was already recorded (a retry)."""
    return record_batches(db, [(scanner_id, batch_id, accepted, now, None)])[0][0]


def record_batches(
    db: sqlite_utils.Database, items: list[tuple[str, str, int, float, bytes | None]]
) -> list[tuple[bool, int]]:
    """Record (scanner, batch id, accepted, now, registration) items in one transaction.

    For each, in order: (True, accepted) when recorded now, (False, accepted recorded before)
    when the batch id was already there (a retry, possibly earlier in the same group), and
    (False, -1), recording nothing, when ``registration`` is given (the wrapped secret the
    request was verified with) and is no longer that of an unrevoked scanner.
    """
    conn = db.conn
    with immediate(db):
        # The registration of each scanner of the group, read once (nothing else writes in
        # this transaction): the wrapped secret of an unrevoked scanner, or None.
        current: dict[str, bytes | None] = {}
        for scanner_id, _, _, _, registration in items:
            if registration is not None and scanner_id not in current:
                row = conn.execute(
                    "SELECT secret_wrapped FROM scanners WHERE id = ? AND revoked_at IS NULL",
                    (scanner_id,),
                ).fetchone()
                current[scanner_id] = None if row is None else bytes(row[0])
        ok = [item[4] is None or current[item[0]] == item[4] for item in items]
        valid = list(itertools.compress(items, ok))
        # Usually every batch id is new: one statement for the group. If any was there
        # already (a retry), the group is recorded again one batch at a time to tell which.
        conn.execute("SAVEPOINT batch_ids")
        inserted = conn.executemany(
            "INSERT OR IGNORE INTO scanner_batches"
            " (scanner_id, batch_id, accepted, received_at) VALUES (?, ?, ?, ?)",
            [item[:4] for item in valid],
        ).rowcount
        if inserted == len(valid):
            results = [
                (True, item[2]) if good else (False, -1)
                for item, good in zip(items, ok, strict=True)
            ]
        else:
            conn.execute("ROLLBACK TO batch_ids")
            results = _record_one_by_one(conn, items, current)
        conn.execute("RELEASE batch_ids")
        seen = {item[0]: item[3] for item in valid}
        conn.executemany(
            "UPDATE scanners SET last_seen_at = ? WHERE id = ?",
            [(now, scanner_id) for scanner_id, now in seen.items()],
        )
    return results


def _record_one_by_one(
    conn: sqlite3.Connection,
    items: list[tuple[str, str, int, float, bytes | None]],
    current: dict[str, bytes | None],
) -> list[tuple[bool, int]]:
    """:func:`record_batches`'s results, one INSERT per batch (some batch id is a retry)."""
    results: list[tuple[bool, int]] = []
    for scanner_id, batch_id, accepted, now, registration in items:
        if registration is not None and current[scanner_id] != registration:
            results.append((False, -1))
            continue
        if conn.execute(
            "INSERT OR IGNORE INTO scanner_batches"
            " (scanner_id, batch_id, accepted, received_at) VALUES (?, ?, ?, ?)",
            (scanner_id, batch_id, accepted, now),
        ).rowcount:
            results.append((True, accepted))
        else:
            row = conn.execute(
                "SELECT accepted FROM scanner_batches WHERE scanner_id = ? AND batch_id = ?",
                (scanner_id, batch_id),
            ).fetchone()
            results.append((False, int(row[0])))
    return results


# -- manager pages ---------------------------------------------------------------------------


def scanner_rows(db: sqlite_utils.Database) -> list[dict[str, Any]]:
    """Registered scanners with their last heartbeat decoded (never their secrets)."""
    found = rows(
        db,
        "SELECT id, store_id, created_at, revoked_at, last_heartbeat, last_seen_at"
        " FROM scanners ORDER BY id",
    )
    for row in found:
        raw = row.pop("last_heartbeat")
        row["heartbeat"] = json.loads(raw) if raw else None
    return found


def stock_rows(db: sqlite_utils.Database, store_id: str) -> list[dict[str, Any]]:
    return rows(
        db,
        "SELECT c.sku, c.name_fr, c.name_en, s.count, s.aisle FROM catalog c"
        " LEFT JOIN stock s ON s.sku = c.sku AND s.store_id = ? ORDER BY c.sku",
        [store_id],
    )


def set_stock(db: sqlite_utils.Database, store_id: str, sku: str, count: int, aisle: str) -> None:
    """Set the count and aisle of a catalog item at this store."""
    if count < 0:
        raise ValidationError("must not be negative", field="count")
    if not aisle.strip():
        raise ValidationError("empty value", field="aisle")
    with immediate(db):
        if one(db, "SELECT sku FROM catalog WHERE sku = ?", [sku]) is None:
            raise NotFoundError(f"no item {sku!r}")
        db.execute(
            "INSERT INTO stock (store_id, sku, count, aisle) VALUES (?, ?, ?, ?)"
            " ON CONFLICT(store_id, sku) DO UPDATE SET count = excluded.count,"
            " aisle = excluded.aisle",
            [store_id, sku, count, aisle.strip()],
        )


def staff_rows(db: sqlite_utils.Database) -> list[dict[str, Any]]:
    """Staff accounts without their password hashes."""
    return rows(
        db,
        "SELECT username, role, created_at, disabled FROM staff_users ORDER BY username",
    )


def set_staff_disabled(db: sqlite_utils.Database, username: str, disabled: bool) -> None:
    """Disable (and sign out everywhere) or re-enable a staff account."""
    with immediate(db):
        if not db.execute(
            "UPDATE staff_users SET disabled = ? WHERE username = ?", [int(disabled), username]
        ).rowcount:
            raise NotFoundError(f"no account {username!r}")
        if disabled:
            db.execute("DELETE FROM sessions WHERE username = ?", [username])


def access_log_rows(db: sqlite_utils.Database, limit: int) -> list[dict[str, Any]]:
    """The newest `limit` access log entries, newest first."""
    return rows(
        db,
        "SELECT id, customer_id, staff_user, card_id, action, at FROM access_log"
        " ORDER BY id DESC LIMIT ?",
        [limit],
    )


def log_views(
    db: sqlite_utils.Database, viewer: str, customer_ids: Iterable[str], action: str, now: float
) -> None:
    """Record that `viewer` saw data about each customer (the access log logs itself)."""
    with immediate(db):
        for customer_id in dict.fromkeys(customer_ids):
            db.execute(
                "INSERT INTO access_log (customer_id, staff_user, card_id, action, at)"
                " SELECT ?, ?, NULL, ?, ? WHERE EXISTS (SELECT 1 FROM customers WHERE id = ?)",
                [customer_id, viewer, action, now, customer_id],
            )


# -- calibration -----------------------------------------------------------------------------


def calibration_overrides(db: sqlite_utils.Database) -> dict[str, float]:
    return {
        str(r["scanner_id"]): float(r["rssi_offset_db"])
        for r in rows(db, "SELECT scanner_id, rssi_offset_db FROM scanner_calibration")
    }


def set_calibration(
    db: sqlite_utils.Database, scanner_id: str, rssi_offset_db: float, username: str, now: float
) -> None:
    with immediate(db):
        db.execute(
            "INSERT INTO scanner_calibration (scanner_id, rssi_offset_db, updated_by, updated_at)"
            " VALUES (?, ?, ?, ?) ON CONFLICT(scanner_id) DO UPDATE SET"
            " rssi_offset_db = excluded.rssi_offset_db, updated_by = excluded.updated_by,"
            " updated_at = excluded.updated_at",
            [scanner_id, rssi_offset_db, username, now],
        )
