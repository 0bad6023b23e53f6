"""Upgrading a shop's database: every release's fixture (tests/fixtures/store-VERSION.sql,
written by that release with tests/fixtures/make_release_db.py) opens with the current code,
its pending migrations applied, and the shop's data works: the customer is recognised, the
manager signs in, the scanner's secret is accepted, the consent proof verifies.

The upgrade path of docs/operations.md ("Upgrades"): stop, install, start. The server applies
the migrations at its first start; this test does the same with the real application.

SQLite only, by nature: the fixtures are the SQLite files a shop's release wrote. PostgreSQL
(chain mode, newer than every fixture) has no earlier release to upgrade from; its migrations
run from the first one on every test session (tests/pg.py's template).
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from store_server.consent import verify_chain
from store_server.storage import consents
from store_server.storage.migrations import migrations
from tests.server.conftest import Scanner, bearer, running_server

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
RELEASES = sorted(p.stem.removeprefix("store-") for p in FIXTURES.glob("store-*.sql"))
ALLOWLIST = "/api/scanner/v1/allowlist"


def test_there_is_a_previous_release() -> None:
    assert "0.1.0" in RELEASES


def _load(version: str, folder: Path) -> tuple[Path, dict[str, str]]:
    db_path = folder / "store.sqlite"
    with sqlite3.connect(db_path) as conn:
        conn.executescript((FIXTURES / f"store-{version}.sql").read_text("utf-8"))
    credentials = json.loads((FIXTURES / f"store-{version}.json").read_text("utf-8"))
    return db_path, credentials


def _applied(db_path: Path) -> list[str]:
    with sqlite3.connect(db_path) as conn:
        return [
            row[0]
            for row in conn.execute(
                "SELECT name FROM _sqlite_migrations WHERE migration_set = ? ORDER BY id",
                [migrations.name],
            )
        ]


@pytest.mark.parametrize("version", RELEASES)
async def test_a_release_database_upgrades_and_works(version: str, tmp_path: Path) -> None:
    db_path, cred = _load(version, tmp_path)
    before = _applied(db_path)
    current = [m.name for m in migrations._migrations]
    assert before == current[: len(before)], "a release's migrations are never renamed"

    async with running_server(
        tmp_path, db_path=str(db_path), master_key=cred["master_key"]
    ) as server:
        assert _applied(db_path) == current
        # The customer with an active consent is loaded into the resolver.
        assert len(server.service.coordinator.resolver) == 1
        resp = await server.client.get("/api/v1/consents", headers=bearer(cred["customer_token"]))
        assert resp.status == 200, await resp.text()
        granted = {c["purpose"] for c in (await resp.json())["consents"] if c.get("active")}
        assert granted == {"greeting", "stock_check"}
        # The manager signs in, the scanner's secret is accepted.
        resp = await server.client.post(
            "/login",
            data={"username": cred["manager"], "password": cred["password"]},
            allow_redirects=False,
        )
        assert resp.status == 303
        scanner = Scanner(cred["scanner_id"], cred["scanner_secret"])
        assert (await server.signed(scanner, "GET", ALLOWLIST)).status == 200
        # The consent proof written by the release still verifies.
        log = await server.service.db.read(consents.consent_log_rows)
        assert verify_chain(log) == 2
