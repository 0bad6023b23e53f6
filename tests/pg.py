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
