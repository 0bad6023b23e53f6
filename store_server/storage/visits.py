"""Visits and cards: visits, policy decisions, board cards, app messages, the staff access
log, and the retention purge.

Every row here belongs to one store (``store_id``): several stores' servers may share the
database (chain mode), and every function that reads these rows takes the store whose pages
ask, so one store never sees another's visits, cards, messages or access log.
"""

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
    is_pg,
    lock,
    one,
    rows,
    truncate_wal,
)

CardMaker = Callable[[Decision], list[dict[str, Any]]]
Decider = Callable[[CustomerSnapshot, float | None], Decision | None]
"""Decides on a snapshot, given the customer's last greeting at this store (any server)."""

# The tables whose rows belong to one store; a server outside chain mode claims the rows
# written before stores were recorded (NULL). Names from this tuple only, never from input.
STORE_TABLES = ("visits", "decisions", "cards", "messages", "access_log", "consents")


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
    store_id: str,
    read_snapshot: Callable[[Handle], CustomerSnapshot | None],
    decide: Decider,
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
    ``decide`` also gets the customer's last greeting card at this store, whichever server
    made it: two servers of one store (failover) never greet within the cooldown twice.
    """
    with immediate(db):
        lock(db, customer_lock(customer_id))
        snap = read_snapshot(db)
        if snap is None:
            return None
        greeted = one(
            db,
            "SELECT max(created_at) AS t FROM cards"
            " WHERE customer_id = ? AND store_id = ? AND kind = 'greeting'",
            [customer_id, store_id],
        )
        decision = decide(snap, None if greeted is None else greeted["t"])
        if decision is None:
            return None
        if visit_id is None:
            visit_id = int(
                db.execute(
                    "INSERT INTO visits (customer_id, arrived_at, zone, via, store_id)"
                    " VALUES (?, ?, ?, ?, ?) RETURNING id",
                    [customer_id, now, zone, via, store_id],
                ).fetchone()[0]
            )
        db.execute(
            "INSERT INTO decisions (customer_id, visit_id, at, outcome, reason, store_id)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            [customer_id, visit_id, now, decision.outcome, ",".join(decision.reasons), store_id],
        )
        cards = make_cards(decision)
        for card in cards:
            db.execute(
                "INSERT INTO cards (id, customer_id, kind, created_at, payload, store_id)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                [card["id"], customer_id, card["kind"], now, json.dumps(card), store_id],
            )
        if decision.message is not None:
            body = {
                "kind": "stock",
                "lines_fr": list(decision.message.lines_fr),
                "lines_en": list(decision.message.lines_en),
            }
            db.execute(
                "INSERT INTO messages (customer_id, at, body, store_id) VALUES (?, ?, ?, ?)",
                [customer_id, now, json.dumps(body), store_id],
            )
    return Recorded(visit_id, decision, cards)


def retract_open_cards(
    db: Handle, customer_id: str, now: float, store_id: str | None = None
) -> tuple[str, ...]:
    """Retract the customer's open cards (inside the caller's transaction); their ids.

    With ``store_id``, only that store's cards (the customer left it); without, the cards at
    every store (a withdrawal or an erasure counts everywhere), the ids of all of them.
    """
    where = "customer_id = ? AND state = 'open'"
    params: list[Any] = [customer_id]
    if store_id is not None:
        where += " AND store_id = ?"
        params.append(store_id)
    ids = tuple(str(row["id"]) for row in rows(db, f"SELECT id FROM cards WHERE {where}", params))  # noqa: S608
    db.execute(
        f"UPDATE cards SET state = 'retracted', acked_at = ? WHERE {where}",  # noqa: S608
        [now, *params],
    )
    return ids


def retract_cards_of(
    db: Handle, customer_id: str, now: float, store_id: str | None = None
) -> tuple[str, ...]:
    """:func:`retract_open_cards` in a transaction of its own."""
    with immediate(db):
        return retract_open_cards(db, customer_id, now, store_id)


def end_visit(
    db: Handle, visit_id: int | None, customer_id: str, t: float, now: float, store_id: str
) -> tuple[str, ...]:
    """The customer left this store at `t`: close the visit and retract their open cards
    here; the card ids."""
    with immediate(db):
        if visit_id is not None:
            db.execute(
                "UPDATE visits SET left_at = ? WHERE id = ? AND store_id = ?",
                [t, visit_id, store_id],
            )
        return retract_open_cards(db, customer_id, now, store_id)


def open_card_ids(db: Handle, customer_id: str, store_id: str) -> list[str]:
    return [
        str(r["id"])
        for r in rows(
            db,
            "SELECT id FROM cards WHERE customer_id = ? AND store_id = ? AND state = 'open'",
            [customer_id, store_id],
        )
    ]


def open_cards(db: Handle, store_id: str) -> list[tuple[str, str, dict[str, Any]]]:
    """Every open card of the store, oldest first: (card id, customer id, payload)."""
    return [
        (str(r["id"]), str(r["customer_id"]), json.loads(r["payload"]))
        for r in rows(
            db,
            "SELECT id, customer_id, payload FROM cards WHERE store_id = ? AND state = 'open'"
            " ORDER BY created_at",
            [store_id],
        )
    ]


def close_card(
    db: Handle, card_id: str, username: str, action: str, now: float, store_id: str
) -> str | None:
    """Close an open card of the store as `action` by `username`, logging the access; its
    customer id, or None when the card is not open (closed meanwhile, retracted, unknown,
    another store's)."""
    with immediate(db):
        row = one(
            db,
            "SELECT customer_id FROM cards WHERE id = ? AND store_id = ? AND state = 'open'",
            [card_id, store_id],
        )
        if row is None:
            return None
        db.execute(
            "UPDATE cards SET state = ?, acked_by = ?, acked_at = ? WHERE id = ?",
            [action, username, now, card_id],
        )
        db.execute(
            "INSERT INTO access_log (customer_id, staff_user, card_id, action, at, store_id)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            [row["customer_id"], username, card_id, action, now, store_id],
        )
        return str(row["customer_id"])


def messages_of(db: Handle, customer_id: str, store_id: str) -> list[dict[str, Any]]:
    """The app messages this store sent the customer, newest first."""
    return [
        {"id": r["id"], "at": r["at"], **json.loads(r["body"])}
        for r in rows(
            db,
            "SELECT id, at, body FROM messages WHERE customer_id = ? AND store_id = ?"
            " ORDER BY at DESC",
            [customer_id, store_id],
        )
    ]


def log_cards_shown(
    db: Handle,
    shown: Iterable[tuple[str, str]],
    usernames: Iterable[str],
    now: float,
    store_id: str,
) -> None:
    """Record that each user was shown each (customer id, card id) (customers still there)."""
    users = list(usernames)
    with immediate(db):
        for customer_id, card_id in shown:
            for user in users:
                db.execute(
                    "INSERT INTO access_log (customer_id, staff_user, card_id, action, at,"
                    " store_id) SELECT ?, ?, ?, 'shown', ?, ? WHERE EXISTS"
                    " (SELECT 1 FROM customers WHERE id = ?)",
                    [customer_id, user, card_id, now, store_id, customer_id],
                )


def purge(db: Handle, cutoff: float, store_id: str) -> int:
    """Delete the store's visits, decisions, closed cards and messages older than `cutoff`;
    visits deleted (each store keeps its own retention).

    The purged rows are zeroed in the main file (secure_delete); their older copies in the
    WAL go with the truncation.
    """
    with immediate(db):
        count = db.execute(
            "DELETE FROM visits WHERE store_id = ? AND coalesce(left_at, arrived_at) < ?",
            [store_id, cutoff],
        ).rowcount
        db.execute("DELETE FROM decisions WHERE store_id = ? AND at < ?", [store_id, cutoff])
        db.execute("DELETE FROM cards WHERE store_id = ? AND created_at < ?", [store_id, cutoff])
        db.execute("DELETE FROM messages WHERE store_id = ? AND at < ?", [store_id, cutoff])
    truncate_wal(db)
    return int(count)


def access_log_rows(db: Handle, limit: int, store_id: str) -> list[dict[str, Any]]:
    """The store's newest `limit` access log entries, newest first."""
    return rows(
        db,
        "SELECT id, customer_id, staff_user, card_id, action, at FROM access_log"
        " WHERE store_id = ? ORDER BY id DESC LIMIT ?",
        [store_id, limit],
    )


def log_views(
    db: Handle, viewer: str, customer_ids: Iterable[str], action: str, now: float, store_id: str
) -> None:
    """Record that `viewer` saw data about each customer (the access log logs itself)."""
    with immediate(db):
        for customer_id in dict.fromkeys(customer_ids):
            db.execute(
                "INSERT INTO access_log (customer_id, staff_user, card_id, action, at, store_id)"
                " SELECT ?, ?, NULL, ?, ?, ? WHERE EXISTS (SELECT 1 FROM customers WHERE id = ?)",
                [customer_id, viewer, action, now, store_id, customer_id],
            )


def claim_unowned(db: Handle, store_id: str) -> int:
    """Give the rows written before stores were recorded (NULL) to ``store_id``; how many.

    Run at start-up by a server outside chain mode: its database has only ever had its own
    store. A chain's servers never claim (such rows then count nowhere: fail closed). A
    PostgreSQL database has no such rows (it is newer than store ids): nothing to do there.
    """
    if is_pg(db):
        return 0
    claimed = 0
    with immediate(db):
        for table in STORE_TABLES:
            claimed += db.execute(
                f"UPDATE {table} SET store_id = ? WHERE store_id IS NULL",  # noqa: S608
                [store_id],
            ).rowcount
    return claimed
