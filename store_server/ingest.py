"""Validation of scanner request bodies (pure). The formats are in docs/api.md."""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Literal, TypeVar

import msgspec
import numpy as np
import numpy.typing as npt

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
_get_count = operator.attrgetter("count")
_get_rssi_max = operator.attrgetter("rssi_max")
_get_rssi_median = operator.attrgetter("rssi_median")
_COLUMN_NAMES = ("id", "start", "end", "count", "rssi_max", "rssi_median", "tx_power")
"""The columns held to the length of `id_type` (`tx_power` only when given)."""
_FIELD_RE = re.compile(r"at `\$\.?(?P<path>[^`]*)`")
_UNKNOWN_RE = re.compile(r"(?:unknown|missing required) field `(?P<name>[^`]*)`")

Rssi = Annotated[int, msgspec.Meta(ge=-127, le=20)]
Seconds = Annotated[float, msgspec.Meta(ge=0)]


IdType = Literal["eid", "ibeacon"]
WindowId = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
Count = Annotated[int, msgspec.Meta(ge=1, le=100_000)]
RssiMedian = Annotated[float, msgspec.Meta(ge=-127, le=20)]
TxPower = Annotated[int, msgspec.Meta(ge=-127, le=20)]


class Window(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    id_type: IdType
    id: WindowId
    start: Seconds
    end: Seconds
    count: Count
    rssi_max: Rssi
    rssi_median: RssiMedian
    tx_power: TxPower | None = None


class Columns(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The windows of a batch as parallel arrays (one per field of a window, same rules).

    Decoded into plain lists in C, then turned into numpy arrays by :func:`batch_columns`:
    the server never builds one object per window. ``tx_power`` may be left out (all null).
    """

    id_type: Annotated[list[IdType], msgspec.Meta(max_length=MAX_WINDOWS_PER_BATCH)]
    id: Annotated[list[WindowId], msgspec.Meta(max_length=MAX_WINDOWS_PER_BATCH)]
    start: Annotated[list[Seconds], msgspec.Meta(max_length=MAX_WINDOWS_PER_BATCH)]
    end: Annotated[list[Seconds], msgspec.Meta(max_length=MAX_WINDOWS_PER_BATCH)]
    count: Annotated[list[Count], msgspec.Meta(max_length=MAX_WINDOWS_PER_BATCH)]
    rssi_max: Annotated[list[Rssi], msgspec.Meta(max_length=MAX_WINDOWS_PER_BATCH)]
    rssi_median: Annotated[list[RssiMedian], msgspec.Meta(max_length=MAX_WINDOWS_PER_BATCH)]
    tx_power: (
        Annotated[list[TxPower | None], msgspec.Meta(max_length=MAX_WINDOWS_PER_BATCH)] | None
    ) = None


class Batch(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A batch: its windows either row-wise (``windows``) or column-wise (``columns``)."""

    batch_id: Annotated[str, msgspec.Meta(min_length=8, max_length=64, pattern=r"^[0-9A-Za-z-]+$")]
    store_id: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    scanner_id: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    windows: (
        Annotated[list[Window], msgspec.Meta(max_length=MAX_WINDOWS_PER_BATCH)] | msgspec.UnsetType
    ) = msgspec.UNSET
    columns: Columns | msgspec.UnsetType = msgspec.UNSET


@dataclass(frozen=True, slots=True)
class WindowColumns:
    """A validated batch, column-wise: what the service ingests (one entry per window).

    ``eid_rows`` are the positions of the EID windows and ``eids`` their EIDs as big-endian
    64-bit integers; ``other`` holds the (position, id) of the legacy iBeacon windows.
    """

    eid_rows: npt.NDArray[np.intp]
    eids: npt.NDArray[np.uint64]
    other: list[tuple[int, str]]
    end: npt.NDArray[np.float64]
    rssi_median: npt.NDArray[np.float64]
    rssi_max: npt.NDArray[np.float64]
    count: npt.NDArray[np.int64]

    def __len__(self) -> int:
        return len(self.end)


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
    """Checks beyond the schema (EID syntax, window order, one form); see batch_columns."""
    batch_columns(batch)


def batch_columns(batch: Batch) -> WindowColumns:
    """Validate the batch beyond its schema and return its windows column-wise.

    Rules (either form): exactly one of ``windows`` and ``columns``; the columns all have the
    same length; an ``eid`` id is 16 lower-case hex characters; ``end`` is not before
    ``start``. The checks run over whole columns in C; only a batch that fails one goes
    through the per-window loop, which names the first faulty field (``windows[3].id`` or
    ``columns.id[3]``), exactly as the row-wise rules always did.
    """
    windows, columns = batch.windows, batch.columns
    if isinstance(windows, msgspec.UnsetType) == isinstance(columns, msgspec.UnsetType):
        field = "windows" if isinstance(windows, msgspec.UnsetType) else "columns"
        raise ValidationError("a batch has either `windows` or `columns`", field=field)
    if not isinstance(windows, msgspec.UnsetType):
        return _validated(
            list(map(_get_type, windows)),
            list(map(_get_id, windows)),
            list(map(_get_start, windows)),
            list(map(_get_end, windows)),
            list(map(_get_count, windows)),
            list(map(_get_rssi_max, windows)),
            list(map(_get_rssi_median, windows)),
            _row_field,
        )
    assert not isinstance(columns, msgspec.UnsetType)
    size = len(columns.id_type)
    for name in _COLUMN_NAMES:
        values = getattr(columns, name)
        if values is not None and len(values) != size:
            raise ValidationError(
                f"every column has the length of `id_type` ({size})", field=f"columns.{name}"
            )
    return _validated(
        columns.id_type,
        columns.id,
        columns.start,
        columns.end,
        columns.count,
        columns.rssi_max,
        columns.rssi_median,
        _column_field,
    )


def _row_field(index: int, name: str) -> str:
    return f"windows[{index}].{name}"


def _column_field(index: int, name: str) -> str:
    return f"columns.{name}[{index}]"


def _validated(
    id_types: Sequence[str],
    ids: Sequence[str],
    starts: list[float],
    ends: list[float],
    counts: list[int],
    rssi_max: list[int],
    rssi_median: list[float],
    field: Callable[[int, str], str],
) -> WindowColumns:
    end = np.array(ends, dtype=np.float64)
    late = np.flatnonzero(end < np.array(starts, dtype=np.float64))
    if _EID_TYPE not in id_types:
        eid_rows = np.zeros(0, dtype=np.intp)
        eid_ids: Sequence[str] = ()
    elif id_types.count(_EID_TYPE) == len(id_types):
        eid_rows = np.arange(len(id_types), dtype=np.intp)
        eid_ids = ids
    else:
        eid_rows = np.flatnonzero(np.array(id_types, dtype=object) == _EID_TYPE)
        eid_ids = [ids[i] for i in eid_rows.tolist()]
    joined = "".join(eid_ids)
    if (
        not set(map(len, eid_ids)) <= _EID_LENGTHS
        or _HEX_RUN.fullmatch(joined) is None
        or late.size
    ):
        _name_first_fault(id_types, ids, starts, ends, field)
    other: list[tuple[int, str]] = []
    if len(eid_rows) != len(id_types):
        is_eid = np.zeros(len(id_types), dtype=bool)
        is_eid[eid_rows] = True
        other = [(i, ids[i]) for i in np.flatnonzero(~is_eid).tolist()]
    return WindowColumns(
        eid_rows=eid_rows,
        eids=np.frombuffer(bytes.fromhex(joined), dtype=">u8").astype(np.uint64),
        other=other,
        end=end,
        rssi_median=np.array(rssi_median, dtype=np.float64),
        rssi_max=np.array(rssi_max, dtype=np.float64),
        count=np.array(counts, dtype=np.int64),
    )


def _name_first_fault(
    id_types: Sequence[str],
    ids: Sequence[str],
    starts: list[float],
    ends: list[float],
    field: Callable[[int, str], str],
) -> None:
    for index, (id_type, ident, start, end) in enumerate(
        zip(id_types, ids, starts, ends, strict=True)
    ):
        if id_type == _EID_TYPE and not _EID_RE.fullmatch(ident):
            raise ValidationError(
                "an eid is 16 lower-case hex characters", field=field(index, "id")
            )
        if end < start:
            raise ValidationError("end is before start", field=field(index, "end"))
