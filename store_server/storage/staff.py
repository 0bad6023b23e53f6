"""Staff accounts and their server-side sessions (only hashes are stored: see ``staff``)."""

from __future__ import annotations

from typing import Any

from store_server.errors import ConflictError, NotFoundError
from store_server.storage.database import Handle, immediate, one, rows


def insert_user(db: Handle, username: str, password_hash: str, role: str, now: float) -> None:
    """Create an account; ConflictError if the name is taken."""
    with immediate(db):
        if one(db, "SELECT 1 AS x FROM staff_users WHERE username = ?", [username]):
            raise ConflictError(f"user {username!r} already exists", reason="exists")
        db.execute(
            "INSERT INTO staff_users (username, password_hash, role, created_at)"
            " VALUES (?, ?, ?, ?)",
            [username, password_hash, role, now],
        )


def active_user(db: Handle, username: str) -> dict[str, Any] | None:
    """An enabled account's username, password hash and role."""
    return one(
        db,
        "SELECT username, password_hash, role FROM staff_users WHERE username = ? AND disabled = 0",
        [username],
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


def session_user(db: Handle, session_hash: str, now: float) -> dict[str, Any] | None:
    """The username and role of an unexpired session of an enabled account."""
    return one(
        db,
        "SELECT u.username, u.role FROM sessions s JOIN staff_users u ON u.username = s.username"
        " WHERE s.id_hash = ? AND s.expires_at > ? AND u.disabled = 0",
        [session_hash, now],
    )


def delete_session(db: Handle, session_hash: str) -> None:
    with immediate(db):
        db.execute("DELETE FROM sessions WHERE id_hash = ?", [session_hash])


def staff_rows(db: Handle) -> list[dict[str, Any]]:
    """Staff accounts without their password hashes."""
    return rows(
        db,
        "SELECT username, role, created_at, disabled FROM staff_users ORDER BY username",
    )


def set_staff_disabled(db: Handle, username: str, disabled: bool) -> None:
    """Disable (and sign out everywhere) or re-enable a staff account."""
    with immediate(db):
        if not db.execute(
            "UPDATE staff_users SET disabled = ? WHERE username = ?", [int(disabled), username]
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
