"""Config of the esphome backend: [[nodes]] entries, each a box; errors that name the key."""

from __future__ import annotations

import base64
import importlib.util
from pathlib import Path

import pytest

from scanner.config import ESPHOME_API_PORT, NodeConfig, load_config
from scanner.errors import ConfigError
from scanner.nodes import node_config, node_outbox_path
from tests.support import require_system_component

BASE = """
store_id = "demo-store"
server_url = "http://127.0.0.1:8080"
backend = "esphome"
outbox_path = "/var/lib/beacon-scanner/outbox.sqlite"
"""
NODE_A = """
[[nodes]]
scanner_id = "s-entrance"
host = "192.168.1.40"
secret_file = "/etc/beacon-scanner/s-entrance.secret"
encryption_key_file = "/etc/beacon-scanner/s-entrance.key"
"""
NODE_B = """
[[nodes]]
scanner_id = "s-machines"
host = "bulle-node-2.local"
port = 6054
name = "bulle-node-2"
secret = "s3cret"
"""


def test_nodes_are_read_with_their_defaults() -> None:
    cfg = load_config(BASE + NODE_A + NODE_B, {})
    assert cfg.backend == "esphome"
    assert cfg.nodes == (
        NodeConfig(
            scanner_id="s-entrance",
            host="192.168.1.40",
            port=ESPHOME_API_PORT,
            secret_file="/etc/beacon-scanner/s-entrance.secret",
            encryption_key_file="/etc/beacon-scanner/s-entrance.key",
        ),
        NodeConfig(
            scanner_id="s-machines",
            host="bulle-node-2.local",
            port=6054,
            name="bulle-node-2",
            secret="s3cret",
        ),
    )


def test_each_node_gets_its_own_identity_and_outbox() -> None:
    cfg = load_config(BASE + NODE_A + NODE_B, {})
    one = node_config(cfg, cfg.nodes[1])
    assert one.scanner_id == "s-machines"
    assert one.secret == "s3cret"
    assert one.secret_file is None
    assert one.outbox_path == "/var/lib/beacon-scanner/outbox.s-machines.sqlite"
    assert one.window_s == cfg.window_s
    assert node_outbox_path("/tmp/q.db", "s-1") == "/tmp/q.s-1.db"


@pytest.mark.parametrize(
    ("text", "key"),
    [
        (BASE, "nodes"),
        (BASE + 'scanner_id = "s-x"\n' + NODE_A, "scanner_id"),
        (BASE + 'secret = "x"\n' + NODE_A, "secret"),
        (BASE + NODE_A + NODE_A, "nodes"),
        (BASE + "[[nodes]]\nhost = 'h'\nsecret = 'x'\n", "nodes[0].scanner_id"),
        (BASE + "[[nodes]]\nscanner_id = 's'\nsecret = 'x'\n", "nodes[0].host"),
        (BASE + "[[nodes]]\nscanner_id = 's'\nhost = 'h'\n", "nodes[0].secret"),
        (
            BASE + NODE_A + "[[nodes]]\nscanner_id = 's'\nhost = 'h'\nsecret = 'x'\nport = 0\n",
            "nodes[1].port",
        ),
        (
            BASE + "[[nodes]]\nscanner_id = 's'\nhost = 'h'\nsecret = 'x'\nkey = 'k'\n",
            "nodes[0].key",
        ),
        (BASE + "[[nodes]]\nscanner_id = 's'\nhost = 7\nsecret = 'x'\n", "nodes[0].host"),
        (BASE.replace("esphome", "bluez") + 'scanner_id = "s"\nsecret = "x"\n' + NODE_A, "nodes"),
    ],
)
def test_mistakes_name_the_key(text: str, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(text, {})
    assert info.value.key == key


def test_nodes_cannot_come_from_the_environment() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(BASE + NODE_A, {"BULLE_SCANNER_NODES": "x"})
    assert info.value.key == "nodes"


def test_encryption_key_file_is_checked(tmp_path: Path) -> None:
    require_system_component("aioesphomeapi", importlib.util.find_spec("aioesphomeapi") is not None)
    from scanner.esphome import read_encryption_key

    good = tmp_path / "good.key"
    good.write_text(base64.b64encode(bytes(range(32))).decode() + "\n")
    assert read_encryption_key(str(good), "k") == base64.b64encode(bytes(range(32))).decode()
    bad = tmp_path / "bad.key"
    bad.write_text("not a key")
    with pytest.raises(ConfigError, match="does not hold an API encryption key") as info:
        read_encryption_key(str(bad), "nodes[0].encryption_key_file")
    assert info.value.key == "nodes[0].encryption_key_file"
    with pytest.raises(ConfigError, match="cannot read"):
        read_encryption_key(str(tmp_path / "missing.key"), "k")


def test_a_node_secret_that_cannot_be_read_is_named(tmp_path: Path) -> None:
    require_system_component("aioesphomeapi", importlib.util.find_spec("aioesphomeapi") is not None)
    from scanner.nodes import build_daemons

    text = BASE.replace("/var/lib/beacon-scanner", str(tmp_path)) + NODE_B + NODE_A
    cfg = load_config(text, {})
    with pytest.raises(ConfigError) as info:
        build_daemons(cfg)
    assert info.value.key == "nodes[1].secret_file"
    assert "cannot read /etc/beacon-scanner/s-entrance.secret" in str(info.value)
