"""Start and stop a throwaway PostgreSQL cluster in a temporary directory (I/O).

For the tests (tests/pg.py), the benches and ``store-server chain-demo``: never for a
production database, which its operators run (docs/operations.md, "Running on PostgreSQL").
The commands and connection strings come from the pure `pg_plan`.

Run as root (CI, containers), the server runs as the unprivileged ``postgres`` user that
Debian's package creates (initdb refuses root), in a directory that user owns.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
from psycopg import sql

from store_server.pg_plan import DEFAULT_PORT, SUPERUSER, ClusterPlan

logger = logging.getLogger(__name__)

# Where Debian puts each major version's server binaries (out of PATH).
DEBIAN_BINARIES = Path("/usr/lib/postgresql")
# The unprivileged user Debian's package creates, to run the server as when we are root.
SERVICE_USER = "postgres"
# initdb takes about a second, a start a fraction; a loaded machine may take many times that.
COMMAND_TIMEOUT_S = 120


class ClusterError(RuntimeError):
    """The throwaway cluster could not be set up (the message says which step, and its output)."""


def find_bin_dir() -> Path | None:
    """The directory of ``initdb`` and ``pg_ctl``: PATH first, then Debian's newest version."""
    on_path = shutil.which("pg_ctl")
    if on_path and shutil.which("initdb"):
        return Path(on_path).resolve().parent
    found = sorted(
        DEBIAN_BINARIES.glob("*/bin/initdb"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    return found[-1].parent if found else None


def _run(argv: list[str], what: str) -> None:
    done = subprocess.run(  # noqa: S603 - argv built by pg_plan from our own paths
        argv, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S, check=False
    )
    if done.returncode != 0:
        raise ClusterError(f"{what} failed ({done.returncode}): {done.stderr.strip()[-2000:]}")


class Cluster:
    """A running throwaway cluster: its plan, and databases made on demand."""

    def __init__(self, plan: ClusterPlan, root: Path) -> None:
        self.plan = plan
        self.root = root

    @property
    def log_file(self) -> Path:
        return self.root / "server.log"

    def url(self, dbname: str = "postgres", user: str = SUPERUSER) -> str:
        return self.plan.url(dbname, user)

    def start(self) -> None:
        _run(self.plan.start_argv(self.log_file), "pg_ctl start")

    def stop(self, mode: str = "fast") -> None:
        _run(self.plan.stop_argv(mode), f"pg_ctl stop -m {mode}")

    def admin(self) -> psycopg.Connection[tuple[object, ...]]:
        """An autocommit superuser connection to the ``postgres`` database."""
        return psycopg.connect(self.url("postgres"), autocommit=True)

    def create_database(self, name: str, template: str | None = None) -> str:
        """Create `name` (a copy of `template` if given: fast); return its URL."""
        statement = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if template is not None:
            statement = sql.SQL("{} TEMPLATE {} STRATEGY FILE_COPY").format(
                statement, sql.Identifier(template)
            )
        with self.admin() as conn:
            conn.execute(statement)
        return self.url(name)

    def drop_database(self, name: str) -> None:
        with self.admin() as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def _service_user() -> str | None:
    """Who runs the server: ourselves, or the ``postgres`` user when we are root."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(SERVICE_USER)
    except KeyError as exc:
        raise ClusterError(
            f"running as root needs an unprivileged user {SERVICE_USER!r} (Debian's postgresql "
            "package creates it)"
        ) from exc
    return SERVICE_USER


@contextlib.contextmanager
def throwaway_cluster(
    *, tcp_port: int | None = None, ephemeral: bool = True, max_connections: int | None = None
) -> Iterator[Cluster]:
    """Initialise and start a cluster in a new temporary directory; stop and remove it after.

    The directory is made under the system's temporary directory (short: the Unix socket
    lives in it) and handed to the service user when we are root.
    """
    bin_dir = find_bin_dir()
    if bin_dir is None:
        raise ClusterError("PostgreSQL server binaries (initdb, pg_ctl) not found")
    run_as = _service_user()
    root = Path(tempfile.mkdtemp(prefix="bulle-pg-"))
    try:
        if run_as is not None:
            user = pwd.getpwnam(run_as)
            os.chown(root, user.pw_uid, user.pw_gid)
        extra: dict[str, int] = {}
        if max_connections is not None:
            extra["max_connections"] = max_connections
        plan = ClusterPlan(
            bin_dir=bin_dir,
            data_dir=root / "data",
            socket_dir=root,
            run_as=run_as,
            port=tcp_port if tcp_port is not None else DEFAULT_PORT,
            tcp=tcp_port is not None,
            ephemeral=ephemeral,
            **extra,
        )
        _run(plan.initdb_argv(), "initdb")
        cluster = Cluster(plan, root)
        cluster.start()
        logger.info("throwaway PostgreSQL cluster started in %s", root)
        try:
            yield cluster
        finally:
            try:
                cluster.stop()
            except ClusterError:
                logger.warning("fast stop failed; stopping immediately", exc_info=True)
                cluster.stop("immediate")
    finally:
        shutil.rmtree(root, ignore_errors=True)
