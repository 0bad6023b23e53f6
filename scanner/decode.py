"""Decode JSON-lines advertisement records into beacon frames (pure; the CLI does the I/O).

``beacon-scanner decode`` reads records (the format of ``scanner.records``; usually only
``manufacturer_data`` and/or ``service_data``) on stdin and writes one line on stdout per
non-blank input line, in order:

- a decodable advertisement: the compact JSON of ``frame_to_dict``, e.g.
  ``{"type":"eddystone_eid","tx_power":-20,"eid":"0123456789abcdef"}``;
- a valid record that carries no beacon frame: ``null``;
- an invalid line (bad JSON, bad key, bad hex...): ``null`` on stdout, and on stderr the message
  ``line <n>: <problem>`` where ``n`` counts every input line from 1, blank ones included.

Blank (empty or whitespace-only) lines are skipped and produce no output. The exit status is 1 if
any line was invalid, else 0 (an undecodable but valid advertisement is not an error).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator

from scanner.errors import RecordError
from scanner.frames import frame_to_dict, parse_advertisement
from scanner.records import parse_record

# The output line for an advertisement without a beacon frame, and for an invalid line.
NULL_LINE = "null"


def decode_lines(lines: Iterable[str]) -> Iterator[tuple[str, str | None]]:
    """Yield ``(output JSON line, error message or None)`` for each non-blank input line."""
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = parse_record(line)
        except RecordError as exc:
            yield NULL_LINE, f"line {number}: {exc}"
            continue
        frame = parse_advertisement(record.manufacturer_data, record.service_data)
        if frame is None:
            yield NULL_LINE, None
        else:
            yield json.dumps(frame_to_dict(frame), separators=(",", ":")), None
