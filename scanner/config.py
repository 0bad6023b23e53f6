"""Scanner configuration: a TOML file plus ``BULLE_SCANNER_<KEY>`` environment overrides (pure)."""

from __future__ import annotations

import dataclasses
import tomllib
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from scanner.errors import ConfigError

Backend = Literal["bluez", "simulated", "replay", "esphome"]
ScanningMode = Literal["active", "passive"]

# Prefix of the environment variables that override file keys (systemd Environment= lines).
ENV_PREFIX = "BULLE_SCANNER_"
# Backends the daemon knows: real radio, stdin-fed simulation, recorded file, ESPHome nodes.
BACKENDS: tuple[str, ...] = ("bluez", "simulated", "replay", "esphome")
# BlueZ scanning modes bleak supports.
SCANNING_MODES: tuple[str, ...] = ("active", "passive")
# Log line formats: text, or JSON lines for a log collector.
LOG_FORMATS = ("text", "json")
# Python logging level names accepted for log_level.
LOG_LEVELS: tuple[str, ...] = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
# Startup wait for the first allowlist; longer only delays scanning (systemd allows 90 s).
MAX_ALLOWLIST_WAIT_S = 60.0
# The server accepts at most 5,000 windows per batch (docs/api.md).
MAX_BATCH_WINDOWS = 5000
# ESPHome's native API port (the `api:` component's default).
ESPHOME_API_PORT = 6053
# Keys of a [[nodes]] table; scanner_id and host are required.
NODE_KEYS: tuple[str, ...] = (
    "scanner_id",
    "host",
    "port",
    "name",
    "encryption_key_file",
    "secret",
    "secret_file",
)
# Keys that belong to each node, not to the file's top level, with the esphome backend.
PER_NODE_KEYS: tuple[str, ...] = ("scanner_id", "secret", "secret_file")
# Keys of the [advertise] table (the store beacon the box broadcasts; docs/operations.md).
ADVERTISE_KEYS: tuple[str, ...] = (
    "enabled",
    "hear",
    "uuid",
    "major",
    "key_file",
    "measured_power",
    "tx_power",
)
# Environment prefix of the [advertise] keys: BULLE_SCANNER_ADVERTISE_MAJOR=42.
ADVERTISE_ENV_PREFIX = ENV_PREFIX + "ADVERTISE_"
# iBeacon's customary measured power: the RSSI a phone reads at 1 m from a 0 dBm transmitter.
DEFAULT_MEASURED_POWER = -59
# An iBeacon's measured power is a signed byte of dBm at 1 m; a real one is always negative.
MEASURED_POWER_RANGE = (-127, -1)
# BlueZ's TxPower property (dBm) as Bluetooth 5 allows it.
TX_POWER_RANGE = (-127, 20)


@dataclass(frozen=True, slots=True)
class AdvertiseConfig:
    """The [advertise] table: the store beacon this box broadcasts (backend bluez only)."""

    enabled: bool = False
    # Report the other boxes' store beacons heard (uuid and major below): they calibrate the
    # floor, at no cost to the box (the advertisements are received anyway).
    hear: bool = True
    uuid: str | None = None
    major: int | None = None
    key_file: str | None = None
    measured_power: int = DEFAULT_MEASURED_POWER
    tx_power: int | None = None


@dataclass(frozen=True, slots=True)
class NodeConfig:
    """One ESPHome node: a box of its own at the server (its scanner id and secret)."""

    scanner_id: str
    host: str
    port: int = ESPHOME_API_PORT
    name: str | None = None
    encryption_key_file: str | None = None
    secret: str | None = None
    secret_file: str | None = None


