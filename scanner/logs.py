"""Logging set-up of the scanner daemon: text lines, or JSON lines for log collectors.

`log_format = "json"` writes one JSON object per line on stderr (``ts``, ``level``,
``logger``, ``message``, and ``exc`` when an exception is attached), like the store server's
option. The messages are the same in both formats: they never carry customer identifiers.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
"""Text lines: systemd's journal adds its own timestamp, but stderr runs need one."""


class JsonLineFormatter(logging.Formatter):
    """One JSON object per record, UTC timestamps in ISO 8601 with milliseconds."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, separators=(",", ":"))


def setup_logging(level: str, log_format: str) -> None:
    """Configure the root logger once for the daemon (``log_format``: text or json)."""
    handler = logging.StreamHandler(sys.stderr)
    formatter = JsonLineFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT)
    handler.setFormatter(formatter)
    logging.basicConfig(level=level, handlers=[handler], force=True)
