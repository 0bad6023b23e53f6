"""Server configuration (pure): a TOML document plus environment overrides, validated.

Every key is documented in docs/operations.md; `tests/test_docs.py` checks that it is.
Environment variables `BULLE_<KEY>` (upper case) override the file, so a systemd unit or a
container can set secrets without writing them to disk.
"""

from __future__ import annotations

import tomllib
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import limits

from store_beacon import MAX_MAJOR
from store_server.errors import ConfigError
from store_server.throttle import parse_networks

ENV_PREFIX = "BULLE_"

# A 24 h visit retention is the design's default: long enough for the day's operations,
# short enough that no movement history builds up.
DEFAULT_RETENTION_S = 24 * 3600
# The retention purge runs every ten minutes: a record is gone at most ten minutes after its
# retention ends, at the cost of one short delete transaction.
DEFAULT_PURGE_INTERVAL_S = 600
# Anonymous enrollments per client address: a family on the shop's Wi-Fi enrolls a few
# phones; a script enrolling hundreds a second (each a permanent row and key) is refused.
DEFAULT_ENROLL_RATE_LIMIT = "20/minute"
# Anonymous enrollments from all addresses together: far above a shop's new customers.
DEFAULT_ENROLL_RATE_LIMIT_TOTAL = "1200/hour"
# An enrollment that never gave any consent is deleted after a week: time enough to read the
# consent texts and decide, not a store of keys nobody uses.
DEFAULT_UNCONSENTED_TTL_S = 7 * 24 * 3600
# Sessions of staff tablets last a working day; they are revoked server-side at logout.
DEFAULT_SESSION_TTL_S = 12 * 3600
# Eddystone-EID rotation exponent: a new identifier every 2**9 = 512 s (the specification's
# recommended order of magnitude: short enough to defeat tracking, long enough to resolve).
DEFAULT_ROTATION_EXPONENT = 9
# Accept the previous and next rotation window as well as the current one (phone clock drift).
DEFAULT_SKEW_WINDOWS = 1
# A signed scanner request more than 60 s away from the server clock is refused (replay bound).
DEFAULT_SIGNATURE_TOLERANCE_S = 60
# Chain mode: a store server whose view of consents is older than this (its last catch-up
# with the shared consent log) shows no new card and hands out no allowlist (fail closed).
# Thirty seconds: ten of the feed's polls, far above a healthy lag, well under a visit.
DEFAULT_CONSENT_STALENESS_S = 30
# Largest request body accepted from anyone (a full scanner batch is well below this).
DEFAULT_MAX_BODY_BYTES = 1024 * 1024
# Refused proof-of-presence check-ins per customer: an honest app is refused at most once or
# twice a visit (a minor that rotated); a forger guessing 16-bit minors gets 30 tries an hour,
# about 0.4 % an hour to hit one of 4 boxes' 8 valid minors.
DEFAULT_PROOF_RATE_LIMIT = "6/minute;30/hour"
# Proof check-ins from one client address: an app posts one a second for up to 30 s after the
# phone enters the store's beacon region, and the shop's Wi-Fi puts many customers behind one.
DEFAULT_PROOF_RATE_LIMIT_ADDRESS = "600/minute"
# The key authority computes missing temporary keys every minute: a customer whose first
# consent comes long after enrollment is recognised within a minute or so.
DEFAULT_CHAIN_KEYS_INTERVAL_S = 60


ENV_ONLY = ("database_password",)
"""Secrets read only from the environment (or their ``*_file`` setting), never the file."""


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """Validated server settings. See docs/operations.md for each key."""

    host: str = "127.0.0.1"
    port: int = 8080
    db_path: str = "var/store.sqlite"
    database_url: str = ""
    database_password_file: str = ""
    database_password: str = field(default="", repr=False)
    store_file: str = "seeds/store.toml"
    master_key: str = ""
    master_key_file: str = ""
    public_origin: str = ""
    cookie_secure: bool = True
    session_ttl_s: int = DEFAULT_SESSION_TTL_S
    retention_s: int = DEFAULT_RETENTION_S
    purge_interval_s: int = DEFAULT_PURGE_INTERVAL_S
    unconsented_ttl_s: int = DEFAULT_UNCONSENTED_TTL_S
    enroll_rate_limit: str = DEFAULT_ENROLL_RATE_LIMIT
    enroll_rate_limit_total: str = DEFAULT_ENROLL_RATE_LIMIT_TOTAL
    rotation_exponent: int = DEFAULT_ROTATION_EXPONENT
    skew_windows: int = DEFAULT_SKEW_WINDOWS
    signature_tolerance_s: int = DEFAULT_SIGNATURE_TOLERANCE_S
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    consent_staleness_s: int = DEFAULT_CONSENT_STALENESS_S
    legacy_ibeacon: bool = False
    # The key is a secret: never in a repr (and so never in a log line or a traceback).
    store_beacon_key: str = field(default="", repr=False)
    store_beacon_key_file: str = ""
    store_beacon_uuid: str = ""
    store_beacon_major: int = 0
    proof_rate_limit: str = DEFAULT_PROOF_RATE_LIMIT
    proof_rate_limit_address: str = DEFAULT_PROOF_RATE_LIMIT_ADDRESS
    calibration_from_check_ins: bool = True
    log_level: str = "INFO"
    log_format: str = "text"
    metrics_listen: str = ""
    metrics_token: str = ""
    extra_origins: tuple[str, ...] = field(default=())
    trusted_proxies: tuple[str, ...] = field(default=())
    chain_mode: bool = False
    key_authority: bool = False
    authority_public_key_file: str = ""
    authority_key_file: str = ""
    chain_keys_interval_s: int = DEFAULT_CHAIN_KEYS_INTERVAL_S

    def with_overrides(self, **changes: Any) -> ServerConfig:
        return replace(self, **changes)


