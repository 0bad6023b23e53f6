"""Validation of scanner request bodies (pure). The formats are in docs/api.md."""

from __future__ import annotations

import operator
import re
from itertools import compress
from typing import Annotated, Literal, TypeVar

import msgspec

from store_server.errors import ValidationError

# Bound on windows per batch: a scanner flushes every second, so 5,000 is minutes of a crowd.
MAX_WINDOWS_PER_BATCH = 5000
_EID_RE = re.compile(r"[0-9a-f]{16}")
_HEX_RUN = re.compile(r"[0-9a-f]*")
"""EIDs of a batch joined: lower-case hex only (each id's length is checked apart)."""
_EID_LENGTHS = frozenset({16})
"""An EID is 8 bytes, 16 hex characters."""
_EID_TYPE = "eid"
_get_id = operator.attrgetter("id")
_get_type = operator.attrgetter("id_type")
_get_start = operator.attrgetter("start")
_get_end = operator.attrgetter("end")
_FIELD_RE = re.compile(r"at `\$\.?(?P<path>[^`]*)`")
_UNKNOWN_RE = re.compile(r"(?:unknown|missing required) field `(?P<name>[^`]*)`")

Rssi = Annotated[int, msgspec.Meta(ge=-127, le=20)]
Seconds = Annotated[float, msgspec.Meta(ge=0)]


class Window(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    id_type: Literal["eid", "ibeacon"]
    id: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    start: Seconds
    end: Seconds
    count: Annotated[int, msgspec.Meta(ge=1, le=100_000)]
    rssi_max: Rssi
    rssi_median: Annotated[float, msgspec.Meta(ge=-127, le=20)]
    tx_power: Annotated[int, msgspec.Meta(ge=-127, le=20)] | None = None


class Batch(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    batch_id: Annotated[str, msgspec.Meta(min_length=8, max_length=64, pattern=r"^[0-9A-Za-z-]+$")]
    store_id: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    scanner_id: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    windows: Annotated[list[Window], msgspec.Meta(max_length=MAX_WINDOWS_PER_BATCH)]


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


def check_batch(batch: Batch) -> None:
    """Checks beyond the schema: EID syntax and window order.

    One pass in C over the whole batch (``map`` over attribute getters); only a batch that
    fails it goes through the per-window loop, which names the first faulty field.
    """
    windows = batch.windows
    eids = list(compress(map(_get_id, windows), map(_EID_TYPE.__eq__, map(_get_type, windows))))
    if (
        not set(map(len, eids)) <= _EID_LENGTHS
        or _HEX_RUN.fullmatch("".join(eids)) is None
        or any(map(operator.lt, map(_get_end, windows), map(_get_start, windows)))
    ):
        _check_each(batch)


def _check_each(batch: Batch) -> None:
    for index, window in enumerate(batch.windows):
        if window.id_type == "eid" and not _EID_RE.fullmatch(window.id):
            raise ValidationError(
                "an eid is 16 lower-case hex characters", field=f"windows[{index}].id"
            )
        if window.end < window.start:
            raise ValidationError("end is before start", field=f"windows[{index}].end")
