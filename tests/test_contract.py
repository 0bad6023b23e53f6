"""The scanner <-> server wire contract (docs/api.md), pinned from both sides.

scanner/ and store_server/ never import each other; only this test imports both. Pure checks
run each side's encoder against the other side's decoder; the end-to-end checks drive the
scanner's real Uploader (with its real Outbox) against the server's real application.
"""

from __future__ import annotations

import importlib.util
import json
import secrets
import time
import uuid
from pathlib import Path

import aiohttp
import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scanner.aggregate import Aggregator
from scanner.allowlist import Allowlist, AllowlistUpdate, SightingKey
from scanner.frames import EDDYSTONE_SERVICE_UUID, EddystoneEIDFrame, parse_advertisement
from scanner.health import HealthCounters, heartbeat_body, snapshot
from scanner.outbox import Outbox
from scanner.uploader import Uploader, sign_request
from store_server.eid import beacon_time, clock_offset, compute_eid
from store_server.errors import AuthenticationError, ValidationError
from store_server.ingest import Batch, Heartbeat, check_batch, decode
from store_server.signing import NonceStore, read_headers, verify
from tests.server.conftest import STORE_ID, Harness, bearer, engine_server
from tests.support import require_system_component

__all__ = ["engine_server"]  # the fixture, imported so that this top-level module can use it

# The PostgreSQL variants run in CI's own step (pytest -m pg_step), outside the default
# run's time budget: neither privacy- nor security-critical (README, Testing).
pytestmark = pytest.mark.own_pg_step

SECRET = "scanner-secret-from-store-server-scanner-add"
SCANNER_ID = "s-entrance"
NOW = 1_763_800_000


def verify_as_server(headers: dict[str, str], method: str, path: str, body: bytes) -> None:
    verify(
        read_headers(headers),
        secret=SECRET,
        method=method,
        path_qs=path,
        body=body,
        now=NOW,
        tolerance_s=60,
        nonces=NonceStore(120),
    )


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/api/scanner/v1/batches", b'{"batch_id":"x","windows":[]}'),
        ("GET", "/api/scanner/v1/allowlist?since=3&wait=20", b""),
        ("GET", "/api/scanner/v1/allowlist", b""),
        ("POST", "/api/scanner/v1/heartbeat", '{"version":"0.1.0 é"}'.encode()),
    ],
)
def test_scanner_signature_verifies_at_server(method: str, path: str, body: bytes) -> None:
    nonce = secrets.token_hex(16)
    headers = sign_request(SECRET, method, path, SCANNER_ID, body, timestamp=NOW, nonce=nonce)
    verify_as_server(headers, method, path, body)


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ("body", "bad_digest"),
        ("path", "bad_signature"),
        ("method", "bad_signature"),
        ("secret", "bad_signature"),
    ],
)
def test_server_rejects_changed_request(change: str, code: str) -> None:
    body = b'{"batch_id":"x","windows":[]}'
    path = "/api/scanner/v1/batches"
    secret = SECRET + "!" if change == "secret" else SECRET
    headers = sign_request(
        secret, "POST", path, SCANNER_ID, body, timestamp=NOW, nonce=secrets.token_hex(16)
    )
    with pytest.raises(AuthenticationError) as info:
        verify_as_server(
            headers,
            "PUT" if change == "method" else "POST",
            path + "?x" if change == "path" else path,
            body + b" " if change == "body" else body,
        )
    assert info.value.code == code


def _aggregates(keys_and_rssi: list[tuple[str, int]], tx_power: int | None = -20) -> Aggregator:
    agg = Aggregator(window_s=1.0)
    for i, (eid, rssi) in enumerate(keys_and_rssi):
        agg.add(SightingKey("eid", eid), rssi, tx_power, NOW + 0.1 * (i % 9))
    return agg


