"""Staff accounts and server-side sessions (database side; run on the database thread).

Passwords are hashed with argon2id (argon2-cffi's defaults). A session id is 256 random bits
handed to the browser once; the database keeps only its SHA-256, so a copy of the database
does not let anyone log in. Logout deletes the row: a replayed cookie is then worthless.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Literal

import sqlite_utils

from store_server.db import immediate
from store_server.errors import AuthenticationError, ConflictError, ValidationError
from store_server.passwords import check_new_password, hash_password, verify_password
from store_server.repo import one, token_hash

Role = Literal["staff", "manager"]
ROLES: tuple[Role, ...] = ("staff", "manager")


@dataclass(frozen=True, slots=True)
class StaffUser:
    username: str
    role: Role


def add_user(
    db: sqlite_utils.Database, username: str, password: str, role: Role, now: float
) -> StaffUser:
    if (
        not username
        or len(username) > 64
        or not username.replace("-", "").replace("_", "").replace(".", "").isalnum()
    ):
        raise ValidationError("letters, digits, '.', '-', '_' (1-64)", field="username")
    check_new_password(password, username)
    if role not in ROLES:
        raise ValidationError("role must be staff or manager", field="role")
    with immediate(db):
        if one(db, "SELECT 1 AS x FROM staff_users WHERE username = ?", [username]):
            raise ConflictError(f"user {username!r} already exists")
        db.execute(
            "INSERT INTO staff_users (username, password_hash, role, created_at)"
            " VALUES (?, ?, ?, ?)",
            [username, hash_password(password), role, now],
        )
    return StaffUser(username, role)


def password_record(db: sqlite_utils.Database, username: str) -> tuple[StaffUser, str] | None:
    """The enabled account `username` with its password hash (checked off this thread)."""
    row = one(
        db,
        "SELECT username, password_hash, role FROM staff_users WHERE username = ? AND disabled = 0",
        [username],
    )
    return None if row is None else (StaffUser(row["username"], row["role"]), row["password_hash"])


def authenticate(db: sqlite_utils.Database, username: str, password: str) -> StaffUser:
    """Check a password on the calling thread (commands; the server uses PasswordVerifier)."""
    record = password_record(db, username)
    if not verify_password(None if record is None else record[1], password) or record is None:
        raise AuthenticationError("wrong user name or password", code="bad_login")
    return record[0]


def open_session(db: sqlite_utils.Database, user: StaffUser, now: float, ttl_s: float) -> str:
    """A new session id (never reused: the id changes at every login)."""
    session_id = secrets.token_urlsafe(32)
    with immediate(db):
        db.execute("DELETE FROM sessions WHERE expires_at <= ?", [now])
        db.execute(
            "INSERT INTO sessions (id_hash, username, created_at, expires_at) VALUES (?, ?, ?, ?)",
            [token_hash(session_id), user.username, now, now + ttl_s],
        )
    return session_id


def session_user(db: sqlite_utils.Database, session_id: str, now: float) -> StaffUser | None:
    row = one(
        db,
        "SELECT u.username, u.role FROM sessions s JOIN staff_users u ON u.username = s.username"
        " WHERE s.id_hash = ? AND s.expires_at > ? AND u.disabled = 0",
        [token_hash(session_id), now],
    )
    return None if row is None else StaffUser(row["username"], row["role"])


def close_session(db: sqlite_utils.Database, session_id: str) -> None:
    with immediate(db):
        db.execute("DELETE FROM sessions WHERE id_hash = ?", [token_hash(session_id)])


def live_sessions(db: sqlite_utils.Database, id_hashes: set[str], now: float) -> set[str]:
    """Which of these stored session hashes are still valid (not signed out, expired or
    belonging to a disabled account)."""
    hashes = sorted(id_hashes)
    marks = ", ".join("?" for _ in hashes)
    # Only placeholders are interpolated.
    sql = (
        "SELECT s.id_hash FROM sessions s JOIN staff_users u ON u.username = s.username"  # noqa: S608
        f" WHERE s.id_hash IN ({marks}) AND s.expires_at > ? AND u.disabled = 0"
    )
    found = db.execute(sql, [*hashes, now]).fetchall()
    return {str(row[0]) for row in found}