@dataclass(frozen=True, slots=True)
class ScannerConfig:
    """Validated scanner settings; see docs/operations.md for each key's meaning."""

    scanner_id: str
    store_id: str
    server_url: str
    secret: str | None = None
    secret_file: str | None = None
    backend: Backend = "bluez"
    adapter: str = "hci0"
    scanning_mode: ScanningMode = "active"
    window_s: float = 1.0
    outbox_path: str = "/var/lib/beacon-scanner/outbox.sqlite"
    outbox_max_rows: int = 100_000
    outbox_max_bytes: int = 50 * 1024 * 1024
    outbox_max_age_s: float = 86_400.0
    batch_max_windows: int = 500
    upload_interval_s: float = 1.0
    heartbeat_interval_s: float = 15.0
    watchdog_timeout_s: float = 60.0
    allowlist_wait_s: float = 20.0
    legacy_ibeacon: bool = False
    replay_file: str | None = None
    replay_speed: float = 1.0
    log_level: str = "INFO"
    log_format: str = "text"
    nodes: tuple[NodeConfig, ...] = ()
    advertise: AdvertiseConfig = AdvertiseConfig()


_FIELDS = {f.name: f for f in dataclasses.fields(ScannerConfig)}
_REQUIRED = ("scanner_id", "store_id", "server_url")
_INT_KEYS = ("outbox_max_rows", "outbox_max_bytes", "batch_max_windows")
_FLOAT_KEYS = (
    "window_s",
    "outbox_max_age_s",
    "upload_interval_s",
    "heartbeat_interval_s",
    "watchdog_timeout_s",
    "allowlist_wait_s",
    "replay_speed",
)
_BOOL_KEYS = ("legacy_ibeacon",)
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def _coerce_env(key: str, raw: str) -> Any:
    """Turn an environment string into the type the key expects."""
    if key in _BOOL_KEYS:
        low = raw.strip().lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise ConfigError(f"expected true or false, got {raw!r}", key=key)
    if key in _INT_KEYS:
        try:
            return int(raw)
        except ValueError:
            raise ConfigError(f"expected an integer, got {raw!r}", key=key) from None
    if key in _FLOAT_KEYS:
        try:
            return float(raw)
        except ValueError:
            raise ConfigError(f"expected a number, got {raw!r}", key=key) from None
    return raw


def _check_type(key: str, value: Any) -> Any:
    if key in _BOOL_KEYS:
        if not isinstance(value, bool):
            raise ConfigError(f"expected true or false, got {type(value).__name__}", key=key)
        return value
    if key in _INT_KEYS:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"expected an integer, got {type(value).__name__}", key=key)
        return value
    if key in _FLOAT_KEYS:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"expected a number, got {type(value).__name__}", key=key)
        return float(value)
    if not isinstance(value, str):
        raise ConfigError(f"expected a string, got {type(value).__name__}", key=key)
    return value


def _positive(values: Mapping[str, Any], key: str) -> None:
    if values[key] <= 0:
        raise ConfigError(f"must be greater than 0, got {values[key]!r}", key=key)


def _node(index: int, raw: object) -> NodeConfig:
    where = f"nodes[{index}]"
    if not isinstance(raw, dict):
        raise ConfigError("each [[nodes]] entry must be a table", key=where)
    for key in raw:
        if key not in NODE_KEYS:
            raise ConfigError("unknown node key", key=f"{where}.{key}")
    for key in ("scanner_id", "host"):
        if not raw.get(key):
            raise ConfigError("required, not set", key=f"{where}.{key}")
    port = raw.get("port", ESPHOME_API_PORT)
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 0xFFFF:
        raise ConfigError("must be a port number (1..65535)", key=f"{where}.port")
    for key in ("scanner_id", "host", "name", "encryption_key_file", "secret", "secret_file"):
        if key in raw and not isinstance(raw[key], str):
            raise ConfigError(
                f"expected a string, got {type(raw[key]).__name__}", key=f"{where}.{key}"
            )
    if ("secret" in raw) == ("secret_file" in raw):
        raise ConfigError("set exactly one of secret and secret_file", key=f"{where}.secret")
    return NodeConfig(
        scanner_id=raw["scanner_id"],
        host=raw["host"],
        port=port,
        name=raw.get("name"),
        encryption_key_file=raw.get("encryption_key_file"),
        secret=raw.get("secret"),
        secret_file=raw.get("secret_file"),
    )


def _nodes(raw: object) -> tuple[NodeConfig, ...]:
    if not isinstance(raw, list):
        raise ConfigError("must be an array of tables ([[nodes]])", key="nodes")
    nodes = tuple(_node(i, entry) for i, entry in enumerate(raw))
    seen: set[str] = set()
    for node in nodes:
        if node.scanner_id in seen:
            raise ConfigError(f"scanner_id {node.scanner_id!r} is used twice", key="nodes")
        seen.add(node.scanner_id)
    return nodes


