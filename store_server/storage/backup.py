"""Online backup and restore of the database through SQLite's backup API (no sqlite3 CLI).

`backup` copies a live database page by page while the server keeps writing (the copy is one
consistent snapshot: SQLite restarts a step whose pages changed), checks the copy's integrity
and only then gives it its final name, so a backup file that exists is a complete one.

`restore` refuses while anything has the database open (the server must be stopped: its
memory would no longer match the file), refuses a backup made by a newer release, keeps the
current database beside it, copies the backup in, and opens the result once so that the
migrations of this release bring an older backup up to date.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from store_server.errors import StoreServerError
from store_server.storage.database import connect
from store_server.storage.migrations import migrations

PAGES_PER_STEP = 256
"""Pages copied per step (1 MiB with 4 KiB pages): the server's writes interleave between
steps instead of waiting for the whole copy."""

STEP_PAUSE_S = 0.005
"""Pause between steps, leaving the writer room on a busy server."""

LOCK_TIMEOUT_S = 1.0
"""How long restore waits for the database to be free before saying it is in use."""

_MIGRATIONS_TABLE = "_sqlite_migrations"


class BackupError(StoreServerError):
    """A backup or restore that cannot be done; the message says what to do."""

    code = "backup_failed"


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What a backup file holds."""

    path: Path
    size_bytes: int
    schema: tuple[str, ...]
    """The migrations applied in it, oldest first."""


def _stamp(now: float) -> str:
    return time.strftime("%Y%m%d-%H%M%S", time.localtime(now))


@contextlib.contextmanager
def _open(path: Path, *, timeout: float = 5.0) -> Iterator[sqlite3.Connection]:
    conn = sqlite3.connect(str(path), timeout=timeout, isolation_level=None)
    try:
        yield conn
    finally:
        conn.close()


def _private(path: Path) -> None:
    """Create ``path`` readable by the server's user only before SQLite writes customer data
    into it (a chmod afterwards leaves a moment when others could open it)."""
    os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))


def _schema(conn: sqlite3.Connection) -> tuple[str, ...]:
    try:
        found = conn.execute(
            f"SELECT name FROM {_MIGRATIONS_TABLE} WHERE migration_set = ? ORDER BY applied_at",  # noqa: S608
            [migrations.name],
        ).fetchall()
    except sqlite3.DatabaseError:
        return ()
    return tuple(str(row[0]) for row in found)


def _check(conn: sqlite3.Connection, path: Path) -> tuple[str, ...]:
    """Integrity of a copy and its schema; BackupError naming what is wrong."""
    try:
        result = conn.execute("PRAGMA integrity_check").fetchone()[0]
    except sqlite3.DatabaseError as exc:
        raise BackupError(f"{path} is not a Bulle database ({exc})") from None
    if result != "ok":
        raise BackupError(f"{path} is damaged (integrity check: {result})")
    schema = _schema(conn)
    if not schema:
        raise BackupError(f"{path} is not a Bulle database (no schema migrations in it)")
    return schema


def backup(db_path: Path, dest: Path, now: float) -> Snapshot:
    """Copy the database at ``db_path`` to ``dest`` (a file, or a folder to put one in)."""
    if not db_path.is_file():
        raise BackupError(f"db_path: {db_path} does not exist: nothing to back up")
    if dest.is_dir():
        dest = dest / f"store-{_stamp(now)}.sqlite"
    if dest.exists():
        raise BackupError(f"{dest} already exists: backups are never overwritten, pick a new name")
    if not dest.parent.is_dir():
        raise BackupError(f"{dest.parent} is not a folder: create it first")
    partial = dest.with_name(dest.name + ".partial")
    partial.unlink(missing_ok=True)
    try:
        _private(partial)
        with _open(db_path) as source, _open(partial) as copy:
            source.backup(copy, pages=PAGES_PER_STEP, sleep=STEP_PAUSE_S)
            schema = _check(copy, db_path)
            # One file, no WAL beside it: the backup is a single self-contained file.
            copy.execute("PRAGMA journal_mode=DELETE")
        partial.chmod(0o600)  # customer data: readable by the server's user only
        fd = os.open(partial, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        partial.replace(dest)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return Snapshot(dest, dest.stat().st_size, schema)


def restore(db_path: Path, source: Path, now: float) -> tuple[Snapshot, Path | None]:
    """Replace the (stopped) database at ``db_path`` with the backup ``source``.

    Returns what was restored and where the database it replaced was kept (None if there
    was none). The result carries this release's schema (migrations applied).
    """
    if not source.is_file():
        raise BackupError(f"{source}: no such file: give the path of a backup")
    with _open(source) as backup_conn:
        schema = _check(backup_conn, source)
    known = {m.name for m in migrations._migrations}
    newer = [name for name in schema if name not in known]
    if newer:
        raise BackupError(
            f"{source} was made by a newer release (schema {newer[-1]}): install that release"
            " or a later one to restore it"
        )
    kept: Path | None = None
    db_path.parent.mkdir(parents=True, exist_ok=True)
    with _open(db_path, timeout=LOCK_TIMEOUT_S) as live:
        # Exclusive locking mode keeps the lock after COMMIT until the connection closes: no
        # server or command can open the database while it is being replaced.
        live.execute("PRAGMA locking_mode=EXCLUSIVE")
        try:
            live.execute("BEGIN EXCLUSIVE")
            live.execute("COMMIT")
        except sqlite3.OperationalError:
            raise BackupError(
                f"db_path: {db_path} is in use: stop the server first"
                " (systemctl stop bulle-store-server), then restore"
            ) from None
        if _schema(live):
            kept = db_path.with_name(f"{db_path.name}.before-restore-{_stamp(now)}")
            _private(kept)
            with _open(kept) as keep:
                live.backup(keep)
                keep.execute("PRAGMA journal_mode=DELETE")
            kept.chmod(0o600)
        with _open(source) as backup_conn:
            backup_conn.backup(live)
    # Open once the way the server does: WAL, and this release's migrations on an older copy.
    connect(db_path).conn.close()
    with _open(db_path) as restored:
        schema = _check(restored, db_path)
    return Snapshot(source, source.stat().st_size, schema), kept
