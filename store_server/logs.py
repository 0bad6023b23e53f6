"""Logging set-up for `store-server serve`: text lines, or JSON lines for log collectors.

`log_format = "json"` writes one JSON object per line on stderr (``ts``, ``level``,
``logger``, ``message``, and ``exc`` when an exception is attached), which journald, Loki,
Elasticsearch or a plain ``jq`` read without a parsing rule. The messages are the same as in
text mode: they never carry customer identifiers.
"""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime

import msgspec

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
"""Text lines: the journal adds its own timestamp, but a terminal or a file needs one."""


class JsonLineFormatter(logging.Formatter):
    """One JSON object per record, UTC timestamps in ISO 8601 with milliseconds."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, str] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return msgspec.json.encode(entry).decode()


def setup_logging(level: str, log_format: str) -> None:
    """Configure the root logger once for the server process (``log_format``: text or json)."""
    handler = logging.StreamHandler(sys.stderr)
    formatter = JsonLineFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT)
    handler.setFormatter(formatter)
    logging.basicConfig(level=level, handlers=[handler], force=True)
