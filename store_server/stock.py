"""Stock CSV parsing (pure): `sku,name_fr,name_en,count,aisle`, errors name line and column."""

from __future__ import annotations

import csv
import io
from typing import Any

from store_server.errors import ValidationError

STOCK_COLUMNS = ("sku", "name_fr", "name_en", "count", "aisle")
# A shop's catalog, not a warehouse: refuse files that are clearly something else.
MAX_STOCK_ROWS = 100_000


def parse_stock_csv(text: str) -> list[dict[str, Any]]:
    reader = csv.DictReader(io.StringIO(text))
    if reader.fieldnames is None or tuple(reader.fieldnames) != STOCK_COLUMNS:
        raise ValidationError(f"the header must be {','.join(STOCK_COLUMNS)}", field="header")
    items: list[dict[str, Any]] = []
    for line, row in enumerate(reader, start=2):
        if len(items) >= MAX_STOCK_ROWS:
            raise ValidationError(f"more than {MAX_STOCK_ROWS} rows", field=f"line {line}")
        for column in STOCK_COLUMNS:
            if not (row.get(column) or "").strip():
                raise ValidationError("empty value", field=f"line {line}, {column}")
        try:
            count = int(row["count"])
        except ValueError:
            raise ValidationError("not a whole number", field=f"line {line}, count") from None
        if count < 0:
            raise ValidationError("must not be negative", field=f"line {line}, count")
        items.append(
            {
                "sku": row["sku"].strip(),
                "name_fr": row["name_fr"].strip(),
                "name_en": row["name_en"].strip(),
                "count": count,
                "aisle": row["aisle"].strip(),
            }
        )
    return items
