"""Stock CSV parsing (pure): `sku,name_fr,name_en,count,aisle`, errors name line and column."""

from __future__ import annotations

import csv
import io
from typing import Any

from store_server.errors import ValidationError

STOCK_COLUMNS = ("sku", "name_fr", "name_en", "count", "aisle")
# A shop's catalog, not a warehouse: refuse files that are clearly something else.
MAX_STOCK_ROWS = 100_000
# A count is 1-9 ASCII digits: far above any shelf, far below SQLite's 64-bit integers
# (a count of 2**63 would overflow the column).
MAX_COUNT_DIGITS = 9


def parse_count(raw: str, field: str) -> int:
    """A stock count from text: ASCII digits only (no sign, space, '_' or other scripts'
    digits, which int() would accept); ValidationError names `field`."""
    text = raw.strip()
    if text.startswith("-") and text[1:].isascii() and text[1:].isdigit():
        raise ValidationError("must not be negative", field=field, reason="negative")
    if not (text.isascii() and text.isdigit()):
        raise ValidationError("not a whole number (digits 0-9)", field=field, reason="whole_number")
    if len(text) > MAX_COUNT_DIGITS:
        raise ValidationError(f"at most {MAX_COUNT_DIGITS} digits", field=field)
    return int(text)


def parse_stock_csv(text: str) -> list[dict[str, Any]]:
    reader = csv.DictReader(io.StringIO(text))
    if reader.fieldnames is None or tuple(reader.fieldnames) != STOCK_COLUMNS:
        raise ValidationError(
            f"the header must be {','.join(STOCK_COLUMNS)}", field="header", reason="header"
        )
    items: list[dict[str, Any]] = []
    for line, row in enumerate(reader, start=2):
        if len(items) >= MAX_STOCK_ROWS:
            raise ValidationError(
                f"more than {MAX_STOCK_ROWS} rows", field=f"line {line}", reason="too_many_rows"
            )
        for column in STOCK_COLUMNS:
            if not (row.get(column) or "").strip():
                raise ValidationError("empty value", field=f"line {line}, {column}", reason="empty")
        count = parse_count(row["count"], f"line {line}, count")
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
