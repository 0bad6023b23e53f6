"""A throwaway PostgreSQL cluster, as commands and connection strings (pure: no I/O).

`pg_cluster` runs these commands; the tests, the benches and ``store-server chain-demo`` use
it to start their own cluster in a temporary directory. A production chain database is
installed and run by its operators (docs/operations.md, "Running on PostgreSQL").

The cluster listens on a Unix socket in its own directory only (no TCP port to collide with
another cluster on the machine) unless a loopback port is asked for. Local (socket) clients
are trusted; TCP clients must give a password (scram-sha-256), so the password path of the
server's configuration can be tested for real.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

# The socket file's name carries a port number even without TCP; any fixed one will do.
DEFAULT_PORT = 5432
# The superuser initdb creates: it owns the databases the tests make.
SUPERUSER = "bulle"
# Enough for 20 store servers with a writer and a few pooled readers each, plus the tools.
DEFAULT_MAX_CONNECTIONS = 200
# Unix socket paths are limited to 107 bytes: the socket directory must be short.
MAX_SOCKET_DIR = 80


@dataclass(frozen=True, slots=True)
class ClusterPlan:
    """Where a throwaway cluster lives and how it runs."""

    bin_dir: Path
    """The server binaries (Debian: /usr/lib/postgresql/15/bin)."""
    data_dir: Path
    socket_dir: Path
    run_as: str | None = None
    """An unprivileged user to run the server as (initdb refuses root), or None for ourselves."""
    port: int = DEFAULT_PORT
    tcp: bool = False
    """Also listen on 127.0.0.1:port (password authentication)."""
    ephemeral: bool = True
    """fsync off: a crash of the server loses nothing, a crash of the machine may (tests)."""
    max_connections: int = DEFAULT_MAX_CONNECTIONS

    def __post_init__(self) -> None:
        if len(str(self.socket_dir)) > MAX_SOCKET_DIR:
            raise ValueError(f"socket directory path too long for a Unix socket: {self.socket_dir}")

    def _as_user(self, argv: list[str]) -> list[str]:
        if self.run_as is None:
            return argv
        return ["runuser", "-u", self.run_as, "--", *argv]

    def initdb_argv(self) -> list[str]:
        return self._as_user(
            [
                str(self.bin_dir / "initdb"),
                "-D",
                str(self.data_dir),
                "-U",
                SUPERUSER,
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "--encoding=UTF8",
                "--locale=C",
                "--no-instructions",
            ]
        )

    def server_options(self) -> list[str]:
        """``-c name=value`` options of the server process."""
        options = {
            "listen_addresses": "127.0.0.1" if self.tcp else "",
            "port": str(self.port),
            "unix_socket_directories": str(self.socket_dir),
            "max_connections": str(self.max_connections),
            "logging_collector": "off",
        }
        if self.ephemeral:
            options |= {"fsync": "off", "full_page_writes": "off"}
        return [f"-c {name}='{value}'" for name, value in options.items()]

    def start_argv(self, log_file: Path) -> list[str]:
        return self._as_user(
            [
                str(self.bin_dir / "pg_ctl"),
                "-D",
                str(self.data_dir),
                "-l",
                str(log_file),
                "-o",
                " ".join(self.server_options()),
                "-w",
                "start",
            ]
        )

    def stop_argv(self, mode: str = "fast") -> list[str]:
        return self._as_user(
            [str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), "-m", mode, "-w", "stop"]
        )

    def url(self, dbname: str, user: str = SUPERUSER) -> str:
        """A ``postgresql://`` URL reaching `dbname` through the socket (no password needed)."""
        host = quote(str(self.socket_dir), safe="")
        path = f"{quote(user, safe='')}@/{quote(dbname, safe='')}"
        return f"postgresql://{path}?host={host}&port={self.port}"

    def tcp_url(self, dbname: str, user: str) -> str:
        """A URL through 127.0.0.1 (the password comes separately)."""
        return f"postgresql://{quote(user, safe='')}@127.0.0.1:{self.port}/{quote(dbname, safe='')}"
