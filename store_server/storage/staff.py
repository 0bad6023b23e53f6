"""Staff accounts and their server-side sessions (only hashes are stored: see ``staff``).

An account belongs to one store (``store_id``) or, NULL, to every store of the database; a
server given its store (``store_id`` arguments) sees and signs in only the accounts that
count there.
"""

from __future__ import annotations

from typing import Any

from store_server.errors import ConflictError, NotFoundError
from store_server.storage.database import Handle, immediate, one, rows

# An account counts at a store when it is that store's or every store's.
_AT_STORE = " AND (u.store_id IS NULL OR u.store_id = ?)"


def _at(store_id: str | None) -> tuple[str, list[Any]]:
    return ("", []) if store_id is None else (_AT_STORE, [store_id])


def insert_user(
    db: Handle,
    username: str,
    password_hash: str,
    role: str,
    now: float,
    store_id: str | None = None,
) -> None:
    """Create an account (of ``store_id``, or of every store); ConflictError if the name is
    taken (names are unique across the database)."""
    with immediate(db):
        if one(db, "SELECT 1 AS x FROM staff_users WHERE username = ?", [username]):
            raise ConflictError(f"user {username!r} already exists", reason="exists")
        db.execute(
            "INSERT INTO staff_users (username, password_hash, role, created_at, store_id)"
            " VALUES (?, ?, ?, ?, ?)",
            [username, password_hash, role, now, store_id],
        )


def active_user(db: Handle, username: str, store_id: str | None = None) -> dict[str, Any] | None:
    """An enabled account's username, password hash and role (if it counts at ``store_id``)."""
    where, params = _at(store_id)
    return one(
        db,
        "SELECT username, password_hash, role FROM staff_users u"  # noqa: S608 (fixed clause)
        f" WHERE username = ? AND disabled = 0{where}",
        [username, *params],
    )


def insert_session(
    db: Handle, session_hash: str, username: str, now: float, expires_at: float
) -> None:
    """Store a new session (by its hash), dropping the expired ones."""
    with immediate(db):
        db.execute("DELETE FROM sessions WHERE expires_at <= ?", [now])
        db.execute(
            "INSERT INTO sessions (id_hash, username, created_at, expires_at) VALUES (?, ?, ?, ?)",
            [session_hash, username, now, expires_at],
        )


def session_user(
    db: Handle, session_hash: str, now: float, store_id: str | None = None
) -> dict[str, Any] | None:
    """The username and role of an unexpired session of an enabled account (that counts at
    ``store_id``: another store's session is no session here)."""
    where, params = _at(store_id)
    return one(
        db,
        "SELECT u.username, u.role FROM sessions s"  # noqa: S608 (a fixed clause)
        " JOIN staff_users u ON u.username = s.username"
        f" WHERE s.id_hash = ? AND s.expires_at > ? AND u.disabled = 0{where}",
        [session_hash, now, *params],
    )


def delete_session(db: Handle, session_hash: str) -> None:
    with immediate(db):
        db.execute("DELETE FROM sessions WHERE id_hash = ?", [session_hash])


def staff_rows(db: Handle, store_id: str | None = None) -> list[dict[str, Any]]:
    """Staff accounts (that count at ``store_id``) without their password hashes."""
    where, params = _at(store_id)
    return rows(
        db,
        "SELECT username, role, created_at, disabled, store_id FROM staff_users u"  # noqa: S608
        f" WHERE 1 = 1{where} ORDER BY username",
        params,
    )


def set_staff_disabled(
    db: Handle, username: str, disabled: bool, store_id: str | None = None
) -> None:
    """Disable (and sign out everywhere) or re-enable a staff account (only one of
    ``store_id``'s, if given: a store's manager page)."""
    where = "" if store_id is None else " AND store_id = ?"
    with immediate(db):
        if not db.execute(
            f"UPDATE staff_users SET disabled = ? WHERE username = ?{where}",  # noqa: S608
            [int(disabled), username, *([] if store_id is None else [store_id])],
        ).rowcount:
            raise NotFoundError(f"no account {username!r}")
        if disabled:
            db.execute("DELETE FROM sessions WHERE username = ?", [username])


def set_password_hash(db: Handle, username: str, password_hash: str) -> None:
    """Set an account's password and sign it out everywhere (its sessions are deleted)."""
    with immediate(db):
        if not db.execute(
            "UPDATE staff_users SET password_hash = ? WHERE username = ?", [password_hash, username]
        ).rowcount:
            raise NotFoundError(f"no account {username!r}")
        db.execute("DELETE FROM sessions WHERE username = ?", [username])


def live_session_hashes(db: Handle, session_hashes: list[str], now: float) -> set[str]:
    """Which of these sessions are unexpired sessions of enabled accounts."""
    marks = ", ".join("?" for _ in session_hashes)
    # Only placeholders are interpolated.
    sql = (
        "SELECT s.id_hash FROM sessions s JOIN staff_users u ON u.username = s.username"  # noqa: S608
        f" WHERE s.id_hash IN ({marks}) AND s.expires_at > ? AND u.disabled = 0"
    )
    return {str(row["id_hash"]) for row in rows(db, sql, [*session_hashes, now])}
