"""Staff accounts and server-side sessions (database side; run on the database thread).

Passwords are hashed with argon2id (argon2-cffi's defaults). A session id is 256 random bits
handed to the browser once; the database keeps only its SHA-256, so a copy of the database
does not let anyone log in. Logout deletes the row: a replayed cookie is then worthless.
"""

from __future__ import annotations

import functools
import secrets
from dataclasses import dataclass
from typing import Literal

import sqlite_utils
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from store_server.db import immediate
from store_server.errors import AuthenticationError, ConflictError, ValidationError
from store_server.repo import one, token_hash

Role = Literal["staff", "manager"]
ROLES: tuple[Role, ...] = ("staff", "manager")
# 12 characters: the shortest password NIST SP 800-63B lets an operator require without
# composition rules, long enough against offline guessing with argon2id.
MIN_PASSWORD_LENGTH = 12
_hasher = PasswordHasher()


@functools.cache
def _dummy_hash() -> str:
    """A hash of a random password, verified when the user does not exist, so that the answer
    takes as long as for a real user (no user enumeration by timing).

    Made on first use, not at import: one argon2id hash takes 64 MiB for a moment, which a
    command that never checks a password need not pay.
    """
    return _hasher.hash(secrets.token_urlsafe(16))


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
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ValidationError(
            f"password must have at least {MIN_PASSWORD_LENGTH} characters", field="password"
        )
    if role not in ROLES:
        raise ValidationError("role must be staff or manager", field="role")
    with immediate(db):
        if one(db, "SELECT 1 AS x FROM staff_users WHERE username = ?", [username]):
            raise ConflictError(f"user {username!r} already exists")
        db.execute(
            "INSERT INTO staff_users (username, password_hash, role, created_at)"
            " VALUES (?, ?, ?, ?)",
            [username, _hasher.hash(password), role, now],
        )
    return StaffUser(username, role)


def authenticate(db: sqlite_utils.Database, username: str, password: str) -> StaffUser:
    row = one(
        db,
        "SELECT username, password_hash, role FROM staff_users WHERE username = ? AND disabled = 0",
        [username],
    )
    try:
        _hasher.verify(_dummy_hash() if row is None else row["password_hash"], password)
    except (VerificationError, InvalidHashError):
        raise AuthenticationError("wrong user name or password", code="bad_login") from None
    if row is None:
        raise AuthenticationError("wrong user name or password", code="bad_login")
    return StaffUser(row["username"], row["role"])


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
