"""Staff accounts and server-side sessions: password rules and session ids (functions run
on a database thread, over ``storage.staff``).

Passwords are hashed with argon2id (argon2-cffi's defaults, `passwords`). A session id is 256
random bits handed to the browser once; the database keeps only its SHA-256, so a copy of
the database does not let anyone log in. Logout deletes the row: a replayed cookie is then
worthless.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Literal

from store_server.errors import AuthenticationError, ValidationError
from store_server.passwords import check_new_password, hash_password, verify_password
from store_server.storage import staff as store
from store_server.storage.customers import token_hash
from store_server.storage.database import Handle

Role = Literal["staff", "manager"]
ROLES: tuple[Role, ...] = ("staff", "manager")


@dataclass(frozen=True, slots=True)
class StaffUser:
    username: str
    role: Role


def add_user(
    db: Handle,
    username: str,
    password: str,
    role: Role,
    now: float,
    store_id: str | None = None,
) -> StaffUser:
    """Create an account of ``store_id`` (None: of every store of the database)."""
    if not _username_ok(username):
        raise ValidationError(
            "letters, digits, '.', '-', '_' (1-64)", field="username", reason="username_chars"
        )
    check_new_password(password, username)
    if role not in ROLES:
        raise ValidationError("role must be staff or manager", field="role", reason="role")
    store.insert_user(db, username, hash_password(password), role, now, store_id)
    return StaffUser(username, role)


def _username_ok(username: str) -> bool:
    return (
        bool(username)
        and len(username) <= 64
        and username.replace("-", "").replace("_", "").replace(".", "").isalnum()
    )


def reset_password(db: Handle, username: str, password: str) -> None:
    """Set a new password for an account and end its sessions."""
    check_new_password(password, username)
    store.set_password_hash(db, username, hash_password(password))


def password_record(
    db: Handle, username: str, store_id: str | None = None
) -> tuple[StaffUser, str] | None:
    """The enabled account `username` (counting at ``store_id``) with its password hash
    (checked off this thread). A name no account can have is not looked up: PostgreSQL
    refuses some of them (a NUL character) instead of finding nothing."""
    if not _username_ok(username):
        return None
    row = store.active_user(db, username, store_id)
    return None if row is None else (StaffUser(row["username"], row["role"]), row["password_hash"])


def authenticate(db: Handle, username: str, password: str) -> StaffUser:
    """Check a password on the calling thread (commands; the server uses PasswordVerifier)."""
    record = password_record(db, username)
    if not verify_password(None if record is None else record[1], password) or record is None:
        raise AuthenticationError("wrong user name or password", code="bad_login")
    return record[0]


def open_session(db: Handle, user: StaffUser, now: float, ttl_s: float) -> str:
    """A new session id (never reused: the id changes at every login)."""
    session_id = secrets.token_urlsafe(32)
    store.insert_session(db, token_hash(session_id), user.username, now, now + ttl_s)
    return session_id


def session_user(
    db: Handle, session_id: str, now: float, store_id: str | None = None
) -> StaffUser | None:
    row = store.session_user(db, token_hash(session_id), now, store_id)
    return None if row is None else StaffUser(row["username"], row["role"])


def session_key(session_id: str) -> str:
    """How a session is stored and known to the board hub: the hash of its id."""
    return token_hash(session_id)


def live_sessions(db: Handle, id_hashes: set[str], now: float) -> set[str]:
    """Which of these stored session hashes are still valid (not signed out, expired or
    belonging to a disabled account)."""
    return store.live_session_hashes(db, sorted(id_hashes), now)


def close_session(db: Handle, session_id: str) -> None:
    store.delete_session(db, token_hash(session_id))
