"""Scanners: registrations, heartbeats, recorded batch ids, calibration offsets."""

from __future__ import annotations

import itertools
import json
from typing import Any

from store_server.errors import ConflictError, NotFoundError
from store_server.storage.database import Handle, executemany, immediate, one, rows


def add_scanner(
    db: Handle,
    scanner_id: str,
    store_id: str,
    secret_wrapped: bytes,
    now: float,
    *,
    replace: bool = True,
) -> None:
    """Register a scanner; an active registration of that id is replaced only with
    ``replace`` (ConflictError otherwise: its secret would change under a running scanner),
    and never when it is another store's (scanner ids are unique across a chain: revoke it
    there first)."""
    with immediate(db):
        active = one(
            db, "SELECT store_id FROM scanners WHERE id = ? AND revoked_at IS NULL", [scanner_id]
        )
        if active is not None and active["store_id"] != store_id:
            raise ConflictError(f"scanner {scanner_id!r} is registered for another store")
        if not replace and active is not None:
            raise ConflictError(
                f"scanner {scanner_id!r} is already registered", reason="registered"
            )
        db.execute(
            "INSERT INTO scanners (id, store_id, secret_wrapped, created_at) VALUES (?, ?, ?, ?)"
            " ON CONFLICT(id) DO UPDATE SET secret_wrapped = excluded.secret_wrapped,"
            " store_id = excluded.store_id, revoked_at = NULL",
            [scanner_id, store_id, secret_wrapped, now],
        )


def set_scanner_secret(db: Handle, scanner_id: str, secret_wrapped: bytes) -> None:
    """Give an active scanner a new secret; its old one stops working at once."""
    with immediate(db):
        if not db.execute(
            "UPDATE scanners SET secret_wrapped = ? WHERE id = ? AND revoked_at IS NULL",
            [secret_wrapped, scanner_id],
        ).rowcount:
            raise NotFoundError(f"no active scanner {scanner_id!r}")


def scanner_row(db: Handle, scanner_id: str) -> dict[str, Any] | None:
    return one(db, "SELECT * FROM scanners WHERE id = ?", [scanner_id])


def revoke_scanner(db: Handle, scanner_id: str, now: float, store_id: str | None = None) -> None:
    """Revoke a scanner (only one of ``store_id``, if given: a store's manager page)."""
    sql, params = "UPDATE scanners SET revoked_at = ? WHERE id = ?", [now, scanner_id]
    if store_id is not None:
        sql += " AND store_id = ?"
        params.append(store_id)
    with immediate(db):
        if not db.execute(sql, params).rowcount:
            raise NotFoundError(f"no scanner {scanner_id!r}")


def record_heartbeat(db: Handle, scanner_id: str, body: dict[str, Any], now: float) -> None:
    with immediate(db):
        db.execute(
            "UPDATE scanners SET last_heartbeat = ?, last_seen_at = ? WHERE id = ?",
            [json.dumps(body), now, scanner_id],
        )


def batch_result(db: Handle, scanner_id: str, batch_id: str) -> int | None:
    row = one(
        db,
        "SELECT accepted FROM scanner_batches WHERE scanner_id = ? AND batch_id = ?",
        [scanner_id, batch_id],
    )
    return None if row is None else int(row["accepted"])


def record_batch(db: Handle, scanner_id: str, batch_id: str, accepted: int, now: float) -> bool:
    """Record a batch as committed; False when it was already recorded (a retry)."""
    return record_batches(db, [(scanner_id, batch_id, accepted, now, None)])[0][0]


