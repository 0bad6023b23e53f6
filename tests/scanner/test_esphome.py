"""ESPHome nodes: fake nodes speaking ESPHome's real native API on 127.0.0.1 (lab.esphome_node,
built from aioesphomeapi's own messages and frame writers, plaintext and noise-encrypted), the
daemon's real client, handshake, subscription and reconnection code, and the real store server.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import importlib.util
import json
import logging
import secrets
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from scanner.config import NodeConfig
from scanner.records import AdvertRecord, parse_record
from store_server.views.staff import cookie_name
from tests.server.conftest import STORE_ID, Harness, bearer, server
from tests.support import require_system_component

from .conftest import wait_until

__all__ = ["server"]  # the fixture, imported so that this module can use it

HAVE_LIBRARY = importlib.util.find_spec("aioesphomeapi") is not None
if HAVE_LIBRARY:
    from lab.esphome_node import FakeNode, RawAdvert, raw_advert
    from scanner.ad_structures import encode_ad_structures
    from scanner.esphome import NodeSource

pytestmark = pytest.mark.esphome

CAPTURES = Path(__file__).resolve().parents[2] / "seeds" / "captures" / "mixed.jsonl"
EDDYSTONE = "0000feaa-0000-1000-8000-00805f9b34fb"
# Generous bounds for a loaded 2-core machine: conditions are waited on, never slept on.
CARD_WITHIN_S = 30.0
NODE_STATE_WITHIN_S = 30.0
# The client's backoff grows while a node is away (1.8 ** tries s): a node back after a slow
# minute may wait that long for the next attempt.
RECONNECT_WITHIN_S = 75.0
# Phones advertise about four times a second.
ADVERT_PERIOD_S = 0.25


@pytest.fixture(autouse=True)
def _library() -> None:
    require_system_component("aioesphomeapi (pip install 'bulle[esphome]')", HAVE_LIBRARY)


def new_key() -> str:
    return base64.b64encode(secrets.token_bytes(32)).decode()


def recorded() -> list[AdvertRecord]:
    """The shop's recorded foreign advertisements (seeds/captures)."""
    return [parse_record(line) for line in CAPTURES.read_text("utf-8").splitlines() if line]


def _aes(key: bytes, block: bytes) -> bytes:
    encryptor = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    return encryptor.update(block) + encryptor.finalize()


def eid(identity_key: bytes, k: int, counter: int) -> bytes:
    """Eddystone-EID from its specification, independently of the server's code."""
    tk = _aes(identity_key, bytes(11) + b"\xff\x00\x00" + (counter >> 16).to_bytes(2, "big"))
    block = bytes(11) + bytes((k,)) + (counter & ~((1 << k) - 1)).to_bytes(4, "big")
    return _aes(tk, block)[:8]


@dataclass
class Phone:
    """A phone broadcasting Eddystone-EID at wall-clock time."""

    address: int
    identity_key: bytes
    k: int
    offset_s: float
    customer_id: str | None = None
    token: str | None = None
    eids: set[bytes] = field(default_factory=set)

    def advert(self, rssi: int) -> RawAdvert:
        current = eid(self.identity_key, self.k, int(time.time() + self.offset_s) % 2**32)
        self.eids.add(current)
        data = encode_ad_structures({}, {EDDYSTONE: b"\x30\xec" + current})
        return RawAdvert(address=self.address, rssi=rssi, data=b"\x02\x01\x06" + data)

    def needles(self) -> list[bytes]:
        text = f"{self.address:012X}"
        colons = ":".join(text[i : i + 2] for i in range(0, 12, 2))
        found = [text.encode(), text.lower().encode(), colons.encode(), colons.lower().encode()]
        found.append(str(self.address).encode())
        for e in self.eids:
            found += [e, e.hex().encode(), e.hex().upper().encode()]
        return found


# -- the node connection alone --------------------------------------------------------------


