"""Real PostgreSQL for the tests: one throwaway cluster per pytest session (per xdist worker),
and a fresh database per test, copied from a template (about 30 ms).

The fixtures are in tests/conftest.py:

- ``pg_cluster`` (session): a `store_server.storage.pg_cluster.Cluster`, started by
  ``initdb`` + ``pg_ctl`` in a temporary directory (as the ``postgres`` user when the tests run
  as root), on a Unix socket in that directory and a loopback port (password authentication;
  the socket trusts local users).
- ``pg_url`` (function): the ``postgresql://`` URL (through the socket, as the superuser) of a
  database made for this test and dropped after it; the server's migrations are already
  applied (the template holds them).
- ``engine`` (function, parametrised ``sqlite`` / ``postgres``), ``db_target`` (a SQLite file
  in tmp_path, or a `PgTarget` of a fresh database) and ``handle`` (an open read-write
  `Handle` on it, migrated): for tests that must pass on both engines.

Tests that use them skip when PostgreSQL is missing and fail when CI=true (the ``postgres``
component of tests/support.py); mark them ``@pytest.mark.postgres`` as well.
"""

from __future__ import annotations

import itertools
import socket

import psycopg
from psycopg import sql

from store_server.storage import database, pg
from store_server.storage.pg_cluster import Cluster

# The database every test's database is copied from: the server's migrations applied once.
TEMPLATE = "bulle_template"

_names = itertools.count()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def prepare_template(cluster: Cluster) -> None:
    url = cluster.create_database(TEMPLATE)
    database.close_handle(database.connect_target(pg.PgTarget(url)))


def new_database(cluster: Cluster) -> tuple[str, str]:
    """A fresh database copied from the template: (its name, its URL)."""
    name = f"test_{next(_names)}"
    return name, cluster.create_database(name, template=TEMPLATE)


def every_value(url: str) -> list[str]:
    """Every value of every column of every table of the database, as text, read as the
    cluster's superuser (who bypasses every privilege and row policy: what it cannot read,
    no role can). For the privacy tests: what a purge or an erasure took is in none of them."""
    values: list[str] = []
    with psycopg.connect(url) as conn:
        columns: dict[str, list[str]] = {}
        for table, column in conn.execute(
            "SELECT table_name, column_name FROM information_schema.columns"
            " WHERE table_schema = 'public' ORDER BY table_name, ordinal_position"
        ):
            columns.setdefault(table, []).append(column)
        for table, names in columns.items():
            query = sql.SQL("SELECT {} FROM {}").format(
                sql.SQL(", ").join(sql.SQL("{}::text").format(sql.Identifier(n)) for n in names),
                sql.Identifier(table),
            )
            for row in conn.execute(query):
                values += [value for value in row if value is not None]
    return values
