"""Validation of scanner request bodies (pure). The formats are in docs/api.md."""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal, TypeVar

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

RSSI_MIN = -127
"""Lowest dBm a window may carry (the Bluetooth RSSI floor)."""
RSSI_MAX = 20
"""Highest dBm a window may carry (no phone transmits louder)."""
COUNT_MAX = 100_000
"""Most frames in one window: far beyond any phone's advertising rate."""
TX_POWER_NULL = -128
"""A packed `tx_power` of -128 (below RSSI_MIN) stands for null."""
_ID_TYPE_NAMES = ("eid", "ibeacon")
"""The id types by their code in a packed `id_type` column (docs/api.md)."""
_EID_CODE = 0
"""The code of an ``eid`` window in a packed `id_type` column."""


_FLOAT_MAX = float(np.finfo(np.float64).max)
"""Upper bound of a time: any finite float64 (an infinity or a NaN is refused)."""


@dataclass(frozen=True, slots=True)
class _PackedType:
    """How one column is packed: the type of its values and the field's range."""

    dtype: np.dtype[np.generic]
    low: float | None = None
    high: float = _FLOAT_MAX
    null: int | None = None


_PACKED = {
    "id_type": _PackedType(np.dtype("u1"), 0, len(_ID_TYPE_NAMES) - 1),
    "id": _PackedType(np.dtype(">u8")),  # an EID's 8 bytes, as in the frame
    "start": _PackedType(np.dtype("<f8"), 0),
    "end": _PackedType(np.dtype("<f8"), 0),
    "count": _PackedType(np.dtype("<u4"), 1, COUNT_MAX),
    "rssi_max": _PackedType(np.dtype("i1"), RSSI_MIN, RSSI_MAX),
    "rssi_median": _PackedType(np.dtype("<f8"), RSSI_MIN, RSSI_MAX),
    "tx_power": _PackedType(np.dtype("i1"), RSSI_MIN, RSSI_MAX, null=TX_POWER_NULL),
}
"""The packed form of each column (docs/api.md): little-endian values of a fixed type."""
_PACKED_MAX_BYTES = MAX_WINDOWS_PER_BATCH * 8
"""Size of the widest packed column (8 bytes a window) at the most windows."""

Rssi = Annotated[int, msgspec.Meta(ge=RSSI_MIN, le=RSSI_MAX)]
Seconds = Annotated[float, msgspec.Meta(ge=0)]


IdType = Literal["eid", "ibeacon"]
WindowId = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
Count = Annotated[int, msgspec.Meta(ge=1, le=COUNT_MAX)]
RssiMedian = Annotated[float, msgspec.Meta(ge=RSSI_MIN, le=RSSI_MAX)]
TxPower = Annotated[int, msgspec.Meta(ge=RSSI_MIN, le=RSSI_MAX)]