_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
_LOG_FORMATS = ("text", "json")
_LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost")
"""Hosts where the metrics listener may run without a token (only this machine reaches it)."""
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def _coerce(key: str, raw: object, default: object) -> object:
    """Convert one raw value (TOML value or environment string) to the type of `default`."""
    if isinstance(default, bool):
        if isinstance(raw, bool):
            return raw
        if isinstance(raw, str) and raw.lower() in _TRUE + _FALSE:
            return raw.lower() in _TRUE
        raise ConfigError(f"{key}: expected true or false, got {raw!r}", key=key)
    if isinstance(default, int):
        if isinstance(raw, bool):
            raise ConfigError(f"{key}: expected an integer, got {raw!r}", key=key)
        if isinstance(raw, int):
            return raw
        if isinstance(raw, str):
            try:
                return int(raw)
            except ValueError:
                pass
        raise ConfigError(f"{key}: expected an integer, got {raw!r}", key=key)
    if isinstance(default, tuple):
        if isinstance(raw, str):
            return tuple(part.strip() for part in raw.split(",") if part.strip())
        if isinstance(raw, list) and all(isinstance(item, str) for item in raw):
            return tuple(raw)
        raise ConfigError(f"{key}: expected a list of strings, got {raw!r}", key=key)
    if isinstance(raw, str):
        return raw
    raise ConfigError(f"{key}: expected a string, got {raw!r}", key=key)


def _check(config: ServerConfig) -> ServerConfig:
    if not 0 < config.port < 65536:
        raise ConfigError(f"port: {config.port} is not a TCP port (1-65535)", key="port")
    if not 0 <= config.rotation_exponent <= 15:
        raise ConfigError("rotation_exponent: must be between 0 and 15", key="rotation_exponent")
    if not 0 <= config.skew_windows <= 3:
        raise ConfigError("skew_windows: must be between 0 and 3", key="skew_windows")
    for key in (
        "session_ttl_s",
        "retention_s",
        "purge_interval_s",
        "unconsented_ttl_s",
        "signature_tolerance_s",
        "max_body_bytes",
        "chain_keys_interval_s",
        "consent_staleness_s",
    ):
        if getattr(config, key) <= 0:
            raise ConfigError(f"{key}: must be positive", key=key)
    if config.log_level.upper() not in _LOG_LEVELS:
        raise ConfigError(f"log_level: must be one of {', '.join(_LOG_LEVELS)}", key="log_level")
    for key in (
        "enroll_rate_limit",
        "enroll_rate_limit_total",
        "proof_rate_limit",
        "proof_rate_limit_address",
    ):
        try:
            limits.parse_many(getattr(config, key))
        except ValueError:
            raise ConfigError(
                f"{key}: not a rate such as '10/minute' or '10/minute;100/day'", key=key
            ) from None
    try:
        parse_networks(config.trusted_proxies)
    except ValueError as exc:
        raise ConfigError(f"trusted_proxies: {exc}", key="trusted_proxies") from None
    if not config.db_path:
        raise ConfigError("db_path: must not be empty", key="db_path")
    _check_database_url(config)
    if config.master_key.strip() and config.master_key_file:
        raise ConfigError(
            "master_key_file: set master_key or master_key_file, not both", key="master_key_file"
        )
    _check_store_beacon(config)
    if config.key_authority and not config.chain_mode:
        raise ConfigError(
            "key_authority: only a chain's server is a key authority (set chain_mode)",
            key="key_authority",
        )
    if config.key_authority and not config.authority_key_file:
        raise ConfigError(
            "authority_key_file: a key authority needs its private key file",
            key="authority_key_file",
        )
    if config.chain_mode and not (config.authority_public_key_file or config.authority_key_file):
        raise ConfigError(
            "authority_public_key_file: a chain's server seals new identity keys to the key"
            " authority: set the authority's public key file",
            key="authority_public_key_file",
        )
    if config.log_format not in _LOG_FORMATS:
        raise ConfigError(f"log_format: must be one of {', '.join(_LOG_FORMATS)}", key="log_format")
    if config.metrics_listen:
        host, _ = metrics_address(config.metrics_listen)
        if host not in _LOOPBACK_HOSTS and not config.metrics_token:
            raise ConfigError(
                f"metrics_listen: {host} is reachable from other machines: listen on"
                " 127.0.0.1 or set metrics_token",
                key="metrics_listen",
            )
    return replace(config, log_level=config.log_level.upper())