def _advertise_value(key: str, value: object) -> object:
    """One [advertise] value, type-checked (from the file, or an environment string)."""
    where = f"advertise.{key}"
    if key in ("enabled", "hear"):
        if isinstance(value, str):
            low = value.strip().lower()
            if low in _TRUE + _FALSE:
                return low in _TRUE
        if not isinstance(value, bool):
            raise ConfigError("expected true or false", key=where)
        return value
    if key in ("major", "measured_power", "tx_power"):
        if isinstance(value, str):
            try:
                value = int(value)
            except ValueError:
                raise ConfigError(f"expected an integer, got {value!r}", key=where) from None
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError("expected an integer", key=where)
        return value
    if not isinstance(value, str):
        raise ConfigError(f"expected a string, got {type(value).__name__}", key=where)
    return value


def _advertise(raw: object, env: Mapping[str, str]) -> AdvertiseConfig:
    """The [advertise] table with ``BULLE_SCANNER_ADVERTISE_<KEY>`` overrides, validated."""
    if not isinstance(raw, dict):
        raise ConfigError("must be a table ([advertise])", key="advertise")
    values: dict[str, object] = {}
    for key, value in raw.items():
        if key not in ADVERTISE_KEYS:
            raise ConfigError("unknown [advertise] key", key=f"advertise.{key}")
        values[key] = _advertise_value(key, value)
    for name, text in env.items():
        if name.startswith(ADVERTISE_ENV_PREFIX):
            key = name[len(ADVERTISE_ENV_PREFIX) :].lower()
            if key not in ADVERTISE_KEYS:
                raise ConfigError(f"unknown [advertise] key (from {name})", key=f"advertise.{key}")
            values[key] = _advertise_value(key, text)
    config = AdvertiseConfig(**values)  # type: ignore[arg-type]
    _check_advertise(config)
    return config


def _check_advertise(a: AdvertiseConfig) -> None:
    low, high = MEASURED_POWER_RANGE
    if not low <= a.measured_power <= high:
        raise ConfigError(
            f"must be between {low} and {high} (dBm at 1 m)", key="advertise.measured_power"
        )
    if a.tx_power is not None and not TX_POWER_RANGE[0] <= a.tx_power <= TX_POWER_RANGE[1]:
        raise ConfigError(
            f"must be between {TX_POWER_RANGE[0]} and {TX_POWER_RANGE[1]} (dBm)",
            key="advertise.tx_power",
        )
    if a.major is not None and not 0 <= a.major <= 0xFFFF:
        raise ConfigError("must be between 0 and 65535 (the store's number)", key="advertise.major")
    if a.uuid is not None:
        try:
            uuid.UUID(a.uuid)
        except ValueError:
            raise ConfigError(f"not a UUID: {a.uuid!r}", key="advertise.uuid") from None
    if a.enabled:
        for key in ("uuid", "major", "key_file"):
            if getattr(a, key) is None:
                raise ConfigError(
                    "required when [advertise] enabled is true", key=f"advertise.{key}"
                )


def store_beacon_heard(config: ScannerConfig) -> tuple[str, int] | None:
    """The store beacon (canonical lower-case UUID, major) whose windows the box reports as
    ``store_beacon``: with ``[advertise] hear`` and the table's uuid and major, whether or not
    the box broadcasts itself."""
    a = config.advertise
    if not a.hear or a.uuid is None or a.major is None:
        return None
    return str(uuid.UUID(a.uuid)), a.major


