"""Visits and cards: visits, policy decisions, board cards, app messages, the staff access
log, and the retention purge."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from store_server.policy import CustomerSnapshot, Decision
from store_server.storage.database import (
    Handle,
    customer_lock,
    immediate,
    lock,
    one,
    rows,
    truncate_wal,
)

CardMaker = Callable[[Decision], list[dict[str, Any]]]


@dataclass(frozen=True, slots=True)
class Recorded:
    """What a trigger left in the database: the visit, the decision and the cards shown."""

    visit_id: int
    decision: Decision
    cards: list[dict[str, Any]]


def record_trigger(
    db: Handle,
    *,
    customer_id: str,
    read_snapshot: Callable[[Handle], CustomerSnapshot | None],
    decide: Callable[[CustomerSnapshot], Decision | None],
    make_cards: CardMaker,
    visit_id: int | None,
    zone: str | None,
    via: str,
    now: float,
) -> Recorded | None:
    """Decide on a fresh snapshot and record the outcome, in one transaction.

    The snapshot (and so the consent) is read inside the transaction that inserts the
    cards: a withdrawal committed before can never be followed by a card. None, recording
    nothing at all, when the customer is gone or ``decide`` says nothing (no consent).
    """
    with immediate(db):
        lock(db, customer_lock(customer_id))
        snap = read_snapshot(db)
        if snap is None:
            return None
        decision = decide(snap)
        if decision is None:
            return None
        if visit_id is None:
            visit_id = int(
                db.execute(
                    "INSERT INTO visits (customer_id, arrived_at, zone, via) VALUES (?, ?, ?, ?)"
                    " RETURNING id",
                    [customer_id, now, zone, via],
                ).fetchone()[0]
            )
        db.execute(
            "INSERT INTO decisions (customer_id, visit_id, at, outcome, reason)"
            " VALUES (?, ?, ?, ?, ?)",
            [customer_id, visit_id, now, decision.outcome, ",".join(decision.reasons)],
        )
        cards = make_cards(decision)
        for card in cards:
            db.execute(
                "INSERT INTO cards (id, customer_id, kind, created_at, payload)"
                " VALUES (?, ?, ?, ?, ?)",
                [card["id"], customer_id, card["kind"], now, json.dumps(card)],
            )
        if decision.message is not None:
            body = {
                "kind": "stock",
                "lines_fr": list(decision.message.lines_fr),
                "lines_en": list(decision.message.lines_en),
            }
            db.execute(
                "INSERT INTO messages (customer_id, at, body) VALUES (?, ?, ?)",
                [customer_id, now, json.dumps(body)],
            )
    return Recorded(visit_id, decision, cards)


def retract_open_cards(db: Handle, customer_id: str, now: float) -> tuple[str, ...]:
    """Retract the customer's open cards (inside the caller's transaction); their ids."""
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


def retract_cards_of(db: Handle, customer_id: str, now: float) -> tuple[str, ...]:
    """:func:`retract_open_cards` in a transaction of its own."""
    with immediate(db):
        return retract_open_cards(db, customer_id, now)


def end_visit(
    db: Handle, visit_id: int | None, customer_id: str, t: float, now: float
) -> tuple[str, ...]:
    """The customer left at `t`: close the visit and retract their open cards; the card ids."""
    with immediate(db):
        if visit_id is not None:
            db.execute("UPDATE visits SET left_at = ? WHERE id = ?", [t, visit_id])
        return retract_open_cards(db, customer_id, now)


def open_card_ids(db: Handle, customer_id: str) -> list[str]:
    return [
        str(r["id"])
        for r in rows(
            db, "SELECT id FROM cards WHERE customer_id = ? AND state = 'open'", [customer_id]
        )
    ]


def open_cards(db: Handle) -> list[tuple[str, str, dict[str, Any]]]:
    """Every open card, oldest first: (card id, customer id, payload)."""
    return [
        (str(r["id"]), str(r["customer_id"]), json.loads(r["payload"]))
        for r in rows(
            db,
            "SELECT id, customer_id, payload FROM cards WHERE state = 'open' ORDER BY created_at",
        )
    ]


def close_card(db: Handle, card_id: str, username: str, action: str, now: float) -> str | None:
    """Close an open card as `action` by `username`, logging the access; its customer id, or
    None when the card is not open (closed meanwhile, retracted, unknown)."""
    with immediate(db):
        row = one(db, "SELECT customer_id FROM cards WHERE id = ? AND state = 'open'", [card_id])
        if row is None:
            return None
        db.execute(
            "UPDATE cards SET state = ?, acked_by = ?, acked_at = ? WHERE id = ?",
            [action, username, now, card_id],
        )
        db.execute(
            "INSERT INTO access_log (customer_id, staff_user, card_id, action, at)"
            " VALUES (?, ?, ?, ?, ?)",
            [row["customer_id"], username, card_id, action, now],
        )
        return str(row["customer_id"])


def messages_of(db: Handle, customer_id: str) -> list[dict[str, Any]]:
    """The app messages of a customer, newest first."""
    return [
        {"id": r["id"], "at": r["at"], **json.loads(r["body"])}
        for r in rows(
            db,
            "SELECT id, at, body FROM messages WHERE customer_id = ? ORDER BY at DESC",
            [customer_id],
        )
    ]


def log_cards_shown(
    db: Handle, shown: Iterable[tuple[str, str]], usernames: Iterable[str], now: float
) -> None:
    """Record that each user was shown each (customer id, card id) (customers still there)."""
    users = list(usernames)
    with immediate(db):
        for customer_id, card_id in shown:
            for user in users:
                db.execute(
                    "INSERT INTO access_log (customer_id, staff_user, card_id, action, at)"
                    " SELECT ?, ?, ?, 'shown', ? WHERE EXISTS"
                    " (SELECT 1 FROM customers WHERE id = ?)",
                    [customer_id, user, card_id, now, customer_id],
                )


def purge(db: Handle, cutoff: float) -> int:
    """Delete visits, decisions, closed cards and messages older than `cutoff`; visits deleted.

    The purged rows are zeroed in the main file (secure_delete); their older copies in the
    WAL go with the truncation.
    """
    with immediate(db):
        count = db.execute(
            "DELETE FROM visits WHERE coalesce(left_at, arrived_at) < ?", [cutoff]
        ).rowcount
        db.execute("DELETE FROM decisions WHERE at < ?", [cutoff])
        db.execute("DELETE FROM cards WHERE created_at < ?", [cutoff])
        db.execute("DELETE FROM messages WHERE at < ?", [cutoff])
    truncate_wal(db)
    return int(count)


def access_log_rows(db: Handle, limit: int) -> list[dict[str, Any]]:
    """The newest `limit` access log entries, newest first."""
    return rows(
        db,
        "SELECT id, customer_id, staff_user, card_id, action, at FROM access_log"
        " ORDER BY id DESC LIMIT ?",
        [limit],
    )


def log_views(
    db: Handle, viewer: str, customer_ids: Iterable[str], action: str, now: float
) -> None:
    """Record that `viewer` saw data about each customer (the access log logs itself)."""
    with immediate(db):
        for customer_id in dict.fromkeys(customer_ids):
            db.execute(
                "INSERT INTO access_log (customer_id, staff_user, card_id, action, at)"
                " SELECT ?, ?, NULL, ?, ? WHERE EXISTS (SELECT 1 FROM customers WHERE id = ?)",
                [customer_id, viewer, action, now, customer_id],
            )
