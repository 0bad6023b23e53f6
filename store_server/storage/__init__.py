"""Storage: the only place that holds SQL in the server.

One module per aggregate (`customers`, `consents`, `visits` and cards, `scanners`,
`catalog` and stock, `staff`), each a set of functions taking a connection handle first;
`database` is the adapter that runs them (one writer thread, read-only connections for
reads), `migrations` the schema, `batch_log` the group commit of scanner batch ids. The
services call these functions through `Database.read` / `Database.write` and never see SQL,
so a second engine means a second set of these modules behind the same functions.
"""
