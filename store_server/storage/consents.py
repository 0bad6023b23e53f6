"""Consents: the consent texts, the consents held, and the hash-chained consent log."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, cast

from store_server.consent import (
    GENESIS_HASH,
    PURPOSES,
    ActiveConsent,
    ChainedEntry,
    Checkpoint,
    ConsentText,
    LogEntry,
    Purpose,
    Scope,
    entry_hash,
    is_active,
)
from store_server.errors import ValidationError
from store_server.storage.database import Handle, customer_lock, immediate, lock, one, rows
from store_server.storage.keys import delete_temporary_keys_of
from store_server.storage.visits import retract_open_cards

# A consent counts at a store when it covers the whole chain, or was given at that store.
# (NULL: given before store ids were recorded; a server outside chain mode claims those rows
# at start-up, `visits.claim_unowned`; in a chain such a store-scoped consent counts nowhere.)
_SCOPE_MATCH = "(scope = 'chain' OR store_id = ?)"

# The lock (`database.lock`) held while appending to the consent log.
CONSENT_LOG_LOCK = "bulle/consent_log"


def ensure_consent_texts(db: Handle, texts: Iterable[ConsentText]) -> None:
    with immediate(db):
        for text in texts:
            db.execute(
                "INSERT INTO consent_texts (hash, purpose, version, text_fr, text_en)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                [text.hash, text.purpose, text.version, text.text_fr, text.text_en],
            )


def current_consent_texts(db: Handle) -> list[dict[str, Any]]:
    return rows(
        db,
        "SELECT hash, purpose, version, text_fr, text_en FROM consent_texts t"
        " WHERE version = (SELECT max(version) FROM consent_texts u WHERE u.purpose = t.purpose)"
        " ORDER BY purpose",
    )


def consents_of(db: Handle, customer_id: str, store_id: str | None = None) -> list[ActiveConsent]:
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
            store_id=row["store_id"],
        )
        for row in rows(db, sql, params)
    ]


def consenting_customer_ids(db: Handle, now: float, store_id: str | None = None) -> list[str]:
    sql = "SELECT DISTINCT customer_id FROM consents WHERE granted_at <= ? AND expires_at > ?"
    params: list[Any] = [now, now]
    if store_id is not None:
        sql += " AND " + _SCOPE_MATCH
        params.append(store_id)
    # Straight from the cursor: no row dict per customer (100k of them at start-up).
    return [str(row[0]) for row in db.execute(sql, params)]


def next_consent_expiry(db: Handle, now: float, store_id: str | None = None) -> float | None:
    """The earliest instant after `now` at which an active consent lapses (None: none)."""
    sql = "SELECT min(expires_at) AS t FROM consents WHERE granted_at <= ? AND expires_at > ?"
    params: list[Any] = [now, now]
    if store_id is not None:
        sql += " AND " + _SCOPE_MATCH
        params.append(store_id)
    row = one(db, sql, params)
    return None if row is None or row["t"] is None else float(row["t"])


def append_consent_log(db: Handle, entry: LogEntry) -> str:
    """Append one entry to the chain (inside the caller's transaction); return its hash.

    The head is read under the log's lock: two store servers appending at once would
    otherwise both chain to the same previous entry.
    """
    lock(db, CONSENT_LOG_LOCK)
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


def consent_log_rows(db: Handle, subject: str | None = None) -> list[ChainedEntry]:
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
    db: Handle,
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
    # A chain-wide consent replaces every consent of the purpose; a store-scoped one replaces
    # the chain-wide one (the customer narrows it) and the one given at this store before,
    # and leaves those given at other stores.
    replaced = "customer_id = ? AND purpose = ?"
    params: list[Any] = [customer_id, purpose]
    if scope == "store":
        replaced += " AND (scope = 'chain' OR store_id IS NULL OR store_id = ?)"
        params.append(store_id)
    place = (store_id or "") if scope == "store" else ""
    with immediate(db):
        lock(db, customer_lock(customer_id))
        existing = one(
            db,
            f"SELECT max(expires_at) AS t FROM consents WHERE {replaced}",  # noqa: S608
            params,
        )
        renewed = existing is not None and existing["t"] is not None and existing["t"] > now
        action = "renew" if renewed else "grant"
        db.execute(f"DELETE FROM consents WHERE {replaced}", params)  # noqa: S608
        db.execute(
            "INSERT INTO consents (customer_id, purpose, scope, text_hash, granted_at,"
            " expires_at, store_id, place) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [customer_id, purpose, scope, text_hash, now, now + duration_s, store_id, place],
        )
        append_consent_log(
            db, LogEntry(subject_ref, purpose, action, text_hash, scope, channel, app_version, now)
        )
    return ActiveConsent(purpose, scope, text_hash, now, now + duration_s, store_id)


@dataclass(frozen=True, slots=True)
class Withdrawal:
    remaining: frozenset[Purpose]
    retracted_cards: tuple[str, ...]


def withdraw_consent(
    db: Handle,
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
        lock(db, customer_lock(customer_id))
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
        if one(db, "SELECT 1 AS x FROM consents WHERE customer_id = ?", [customer_id]) is None:
            # No consent left anywhere: no store may recognise the customer any more.
            delete_temporary_keys_of(db, customer_id)
    return Withdrawal(remaining, cards)


def consent_log_head(db: Handle) -> tuple[int, str] | None:
    """The last entry of the consent log: its sequence number and hash."""
    row = one(db, "SELECT seq, entry_hash FROM consent_log ORDER BY seq DESC LIMIT 1")
    return None if row is None else (int(row["seq"]), str(row["entry_hash"]))


def add_checkpoint(db: Handle, checkpoint: Checkpoint) -> None:
    with immediate(db):
        db.execute(
            "INSERT INTO consent_checkpoints (seq, entry_hash, at, mac)"
            " VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
            [checkpoint.seq, checkpoint.entry_hash, checkpoint.at, checkpoint.mac],
        )


def checkpoints(db: Handle) -> list[Checkpoint]:
    return [
        Checkpoint(int(r["seq"]), str(r["entry_hash"]), float(r["at"]), str(r["mac"]))
        for r in rows(db, "SELECT seq, entry_hash, at, mac FROM consent_checkpoints ORDER BY seq")
    ]


def logged_subjects(db: Handle) -> set[str]:
    """Every pseudonymous subject the consent log names (whoever ever gave a consent)."""
    return {str(r["subject_ref"]) for r in rows(db, "SELECT DISTINCT subject_ref FROM consent_log")}


def consent_log_after(db: Handle, seq: int, limit: int) -> list[dict[str, Any]]:
    """Up to `limit` consent-log entries after `seq`, oldest first: what the change feed needs
    (sequence number, pseudonymous subject, action, time), nothing else."""
    return rows(
        db,
        "SELECT seq, subject_ref, action, at FROM consent_log WHERE seq > ? ORDER BY seq LIMIT ?",
        [seq, limit],
    )


def consent_log_last_seq(db: Handle) -> int:
    """The sequence number of the last consent-log entry (0: the log is empty)."""
    row = one(db, "SELECT max(seq) AS seq FROM consent_log")
    return 0 if row is None or row["seq"] is None else int(row["seq"])


def consenting_granted_since(db: Handle, since: float, now: float, store_id: str) -> list[str]:
    """Customers with an active consent at this store granted (or renewed) at `since` or later."""
    sql = (
        "SELECT DISTINCT customer_id FROM consents"
        " WHERE granted_at >= ? AND granted_at <= ? AND expires_at > ?"
    )
    sql += " AND " + _SCOPE_MATCH
    return [str(r["customer_id"]) for r in rows(db, sql, [since, now, now, store_id])]


def active_purposes_at(db: Handle, customer_id: str, store_id: str, now: float) -> int:
    """How many of the customer's consents are active at this store now."""
    return sum(1 for c in consents_of(db, customer_id, store_id) if is_active(c, now))
