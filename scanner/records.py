"""The JSON-lines advertisement record (pure): one advertisement per line.

Used by ``beacon-scanner decode``, the replay backend, the captures in ``seeds/captures/`` and the
simulated feed the demo writes to a scanner's stdin. One line looks like::

    {"t": 0.25, "address": "C0:FF:EE:00:00:01", "rssi": -61, "local_name": null,
     "tx_power": null, "manufacturer_data": {"76": "0215..."},
     "service_data": {"0000feaa-0000-1000-8000-00805f9b34fb": "30ec..."}, "service_uuids": []}

Every key is optional; an absent key takes the default of ``AdvertRecord``:

- ``t``: seconds since the start of the recording (number >= 0) or null; default null;
- ``address``: any string (not checked beyond its type); default ``"00:00:00:00:00:00"``;
- ``rssi``: integer dBm in -127..20; default -127, the value BlueZ reports for "unknown";
- ``local_name``: string or null; ``tx_power``: integer dBm in -127..20 or null;
- ``manufacturer_data``: object whose keys are decimal company ids (0..65535) and whose values
  are hex strings (either case, even length);
- ``service_data``: object whose keys are 128-bit UUID strings (stored lower-case) and whose
  values are hex strings;
- ``service_uuids``: list of strings.

Unknown keys are refused, so that a misspelt key never silently drops a payload.
``record_to_json`` writes every key, compactly, with lower-case hex, and round-trips through
``parse_record``.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Final

from scanner.errors import RecordError

# Address used when a record has none (decode inputs usually carry only the payloads).
DEFAULT_ADDRESS: Final = "00:00:00:00:00:00"
# RSSI used when a record has none: -127 dBm is what BlueZ reports for an unknown RSSI.
DEFAULT_RSSI: Final = -127
# Lowest RSSI / tx power a record may carry: the HCI "RSSI not available" floor.
RSSI_MIN: Final = -127
# Highest RSSI / tx power a record may carry: the HCI upper bound for RSSI (+20 dBm).
RSSI_MAX: Final = 20
# Largest Bluetooth SIG company identifier (16 bits).
COMPANY_ID_MAX: Final = 0xFFFF

_HEX = re.compile(r"(?:[0-9a-fA-F]{2})*")
_DECIMAL = re.compile(r"0|[1-9][0-9]{0,4}")
_UUID128 = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)
_KEYS: Final = frozenset(
    {
        "t",
        "address",
        "rssi",
        "local_name",
        "tx_power",
        "manufacturer_data",
        "service_data",
        "service_uuids",
    }
)


@dataclass(frozen=True, slots=True)
class AdvertRecord:
    """One advertisement as heard (or simulated); see the module docstring for defaults."""

    t: float | None = None
    address: str = DEFAULT_ADDRESS
    rssi: int = DEFAULT_RSSI
    local_name: str | None = None
    tx_power: int | None = None
    manufacturer_data: dict[int, bytes] = field(default_factory=dict)
    service_data: dict[str, bytes] = field(default_factory=dict)
    service_uuids: tuple[str, ...] = ()


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _hex_value(where: str, value: object) -> bytes:
    if not isinstance(value, str) or _HEX.fullmatch(value) is None:
        raise RecordError(f"{where} is not hex")
    return bytes.fromhex(value)


def _dbm(key: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise RecordError(f"{key} must be an integer, got {type(value).__name__}")
    if not RSSI_MIN <= value <= RSSI_MAX:
        raise RecordError(f"{key} {value} is outside {RSSI_MIN}..{RSSI_MAX}")
    return value


def _manufacturer_data(value: object) -> dict[int, bytes]:
    if not isinstance(value, dict):
        raise RecordError("manufacturer_data must be an object")
    result: dict[int, bytes] = {}
    for key, item in value.items():
        if _DECIMAL.fullmatch(key) is None or int(key) > COMPANY_ID_MAX:
            raise RecordError(f"manufacturer_data key {key!r} is not a decimal company id")
        result[int(key)] = _hex_value(f"manufacturer_data[{key!r}]", item)
    return result


def _service_data(value: object) -> dict[str, bytes]:
    if not isinstance(value, dict):
        raise RecordError("service_data must be an object")
    result: dict[str, bytes] = {}
    for key, item in value.items():
        if _UUID128.fullmatch(key) is None:
            raise RecordError(f"service_data key {key!r} is not a 128-bit UUID")
        result[key.lower()] = _hex_value(f"service_data[{key!r}]", item)
    return result


def parse_record(line: str) -> AdvertRecord:
    """Parse one JSON line into an AdvertRecord; RecordError names the key at fault."""
    try:
        obj = json.loads(line)
    except (ValueError, RecursionError) as exc:
        raise RecordError(f"invalid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise RecordError(f"a record must be a JSON object, got {type(obj).__name__}")
    unknown = sorted(set(obj) - _KEYS)
    if unknown:
        raise RecordError(f"unknown key {unknown[0]!r}")

    t = obj.get("t")
    if t is not None:
        if not (_is_int(t) or isinstance(t, float)) or not math.isfinite(t) or t < 0:
            raise RecordError(f"t must be a finite number >= 0 or null, got {t!r}")
        t = float(t)
    address = obj.get("address", DEFAULT_ADDRESS)
    if not isinstance(address, str):
        raise RecordError("address must be a string")
    rssi = _dbm("rssi", obj.get("rssi", DEFAULT_RSSI))
    local_name = obj.get("local_name")
    if local_name is not None and not isinstance(local_name, str):
        raise RecordError("local_name must be a string or null")
    tx_power = obj.get("tx_power")
    if tx_power is not None:
        tx_power = _dbm("tx_power", tx_power)
    uuids = obj.get("service_uuids", [])
    if not isinstance(uuids, list) or not all(isinstance(u, str) for u in uuids):
        raise RecordError("service_uuids must be a list of strings")
    return AdvertRecord(
        t=t,
        address=address,
        rssi=rssi,
        local_name=local_name,
        tx_power=tx_power,
        manufacturer_data=_manufacturer_data(obj.get("manufacturer_data", {})),
        service_data=_service_data(obj.get("service_data", {})),
        service_uuids=tuple(uuids),
    )


def record_to_json(record: AdvertRecord) -> str:
    """Return the compact JSON line (no newline) of a record; ``parse_record`` reverses it."""
    return json.dumps(
        {
            "t": record.t,
            "address": record.address,
            "rssi": record.rssi,
            "local_name": record.local_name,
            "tx_power": record.tx_power,
            "manufacturer_data": {str(k): v.hex() for k, v in record.manufacturer_data.items()},
            "service_data": {k: v.hex() for k, v in record.service_data.items()},
            "service_uuids": list(record.service_uuids),
        },
        separators=(",", ":"),
    )
