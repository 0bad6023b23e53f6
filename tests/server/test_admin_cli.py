"""The admin commands of docs/operations.md: staff, scanners, backup and restore, as a shop
runs them (`store-server ... --config FILE`), against real SQLite files and a real server.

The staff and scanner commands run on both engines. Backup and restore are SQLite's, by
nature: on PostgreSQL they refuse and name pg_dump (tests/server/test_pg_engine.py)."""

from __future__ import annotations

import asyncio
import contextlib
import io
import shutil
import sqlite3
import sys
from pathlib import Path
from typing import Any

import pytest

from store_server.cli import main
from store_server.storage import backup as backup_store
from tests.server.conftest import STORE_ID, Scanner, bearer, engine_settings, running_server

REPO_ROOT = Path(__file__).resolve().parents[2]
MASTER_KEY = "cd" * 32
PASSWORD = "a long enough password"
ALLOWLIST = "/api/scanner/v1/allowlist"


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "etc"
    folder.mkdir()
    shutil.copy(REPO_ROOT / "seeds" / "store.toml", folder / "store.toml")
    path = folder / "server.toml"
    path.write_text(
        f'db_path = "{tmp_path / "var" / "store.sqlite"}"\nstore_file = "store.toml"\n'
        f'master_key = "{MASTER_KEY}"\n',
        "utf-8",
    )
    monkeypatch.delenv("BULLE_MASTER_KEY", raising=False)
    return path


@pytest.fixture
def engine_config(
    config: Path, engine: str, request: pytest.FixtureRequest
) -> tuple[Path, dict[str, Any]]:
    """`config` on the test's engine (PostgreSQL: ``database_url`` added), and the matching
    `running_server` settings."""
    settings = engine_settings(engine, request)
    if settings:
        with config.open("a", encoding="utf-8") as file:
            file.write(f'database_url = "{settings["database_url"]}"\n')
    return config, settings


def run(config: Path, *args: str, stdin: str | None = None) -> tuple[int, str, str]:
    """A command as a shop types it (`store-server ARGS --config FILE`): exit code, standard
    output, standard error. In-process (a process per command would add seconds each)."""
    out, err = io.StringIO(), io.StringIO()
    saved = sys.stdin
    sys.stdin = io.StringIO(stdin or "")
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main([*args, "--config", str(config)])
    finally:
        sys.stdin = saved
    return code, out.getvalue(), err.getvalue()


def test_staff_list_disable_enable_reset_password(
    engine_config: tuple[Path, dict[str, Any]],
) -> None:
    config = engine_config[0]
    assert (
        run(
            config,
            "user",
            "add",
            "alice",
            "--role",
            "manager",
            "--password-stdin",
            stdin=PASSWORD + "\n",
        )[0]
        == 0
    )
    assert run(config, "user", "add", "bob", "--password-stdin", stdin=PASSWORD + "\n")[0] == 0
    code, out, _ = run(config, "user", "list")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["USER", "ROLE", "STATE", "CREATED"]
    assert lines[1].split()[:3] == ["alice", "manager", "active"]
    assert lines[2].split()[:3] == ["bob", "staff", "active"]

    assert run(config, "user", "disable", "bob")[1] == (
        "account bob disabled and signed out everywhere\n"
    )
    assert run(config, "user", "list")[1].splitlines()[2].split()[2] == "disabled"
    assert run(config, "user", "enable", "bob")[0] == 0
    assert run(config, "user", "list")[1].splitlines()[2].split()[2] == "active"

    code, out, _ = run(
        config, "user", "reset-password", "bob", "--password-stdin", stdin="another password!\n"
    )
    assert code == 0
    assert "signed out" in out
    code, _, err = run(config, "user", "reset-password", "bob", "--password-stdin", stdin="short\n")
    assert code == 2
    assert err == "store-server: error: password: password must have at least 12 characters\n"
    code, _, err = run(config, "user", "disable", "nobody")
    assert code == 2
    assert err == "store-server: error: no account 'nobody'\n"


