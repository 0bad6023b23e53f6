"""The PostgreSQL engine: a psycopg 3 connection behind the storage functions' handle.

The storage functions are written once, with SQLite's ``?`` placeholders and the SQL both
engines accept (``INSERT ... ON CONFLICT``, ``RETURNING``); `PgHandle` rewrites the
placeholders to psycopg's ``%s`` and answers the few calls the functions make on a handle
(``execute``, ``executemany``, ``executescript``, ``query``). The schema's DDL is mapped by
:func:`ddl` (types, identity columns, append-only triggers) so the migrations are written once.

Connections run in autocommit mode: like the SQLite adapter, a function that needs a
transaction opens one (`database.immediate`), and reads run in a ``READ ONLY`` transaction.
The password never goes into a URL, a repr or a log line: `PgTarget` keeps it apart.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

if TYPE_CHECKING:
    import psycopg

# psycopg is imported where a connection is made or read: a shop on SQLite does not load it
# (about 9 MB of a store server's resident memory).

# The name the migrations are recorded under in `MIGRATIONS_TABLE` (sqlite-utils' set name).
MIGRATIONS_TABLE = "bulle_migrations"
# Seconds a new connection may take before the server gives up on the database.
CONNECT_TIMEOUT_S = 10
# Server-side bound on one statement: a stuck query fails instead of holding a thread forever.
STATEMENT_TIMEOUT_MS = 30_000
# The advisory lock held while migrating, so two store servers starting at once do not both
# create the schema (any constant that no other application on the database uses).
MIGRATION_LOCK = 0x42_75_6C_6C_65_01


@dataclass(frozen=True, slots=True)
class PgTarget:
    """A PostgreSQL database to connect to: its URL (no password in it) and the password."""

    url: str
    password: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        if parts.scheme not in ("postgresql", "postgres"):
            raise ValueError("database_url: expected postgresql://USER@HOST:PORT/DATABASE")
        if parts.password is not None or "password" in parse_qs(parts.query):
            raise ValueError(
                "database_url: must not hold a password (use database_password_file or"
                " BULLE_DATABASE_PASSWORD)"
            )

    def connect_kwargs(self) -> dict[str, Any]:
        extra: dict[str, Any] = {
            "autocommit": True,
            "connect_timeout": CONNECT_TIMEOUT_S,
            "options": f"-c statement_timeout={STATEMENT_TIMEOUT_MS}",
        }
        if self.password is not None:
            extra["password"] = self.password
        return extra


def connect(target: PgTarget) -> psycopg.Connection[tuple[Any, ...]]:
    import psycopg

    return psycopg.connect(target.url, **target.connect_kwargs())


_STRING_OR_MARK = re.compile(r"'(?:[^']|'')*'|\?|%")


@functools.lru_cache(maxsize=1024)
def placeholders(sql: str) -> str:
    """``?`` -> ``%s`` and ``%`` -> ``%%`` outside string literals (for psycopg's params)."""

    def swap(match: re.Match[str]) -> str:
        text = match.group(0)
        if text == "?":
            return "%s"
        if text == "%":
            return "%%"
        return text.replace("%", "%%")

    return _STRING_OR_MARK.sub(swap, sql)


class PgHandle:
    """What the storage functions take first, on PostgreSQL: one psycopg connection."""

    engine = "postgres"

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn

    def execute(self, sql: str, params: Sequence[Any] | None = None) -> psycopg.Cursor[Any]:
        if not params:
            return self.conn.execute(sql.encode())
        return self.conn.execute(placeholders(sql).encode(), list(params))

    def executemany(self, sql: str, seq: Iterable[Sequence[Any]]) -> psycopg.Cursor[Any]:
        cursor = self.conn.cursor()
        cursor.executemany(placeholders(sql).encode(), [list(p) for p in seq])
        return cursor

    def executescript(self, script: str) -> None:
        """Several statements without parameters (the schema)."""
        self.conn.execute(script.encode())

    def query(self, sql: str, params: Sequence[Any] | None = None) -> list[dict[str, Any]]:
        from psycopg.rows import dict_row

        with self.conn.cursor(row_factory=dict_row) as cursor:
            if params:
                cursor.execute(placeholders(sql).encode(), list(params))
            else:
                cursor.execute(sql.encode())
            return cursor.fetchall()

    def table_names(self) -> list[str]:
        return [
            str(row["table_name"])
            for row in self.query(
                "SELECT table_name FROM information_schema.tables"
                " WHERE table_schema = current_schema() ORDER BY table_name"
            )
        ]


# -- the schema: SQLite DDL mapped to PostgreSQL ----------------------------------------------

_APPEND_ONLY_FUNCTION = """
CREATE OR REPLACE FUNCTION bulle_append_only() RETURNS trigger LANGUAGE plpgsql AS $fn$
BEGIN
    RAISE EXCEPTION '% is append-only', TG_TABLE_NAME
        USING ERRCODE = 'integrity_constraint_violation';
END
$fn$;
"""
_TRIGGER = re.compile(
    r"CREATE TRIGGER (\w+) BEFORE (UPDATE|DELETE) ON (\w+)\s+"
    r"BEGIN SELECT RAISE\(ABORT, '[^']*'\); END;",
    re.IGNORECASE,
)
_TYPES = (
    (
        re.compile(r"\bINTEGER PRIMARY KEY( AUTOINCREMENT)?", re.IGNORECASE),
        "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY",
    ),
    (re.compile(r"\bINTEGER\b", re.IGNORECASE), "BIGINT"),
    (re.compile(r"\bREAL\b", re.IGNORECASE), "DOUBLE PRECISION"),
    (re.compile(r"\bBLOB\b", re.IGNORECASE), "BYTEA"),
)


def _trigger(match: re.Match[str]) -> str:
    name, operation, table = match.groups()
    # Statement-level: refused even when no row matches, and TRUNCATE with DELETE.
    events = f"{operation.upper()} OR TRUNCATE" if operation.upper() == "DELETE" else operation
    return (
        f"CREATE TRIGGER {name} BEFORE {events} ON {table}"
        " FOR EACH STATEMENT EXECUTE FUNCTION bulle_append_only();"
    )


def ddl(script: str) -> str:
    """The schema script of a migration (written for SQLite) for PostgreSQL."""
    for pattern, replacement in _TYPES:
        script = pattern.sub(replacement, script)
    if _TRIGGER.search(script):
        script = _APPEND_ONLY_FUNCTION + _TRIGGER.sub(_trigger, script)
    return script
