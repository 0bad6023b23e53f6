"""Validation of scanner request bodies (pure). The formats are in docs/api.md.

A batch is one JSON object whose ``windows`` is a list of window objects, decoded by msgspec
into :class:`Window` structs; :func:`check_batch` adds the checks a schema cannot express.
Every error names the offending field (``windows[3].id``).
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, TypeVar

import msgspec

from store_server.box_beacons import ID_TYPE as STORE_BEACON
from store_server.box_beacons import parse_beacon_id
from store_server.errors import ValidationError

MAX_WINDOWS_PER_BATCH = 5000
"""Bound on windows per batch: a scanner flushes every second, so 5,000 is minutes of a crowd."""
RSSI_MIN = -127
"""Lowest dBm a window may carry (the Bluetooth RSSI floor)."""
RSSI_MAX = 20
"""Highest dBm a window may carry (no phone transmits louder)."""
COUNT_MAX = 100_000
"""Most frames in one window: far beyond any phone's advertising rate."""

_EID_RE = re.compile(r"[0-9a-f]{16}")
"""An EID: 8 bytes as 16 lower-case hex characters."""
_FIELD_RE = re.compile(r"at `\$\.?(?P<path>[^`]*)`")
_UNKNOWN_RE = re.compile(r"(?:unknown|missing required) field `(?P<name>[^`]*)`")

Rssi = Annotated[int, msgspec.Meta(ge=RSSI_MIN, le=RSSI_MAX)]
Seconds = Annotated[float, msgspec.Meta(ge=0)]
IdType = Literal["eid", "ibeacon", "store_beacon"]
WindowId = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
Count = Annotated[int, msgspec.Meta(ge=1, le=COUNT_MAX)]
RssiMedian = Annotated[float, msgspec.Meta(ge=RSSI_MIN, le=RSSI_MAX)]
TxPower = Annotated[int, msgspec.Meta(ge=RSSI_MIN, le=RSSI_MAX)]


class Window(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One scanner's aggregate of one identifier over a short window (docs/api.md)."""

    id_type: IdType
    id: WindowId
    start: Seconds
    end: Seconds
    count: Count
    rssi_max: Rssi
    rssi_median: RssiMedian
    tx_power: TxPower | None = None


class Batch(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A scanner batch: its id (kept across retries: idempotency) and its windows."""

    batch_id: Annotated[str, msgspec.Meta(min_length=8, max_length=64, pattern=r"^[0-9A-Za-z-]+$")]
    store_id: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    scanner_id: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    windows: Annotated[list[Window], msgspec.Meta(max_length=MAX_WINDOWS_PER_BATCH)]


class NodeLink(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A box that is an ESPHome node: its link to the daemon fronting it (docs/api.md)."""

    kind: Literal["esphome"]
    host: Annotated[str, msgspec.Meta(max_length=300)]
    connected: bool
    connects: Annotated[int, msgspec.Meta(ge=0)]
    # What is wrong, as a code the manager's page names in its language; None when all is well.
    error: (
        Literal[
            "unreachable",
            "wrong_key",
            "needs_key",
            "not_encrypted",
            "wrong_device",
            "no_proxy",
            "lost",
            "other",
        ]
        | None
    )
    # The scanner's own line (English) about the same error, for the API and support.
    last_error: Annotated[str, msgspec.Meta(max_length=200)] | None


class Heartbeat(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    store_id: str
    scanner_id: str
    version: Annotated[str, msgspec.Meta(max_length=32)]
    adapter: Literal["powered", "off", "missing", "simulated", "replay"]
    frames_seen_per_s: Annotated[float, msgspec.Meta(ge=0)]
    frames_passed_per_s: Annotated[float, msgspec.Meta(ge=0)]
    outbox_depth: Annotated[int, msgspec.Meta(ge=0)]
    outbox_dropped: Annotated[int, msgspec.Meta(ge=0)]
    last_upload_at: float | None
    watchdog_restarts: Annotated[int, msgspec.Meta(ge=0)]
    allowlist_version: Annotated[int, msgspec.Meta(ge=0)] | None  # None: no list received yet
    sent_at: float
    # Sightings left out since the daemon started: their RSSI was not a reading (HCI's 127).
    readings_unusable: Annotated[int, msgspec.Meta(ge=0)] = 0
    # Only from a box that is an ESPHome node; kept as plain data (it is stored as JSON) and
    # checked against NodeLink. Optional, so older scanners still pass.
    node: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.node is not None:
            try:
                msgspec.convert(self.node, NodeLink)
            except msgspec.ValidationError as exc:
                raise ValueError(f"node: {exc}") from None


S = TypeVar("S")


def decode(body: bytes, kind: type[S]) -> S:
    """Decode and validate `body` as `kind`; ValidationError names the faulty field."""
    try:
        return msgspec.json.decode(body, type=kind)
    except msgspec.ValidationError as exc:
        message = str(exc)
        match = _FIELD_RE.search(message)
        field = match.group("path") if match else None
        unknown = _UNKNOWN_RE.search(message)
        if unknown is not None:
            field = f"{field}.{unknown.group('name')}" if field else unknown.group("name")
        raise ValidationError(message, field=field or None) from None
    except msgspec.DecodeError as exc:
        raise ValidationError(f"body is not valid JSON: {exc}") from None
    except UnicodeDecodeError:
        # msgspec decodes strings lazily: invalid UTF-8 inside a JSON string surfaces here.
        raise ValidationError("body is not valid JSON: a string is not UTF-8") from None


def check_batch(batch: Batch) -> None:
    """Checks beyond the schema: an ``eid`` id is 16 lower-case hex characters, a
    ``store_beacon`` id is ``<uuid>:<major>:<minor>``, and a window does not end before it
    starts. ValidationError names the first faulty window's field."""
    for index, window in enumerate(batch.windows):
        if window.id_type == "eid" and not _EID_RE.fullmatch(window.id):
            raise ValidationError(
                "an eid is 16 lower-case hex characters", field=f"windows[{index}].id"
            )
        if window.id_type == STORE_BEACON and parse_beacon_id(window.id) is None:
            raise ValidationError(
                "a store_beacon id is '<uuid>:<major>:<minor>' (lower-case UUID)",
                field=f"windows[{index}].id",
            )
        if window.end < window.start:
            raise ValidationError("end is before start", field=f"windows[{index}].end")
