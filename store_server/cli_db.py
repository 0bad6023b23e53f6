"""`store-server db`: the PostgreSQL engine's schema and roles (docs/operations.md, "Running on
PostgreSQL"). The commands use the settings' ``database_url`` and password: run them with the
owner role's URL (e.g. ``BULLE_DATABASE_URL=postgresql://bulle_owner@db/bulle``)."""

from __future__ import annotations

import argparse
from typing import Any, TextIO

from store_server.cli_settings import add_config_arg, load_settings, with_db
from store_server.config import ServerConfig
from store_server.errors import ConfigError


def _require_pg(config: ServerConfig, command: str) -> None:
    if not config.database_url:
        raise ConfigError(
            f"db {command}: only for PostgreSQL: set database_url (a SQLite database is"
            " migrated when the server opens it)",
            key="database_url",
        )


def cmd_db_migrate(args: argparse.Namespace, out: TextIO) -> int:
    from store_server.storage.migrations import applied_pg
    from store_server.storage.pg import PgHandle

    config = load_settings(args)
    _require_pg(config, "migrate")

    def applied(db: Any) -> list[str]:
        assert isinstance(db, PgHandle)
        return applied_pg(db)

    names = with_db(config, applied)
    out.write(f"schema up to date: {len(names)} migrations applied, the last {names[-1]}\n")
    return 0


def cmd_db_grant(args: argparse.Namespace, out: TextIO) -> int:
    from store_server.storage.pg import PgHandle
    from store_server.storage.pg_roles import grant_server_role

    config = load_settings(args)
    _require_pg(config, "grant")

    def grant(db: Any) -> list[str]:
        assert isinstance(db, PgHandle)
        return grant_server_role(db, args.role, identity_keys=not args.chain_store)

    for statement in with_db(config, grant):
        out.write(statement + ";\n")
    out.write(f"role {args.role} may now run the store server (append-only consent log)\n")
    if args.chain_store:
        out.write(f"role {args.role} may not read the identity keys (a chain's store server)\n")
    return 0


def add_db_commands(sub: Any) -> None:
    """Add `db migrate` and `db grant` to the `store-server` subcommand parser ``sub``."""
    p = sub.add_parser(
        "db", help="PostgreSQL schema and roles", description="PostgreSQL schema and roles."
    )
    db_sub = p.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    q = db_sub.add_parser(
        "migrate",
        help="create or upgrade the schema (as the owner role)",
        description="Apply the pending migrations to the PostgreSQL database of database_url;"
        " run it as the role that owns the schema.",
    )
    add_config_arg(q)
    q.set_defaults(func=cmd_db_migrate)
    q = db_sub.add_parser(
        "grant",
        help="give the store server's role its privileges (as the owner role)",
        description="Grant ROLE what the store server needs: read and write the tables, only"
        " insert into the consent log and its checkpoints, never change the schema.",
    )
    add_config_arg(q)
    q.add_argument("role", help="the PostgreSQL role the store server connects as")
    q.add_argument(
        "--chain-store",
        action="store_true",
        help="a chain's store server (chain_mode, not the key authority): no read of the"
        " customers' identity keys (identities.key_wrapped)",
    )
    q.set_defaults(func=cmd_db_grant)
