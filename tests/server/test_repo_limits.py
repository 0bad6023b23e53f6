"""Repository queries stay within SQLite's limits however many customers they are asked about."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from store_server.storage import customers as customer_store
from store_server.storage.database import Database

NOW = 1_800_000_000.0
"""Fixed time: deterministic rows."""


def test_id_lists_longer_than_sqlite_binds_at_once(tmp_path: Path) -> None:
    db = Database(tmp_path / "store.sqlite")
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
        db.run_sync(lambda d: d.conn.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 999))
        # 40,000 ids asked about, the real ones at both ends and in different chunks.
        asked = [made[0], *(f"c_missing{i}" for i in range(20_000)), made[1]]
        asked += [*(f"c_other{i}" for i in range(20_000)), made[2]]
        found = db.run_sync(lambda d: customer_store.legacy_ibeacon_ids(d, asked))
        assert found == {made[0]: "a" * 40, made[2]: "b" * 40}
        assert db.run_sync(lambda d: customer_store.legacy_ibeacon_ids(d, [])) == {}
        # The identities of the same 40,003 ids (the start-up load asks 2,000 at a time).
        identities = db.run_sync(lambda d: customer_store.identity_rows(d, asked))
        assert sorted(r["customer_id"] for r in identities) == sorted(made)
    finally:
        db.close()