def test_window_aggregates_decode_as_server_batch(tmp_path: Path) -> None:
    agg = _aggregates(
        [("0123456789abcdef", -60), ("0123456789abcdef", -55), ("fedcba9876543210", -80)]
    )
    windows = agg.flush(NOW + 2)
    assert len(windows) == 2
    # Built like the scanner does: through its outbox, then the uploader's payload.
    outbox = Outbox(tmp_path / "outbox.sqlite", max_rows=100, max_bytes=1 << 20, max_age_s=3600)
    try:
        outbox.put(windows, NOW + 2)
        pending = outbox.next_batch(100, NOW + 2)
    finally:
        outbox.close()
    assert pending is not None
    payload = {
        "batch_id": pending.batch_id,
        "store_id": STORE_ID,
        "scanner_id": SCANNER_ID,
        "windows": pending.windows,
    }
    batch = decode(json.dumps(payload, separators=(",", ":")).encode(), Batch)
    check_batch(batch)
    assert batch.batch_id == pending.batch_id
    assert [(w.id, w.count, w.rssi_max, w.rssi_median, w.tx_power) for w in batch.windows] == [
        ("0123456789abcdef", 2, -55, -57.5, -20),
        ("fedcba9876543210", 1, -80, -80.0, -20),
    ]
    assert all(w.end - w.start == 1.0 for w in batch.windows)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["eid", "ibeacon", "store_beacon"]),
            st.binary(min_size=8, max_size=8),
            st.floats(0, 2e9),
            st.integers(1, 100_000),
            st.integers(-127, 20),
            st.floats(-127, 20),
            st.none() | st.integers(-127, 20),
        ),
        max_size=40,
    )
)
def test_any_scanner_window_decodes_as_the_same_window_at_server(
    rows: list[tuple[str, bytes, float, int, int, float, int | None]],
) -> None:
    """The one wire form: the scanner's window objects, as JSON, are the server's windows."""
    windows = [
        {
            "id_type": kind,
            "id": raw.hex()
            if kind == "eid"
            else f"f7826da6-4fa2-4e98-8024-bc5b71e0893e:1:{int.from_bytes(raw[:2], 'big')}",
            "start": start,
            "end": start + 1.0,
            "count": count,
            "rssi_max": rssi_max,
            "rssi_median": median,
            "tx_power": tx,
        }
        for i, (kind, raw, start, count, rssi_max, median, tx) in enumerate(rows)
    ]
    head = {"batch_id": "a" * 32, "store_id": STORE_ID, "scanner_id": SCANNER_ID}
    batch = decode(json.dumps({**head, "windows": windows}, separators=(",", ":")).encode(), Batch)
    check_batch(batch)
    assert [msgspec.to_builtins(w) for w in batch.windows] == windows


def test_a_store_beacon_heard_by_a_box_decodes_as_a_store_beacon_window() -> None:
    """Another box's store beacon, as the scanner passes and aggregates it, is the server's
    ``store_beacon`` window: the raw beacon as its id, the measured power as tx_power."""
    store_uuid = "b0110000-0000-4000-8000-00000000c4a1"
    allow = Allowlist(store_beacon=(store_uuid, 42))
    allow.box_beacons = True  # as this release's server says in every allowlist answer
    # Apple's manufacturer data: 0x02 0x15, UUID, major 42, minor 0xC0A1, measured power -59.
    payload = bytes([0x02, 0x15]) + uuid.UUID(store_uuid).bytes + bytes([0, 42, 0xC0, 0xA1, 0xC5])
    frame = parse_advertisement({0x004C: payload}, {})
    key = allow.match(frame, NOW)
    assert key is not None
    agg = Aggregator(window_s=1.0)
    for rssi in (-71, -69, -75):
        agg.add(key, rssi, getattr(frame, "power", None), NOW + 0.2)
    (window,) = agg.flush_all()
    body = {"batch_id": "a" * 32, "store_id": STORE_ID, "scanner_id": SCANNER_ID}
    body["windows"] = [window.to_wire()]  # type: ignore[assignment]
    batch = decode(json.dumps(body).encode(), Batch)
    check_batch(batch)
    (got,) = batch.windows
    assert (got.id_type, got.id) == ("store_beacon", f"{store_uuid}:42:49313")
    assert (got.count, got.rssi_max, got.rssi_median, got.tx_power) == (3, -69, -71.0, -59)


def test_window_without_tx_power_decodes() -> None:
    (window,) = _aggregates([("0123456789abcdef", -70)], tx_power=None).flush_all()
    body = {"batch_id": "a" * 32, "store_id": STORE_ID, "scanner_id": SCANNER_ID}
    body["windows"] = [window.to_wire()]  # type: ignore[assignment]
    batch = decode(json.dumps(body).encode(), Batch)
    assert batch.windows[0].tx_power is None


def _heartbeat(allowlist_version: int | None) -> dict[str, object]:
    counters = HealthCounters(frames_seen=125, frames_passed=8, last_upload_at=NOW - 5.0)
    previous = snapshot(HealthCounters(), NOW - 10.0)
    return heartbeat_body(
        store_id=STORE_ID,
        scanner_id=SCANNER_ID,
        counters=counters,
        previous=previous,
        now=float(NOW),
        outbox_depth=3,
        outbox_dropped=0,
        allowlist_version=allowlist_version,
        readings_unusable=5,
        adapter="powered",
        version="0.1.0",
    )


def test_heartbeat_decodes_at_server() -> None:
    hb = decode(json.dumps(_heartbeat(42)).encode(), Heartbeat)
    assert hb.frames_seen_per_s == 12.5
    assert hb.frames_passed_per_s == 0.8
    assert hb.allowlist_version == 42
    assert hb.outbox_depth == 3
    assert hb.sent_at == NOW
    assert hb.readings_unusable == 5


def test_heartbeat_before_first_allowlist_decodes_at_server() -> None:
    decode(json.dumps(_heartbeat(None)).encode(), Heartbeat)


# -- end to end: the scanner's Uploader against the real server ------------------------------


