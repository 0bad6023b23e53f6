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

from scanner.outbox import PendingBatch
from scanner.uploader import (
    BACKOFF_BASE_S,
    BACKOFF_CAP_S,
    BadCredentialsError,
    ServerRejectedError,
    ServerUnreachableError,
    Uploader,
    _retry_after,
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


def test_a_retry_after_lowers_the_backoff_ceiling() -> None:
    rng = random.Random(3)
    assert max(backoff_delay(30, rng, retry_after=2.0) for _ in range(200)) <= 2.0
    assert _retry_after("2") == 2.0
    assert _retry_after("3600") == BACKOFF_CAP_S
    assert _retry_after("Wed, 21 Oct 2015 07:28:00 GMT") is None
    assert _retry_after(None) is None


async def test_post_batch_sends_a_list_of_window_objects(api: Api) -> None:
    async with aiohttp.ClientSession() as session:
        answer = await make(session, api).post_batch(BATCH)
    assert answer["accepted"] == 1
    assert api.state.forms == [("batch_id", "scanner_id", "store_id", "windows")]
    assert api.state.batches[BATCH.batch_id] == BATCH.windows


async def test_a_refused_batch_is_raised_once_with_its_status(api: Api) -> None:
    """No other form is tried: a 422 is an error of this batch (the daemon counts it)."""
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
