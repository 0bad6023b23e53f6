"""Repository queries stay within each engine's limits however many customers they are asked
about: SQLite's bound variables (999 in older builds), PostgreSQL's 65,535 parameters of one
statement."""

from __future__ import annotations

import sqlite3

import pytest

from store_server.storage import customers as customer_store
from store_server.storage.database import Database, Target

# The PostgreSQL variants run in CI's own step (pytest -m pg_step), outside the default
# run's time budget: neither privacy- nor security-critical (README, Testing).
pytestmark = pytest.mark.own_pg_step

NOW = 1_800_000_000.0
"""Fixed time: deterministic rows."""
# Unknown ids asked about, in each half of the list: past each engine's limit in all.
MISSING = {"sqlite": 20_000, "postgres": 35_000}


def test_id_lists_longer_than_an_engine_binds_at_once(db_target: Target, engine: str) -> None:
    db = Database(db_target)
    try:

        def fill(d: object) -> list[str]:
            made = [
                customer_store.create_customer(
                    d,  # type: ignore[arg-type]
                    key_wrapped_for=lambda _: b"k" * 44,
                    k=9,
                    clock_offset_s=0.0,
                    language="fr",
                    now=NOW,
                ).customer_id
                for _ in range(3)
            ]
            customer_store.set_legacy_ibeacon(d, made[0], "a" * 40)  # type: ignore[arg-type]
            customer_store.set_legacy_ibeacon(d, made[2], "b" * 40)  # type: ignore[arg-type]
            return made

        made = db.run_sync(fill)
        # SQLite builds differ in how many variables a statement may bind (999 in older ones,
        # 32,766 by default since 3.32, more in some): hold this connection to 999.
        if engine == "sqlite":
            db.run_sync(lambda d: d.conn.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 999))
        # 40,000 ids asked about (70,000 on PostgreSQL), the real ones at both ends and in
        # different chunks.
        missing = MISSING[engine]
        asked = [made[0], *(f"c_missing{i}" for i in range(missing)), made[1]]
        asked += [*(f"c_other{i}" for i in range(missing)), made[2]]
        found = db.run_sync(lambda d: customer_store.legacy_ibeacon_ids(d, asked))
        assert found == {made[0]: "a" * 40, made[2]: "b" * 40}
        assert db.run_sync(lambda d: customer_store.legacy_ibeacon_ids(d, [])) == {}
        # The identities of the same ids (the start-up load asks 2,000 at a time).
        identities = db.run_sync(lambda d: customer_store.identity_rows(d, asked))
        assert sorted(r["customer_id"] for r in identities) == sorted(made)
    finally:
        db.close()