@pytest.mark.parametrize("encrypted", [False, True], ids=["plaintext", "noise"])
async def test_a_node_delivers_every_advert_as_bluez_would(encrypted: bool) -> None:
    psk = new_key() if encrypted else None
    node = FakeNode("bulle-node-1", psk=psk)
    await node.start()
    got: list[AdvertRecord] = []
    cfg = NodeConfig(scanner_id="s-1", host="127.0.0.1", port=node.port)
    source = NodeSource(cfg, got.append, psk=psk)
    await source.start()
    try:
        await wait_until(lambda: node.subscribers == 1, NODE_STATE_WITHIN_S)
        records = recorded()
        assert node.send_adverts([raw_advert(r) for r in records]) == 1
        await wait_until(lambda: len(got) == len(records))
        for sent, received in zip(records, got, strict=True):
            assert received.address == sent.address
            assert received.rssi == sent.rssi
            assert received.manufacturer_data == sent.manufacturer_data
            assert received.service_data == sent.service_data
            assert received.local_name == sent.local_name
        assert source.heartbeat_node() == {
            "kind": "esphome",
            "host": f"127.0.0.1:{node.port}",
            "connected": True,
            "connects": 1,
            "error": None,
            "last_error": None,
        }
        assert source.adapter_state == "powered"
    finally:
        await source.stop()
        await node.stop()


async def test_wrong_key_is_refused_with_a_clear_message(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    node = FakeNode("bulle-node-1", psk=new_key())
    await node.start()
    key_file = tmp_path / "node.key"
    got: list[AdvertRecord] = []
    cfg = NodeConfig(
        scanner_id="s-1", host="127.0.0.1", port=node.port, encryption_key_file=str(key_file)
    )
    source = NodeSource(cfg, got.append, psk=new_key())
    await source.start()
    try:
        await wait_until(lambda: source.health.error == "wrong_key", NODE_STATE_WITHIN_S)
        assert node.handshake_failures >= 1
        assert node.subscribers == 0
        assert source.adapter_state == "off"
        lines = [r.getMessage() for r in caplog.records if r.name == "scanner.esphome"]
        assert lines == [
            f"node s-1: wrong API encryption key for the node at 127.0.0.1:{node.port}: "
            f"put its 'api: encryption: key' in {key_file}"
        ]
    finally:
        await source.stop()
        await node.stop()
    assert got == []


async def _check(config: Path) -> tuple[int, list[str]]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "scanner", "check", "--config", str(config),
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=90)
    assert proc.returncode is not None
    return proc.returncode, out.decode().splitlines()


@pytest.mark.timeout(300)
async def test_check_names_each_node_problem_in_one_line(server: Harness, tmp_path: Path) -> None:
    key, other = new_key(), new_key()
    good = FakeNode("good", psk=key)
    locked = FakeNode("locked", psk=key)
    plain = FakeNode("plain", bluetooth_proxy=False)
    for node in (good, locked, plain):
        await node.start()
    closed = FakeNode("gone")
    await closed.start()
    gone_port = closed.port
    await closed.stop()
    (tmp_path / "good.key").write_text(key)
    (tmp_path / "other.key").write_text(other)
    nodes = [
        ("s-good", good.port, "good.key"),
        ("s-gone", gone_port, None),
        ("s-locked", locked.port, "other.key"),
        ("s-plain", plain.port, None),
    ]
    lines = [
        f'store_id = "{STORE_ID}"',
        f'server_url = "{str(server.client.make_url("")).rstrip("/")}"',
        'backend = "esphome"',
        f'outbox_path = "{tmp_path / "outbox.sqlite"}"',
    ]
    for scanner_id, port, key_name in nodes:
        registered = await server.add_scanner(scanner_id)
        lines += [
            "[[nodes]]",
            f'scanner_id = "{scanner_id}"',
            'host = "127.0.0.1"',
            f"port = {port}",
            f'secret = "{registered.secret}"',
        ]
        if key_name is not None:
            lines.append(f'encryption_key_file = "{tmp_path / key_name}"')
    config = tmp_path / "scanner.toml"
    config.write_text("\n".join(lines) + "\n")
    try:
        status, out = await _check(config)
    finally:
        for node in (good, locked, plain):
            await node.stop()
    assert status == 1
    by_node = {line.split(":")[0]: line for line in out if " node " in line[:10]}
    assert by_node["OK   node s-good"].endswith("(good, encrypted), bluetooth_proxy ready")
    assert f"node unreachable at 127.0.0.1:{gone_port}" in by_node["FAIL node s-gone"]
    assert "wrong API encryption key" in by_node["FAIL node s-locked"]
    assert str(tmp_path / "other.key") in by_node["FAIL node s-locked"]
    assert "has no bluetooth_proxy" in by_node["FAIL node s-plain"]
    assert len([line for line in out if line.startswith("FAIL node")]) == 3
    # Every node is a box of its own at the server: each one's credentials are checked.
    for scanner_id, _, _ in nodes:
        assert f"OK   credentials accepted: scanner {scanner_id}" in out


