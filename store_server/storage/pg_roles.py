"""PostgreSQL roles: what the store server's own role may do (docs/operations.md).

Two roles: the owner role creates and migrates the schema (``store-server db migrate``); the
store server runs as a role that may read and write the tables but not change the schema,
and may only add to the append-only tables (the consent log, its signed checkpoints): no
UPDATE, DELETE or TRUNCATE on them, on top of the triggers that refuse those statements
whoever runs them. ``store-server db grant ROLE``, run as the owner, grants exactly that.
"""

from __future__ import annotations

from psycopg import sql

from store_server.storage.pg import PgHandle

APPEND_ONLY_TABLES = ("consent_log", "consent_checkpoints")
"""Tables the server's role may only read and insert into."""
NO_UPDATE_TABLES = ("access_log",)
"""Tables the server's role may not update (rows leave with their customer, by cascade)."""
READ_ONLY_TABLES = ("bulle_migrations",)
"""Tables the server's role may only read (the schema's record: the owner's)."""
IDENTITY_READABLE = ("customer_id", "k", "clock_offset_s", "created_at", "wrap", "rowid")
"""The columns of ``identities`` a chain's store server may read: everything but the wrapped
identity key (chain mode: only the key authority's role reads it; docs/privacy.md)."""
IDENTITY_WRITABLE = ("key_wrapped", "k", "clock_offset_s", "created_at", "wrap")
"""... and may update (a re-enrollment seals a new key it cannot read back)."""


def grant_statements(
    role: str, schema: str = "public", *, identity_keys: bool = True
) -> list[sql.Composed]:
    """The GRANT and REVOKE statements that give `role` the store server's privileges;
    without ``identity_keys`` (a chain's store server), no read of the identity keys."""
    who = sql.Identifier(role)
    where = sql.Identifier(schema)

    def tables(names: tuple[str, ...]) -> sql.Composed:
        return sql.SQL(", ").join(sql.Identifier(schema, name) for name in names)

    def columns(names: tuple[str, ...]) -> sql.Composed:
        return sql.SQL(", ").join(sql.Identifier(name) for name in names)

    identities = sql.Identifier(schema, "identities")
    without_keys = [
        sql.SQL("REVOKE SELECT, UPDATE ON {} FROM {}").format(identities, who),
        sql.SQL("GRANT SELECT ({}), UPDATE ({}) ON {} TO {}").format(
            columns(IDENTITY_READABLE), columns(IDENTITY_WRITABLE), identities, who
        ),
    ]
    return [
        sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(where, who),
        sql.SQL("GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {} TO {}").format(
            where, who
        ),
        sql.SQL("GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {} TO {}").format(where, who),
        sql.SQL("REVOKE UPDATE, DELETE, TRUNCATE ON {} FROM {}").format(
            tables(APPEND_ONLY_TABLES), who
        ),
        sql.SQL("REVOKE UPDATE, TRUNCATE ON {} FROM {}").format(tables(NO_UPDATE_TABLES), who),
        sql.SQL("REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON {} FROM {}").format(
            tables(READ_ONLY_TABLES), who
        ),
        *([] if identity_keys else without_keys),
    ]


def grant_server_role(db: PgHandle, role: str, *, identity_keys: bool = True) -> list[str]:
    """Give `role` the store server's privileges, in one transaction; the statements run."""
    statements = grant_statements(role, identity_keys=identity_keys)
    with db.conn.transaction():
        for statement in statements:
            db.conn.execute(statement)
    return [statement.as_string(db.conn) for statement in statements]
