"""The catalog and this store's stock, for the app and the manager's stock page."""

from __future__ import annotations

from typing import Any

from store_server.storage import catalog
from store_server.storage.database import Database


class Catalog:
    def __init__(self, db: Database, store_id: str) -> None:
        self._db = db
        self._store_id = store_id

    async def items(self) -> list[dict[str, Any]]:
        """The catalog with this store's counts and aisles."""
        store_id = self._store_id
        return await self._db.read(lambda db: catalog.stock_rows(db, store_id))

    async def import_stock(self, items: list[dict[str, Any]]) -> int:
        """Insert or update catalog items and their stock here; how many lines."""
        store_id = self._store_id
        return await self._db.write(lambda db: catalog.upsert_stock(db, store_id, items))

    async def set_stock(self, sku: str, count: int, aisle: str) -> None:
        store_id = self._store_id
        await self._db.write(lambda db: catalog.set_stock(db, store_id, sku, count, aisle))