def _check_store_beacon(config: ServerConfig) -> None:
    """The store beacon settings' shapes (the key itself is checked where it is read)."""
    if config.store_beacon_key.strip() and config.store_beacon_key_file:
        raise ConfigError(
            "store_beacon_key_file: set store_beacon_key or store_beacon_key_file, not both",
            key="store_beacon_key_file",
        )
    if not 0 <= config.store_beacon_major <= MAX_MAJOR:
        raise ConfigError(
            f"store_beacon_major: must be between 0 and {MAX_MAJOR}", key="store_beacon_major"
        )
    if config.store_beacon_uuid:
        try:
            uuid.UUID(config.store_beacon_uuid)
        except ValueError:
            raise ConfigError(
                "store_beacon_uuid: not a UUID (e.g. 6f1e2d3c-0000-4000-8000-00000000b011)",
                key="store_beacon_uuid",
            ) from None
    elif config.store_beacon_key.strip() or config.store_beacon_key_file:
        raise ConfigError(
            "store_beacon_uuid: required with a store beacon key (the chain's iBeacon UUID)",
            key="store_beacon_uuid",
        )


def _check_database_url(config: ServerConfig) -> None:
    """``database_url`` names a PostgreSQL database, without a password in it."""
    if config.database_password and config.database_password_file:
        raise ConfigError(
            "database_password_file: set BULLE_DATABASE_PASSWORD or database_password_file,"
            " not both",
            key="database_password_file",
        )
    if not config.database_url:
        return
    try:
        parts = urlsplit(config.database_url)
        has_password = parts.password is not None or "password" in parse_qs(parts.query)
    except ValueError:
        parts, has_password = None, False
    if parts is None or parts.scheme not in ("postgresql", "postgres"):
        raise ConfigError(
            "database_url: expected postgresql://USER@HOST:PORT/DATABASE", key="database_url"
        )
    if has_password:
        # Never echo the URL: it holds the password.
        raise ConfigError(
            "database_url: must not hold a password: put it in database_password_file or"
            " BULLE_DATABASE_PASSWORD",
            key="database_url",
        )


def metrics_address(value: str) -> tuple[str, int]:
    """Split ``metrics_listen`` (``HOST:PORT``, ``[::1]:PORT``) into host and port."""
    host, sep, port_text = value.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    try:
        port = int(port_text)
    except ValueError:
        port = -1
    if not sep or not host or not 0 <= port < 65536:
        raise ConfigError(
            f"metrics_listen: expected HOST:PORT (e.g. 127.0.0.1:9464), got {value!r}",
            key="metrics_listen",
        )
    return host, port


def load_config(toml_text: str, env: Mapping[str, str]) -> ServerConfig:
    """Parse `toml_text`, apply `BULLE_*` overrides from `env`, validate; raise ConfigError."""
    try:
        data = tomllib.loads(toml_text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"configuration file is not valid TOML: {exc}") from exc
    defaults = ServerConfig()
    known = {f.name: getattr(defaults, f.name) for f in fields(ServerConfig)}
    values: dict[str, Any] = {}
    for key, raw in data.items():
        if key not in known:
            raise ConfigError(f"{key}: unknown setting (see docs/operations.md)", key=key)
        if key in ENV_ONLY:
            raise ConfigError(
                f"{key}: not in the settings file: set {ENV_PREFIX}{key.upper()} or {key}_file",
                key=key,
            )
        values[key] = _coerce(key, raw, known[key])
    for key, default in known.items():
        env_value = env.get(ENV_PREFIX + key.upper())
        if env_value is not None:
            values[key] = _coerce(key, env_value, default)
    return _check(replace(defaults, **values))


def config_keys() -> list[str]:
    """Every setting name, for documentation checks."""
    return [f.name for f in fields(ServerConfig)]


def resolve_paths(config: ServerConfig, base: Path) -> ServerConfig:
    """``db_path`` and ``store_file`` made absolute, a relative one read from ``base`` (the
    settings file's folder), so that a command works from any working directory."""
    return replace(
        config,
        db_path=str(resolve_path(base, config.db_path)),
        store_file=str(resolve_path(base, config.store_file)),
        master_key_file=str(resolve_path(base, config.master_key_file))
        if config.master_key_file
        else "",
        store_beacon_key_file=str(resolve_path(base, config.store_beacon_key_file))
        if config.store_beacon_key_file
        else "",
        database_password_file=str(resolve_path(base, config.database_password_file))
        if config.database_password_file
        else "",
        authority_public_key_file=str(resolve_path(base, config.authority_public_key_file))
        if config.authority_public_key_file
        else "",
        authority_key_file=str(resolve_path(base, config.authority_key_file))
        if config.authority_key_file
        else "",
    )


def resolve_path(base: Path, value: str) -> Path:
    path = Path(value)
    return path if path.is_absolute() else base / path