class Window(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    id_type: IdType
    id: WindowId
    start: Seconds
    end: Seconds
    count: Count
    rssi_max: Rssi
    rssi_median: RssiMedian
    tx_power: TxPower | None = None


Packed = Annotated[
    bytes,
    msgspec.Meta(
        max_length=_PACKED_MAX_BYTES,
        description="The column's values packed little-endian, in base64 (docs/api.md).",
    ),
]
"""A packed column: its values packed with the column's fixed type (_PACKED), sent in base64
(decoded by msgspec, in C)."""


class Columns(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The windows of a batch as parallel arrays (one per field of a window, same rules).

    Each column is a JSON array or a :data:`Packed` string. Lists are decoded in C and
    packed columns become numpy arrays without a Python object per value: the server never
    builds one object per window. ``tx_power`` may be left out (all null).
    """

    id_type: Annotated[list[IdType], msgspec.Meta(max_length=MAX_WINDOWS_PER_BATCH)] | Packed
    id: Annotated[list[WindowId], msgspec.Meta(max_length=MAX_WINDOWS_PER_BATCH)] | Packed
    start: Annotated[list[Seconds], msgspec.Meta(max_length=MAX_WINDOWS_PER_BATCH)] | Packed
    end: Annotated[list[Seconds], msgspec.Meta(max_length=MAX_WINDOWS_PER_BATCH)] | Packed
    count: Annotated[list[Count], msgspec.Meta(max_length=MAX_WINDOWS_PER_BATCH)] | Packed
    rssi_max: Annotated[list[Rssi], msgspec.Meta(max_length=MAX_WINDOWS_PER_BATCH)] | Packed
    rssi_median: (
        Annotated[list[RssiMedian], msgspec.Meta(max_length=MAX_WINDOWS_PER_BATCH)] | Packed
    )
    tx_power: (
        Annotated[list[TxPower | None], msgspec.Meta(max_length=MAX_WINDOWS_PER_BATCH)]
        | Packed
        | None
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
    """Checks beyond the schema (EID syntax, window order, one form); see batch_columns."""
    batch_columns(batch)


def batch_columns(batch: Batch) -> WindowColumns:
    """Validate the batch beyond its schema and return its windows column-wise.

    Rules (either form): exactly one of ``windows`` and ``columns``; the columns all have the
    same length; an ``eid`` id is 16 lower-case hex characters; ``end`` is not before
    ``start``; a packed column holds whole values of its type, within the field's range. The
    checks run over whole columns in C; only a batch that fails one is searched for its
    first faulty window, named as ``windows[3].id`` or ``columns.id[3]``.
    """
    windows, columns = batch.windows, batch.columns
    if isinstance(windows, msgspec.UnsetType) == isinstance(columns, msgspec.UnsetType):
        field = "windows" if isinstance(windows, msgspec.UnsetType) else "columns"
        raise ValidationError("a batch has either `windows` or `columns`", field=field)
    if not isinstance(windows, msgspec.UnsetType):
        return _validated(
            list(map(_get_type, windows)),
            list(map(_get_id, windows)),
            np.array(list(map(_get_start, windows)), dtype=np.float64),
            np.array(list(map(_get_end, windows)), dtype=np.float64),
            np.array(list(map(_get_count, windows)), dtype=np.int64),
            np.array(list(map(_get_rssi_max, windows)), dtype=np.float64),
            np.array(list(map(_get_rssi_median, windows)), dtype=np.float64),
            _row_field,
        )
    assert not isinstance(columns, msgspec.UnsetType)
    if isinstance(columns.id_type, bytes):
        codes = np.asarray(_unpacked(columns.id_type, "id_type", None), dtype=np.uint8)
        id_types: Sequence[str] | npt.NDArray[np.uint8] = codes
        size = len(codes)
        if size > MAX_WINDOWS_PER_BATCH:
            raise ValidationError(
                f"at most {MAX_WINDOWS_PER_BATCH} windows a batch", field="columns.id_type"
            )
    else:
        id_types = columns.id_type
        size = len(id_types)
    for name in _COLUMN_NAMES:
        values = getattr(columns, name)
        if isinstance(values, list) and len(values) != size:
            raise ValidationError(
                f"every column has the length of `id_type` ({size})", field=f"columns.{name}"
            )
    if isinstance(columns.tx_power, bytes):
        _unpacked(columns.tx_power, "tx_power", size)
    return _validated(
        id_types,
        columns.id,
        _column(columns.start, "start", size, np.float64),
        _column(columns.end, "end", size, np.float64),
        _column(columns.count, "count", size, np.int64),
        _column(columns.rssi_max, "rssi_max", size, np.float64),
        _column(columns.rssi_median, "rssi_median", size, np.float64),
        _column_field,
    )


def _row_field(index: int, name: str) -> str:
    return f"windows[{index}].{name}"


def _column_field(index: int, name: str) -> str:
    return f"columns.{name}[{index}]"


_A = TypeVar("_A", bound=np.generic)


def _column(
    values: list[int] | list[float] | bytes, name: str, size: int, dtype: type[_A]
) -> npt.NDArray[_A]:
    """One numeric column as an array of ``dtype``: a list (already checked by the schema)
    or a packed string (unpacked and checked here)."""
    if isinstance(values, bytes):
        return _unpacked(values, name, size).astype(dtype, copy=False)
    return np.array(values, dtype=dtype)


def _unpacked(raw: bytes, name: str, size: int | None) -> npt.NDArray[np.generic]:
    """The values of a packed column (docs/api.md), each within its field's range.

    ValidationError names the column when it does not hold ``size`` whole values, and
    ``columns.<name>[i]`` for the first value out of range.
    """
    kind = _PACKED[name]
    width = kind.dtype.itemsize
    if len(raw) % width or (size is not None and len(raw) != size * width):
        expected = "whole values" if size is None else f"{size} values"
        raise ValidationError(
            f"a packed `{name}` holds {expected} of {width} bytes", field=f"columns.{name}"
        )
    values = np.frombuffer(raw, dtype=kind.dtype)
    if kind.low is None or not len(values):
        return values
    # Two reductions in the common case (a NaN fails both comparisons, an infinity the bound).
    if kind.low <= values.min() and values.max() <= kind.high:
        return values
    ok = (values >= kind.low) & (values <= kind.high)
    if kind.null is not None:
        ok |= values == kind.null
    if not ok.all():
        index = int(np.flatnonzero(~ok)[0])
        raise ValidationError(
            f"out of range ({kind.low:g} to {kind.high:g})", field=_column_field(index, name)
        )
    return values


def _validated(
    id_types: Sequence[str] | npt.NDArray[np.uint8],
    ids: Sequence[str] | bytes,
    start: npt.NDArray[np.float64],
    end: npt.NDArray[np.float64],
    count: npt.NDArray[np.int64],
    rssi_max: npt.NDArray[np.float64],
    rssi_median: npt.NDArray[np.float64],
    field: Callable[[int, str], str],
) -> WindowColumns:
    size = len(id_types)
    if isinstance(id_types, np.ndarray):
        eid_rows = np.flatnonzero(id_types == _EID_CODE)
        all_eid = len(eid_rows) == size
    elif _EID_TYPE not in id_types:
        eid_rows, all_eid = np.zeros(0, dtype=np.intp), size == 0
    elif id_types.count(_EID_TYPE) == size:
        eid_rows, all_eid = np.arange(size, dtype=np.intp), True
    else:
        eid_rows = np.flatnonzero(np.array(id_types, dtype=object) == _EID_TYPE)
        all_eid = False
    late = np.flatnonzero(end < start)
    other: list[tuple[int, str]] = []
    if isinstance(ids, bytes):
        if not all_eid:
            raise ValidationError(
                "a packed `id` column is for batches of eid windows only", field="columns.id"
            )
        eids = _unpacked(ids, "id", size).astype(np.uint64)
        if late.size:
            raise ValidationError("end is before start", field=field(int(late[0]), "end"))
    else:
        eid_ids = ids if all_eid else [ids[i] for i in eid_rows.tolist()]
        joined = "".join(eid_ids)
        if (
            not set(map(len, eid_ids)) <= _EID_LENGTHS
            or _HEX_RUN.fullmatch(joined) is None
            or late.size
        ):
            _name_first_fault(_type_names(id_types), ids, start.tolist(), end.tolist(), field)
        if not all_eid:
            is_eid = np.zeros(size, dtype=bool)
            is_eid[eid_rows] = True
            other = [(i, ids[i]) for i in np.flatnonzero(~is_eid).tolist()]
        eids = np.frombuffer(bytes.fromhex(joined), dtype=">u8").astype(np.uint64)
    return WindowColumns(
        eid_rows=eid_rows,
        eids=eids,
        other=other,
        end=end,
        rssi_median=rssi_median,
        rssi_max=rssi_max,
        count=count,
    )


def _type_names(codes: npt.NDArray[np.uint8] | Sequence[str]) -> list[str]:
    if isinstance(codes, np.ndarray):
        return [_ID_TYPE_NAMES[code] for code in codes.tolist()]
    return list(codes)


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