async def test_scanner_add_refuses_an_active_id_list_and_rotate(
    engine_config: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    config, settings = engine_config
    code, out, _ = await asyncio.to_thread(run, config, "scanner", "add", "s-entrance")
    assert code == 0
    first = out.rsplit(": ", 1)[1].strip()

    code, _, err = await asyncio.to_thread(run, config, "scanner", "add", "s-entrance")
    assert code == 2
    assert err == (
        "store-server: error: scanner s-entrance is already registered: to give it a new"
        " secret use `store-server scanner rotate-secret s-entrance` (or add --replace)\n"
    )

    code, out, _ = await asyncio.to_thread(run, config, "scanner", "rotate-secret", "s-entrance")
    assert code == 0
    rotated = out.rsplit(": ", 1)[1].strip()
    assert rotated != first

    code, out, _ = await asyncio.to_thread(run, config, "scanner", "list")
    assert code == 0
    row = out.splitlines()[1].split()
    assert row[:4] == ["s-entrance", STORE_ID, "active", "never"]

    # The server takes the rotated secret and refuses the first one.
    db_path = tmp_path / "var" / "store.sqlite"
    async with running_server(
        tmp_path, db_path=str(db_path), master_key=MASTER_KEY, **settings
    ) as server:
        for secret, status in ((first, 401), (rotated, 200)):
            resp = await server.signed(Scanner("s-entrance", secret), "GET", ALLOWLIST)
            assert resp.status == status

    code, _, _ = await asyncio.to_thread(run, config, "scanner", "revoke", "s-entrance")
    assert code == 0
    # A revoked id may be registered again without --replace.
    code, _, _ = await asyncio.to_thread(run, config, "scanner", "add", "s-entrance")
    assert code == 0
    assert (await asyncio.to_thread(run, config, "scanner", "add", "s-entrance", "--replace"))[
        0
    ] == 0


async def test_backup_while_serving_then_restore(config: Path, tmp_path: Path) -> None:
    """The documented procedure: back up the live database, lose it, stop, restore, start."""
    db_path = tmp_path / "var" / "store.sqlite"
    backups = tmp_path / "backups"
    backups.mkdir()
    async with running_server(tmp_path, db_path=str(db_path), master_key=MASTER_KEY) as server:
        await server.add_staff("alice", PASSWORD, "manager")
        scanner: Scanner = await server.add_scanner("s-entrance")
        # Two customers in the backup: one erases their data after it, one withdraws.
        leaving = await server.enroll()
        withdrawing = await server.enroll()
        for token in (leaving, withdrawing):
            assert (await server.grant(token, "greeting")).status == 201
        # Writes keep coming while the backup runs.
        writer = asyncio.create_task(_keep_enrolling(server))
        code, out, err = await asyncio.to_thread(run, config, "backup", str(backups))
        writer.cancel()
        assert code == 0, err
        assert out.startswith(f"backup written: {backups}/store-")
        # Restore refuses while the server has the database open.
        taken = sorted(backups.iterdir())
        assert len(taken) == 1
        code, _, err = await asyncio.to_thread(run, config, "restore", str(taken[0]))
        assert code == 2
        assert "is in use: stop the server first" in err
        # After the backup: one more customer, which the restore takes back, and the two
        # refusals, which the restore must keep.
        # Two, since the erasure below takes one away: the backup then holds fewer customers
        # than the live database even when no concurrent enrollment landed after the
        # backup's snapshot (a loaded machine).
        for _ in range(2):
            await server.enroll()
        resp = await server.client.delete("/api/v1/me", headers=bearer(leaving))
        assert resp.status in (200, 204), await resp.text()
        resp = await server.client.post(
            "/api/v1/consents/withdraw",
            json={"purposes": ["greeting"]},
            headers=bearer(withdrawing),
        )
        assert resp.status == 200, await resp.text()
        customers_now = len(await server.rows("SELECT id FROM customers"))
    with contextlib.closing(sqlite3.connect(taken[0])) as copy:
        customers_then = copy.execute("SELECT count(*) FROM customers").fetchone()[0]
    assert 1 <= customers_then < customers_now

    backup_file = taken[0]
    assert backup_file.stat().st_mode & 0o777 == 0o600
    assert not list(backups.glob("*.partial"))
    # A backup is never overwritten.
    code, _, err = await asyncio.to_thread(run, config, "backup", str(backup_file))
    assert code == 2
    assert "already exists" in err

    code, out, err = await asyncio.to_thread(run, config, "restore", str(backup_file))
    assert code == 0, err
    assert "the database it replaces is kept as" in out
    assert "the refusals recorded after the backup: 1 erasures, 1 withdrawals" in out
    kept = list(db_path.parent.glob("store.sqlite.before-restore-*"))
    assert len(kept) == 1

    async with running_server(tmp_path, db_path=str(db_path), master_key=MASTER_KEY) as server:
        assert len(await server.rows("SELECT id FROM customers")) == customers_then - 1
        gone = await server.client.get("/api/v1/consents", headers=bearer(leaving))
        assert gone.status == 401
        resp = await server.client.get("/api/v1/consents", headers=bearer(withdrawing))
        assert resp.status == 200
        active = [c for c in (await resp.json())["consents"] if c.get("active")]
        assert active == []
        log = await server.rows("SELECT action, channel FROM consent_log WHERE channel = 'restore'")
        assert sorted(r["action"] for r in log) == ["erase", "erase", "withdraw"]
        assert await server.rows("SELECT username FROM staff_users") == [{"username": "alice"}]
        assert (await server.signed(scanner, "GET", ALLOWLIST)).status == 200
    code, out, _ = await asyncio.to_thread(run, config, "consent-log", "verify")
    assert code == 0


async def _keep_enrolling(server: object) -> None:
    while True:
        await server.enroll()  # type: ignore[attr-defined]
        await asyncio.sleep(0.01)


def test_restore_refuses_a_damaged_or_foreign_file(config: Path, tmp_path: Path) -> None:
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"not a database at all" * 100)
    code, _, err = run(config, "restore", str(junk))
    assert code == 2
    assert "is not a Bulle database" in err
    other = tmp_path / "other.sqlite"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE x (y)")
    code, _, err = run(config, "restore", str(other))
    assert code == 2
    assert "no schema migrations" in err
    code, _, err = run(config, "restore", str(tmp_path / "missing.sqlite"))
    assert code == 2
    assert "no such file" in err


def test_restore_refuses_a_backup_of_a_newer_release(config: Path, tmp_path: Path) -> None:
    db = tmp_path / "var" / "store.sqlite"
    assert run(config, "user", "add", "xavier", "--password-stdin", stdin=PASSWORD + "\n")[0] == 0
    backup_store.backup(db, tmp_path / "b.sqlite", 0.0)
    with sqlite3.connect(tmp_path / "b.sqlite") as conn:
        conn.execute(
            "INSERT INTO _sqlite_migrations (migration_set, name, applied_at)"
            " VALUES ('bulle-store-server', 'm999_from_the_future', '2030-01-01')"
        )
    code, _, err = run(config, "restore", str(tmp_path / "b.sqlite"))
    assert code == 2
    assert "made by a newer release (schema m999_from_the_future)" in err
