"""Staff accounts and sign-in sessions, for the staff and manager pages."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from store_server import staff
from store_server.errors import AuthenticationError
from store_server.passwords import PasswordVerifier
from store_server.staff import Role, StaffUser
from store_server.storage import staff as store
from store_server.storage.database import Database


class StaffService:
    """Sign-in, sessions, and the manager's account pages.

    Passwords are checked (argon2id) by a `PasswordVerifier`: one at a time, on its own
    low-priority thread, never on a database thread that scanner batches or pages wait for.
    """

    def __init__(
        self, db: Database, clock: Callable[[], float], store_id: str | None = None
    ) -> None:
        self._db = db
        self._clock = clock
        # The store whose accounts sign in here (and every store's); None: all accounts.
        self._store_id = store_id
        self._verifier = PasswordVerifier()

    async def authenticate(self, username: str, password: str) -> StaffUser:
        """The account, or AuthenticationError (same time whether the user exists or not);
        RateLimitedError when too many sign-ins already wait for the password checker."""
        store_id = self._store_id
        record = await self._db.read(lambda db: staff.password_record(db, username, store_id))
        ok = await self._verifier.verify(None if record is None else record[1], password)
        if not ok or record is None:
            raise AuthenticationError("wrong user name or password", code="bad_login")
        return record[0]

    async def live_sessions(self, session_hashes: set[str]) -> set[str]:
        """Which of these sessions (stored hashes) are still valid."""
        now = self._clock()
        return await self._db.read(lambda db: staff.live_sessions(db, session_hashes, now))

    def close(self) -> None:
        self._verifier.close()

    async def open_session(self, user: StaffUser, ttl_s: float) -> str:
        """A new session id for the browser (only its hash is stored)."""
        now = self._clock()
        return await self._db.write(lambda db: staff.open_session(db, user, now, ttl_s))

    async def session_user(self, session_id: str) -> StaffUser | None:
        now, store_id = self._clock(), self._store_id
        return await self._db.read(lambda db: staff.session_user(db, session_id, now, store_id))

    async def close_session(self, session_id: str) -> None:
        await self._db.write(lambda db: staff.close_session(db, session_id))

    async def accounts(self) -> list[dict[str, Any]]:
        """Every account that counts at this store, without its password hash."""
        store_id = self._store_id
        return await self._db.read(lambda db: store.staff_rows(db, store_id))

    async def add(self, username: str, password: str, role: Role) -> StaffUser:
        now, store_id = self._clock(), self._store_id
        return await self._db.write(
            lambda db: staff.add_user(db, username, password, role, now, store_id)
        )

    async def set_disabled(self, username: str, disabled: bool) -> None:
        """Disable (signing the account out everywhere) or re-enable an account."""
        store_id = self._store_id
        await self._db.write(lambda db: store.set_staff_disabled(db, username, disabled, store_id))
