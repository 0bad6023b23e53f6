"""Storage: the only place that holds SQL in the server.

One module per aggregate (`customers`, `consents`, `visits` and cards, `scanners`,
`catalog` and stock, `staff`), each a set of functions taking a connection handle first;
`database` is the adapter that runs them (one writer thread, read-only connections for
reads), `migrations` the schema, `batch_log` the group commit of scanner batch ids. The
services call these functions through `Database.read` / `Database.write` and never see SQL.

Two engines run the same functions: SQLite (sqlite-utils) and PostgreSQL (`pg`, psycopg 3).
The SQL is written once, in the subset both accept (``?`` placeholders, ``ON CONFLICT``,
``RETURNING``); `database` holds the few helpers that differ, `pg_roles` the server's role on
PostgreSQL, `pg_cluster` a throwaway cluster for tests and demos.
"""
