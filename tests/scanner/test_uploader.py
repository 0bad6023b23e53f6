"""Uploader: signing vectors, retries with backoff, error translation (against a verifying
test server on 127.0.0.1)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import random

import aiohttp
import pytest

from scanner import uploader
from scanner.outbox import PendingBatch
from scanner.uploader import (
    BACKOFF_BASE_S,
    BACKOFF_CAP_S,
    BadCredentialsError,
    ServerRejectedError,
    ServerUnreachableError,
    Uploader,
    backoff_delay,
    content_digest,
    sign_request,
    signing_string,
    with_retries,
)

from .conftest import SCANNER_ID, SECRET, STORE_ID, Api


def test_signing_vector() -> None:
    body = b'{"a":1}'
    headers = sign_request(
        "k3y",
        "post",
        "/api/scanner/v1/batches",
        "s-entrance",
        body,
        timestamp=1763800000,
        nonce="0123456789abcdef0123456789abcdef",
    )
    expected_digest = "sha-256=:" + base64.b64encode(hashlib.sha256(body).digest()).decode() + ":"
    literal = (
        "bulle-v1\nPOST\n/api/scanner/v1/batches\ns-entrance\n1763800000\n"
        "0123456789abcdef0123456789abcdef\n" + expected_digest
    )
    expected_sig = base64.b64encode(
        hmac.new(b"k3y", literal.encode(), hashlib.sha256).digest()
    ).decode()
    assert headers == {
        "X-Bulle-Scanner": "s-entrance",
        "X-Bulle-Timestamp": "1763800000",
        "X-Bulle-Nonce": "0123456789abcdef0123456789abcdef",
        "Content-Digest": expected_digest,
        "X-Bulle-Signature": expected_sig,
    }
    assert (
        signing_string(
            "POST",
            "/api/scanner/v1/batches",
            "s-entrance",
            "1763800000",
            "0123456789abcdef0123456789abcdef",
            expected_digest,
        )
        == literal
    )


def test_empty_body_digest() -> None:
    # SHA-256 of the empty string, base64.
    assert content_digest(b"") == "sha-256=:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=:"


def test_backoff_full_jitter_bounds() -> None:
    rng = random.Random(7)
    for attempt in range(1, 20):
        ceiling = min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2 ** (attempt - 1))
        delays = [backoff_delay(attempt, rng) for _ in range(50)]
        assert all(0 <= d <= ceiling for d in delays)
        assert max(delays) > ceiling / 4
    assert max(backoff_delay(40, rng) for _ in range(200)) <= BACKOFF_CAP_S


def make(session: aiohttp.ClientSession, api: Api, secret: str = SECRET) -> Uploader:
    return Uploader(
        session, server_url=api.url, store_id=STORE_ID, scanner_id=SCANNER_ID, secret=secret
    )


BATCH = PendingBatch(
    batch_id="4b0d0c3e-6f6e-4a51-9d55-2f7d3d7f1a10",
    windows=[
        {
            "id_type": "eid",
            "id": "0123456789abcdef",
            "start": 1.0,
            "end": 2.0,
            "count": 1,
            "rssi_max": -50,
            "rssi_median": -50,
            "tx_power": -20,
        }
    ],
)


async def test_post_batch_sends_columns(api: Api) -> None:
    async with aiohttp.ClientSession() as session:
        await make(session, api).post_batch(BATCH)
    assert api.state.forms == ["columns"]
    assert api.state.batches[BATCH.batch_id] == BATCH.windows


async def test_post_batch_falls_back_to_rows_for_an_older_server(api: Api) -> None:
    api.state.rows_only = True
    second = PendingBatch(batch_id="5b0d0c3e-6f6e-4a51-9d55-2f7d3d7f1a10", windows=BATCH.windows)
    async with aiohttp.ClientSession() as session:
        up = make(session, api)
        first = await up.post_batch(BATCH)
        await up.post_batch(second)
    assert first["accepted"] == 1
    # Refused once as columns, then rows for that batch and every later one.
    assert api.state.forms == ["columns", "windows", "windows"]
    assert api.state.batches[BATCH.batch_id] == BATCH.windows


async def test_a_refused_column_is_not_taken_for_an_older_server(api: Api) -> None:
    """Only a server that predates columns names ``columns``; a refused column is an error of
    this batch (raised: the daemon counts it), not a reason to send rows for an hour."""
    api.state.rows_only = True
    api.state.refused_field = "columns.start"
    async with aiohttp.ClientSession() as session:
        with pytest.raises(ServerRejectedError) as info:
            await make(session, api).post_batch(BATCH)
    assert info.value.field == "columns.start"
    assert api.state.forms == ["columns"]


def test_columns_are_packed_unless_a_value_does_not_fit() -> None:
    window = BATCH.windows[0]
    ibeacon = {**window, "id_type": "ibeacon", "id": "f7826da6-4fa2-4e98-8024-bc5b71e0893e:1:2"}
    loud = {**window, "rssi_max": 300, "count": -1, "tx_power": None}
    columns = uploader.batch_columns([window, ibeacon, loud])
    upper = uploader.batch_columns([{**window, "id": window["id"].upper()}])
    assert upper["id"] == [window["id"].upper()]  # refused by the server, as an array
    listed = {name for name, value in columns.items() if isinstance(value, list)}
    # The id of an iBeacon, an rssi beyond a byte and a negative count go as arrays, and the
    # server names them; every other column is packed.
    assert listed == {"id", "rssi_max", "count"}
    assert columns["id"] == [window["id"], ibeacon["id"], window["id"]]
    assert columns["rssi_max"] == [window["rssi_max"], window["rssi_max"], 300]
    assert base64.b64decode(columns["tx_power"]) == bytes([-20 & 0xFF, -20 & 0xFF, 0x80])
    assert base64.b64decode(columns["id_type"]) == bytes([0, 1, 0])


async def test_other_422_is_not_taken_for_an_older_server(api: Api) -> None:
    api.state.refuse_status = 422
    async with aiohttp.ClientSession() as session:
        with pytest.raises(ServerRejectedError) as info:
            await make(session, api).post_batch(BATCH)
    assert info.value.status == 422
    assert api.state.batch_posts == 1


async def test_post_batch_signed_and_idempotent(api: Api) -> None:
    async with aiohttp.ClientSession() as session:
        up = make(session, api)
        first = await up.post_batch(BATCH)
        second = await up.post_batch(BATCH)
    assert first == {"batch_id": BATCH.batch_id, "accepted": 1, "duplicate": False}
    assert second["duplicate"] is True
    assert api.state.rejected == []
    assert api.state.windows() == BATCH.windows


async def test_allowlist_query_is_signed(api: Api) -> None:
    async with aiohttp.ClientSession() as session:
        up = make(session, api)
        data = await up.fetch_allowlist(1, 0.1)
        full = await up.fetch_allowlist(None, 20)
    assert data["version"] == 1
    assert full["full"] is True
    assert api.state.rejected == []


async def test_bad_credentials(api: Api) -> None:
    async with aiohttp.ClientSession() as session:
        with pytest.raises(BadCredentialsError, match="bad credentials"):
            await make(session, api, secret="wrong").post_batch(BATCH)
    assert api.state.rejected == ["bad_signature"]
    assert api.state.batches == {}


async def test_server_error_status(api: Api) -> None:
    api.state.fail_next = 1
    async with aiohttp.ClientSession() as session:
        with pytest.raises(ServerRejectedError) as info:
            await make(session, api).post_batch(BATCH)
    assert info.value.status == 503


async def test_unreachable_logged_once_per_outage(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="scanner.uploader")
    async with aiohttp.ClientSession() as session:
        up = Uploader(
            session,
            server_url="http://127.0.0.1:9",
            store_id=STORE_ID,
            scanner_id=SCANNER_ID,
            secret=SECRET,
        )
        for _ in range(3):
            with pytest.raises(ServerUnreachableError, match="server unreachable at http://127"):
                await up.post_heartbeat({"x": 1})
    warnings = [r for r in caplog.records if "unreachable" in r.getMessage()]
    assert len(warnings) == 1


async def test_retries_until_server_recovers(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    api.state.fail_next = 4
    delays: list[float] = []
    real_wait_for = asyncio.wait_for

    async def fast_wait_for(aw: object, timeout: float | None = None) -> object:  # noqa: ASYNC109
        delays.append(timeout or 0.0)
        return await real_wait_for(aw, timeout=0.001)  # type: ignore[arg-type]

    monkeypatch.setattr("scanner.uploader.asyncio.wait_for", fast_wait_for)
    stop = asyncio.Event()
    async with aiohttp.ClientSession() as session:
        up = make(session, api)
        result = await with_retries(lambda: up.post_batch(BATCH), stop=stop, rng=random.Random(1))
    assert result is not None
    assert result["accepted"] == 1
    assert api.state.batch_posts == 5
    assert len(delays) == 4
    for attempt, delay in enumerate(delays, start=1):
        assert 0 <= delay <= min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2 ** (attempt - 1))


async def test_columns_are_tried_again_after_the_retry_delay(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    api.state.rows_only = True
    clock = {"t": 1000.0}
    monkeypatch.setattr(uploader.time, "monotonic", lambda: clock["t"])
    batches = [
        PendingBatch(batch_id=f"5b0d0c3e-6f6e-4a51-9d55-2f7d3d7f1a1{i}", windows=BATCH.windows)
        for i in range(4)
    ]
    async with aiohttp.ClientSession() as session:
        up = make(session, api)
        await up.post_batch(batches[0])  # refused as columns, sent as rows
        clock["t"] += uploader.COLUMNS_RETRY_S - 1
        await up.post_batch(batches[1])  # still rows
        api.state.rows_only = False  # the server was upgraded meanwhile
        clock["t"] += 2
        await up.post_batch(batches[2])  # columns again
        await up.post_batch(batches[3])
    assert api.state.forms == ["columns", "windows", "windows", "columns", "columns"]