# -- two nodes -> one daemon -> the real server -> the board --------------------------------


@dataclass
class Shop:
    server: Harness
    tmp: Path
    entrance: FakeNode
    machines: FakeNode
    sylvie: Phone
    nadia: Phone
    stranger: Phone
    daemon: asyncio.subprocess.Process | None = None
    log: Path | None = None
    board: list[dict[str, Any]] = field(default_factory=list)
    strengths: dict[str, int] = field(default_factory=dict)

    async def heartbeat(self, scanner_id: str) -> dict[str, Any] | None:
        rows = await self.server.rows(
            "SELECT last_heartbeat FROM scanners WHERE id = ?", [scanner_id]
        )
        raw = rows[0]["last_heartbeat"] if rows else None
        return json.loads(raw) if raw else None

    async def feed(self) -> None:
        """Every quarter second, what each node hears: the three phones and recorded frames."""
        foreign = [raw_advert(r) for r in recorded()]
        turn = 0
        while True:
            for node, rssi in ((self.entrance, -75), (self.machines, -60)):
                heard = [self.sylvie.advert(rssi), self.nadia.advert(rssi - 2)]
                heard.append(self.stranger.advert(rssi - 4))
                heard += foreign[turn % len(foreign) :][:4]
                node.send_adverts(heard)
            turn += 4
            await asyncio.sleep(ADVERT_PERIOD_S)


async def _enroll(server: Harness, address: int, consent: bool) -> Phone:
    resp = await server.client.post("/api/v1/enroll", json={"language": "en"})
    assert resp.status == 201
    enrolled = await resp.json()
    token = enrolled["token"]
    if consent:
        assert (await server.grant(token, "greeting")).status == 201
        resp = await server.client.put(
            "/api/v1/preferences",
            json={"display_name": "Sylvie", "name_form": "first_name", "language": "en"},
            headers=bearer(token),
        )
        assert resp.status == 200
    return Phone(
        address=address,
        identity_key=bytes.fromhex(enrolled["identity_key"]),
        k=enrolled["rotation_exponent"],
        offset_s=enrolled["beacon_time"] - time.time(),
        customer_id=enrolled["customer_id"],
        token=token,
    )


async def _watch_board(server: Harness, seen: list[dict[str, Any]]) -> None:
    await server.add_staff("camille", "correct horse battery", "staff")
    resp = await server.client.post(
        "/login",
        data={"username": "camille", "password": "correct horse battery"},
        allow_redirects=False,
    )
    assert resp.status == 303
    morsel = resp.cookies[cookie_name(False)]
    headers = {"Cookie": f"{cookie_name(False)}={morsel.value}"}
    async with server.client.ws_connect("/ws/board", headers=headers) as ws:
        async for msg in ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                seen.append(json.loads(msg.data))


@contextlib.asynccontextmanager
async def open_shop(server: Harness, tmp_path: Path) -> AsyncIterator[Shop]:
    """Two nodes (entrance plaintext, machines encrypted) fronted by one `beacon-scanner run`."""
    key = new_key()
    shop = Shop(
        server=server,
        tmp=tmp_path,
        entrance=FakeNode("bulle-entrance"),
        machines=FakeNode("bulle-machines", psk=key),
        sylvie=await _enroll(server, 0x5A1C0FFEE001, consent=True),
        nadia=await _enroll(server, 0x4ADA0BADF00D, consent=False),
        stranger=Phone(0x7A55E5BB0001, secrets.token_bytes(16), 9, 12345.0),
    )
    await shop.entrance.start()
    await shop.machines.start()
    lines = [
        f'store_id = "{STORE_ID}"',
        f'server_url = "{str(server.client.make_url("")).rstrip("/")}"',
        'backend = "esphome"',
        f'outbox_path = "{tmp_path / "outbox.sqlite"}"',
        "window_s = 0.5",
        "upload_interval_s = 0.1",
        "heartbeat_interval_s = 0.5",
        "allowlist_wait_s = 10.0",
        # The most talkative level: the canary must hold even there.
        'log_level = "DEBUG"',
    ]
    (tmp_path / "machines.key").write_text(key + "\n")
    for scanner_id, node in (("s-entrance", shop.entrance), ("s-machines", shop.machines)):
        registered = await server.add_scanner(scanner_id)
        (tmp_path / f"{scanner_id}.secret").write_text(registered.secret + "\n")
        lines += [
            "[[nodes]]",
            f'scanner_id = "{scanner_id}"',
            'host = "127.0.0.1"',
            f"port = {node.port}",
            f'secret_file = "{tmp_path / (scanner_id + ".secret")}"',
        ]
        if node.psk is not None:
            lines.append(f'encryption_key_file = "{tmp_path / "machines.key"}"')
    config = tmp_path / "scanner.toml"
    config.write_text("\n".join(lines) + "\n")
    board = asyncio.create_task(_watch_board(server, shop.board))
    shop.log = tmp_path / "scanner.log"
    with shop.log.open("wb") as log:
        shop.daemon = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "scanner", "run", "--config", str(config),
            stdout=log, stderr=log,
        )  # fmt: skip
    feeder = asyncio.create_task(shop.feed())
    try:
        await wait_until(
            lambda: shop.entrance.subscribers == 1 and shop.machines.subscribers == 1,
            NODE_STATE_WITHIN_S,
        )
        yield shop
    finally:
        feeder.cancel()
        if shop.daemon.returncode is None:
            shop.daemon.terminate()
        await asyncio.wait_for(shop.daemon.wait(), timeout=20)
        board.cancel()
        await asyncio.gather(feeder, board, return_exceptions=True)
        await shop.entrance.stop()
        await shop.machines.stop()


