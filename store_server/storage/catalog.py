"""The catalog and this store's stock."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from store_server.errors import NotFoundError, ValidationError
from store_server.storage.database import Handle, immediate, one, rows


def upsert_stock(db: Handle, store_id: str, items: Iterable[dict[str, Any]]) -> int:
    count = 0
    with immediate(db):
        for item in items:
            db.execute(
                "INSERT INTO catalog (sku, name_fr, name_en) VALUES (?, ?, ?)"
                " ON CONFLICT(sku) DO UPDATE SET name_fr = excluded.name_fr,"
                " name_en = excluded.name_en",
                [item["sku"], item["name_fr"], item["name_en"]],
            )
            db.execute(
                "INSERT INTO stock (store_id, sku, count, aisle) VALUES (?, ?, ?, ?)"
                " ON CONFLICT(store_id, sku) DO UPDATE SET count = excluded.count,"
                " aisle = excluded.aisle",
                [store_id, item["sku"], item["count"], item["aisle"]],
            )
            count += 1
    return count


def stock_rows(db: Handle, store_id: str) -> list[dict[str, Any]]:
    return rows(
        db,
        "SELECT c.sku, c.name_fr, c.name_en, s.count, s.aisle FROM catalog c"
        " LEFT JOIN stock s ON s.sku = c.sku AND s.store_id = ? ORDER BY c.sku",
        [store_id],
    )


def set_stock(db: Handle, store_id: str, sku: str, count: int, aisle: str) -> None:
    """Set the count and aisle of a catalog item at this store."""
    if count < 0:
        raise ValidationError("must not be negative", field="count", reason="negative")
    if not aisle.strip():
        raise ValidationError("empty value", field="aisle", reason="empty")
    with immediate(db):
        if one(db, "SELECT sku FROM catalog WHERE sku = ?", [sku]) is None:
            raise NotFoundError(f"no item {sku!r}")
        db.execute(
            "INSERT INTO stock (store_id, sku, count, aisle) VALUES (?, ?, ?, ?)"
            " ON CONFLICT(store_id, sku) DO UPDATE SET count = excluded.count,"
            " aisle = excluded.aisle",
            [store_id, sku, count, aisle.strip()],
        )
