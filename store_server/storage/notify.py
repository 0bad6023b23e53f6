"""PostgreSQL notifications of the consent log (I/O): the chain's wake-up signal.

Every insert into ``consent_log`` notifies channel ``CHANNEL`` with the new entry's sequence
number only (never a customer identifier, not even a pseudonym): PostgreSQL delivers it at
commit, to every store server listening. A server then reads the log after its cursor
(:mod:`store_server.services.consent_feed`); a missed notification only delays that read to
the feed's next poll.

:class:`ConsentListener` is the thin adapter: one dedicated psycopg connection (not from the
pool: a pooled connection would lose its LISTEN when returned), kept alive with TCP
keepalives and a periodic ping, reconnecting with a capped backoff, and telling the feed
when it is lost and when it is back (the feed then catches up before any new card).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported when the listener runs: a SQLite server never loads psycopg
    import psycopg

logger = logging.getLogger(__name__)

CHANNEL = "bulle_consent"
# The trigger that notifies, created by the PostgreSQL migrations (`NOTIFY_DDL`).
NOTIFY_DDL = f"""
CREATE OR REPLACE FUNCTION bulle_consent_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('{CHANNEL}', NEW.seq::text);
    RETURN NULL;
END $$;
DROP TRIGGER IF EXISTS consent_log_notify ON consent_log;
CREATE TRIGGER consent_log_notify AFTER INSERT ON consent_log
    FOR EACH ROW EXECUTE FUNCTION bulle_consent_notify();
"""
# With no notification for this long, the listening connection is pinged (SELECT 1): a dead
# peer that sent no reset is noticed within about this long.
PING_S = 5.0
# Reconnection delays: full jitter, from this base doubling to the cap.
RECONNECT_BASE_S = 0.2
RECONNECT_CAP_S = 5.0
# TCP keepalives on the listening connection (seconds): a silent network loss is noticed too.
KEEPALIVE = {"keepalives": 1, "keepalives_idle": 5, "keepalives_interval": 2, "keepalives_count": 2}
# Seconds a connection attempt may take.
CONNECT_TIMEOUT_S = 5


class ConsentListener:
    """LISTEN on the consent log's channel; a :class:`~store_server.services.consent_feed.
    WakeupSource`."""

    def __init__(self, url: str, *, password: str | None = None) -> None:
        self._url = url
        self._password = password
        self.connected = False
        self.reconnects = 0  # observability: connections made after the first

    def _kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "autocommit": True,
            "connect_timeout": CONNECT_TIMEOUT_S,
            **KEEPALIVE,
        }
        if self._password is not None:
            kwargs["password"] = self._password
        return kwargs

    async def run(self, wake: Callable[[], None], connected: Callable[[bool], None]) -> None:
        import psycopg

        attempt = 0
        first = True
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(self._url, **self._kwargs())
            except psycopg.OperationalError as exc:
                if self.connected or first:
                    logger.warning("consent notifications: cannot connect (%s)", _brief(exc))
                self._lost(connected)
                first = False
                attempt += 1
                await asyncio.sleep(_delay(attempt))
                continue
            try:
                async with conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    if not first:
                        self.reconnects += 1
                        logger.info("consent notifications: listening again")
                    first = False
                    attempt = 0
                    self.connected = True
                    connected(True)  # the feed catches up: anything may have been missed
                    await self._listen(conn, wake)
            except psycopg.OperationalError as exc:
                logger.warning("consent notifications: connection lost (%s)", _brief(exc))
            self._lost(connected)
            attempt += 1
            await asyncio.sleep(_delay(attempt))

    def _lost(self, connected: Callable[[bool], None]) -> None:
        self.connected = False
        connected(False)

    async def _listen(self, conn: psycopg.AsyncConnection[Any], wake: Callable[[], None]) -> None:
        while True:
            got = False
            async for _ in conn.notifies(timeout=PING_S):
                got = True
                wake()
            if not got:
                await conn.execute("SELECT 1")  # raises OperationalError on a dead connection


def _delay(attempt: int) -> float:
    return random.uniform(0.0, min(RECONNECT_CAP_S, RECONNECT_BASE_S * 2 ** (attempt - 1)))


def _brief(exc: BaseException) -> str:
    """The first line of a driver error (no connection string, no password in it)."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200]}" if text else type(exc).__name__


async def install_notify_trigger(url: str, password: str | None = None) -> None:
    """Create the notifying trigger (tests and migrations on an existing database)."""
    import psycopg

    kwargs: dict[str, Any] = {"autocommit": True}
    if password is not None:
        kwargs["password"] = password
    async with await psycopg.AsyncConnection.connect(url, **kwargs) as conn:
        await conn.execute(NOTIFY_DDL)
