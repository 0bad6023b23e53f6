"""Staff accounts and sign-in sessions, for the staff and manager pages."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from store_server import staff
from store_server.staff import Role, StaffUser
from store_server.storage import staff as store
from store_server.storage.database import Database


class StaffService:
    """Sign-in (argon2id on a reader thread), sessions, and the manager's account pages."""

    def __init__(self, db: Database, clock: Callable[[], float]) -> None:
        self._db = db
        self._clock = clock

    async def authenticate(self, username: str, password: str) -> StaffUser:
        """The account, or AuthenticationError (same time whether the user exists or not)."""
        return await self._db.read(lambda db: staff.authenticate(db, username, password))

    async def open_session(self, user: StaffUser, ttl_s: float) -> str:
        """A new session id for the browser (only its hash is stored)."""
        now = self._clock()
        return await self._db.write(lambda db: staff.open_session(db, user, now, ttl_s))

    async def session_user(self, session_id: str) -> StaffUser | None:
        now = self._clock()
        return await self._db.read(lambda db: staff.session_user(db, session_id, now))

    async def close_session(self, session_id: str) -> None:
        await self._db.write(lambda db: staff.close_session(db, session_id))

    async def accounts(self) -> list[dict[str, Any]]:
        """Every account, without its password hash."""
        return await self._db.read(store.staff_rows)

    async def add(self, username: str, password: str, role: Role) -> StaffUser:
        now = self._clock()
        return await self._db.write(lambda db: staff.add_user(db, username, password, role, now))

    async def set_disabled(self, username: str, disabled: bool) -> None:
        """Disable (signing the account out everywhere) or re-enable an account."""
        await self._db.write(lambda db: store.set_staff_disabled(db, username, disabled))
