"""Scanner configuration: a TOML file plus ``BULLE_SCANNER_<KEY>`` environment overrides (pure)."""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from scanner.errors import ConfigError

Backend = Literal["bluez", "simulated", "replay"]
ScanningMode = Literal["active", "passive"]

# Prefix of the environment variables that override file keys (systemd Environment= lines).
ENV_PREFIX = "BULLE_SCANNER_"
# Backends the daemon knows: real radio, stdin-fed simulation, recorded file.
BACKENDS: tuple[str, ...] = ("bluez", "simulated", "replay")
# BlueZ scanning modes bleak supports.
SCANNING_MODES: tuple[str, ...] = ("active", "passive")
# Python logging level names accepted for log_level.
LOG_LEVELS: tuple[str, ...] = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
# Startup wait for the first allowlist; longer only delays scanning (systemd allows 90 s).
MAX_ALLOWLIST_WAIT_S = 60.0
# The server accepts at most 5,000 windows per batch (docs/api.md).
MAX_BATCH_WINDOWS = 5000


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
        values[key] = _check_type(key, value)
    for name, raw in env.items():
        if not name.startswith(ENV_PREFIX):
            continue
        key = name[len(ENV_PREFIX) :].lower()
        if key not in _FIELDS:
            raise ConfigError(f"unknown configuration key (from {name})", key=key)
        values[key] = _check_type(key, _coerce_env(key, raw))
    for key in _REQUIRED:
        if not values.get(key):
            raise ConfigError("required, not set", key=key)
    _validate(values | {k: f.default for k, f in _FIELDS.items() if k not in values})
    if "log_level" in values:
        values["log_level"] = values["log_level"].upper()
    return ScannerConfig(**values)


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
    if v["secret"] is None and v["secret_file"] is None:
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
