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


ADVERTISE = """
[advertise]
enabled = true
uuid = "b0110000-0000-4000-8000-00000000c4a1"
major = 42
key_file = "/etc/beacon-scanner/store-beacon-key"
"""


def test_advertise_table_and_its_environment() -> None:
    from scanner.config import AdvertiseConfig

    assert load_config(BASE, {}).advertise == AdvertiseConfig()
    cfg = load_config(BASE + ADVERTISE, {"BULLE_SCANNER_ADVERTISE_MAJOR": "7"})
    assert cfg.advertise == AdvertiseConfig(
        enabled=True,
        uuid="b0110000-0000-4000-8000-00000000c4a1",
        major=7,
        key_file="/etc/beacon-scanner/store-beacon-key",
    )
    env = {
        "BULLE_SCANNER_ADVERTISE_ENABLED": "true",
        "BULLE_SCANNER_ADVERTISE_UUID": "b0110000-0000-4000-8000-00000000c4a1",
        "BULLE_SCANNER_ADVERTISE_MAJOR": "3",
        "BULLE_SCANNER_ADVERTISE_KEY_FILE": "/run/credentials/x/store-beacon-key",
        "BULLE_SCANNER_ADVERTISE_TX_POWER": "-8",
    }
    from_env = load_config(BASE, env).advertise
    assert (from_env.enabled, from_env.major, from_env.tx_power) == (True, 3, -8)
    assert from_env.measured_power == -59


@pytest.mark.parametrize(
    ("change", "key"),
    [
        (("major = 42", "major = 70000"), "advertise.major"),
        (("major = 42", 'major = "x"'), "advertise.major"),
        (("major = 42\n", ""), "advertise.major"),
        (('uuid = "b0110000-0000-4000-8000-00000000c4a1"', 'uuid = "nope"'), "advertise.uuid"),
        (('key_file = "/etc/beacon-scanner/store-beacon-key"', ""), "advertise.key_file"),
        (("enabled = true", "enabled = 1"), "advertise.enabled"),
        (("enabled = true", "enabled = true\nmeasured_power = 3"), "advertise.measured_power"),
        (("enabled = true", "enabled = true\ntx_power = 99"), "advertise.tx_power"),
        (("enabled = true", "enabled = true\ncolour = 1"), "advertise.colour"),
    ],
)
def test_advertise_errors_name_the_key(change: tuple[str, str], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(BASE + ADVERTISE.replace(*change), {})
    assert info.value.key == key


def test_advertise_needs_the_bluez_backend() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(BASE + 'backend = "simulated"\n' + ADVERTISE, {})
    assert info.value.key == "advertise.enabled"
    # Disabled, the table may stay in a simulated box's file.
    text = BASE + 'backend = "simulated"\n' + ADVERTISE.replace("enabled = true", "enabled = false")
    assert not load_config(text, {}).advertise.enabled
    with pytest.raises(ConfigError) as info:
        load_config(BASE, {"BULLE_SCANNER_ADVERTISE_COLOUR": "red"})
    assert info.value.key == "advertise.colour"


def test_hearing_the_other_boxes_follows_the_advertise_table() -> None:
    from scanner.config import store_beacon_heard

    assert store_beacon_heard(load_config(BASE, {})) is None
    upper = ADVERTISE.replace(
        "b0110000-0000-4000-8000-00000000c4a1", "B0110000-0000-4000-8000-00000000C4A1"
    )
    cfg = load_config(BASE + upper, {})
    assert cfg.advertise.hear
    assert store_beacon_heard(cfg) == ("b0110000-0000-4000-8000-00000000c4a1", 42)
    off = load_config(BASE + ADVERTISE, {"BULLE_SCANNER_ADVERTISE_HEAR": "false"})
    assert store_beacon_heard(off) is None
    # A box that does not broadcast (an ESPHome node) may still listen: uuid and major only.
    listen_only = (
        BASE
        + 'backend = "simulated"\n[advertise]\n'
        + 'uuid = "b0110000-0000-4000-8000-00000000c4a1"\nmajor = 42\n'
    )
    assert store_beacon_heard(load_config(listen_only, {})) == (
        "b0110000-0000-4000-8000-00000000c4a1",
        42,
    )
    with pytest.raises(ConfigError) as info:
        load_config(BASE + ADVERTISE + "hear = 1\n", {})
    assert info.value.key == "advertise.hear"