def load_config(toml_text: str, env: Mapping[str, str]) -> ScannerConfig:
    """Parse and validate a scanner configuration.

    Raises ConfigError naming the offending key.
    """
    try:
        data = tomllib.loads(toml_text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"configuration file is not valid TOML: {exc}", key=None) from exc
    values: dict[str, Any] = {}
    for key, value in data.items():
        if key not in _FIELDS:
            raise ConfigError("unknown configuration key", key=key)
        if key == "nodes":
            values[key] = _nodes(value)
        elif key != "advertise":
            values[key] = _check_type(key, value)
    advertise = _advertise(data.get("advertise", {}), env)
    if advertise != AdvertiseConfig():
        values["advertise"] = advertise
    for name, raw in env.items():
        if not name.startswith(ENV_PREFIX) or name.startswith(ADVERTISE_ENV_PREFIX):
            continue
        key = name[len(ENV_PREFIX) :].lower()
        if key not in _FIELDS or key in ("nodes", "advertise"):
            raise ConfigError(f"unknown configuration key (from {name})", key=key)
        values[key] = _check_type(key, _coerce_env(key, raw))
    esphome = values.get("backend") == "esphome"
    if esphome:
        _check_esphome(values)
    elif "nodes" in values:
        raise ConfigError("only read with backend esphome", key="nodes")
    for key in _REQUIRED:
        if not values.get(key) and not (esphome and key == "scanner_id"):
            raise ConfigError("required, not set", key=key)
    _validate(values | {k: f.default for k, f in _FIELDS.items() if k not in values})
    if "log_level" in values:
        values["log_level"] = values["log_level"].upper()
    return ScannerConfig(**values)


def _check_esphome(values: dict[str, Any]) -> None:
    """With ESPHome nodes, each node is a box with its own scanner id and secret."""
    for key in PER_NODE_KEYS:
        if key in values:
            raise ConfigError(
                "set it in each [[nodes]] entry with backend esphome (each node is a box)",
                key=key,
            )
    if not values.get("nodes"):
        raise ConfigError("backend esphome needs at least one [[nodes]] entry", key="nodes")
    # The daemon fronting the nodes is no box itself: each node's own config carries its id.
    values["scanner_id"] = ""


def _validate(v: Mapping[str, Any]) -> None:
    url = v["server_url"]
    if not url.startswith(("http://", "https://")):
        raise ConfigError(
            f"must start with http:// or https://, got {url!r}",
            key="server_url",
        )
    if v["backend"] not in BACKENDS:
        raise ConfigError(f"must be one of {', '.join(BACKENDS)}", key="backend")
    if v["scanning_mode"] not in SCANNING_MODES:
        raise ConfigError(f"must be one of {', '.join(SCANNING_MODES)}", key="scanning_mode")
    if str(v["log_level"]).upper() not in LOG_LEVELS:
        raise ConfigError(f"must be one of {', '.join(LOG_LEVELS)}", key="log_level")
    if v["log_format"] not in LOG_FORMATS:
        raise ConfigError(f"must be one of {', '.join(LOG_FORMATS)}", key="log_format")
    if v["secret"] is None and v["secret_file"] is None and v["backend"] != "esphome":
        raise ConfigError("set secret or secret_file", key="secret")
    if v["secret"] is not None and v["secret_file"] is not None:
        raise ConfigError("set only one of secret and secret_file", key="secret")
    if v["backend"] == "replay" and not v["replay_file"]:
        raise ConfigError("required when backend is replay", key="replay_file")
    for key in (
        "window_s",
        "outbox_max_rows",
        "outbox_max_bytes",
        "outbox_max_age_s",
        "batch_max_windows",
        "upload_interval_s",
        "heartbeat_interval_s",
        "watchdog_timeout_s",
    ):
        _positive(v, key)
    if v["batch_max_windows"] > MAX_BATCH_WINDOWS:
        raise ConfigError(f"at most {MAX_BATCH_WINDOWS} (server limit)", key="batch_max_windows")
    if not 0 <= v["allowlist_wait_s"] <= MAX_ALLOWLIST_WAIT_S:
        raise ConfigError(
            f"must be between 0 and {MAX_ALLOWLIST_WAIT_S:g}",
            key="allowlist_wait_s",
        )
    if v["replay_speed"] < 0:
        raise ConfigError("must be 0 (as fast as possible) or more", key="replay_speed")
    if v["advertise"].enabled and v["backend"] != "bluez":
        raise ConfigError(
            "the store beacon is broadcast by a BlueZ adapter: only with backend bluez",
            key="advertise.enabled",
        )