async def test_uploader_against_real_server(engine_server: Harness, tmp_path: Path) -> None:
    """On both engines: the allowlist, the batch and its duplicate go through the storage."""
    server = engine_server
    scanner = await server.add_scanner(SCANNER_ID)
    # A customer enrolls with their app counter and grants a consent.
    app_counter = 123_456_789
    resp = await server.client.post("/api/v1/enroll", json={"app_counter": app_counter})
    enrolled = await resp.json()
    assert (await server.grant(enrolled["token"], "greeting")).status == 201

    async with aiohttp.ClientSession() as session:
        uploader = Uploader(
            session,
            server_url=str(server.client.make_url("")),
            store_id=STORE_ID,
            scanner_id=scanner.scanner_id,
            secret=scanner.secret,
        )
        data = await uploader.fetch_allowlist(None, 0)
        update = AllowlistUpdate.from_wire(data)
        assert update.full is True
        assert len(update.entries) == 3
        assert update.box_beacons is True  # the boxes may send what they hear of each other

        allowlist = Allowlist()
        now = time.time()
        allowlist.apply(update, now)
        # The phone broadcasts its current EID (beacon time = server time + its offset).
        key = bytes.fromhex(enrolled["identity_key"])
        offset = clock_offset(enrolled["beacon_time"], now)
        eid = compute_eid(key, enrolled["rotation_exponent"], beacon_time(now, offset))
        advert = {EDDYSTONE_SERVICE_UUID: bytes([0x30, 0xEC]) + eid}
        frame = parse_advertisement({}, advert)
        assert frame == EddystoneEIDFrame(-20, eid)
        sighting = allowlist.match(frame, now)
        assert sighting is not None
        assert sighting.id == eid.hex()
        # A foreign EID is dropped.
        assert allowlist.match(EddystoneEIDFrame(-20, secrets.token_bytes(8)), now) is None

        # The sighting goes through the scanner's aggregator and outbox to the server.
        agg = Aggregator(window_s=1.0)
        agg.add(sighting, -58, -20, now - 1.0)
        outbox = Outbox(tmp_path / "o.sqlite", max_rows=10, max_bytes=1 << 20, max_age_s=600)
        try:
            outbox.put(agg.flush_all(), now)
            pending = outbox.next_batch(10, now)
        finally:
            outbox.close()
        assert pending is not None
        answer = await uploader.post_batch(pending)
        assert answer == {"batch_id": pending.batch_id, "accepted": 1, "duplicate": False}
        assert server.service.scanners.frames_resolved == 1
        assert (await uploader.post_batch(pending))["duplicate"] is True

        hb = _heartbeat(update.version)
        hb["sent_at"] = now
        assert (await uploader.post_heartbeat(hb))["ok"] is True

        # Withdrawal reaches the scanner as a delta removing every entry.
        resp = await server.client.post(
            "/api/v1/consents/withdraw", headers=bearer(enrolled["token"])
        )
        assert resp.status == 200
        delta = AllowlistUpdate.from_wire(await uploader.fetch_allowlist(update.version, 1))
        assert delta.full is False
        assert delta.box_beacons is True
        allowlist.apply(delta, time.time())
        assert len(allowlist) == 0
        assert allowlist.match(frame, time.time()) is None


def _node_heartbeat(error: BaseException | None) -> dict[str, object]:
    """The heartbeat of a box that is an ESPHome node, as the scanner builds it."""
    from scanner.config import NodeConfig
    from scanner.esphome import NodeSource, classify

    node = NodeConfig(scanner_id=SCANNER_ID, host="192.168.1.41", encryption_key_file="/k")
    source = NodeSource(node, lambda rec: None, psk=None)
    if error is not None:
        source._fail(classify(error, node))
    counters = HealthCounters(frames_seen=3000, frames_passed=8)
    return heartbeat_body(
        store_id=STORE_ID,
        scanner_id=SCANNER_ID,
        counters=counters,
        previous=snapshot(HealthCounters(), NOW - 10.0),
        now=float(NOW),
        outbox_depth=0,
        outbox_dropped=0,
        allowlist_version=1,
        adapter=source.adapter_state,
        version="0.1.0",
        node=source.heartbeat_node(),
    )


@pytest.mark.esphome
def test_esphome_node_heartbeat_decodes_at_server() -> None:
    require_system_component("aioesphomeapi", importlib.util.find_spec("aioesphomeapi") is not None)
    from aioesphomeapi.core import InvalidEncryptionKeyAPIError

    for error in (None, InvalidEncryptionKeyAPIError("x", None, None), OSError("refused")):
        body = _node_heartbeat(error)
        hb = decode(json.dumps(body).encode(), Heartbeat)
        assert hb.node == body["node"]
        assert hb.adapter == "off"
    assert hb.node is not None
    assert hb.node["error"] == "unreachable"
    assert "192.168.1.41:6053" in hb.node["last_error"]
    # A BlueZ box sends no node object: the field stays absent.
    assert "node" not in _heartbeat(42)


def test_node_object_is_checked_at_server() -> None:
    body = _heartbeat(42) | {
        "node": {
            "kind": "esphome",
            "host": "h:6053",
            "connected": True,
            "connects": 1,
            "error": "gremlins",
            "last_error": None,
        }
    }
    with pytest.raises(ValidationError):
        decode(json.dumps(body).encode(), Heartbeat)
    body["node"] = {"kind": "esphome", "host": "h:6053", "connected": True}
    with pytest.raises(ValidationError):
        decode(json.dumps(body).encode(), Heartbeat)