def _cards(shop: Shop, kind: str) -> list[dict[str, Any]]:
    return [m["card"] for m in shop.board if m.get("type") == "card" and m["card"]["kind"] == kind]


@pytest.mark.timeout(300)
async def test_two_nodes_put_a_card_on_the_board_and_a_node_drop_loses_nobody(
    server: Harness, tmp_path: Path
) -> None:
    async with open_shop(server, tmp_path) as shop:
        await wait_until(lambda: len(_cards(shop, "greeting")) == 1, CARD_WITHIN_S)
        card = _cards(shop, "greeting")[0]
        assert card["text"] == "Hello Sylvie"
        # Both nodes report as boxes of their own, each with its link to the daemon.
        for scanner_id in ("s-entrance", "s-machines"):
            beat: dict[str, Any] | None = None

            async def connected(sid: str = scanner_id) -> bool:
                nonlocal beat
                beat = await shop.heartbeat(sid)
                if not beat or not beat.get("node", {}).get("connected"):
                    return False
                # The first beat may cover a moment before the first advertisement.
                return bool(beat["frames_seen_per_s"] > 0)

            await _wait_async(connected, NODE_STATE_WITHIN_S)
            assert beat is not None
            assert beat["adapter"] == "powered"
        visits = await server.rows(
            "SELECT id, left_at FROM visits WHERE customer_id = ?", [shop.sylvie.customer_id]
        )
        assert len(visits) == 1

        # The machines node loses power mid-visit, then comes back on the same address.
        batches_before = await _batches(server, "s-machines")
        await shop.machines.stop()

        async def machines_down() -> bool:
            beat = await shop.heartbeat("s-machines")
            return bool(beat and beat["node"]["connected"] is False)

        await _wait_async(machines_down, NODE_STATE_WITHIN_S)
        beat = await shop.heartbeat("s-machines")
        assert beat is not None
        assert beat["adapter"] == "off"
        assert beat["node"]["error"] in ("lost", "unreachable")
        await shop.machines.start()
        await wait_until(lambda: shop.machines.subscribers == 1, RECONNECT_WITHIN_S)

        async def machines_back() -> bool:
            beat = await shop.heartbeat("s-machines")
            return bool(beat and beat["node"]["connected"] and beat["node"]["connects"] == 2)

        await _wait_async(machines_back, NODE_STATE_WITHIN_S)
        batches_after_return = await _batches(server, "s-machines")

        async def machines_reporting_again() -> bool:
            return await _batches(server, "s-machines") > batches_after_return

        await _wait_async(machines_reporting_again, NODE_STATE_WITHIN_S)
        assert batches_after_return >= batches_before

        # The customer was never lost: one visit, still open, one card, never retracted.
        visits_after = await server.rows(
            "SELECT id, left_at FROM visits WHERE customer_id = ?", [shop.sylvie.customer_id]
        )
        assert visits_after == visits
        assert visits_after[0]["left_at"] is None
        assert len(_cards(shop, "greeting")) == 1
        assert not [m for m in shop.board if m.get("type") in ("retract", "closed")]
        cards = await server.rows(
            "SELECT state FROM cards WHERE customer_id = ?", [shop.sylvie.customer_id]
        )
        assert cards == [{"state": "open"}]
    assert shop.daemon is not None
    assert shop.daemon.returncode == 0


