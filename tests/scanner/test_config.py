"""Config: defaults, env overrides, errors that name the key."""

from __future__ import annotations

import pytest

from scanner.config import ScannerConfig, load_config
from scanner.errors import ConfigError

BASE = """
scanner_id = "s-entrance"
store_id = "demo-store"
server_url = "http://127.0.0.1:8080"
secret = "s3cret"
"""


def test_defaults() -> None:
    cfg = load_config(BASE, {})
    assert cfg == ScannerConfig(
        scanner_id="s-entrance",
        store_id="demo-store",
        server_url="http://127.0.0.1:8080",
        secret="s3cret",
    )
    assert cfg.window_s == 1.0
    assert cfg.outbox_max_bytes == 50 * 1024 * 1024
    assert cfg.backend == "bluez"


def test_env_overrides_with_types() -> None:
    cfg = load_config(
        BASE,
        {
            "BULLE_SCANNER_WINDOW_S": "2.5",
            "BULLE_SCANNER_OUTBOX_MAX_ROWS": "10",
            "BULLE_SCANNER_LEGACY_IBEACON": "true",
            "BULLE_SCANNER_ADAPTER": "hci1",
            "BULLE_SCANNER_LOG_LEVEL": "debug",
            "UNRELATED": "x",
        },
    )
    assert (cfg.window_s, cfg.outbox_max_rows, cfg.legacy_ibeacon) == (2.5, 10, True)
    assert (cfg.adapter, cfg.log_level) == ("hci1", "DEBUG")


@pytest.mark.parametrize(
    ("extra", "env", "key"),
    [
        ('colour = "red"\n', {}, "colour"),
        ('backend = "usb"\n', {}, "backend"),
        ('scanning_mode = "loud"\n', {}, "scanning_mode"),
        ("window_s = 0\n", {}, "window_s"),
        ('window_s = "fast"\n', {}, "window_s"),
        ("outbox_max_rows = 1.5\n", {}, "outbox_max_rows"),
        ("batch_max_windows = 6000\n", {}, "batch_max_windows"),
        ("allowlist_wait_s = 61\n", {}, "allowlist_wait_s"),
        ('log_level = "LOUD"\n', {}, "log_level"),
        ('backend = "replay"\n', {}, "replay_file"),
        ("replay_speed = -1\n", {}, "replay_speed"),
        ("", {"BULLE_SCANNER_WINDOW_S": "soon"}, "window_s"),
        ("", {"BULLE_SCANNER_LEGACY_IBEACON": "maybe"}, "legacy_ibeacon"),
        ("", {"BULLE_SCANNER_NOPE": "1"}, "nope"),
        ('secret_file = "/x"\n', {}, "secret"),
    ],
)
def test_errors_name_the_key(extra: str, env: dict[str, str], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(BASE + extra, env)
    assert info.value.key == key
    assert str(info.value).startswith(f"{key}: ")


def test_required_keys() -> None:
    with pytest.raises(ConfigError) as info:
        load_config('store_id = "x"\nserver_url = "http://a"\nsecret = "s"\n', {})
    assert info.value.key == "scanner_id"
    with pytest.raises(ConfigError) as info:
        load_config(BASE.replace("http://127.0.0.1:8080", "ftp://x"), {})
    assert info.value.key == "server_url"


def test_bad_toml() -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config("scanner_id = ", {})


def test_secret_value_not_echoed() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(BASE.replace('secret = "s3cret"', "secret = 123456"), {})
    assert info.value.key == "secret"
    assert "123456" not in str(info.value)


def test_every_key_documented() -> None:
    import dataclasses
    from pathlib import Path

    doc = (Path(__file__).parents[2] / "docs" / "operations.md").read_text(encoding="utf-8")
    for f in dataclasses.fields(ScannerConfig):
        assert f"| `{f.name}` |" in doc, f.name