def record_batches(
    db: Handle, items: list[tuple[str, str, int, float, bytes | None]]
) -> list[tuple[bool, int]]:
    """Record (scanner, batch id, accepted, now, registration) items in one transaction.

    For each, in order: (True, accepted) when recorded now, (False, accepted recorded before)
    when the batch id was already there (a retry, possibly earlier in the same group), and
    (False, -1), recording nothing, when ``registration`` is given (the wrapped secret the
    request was verified with) and is no longer that of an unrevoked scanner.
    """
    with immediate(db):
        # The registration of each scanner of the group, read once (nothing else writes in
        # this transaction): the wrapped secret of an unrevoked scanner, or None.
        current: dict[str, bytes | None] = {}
        for scanner_id, _, _, _, registration in items:
            if registration is not None and scanner_id not in current:
                row = db.execute(
                    "SELECT secret_wrapped FROM scanners WHERE id = ? AND revoked_at IS NULL",
                    [scanner_id],
                ).fetchone()
                current[scanner_id] = None if row is None else bytes(row[0])
        ok = [item[4] is None or current[item[0]] == item[4] for item in items]
        valid = list(itertools.compress(items, ok))
        # Usually every batch id is new: one statement for the group. If any was there
        # already (a retry), the group is recorded again one batch at a time to tell which.
        db.execute("SAVEPOINT batch_ids")
        inserted = executemany(db, _INSERT_BATCH, [item[:4] for item in valid])
        if inserted == len(valid):
            results = [
                (True, item[2]) if good else (False, -1)
                for item, good in zip(items, ok, strict=True)
            ]
        else:
            db.execute("ROLLBACK TO SAVEPOINT batch_ids")
            results = _record_one_by_one(db, items, current)
        db.execute("RELEASE SAVEPOINT batch_ids")
        seen = {item[0]: item[3] for item in valid}
        executemany(
            db,
            "UPDATE scanners SET last_seen_at = ? WHERE id = ?",
            [(now, scanner_id) for scanner_id, now in seen.items()],
        )
    return results


_INSERT_BATCH = (
    "INSERT INTO scanner_batches (scanner_id, batch_id, accepted, received_at)"
    " VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING"
)


def _record_one_by_one(
    db: Handle,
    items: list[tuple[str, str, int, float, bytes | None]],
    current: dict[str, bytes | None],
) -> list[tuple[bool, int]]:
    """:func:`record_batches`'s results, one INSERT per batch (some batch id is a retry)."""
    results: list[tuple[bool, int]] = []
    for scanner_id, batch_id, accepted, now, registration in items:
        if registration is not None and current[scanner_id] != registration:
            results.append((False, -1))
            continue
        if db.execute(_INSERT_BATCH, [scanner_id, batch_id, accepted, now]).rowcount:
            results.append((True, accepted))
        else:
            row = db.execute(
                "SELECT accepted FROM scanner_batches WHERE scanner_id = ? AND batch_id = ?",
                [scanner_id, batch_id],
            ).fetchone()
            results.append((False, int(row[0])))
    return results


def scanner_rows(db: Handle, store_id: str | None = None) -> list[dict[str, Any]]:
    """Registered scanners (of ``store_id`` only, if given: a server's pages) with their last
    heartbeat decoded (never their secrets)."""
    sql = "SELECT id, store_id, created_at, revoked_at, last_heartbeat, last_seen_at FROM scanners"
    params: list[Any] = []
    if store_id is not None:
        sql += " WHERE store_id = ?"
        params.append(store_id)
    found = rows(db, sql + " ORDER BY id", params)
    for row in found:
        raw = row.pop("last_heartbeat")
        row["heartbeat"] = json.loads(raw) if raw else None
    return found


def calibration_overrides(db: Handle) -> dict[str, float]:
    return {
        str(r["scanner_id"]): float(r["rssi_offset_db"])
        for r in rows(db, "SELECT scanner_id, rssi_offset_db FROM scanner_calibration")
    }


def set_calibration(
    db: Handle, scanner_id: str, rssi_offset_db: float, username: str, now: float
) -> None:
    with immediate(db):
        db.execute(
            "INSERT INTO scanner_calibration (scanner_id, rssi_offset_db, updated_by, updated_at)"
            " VALUES (?, ?, ?, ?) ON CONFLICT(scanner_id) DO UPDATE SET"
            " rssi_offset_db = excluded.rssi_offset_db, updated_by = excluded.updated_by,"
            " updated_at = excluded.updated_at",
            [scanner_id, rssi_offset_db, username, now],
        )