@pytest.mark.timeout(300)
async def test_canary_a_non_consenting_phone_leaves_no_trace(
    server: Harness, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with open_shop(server, tmp_path) as shop:
        await wait_until(lambda: len(_cards(shop, "greeting")) == 1, CARD_WITHIN_S)
        # Keep both nodes forwarding the canaries for a few more windows.
        sent = shop.entrance.adverts_sent
        await wait_until(lambda: shop.entrance.adverts_sent > sent + 60, CARD_WITHIN_S)
    assert shop.nadia.eids
    assert shop.stranger.eids
    # Every file the system wrote: both node outboxes (and their WAL), the server's database and
    # WAL, the daemon's log at DEBUG; and every record the server logged in this process.
    files = _written(tmp_path, server.db_path)
    names = {p.name for p in files}
    assert {"outbox.s-entrance.sqlite", "outbox.s-machines.sqlite", "scanner.log"} <= names
    assert server.db_path.name in names
    logged = "\n".join(
        f"{r.name} {r.getMessage()} {r.args!r} {r.exc_text or ''}" for r in caplog.records
    ).encode()
    assert logged  # the server did log (access log, scanner lines): the search means something
    assert shop.log is not None
    daemon_log = shop.log.read_bytes()
    assert b"node s-machines connected" in daemon_log
    # With several nodes in one process, the daemon's own lines name their node.
    assert b"node s-entrance: allowlist received" in daemon_log
    for phone, who in ((shop.nadia, "enrolled without consent"), (shop.stranger, "passer-by")):
        for needle in phone.needles():
            for path in files:
                assert needle not in path.read_bytes(), f"{who}: {needle!r} in {path.name}"
            assert needle not in logged, f"{who}: {needle!r} in the server's log records"
    # Nadia's account exists (the app holds her key); nothing else mentions her.
    with sqlite3.connect(server.db_path) as conn:
        for table in ("visits", "decisions", "cards", "messages", "access_log"):
            count = conn.execute(
                f"SELECT count(*) FROM {table} WHERE customer_id = ?", [shop.nadia.customer_id]
            ).fetchone()[0]
            assert count == 0, f"{table} mentions the customer who gave no consent"


def _written(tmp_path: Path, db_path: Path) -> list[Path]:
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    return files + [p for p in db_path.parent.glob(db_path.name + "*") if p.is_file()]


async def _batches(server: Harness, scanner_id: str) -> int:
    rows = await server.rows(
        "SELECT count(*) AS n FROM scanner_batches WHERE scanner_id = ?", [scanner_id]
    )
    return int(rows[0]["n"])


async def _wait_async(probe: Any, limit_s: float) -> None:
    deadline = time.monotonic() + limit_s
    while not await probe():
        if time.monotonic() > deadline:
            pytest.fail(f"condition not reached within {limit_s} s")
        await asyncio.sleep(0.05)


def test_only_the_esphome_backend_loads_the_library() -> None:
    """The server and BlueZ boxes never load aioesphomeapi (an optional, scanner-side extra)."""
    code = (
        "import sys, store_server.app, store_server.cli, scanner.cli, scanner.daemon, "
        "scanner.nodes; print(sorted(m for m in sys.modules if m.startswith('aioesphomeapi')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("node_key", "config_key", "expected_name", "code", "words"),
    [
        (False, True, None, "not_encrypted", "does not use encryption"),
        (True, False, None, "needs_key", "requires encryption"),
        (False, False, "bulle-node-9", "wrong_device", "another device answers"),
    ],
)
async def test_each_mismatch_is_named(
    node_key: bool, config_key: bool, expected_name: str | None, code: str, words: str
) -> None:
    from scanner.esphome import NodeError, probe_node

    key = new_key()
    node = FakeNode("bulle-node-1", psk=key if node_key else None)
    await node.start()
    cfg = NodeConfig(scanner_id="s-1", host="127.0.0.1", port=node.port, name=expected_name)
    try:
        with pytest.raises(NodeError) as info:
            await probe_node(cfg, key if config_key else None)
    finally:
        await node.stop()
    assert info.value.code == code
    assert words in str(info.value)
    assert "\n" not in str(info.value)
