"""Staff accounts and server-side sessions: password hashing and session ids (functions run
on a database thread, over ``storage.staff``).

Passwords are hashed with argon2id (argon2-cffi's defaults). A session id is 256 random bits
handed to the browser once; the database keeps only its SHA-256, so a copy of the database
does not let anyone log in. Logout deletes the row: a replayed cookie is then worthless.
"""

from __future__ import annotations

import functools
import secrets
from dataclasses import dataclass
from typing import Literal

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from store_server.errors import AuthenticationError, ValidationError
from store_server.storage import staff as store
from store_server.storage.customers import token_hash
from store_server.storage.database import Handle

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


def add_user(db: Handle, username: str, password: str, role: Role, now: float) -> StaffUser:
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
    store.insert_user(db, username, _hasher.hash(password), role, now)
    return StaffUser(username, role)


def _check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ValidationError(
            f"password must have at least {MIN_PASSWORD_LENGTH} characters", field="password"
        )


def reset_password(db: Handle, username: str, password: str) -> None:
    """Set a new password for an account and end its sessions."""
    _check_password(password)
    store.set_password_hash(db, username, _hasher.hash(password))


def authenticate(db: Handle, username: str, password: str) -> StaffUser:
    row = store.active_user(db, username)
    try:
        _hasher.verify(_dummy_hash() if row is None else row["password_hash"], password)
    except (VerificationError, InvalidHashError):
        raise AuthenticationError("wrong user name or password", code="bad_login") from None
    if row is None:
        raise AuthenticationError("wrong user name or password", code="bad_login")
    return StaffUser(row["username"], row["role"])


def open_session(db: Handle, user: StaffUser, now: float, ttl_s: float) -> str:
    """A new session id (never reused: the id changes at every login)."""
    session_id = secrets.token_urlsafe(32)
    store.insert_session(db, token_hash(session_id), user.username, now, now + ttl_s)
    return session_id


def session_user(db: Handle, session_id: str, now: float) -> StaffUser | None:
    row = store.session_user(db, token_hash(session_id), now)
    return None if row is None else StaffUser(row["username"], row["role"])


def close_session(db: Handle, session_id: str) -> None:
    store.delete_session(db, token_hash(session_id))
