"""Look for a customer's identifiers everywhere the server could have kept them.

Used by the erasure and retention tests: every row of every table (all columns, as text and
bytes), the database file itself and its -wal file.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any


def table_traces(db: Any, needles: Iterable[str]) -> list[str]:
    """`table.column` places where one of `needles` occurs, in any row."""
    wanted = [n for n in needles if n]
    found: list[str] = []
    for table in db.table_names():
        for row in db.query(f'SELECT * FROM "{table}"'):  # table names come from the schema
            for column, value in row.items():
                text = value.decode("latin-1") if isinstance(value, bytes) else str(value)
                found.extend(f"{table}.{column}: {n}" for n in wanted if n in text)
    return found


def file_traces(db_path: Path, needles: Iterable[str]) -> list[str]:
    """Files among the database and its -wal that still contain one of `needles` (UTF-8)."""
    found: list[str] = []
    for path in (db_path, db_path.with_name(db_path.name + "-wal")):
        if not path.exists():
            continue
        data = path.read_bytes()
        found.extend(f"{path.name}: {n}" for n in needles if n and n.encode() in data)
    return found
