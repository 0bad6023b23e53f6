"""Server configuration loading (store_server.config): defaults, overrides, errors name the key."""

from __future__ import annotations

import pytest

from store_server.config import (
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_RETENTION_S,
    ServerConfig,
    config_keys,
    load_config,
)
from store_server.errors import ConfigError


def test_defaults() -> None:
    config = load_config("", {})
    assert config == ServerConfig()
    assert config.host == "127.0.0.1"
    assert config.port == 8080
    assert config.retention_s == DEFAULT_RETENTION_S == 24 * 3600
    assert config.max_body_bytes == DEFAULT_MAX_BODY_BYTES
    assert config.cookie_secure is True
    assert config.legacy_ibeacon is False
    assert config.rotation_exponent == 9
    assert config.log_level == "INFO"


def test_file_values() -> None:
    config = load_config(
        'port = 9000\ncookie_secure = false\nextra_origins = ["https://a.example"]\n'
        'db_path = "/tmp/x.sqlite"\n',
        {},
    )
    assert config.port == 9000
    assert config.cookie_secure is False
    assert config.extra_origins == ("https://a.example",)
    assert config.db_path == "/tmp/x.sqlite"


def test_env_overrides_file() -> None:
    config = load_config("port = 9000\n", {"BULLE_PORT": "9100", "PORT": "1"})
    assert config.port == 9100
    config = load_config(
        "", {"BULLE_COOKIE_SECURE": "off", "BULLE_EXTRA_ORIGINS": "https://a.example, https://b"}
    )
    assert config.cookie_secure is False
    assert config.extra_origins == ("https://a.example", "https://b")


def test_unknown_key_names_the_key() -> None:
    with pytest.raises(ConfigError) as info:
        load_config("prot = 8080\n", {})
    assert info.value.key == "prot"
    assert "prot" in info.value.message


@pytest.mark.parametrize(
    ("toml", "env", "key"),
    [
        ('port = "eighty"\n', {}, "port"),
        ("port = true\n", {}, "port"),
        ("", {"BULLE_PORT": "80a"}, "port"),
        ('cookie_secure = "maybe"\n', {}, "cookie_secure"),
        ("host = 127\n", {}, "host"),
        ("extra_origins = [1, 2]\n", {}, "extra_origins"),
        ("retention_s = 1.5\n", {}, "retention_s"),
    ],
)
def test_wrong_type_names_the_key(toml: str, env: dict[str, str], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(toml, env)
    assert info.value.key == key
    assert info.value.message.startswith(f"{key}:")


@pytest.mark.parametrize("port", [0, 65536, -1, 70000])
def test_bad_port(port: int) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(f"port = {port}\n", {})
    assert info.value.key == "port"
    assert str(port) in info.value.message


@pytest.mark.parametrize("port", [1, 65535])
def test_port_bounds_accepted(port: int) -> None:
    assert load_config("", {"BULLE_PORT": str(port)}).port == port


@pytest.mark.parametrize(
    ("toml", "key"),
    [
        ("rotation_exponent = 16\n", "rotation_exponent"),
        ("skew_windows = 4\n", "skew_windows"),
        ("retention_s = 0\n", "retention_s"),
        ("max_body_bytes = -1\n", "max_body_bytes"),
        ('db_path = ""\n', "db_path"),
        ('log_level = "verbose"\n', "log_level"),
    ],
)
def test_out_of_range_names_the_key(toml: str, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(toml, {})
    assert info.value.key == key


@pytest.mark.parametrize("level", ["debug", "Warning", "ERROR", "info"])
def test_log_level_normalised(level: str) -> None:
    assert load_config(f'log_level = "{level}"\n', {}).log_level == level.upper()
    assert load_config("", {"BULLE_LOG_LEVEL": level}).log_level == level.upper()


def test_invalid_toml() -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config("port = = 1\n", {})


def test_config_keys_cover_every_field() -> None:
    keys = config_keys()
    assert "master_key" in keys
    assert "port" in keys
    assert len(keys) == len(set(keys)) == len(ServerConfig.__dataclass_fields__)
