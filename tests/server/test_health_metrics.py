"""/healthz, /readyz and the Prometheus metrics listener, on the real server, on both engines."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from pathlib import Path

import aiohttp
import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from store_server.config import load_config
from store_server.errors import ConfigError
from store_server.keys import METRICS_PORT
from tests.server.conftest import Serve, batch_body, running_server

# The PostgreSQL variants run in CI's own step (pytest -m pg_step), outside the default
# run's time budget: neither privacy- nor security-critical (README, Testing).
pytestmark = pytest.mark.own_pg_step

TOKEN = "test-metrics-token-0123456789"
BATCHES = "/api/scanner/v1/batches"


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


async def test_healthz_and_readyz_follow_the_scanners(serve: Serve) -> None:
    async with serve() as server:
        resp = await server.client.get("/healthz")
        assert resp.status == 200
        assert await resp.json() == {"status": "ok"}

        # A new install: no scanner registered yet is ready.
        resp = await server.client.get("/readyz")
        assert resp.status == 200, await resp.text()
        body = await resp.json()
        assert body["checks"]["database"] == {"ok": True}
        assert body["checks"]["scanners"] == {"ok": True, "registered": 0, "seen_last_minute": 0}

        # Registered but never heard from: not ready, naming the check.
        scanner = await server.add_scanner("s-entrance")
        resp = await server.client.get("/readyz")
        assert resp.status == 503
        body = await resp.json()
        assert body["status"] == "not_ready"
        assert body["checks"]["scanners"]["ok"] is False
        assert body["checks"]["database"]["ok"] is True

        # Its first batch makes the server ready.
        assert (
            await server.signed(scanner, "POST", BATCHES, batch_body("s-entrance"))
        ).status == 200
        resp = await server.client.get("/readyz")
        assert resp.status == 200
        assert (await resp.json())["checks"]["scanners"]["seen_last_minute"] == 1


async def test_readyz_reports_a_database_that_does_not_answer(serve: Serve) -> None:
    async with serve() as server:
        # The database thread stuck (a disk that no longer answers): the probe times out.
        entered, release = threading.Event(), threading.Event()

        def hold(db: object) -> None:
            entered.set()
            release.wait(30)

        stuck = asyncio.create_task(server.service.db.run(hold))
        assert await asyncio.to_thread(entered.wait, 10)
        try:
            resp = await server.client.get("/readyz")
            assert resp.status == 503
            assert (await resp.json())["checks"]["database"] == {
                "ok": False,
                "error": "TimeoutError",
            }
            assert (await server.client.get("/healthz")).status == 200
        finally:
            release.set()
            await stuck


@pytest.mark.postgres
async def test_readyz_reports_a_lock_held_on_postgresql(tmp_path: Path, pg_url: str) -> None:
    """PostgreSQL's own way of not answering: another session (a migration, an operator's
    transaction) holds a lock the probe's read waits for. Not ready while it does, and
    ready again once it is released."""
    async with running_server(tmp_path, database_url=pg_url) as server:
        assert (await server.client.get("/readyz")).status == 200
        with psycopg.connect(pg_url) as other:
            other.execute("LOCK TABLE scanners IN ACCESS EXCLUSIVE MODE")
            resp = await server.client.get("/readyz")
            assert resp.status == 503
            assert (await resp.json())["checks"]["database"] == {
                "ok": False,
                "error": "TimeoutError",
            }
            assert (await server.client.get("/healthz")).status == 200
            other.rollback()
        assert (await server.client.get("/readyz")).status == 200


async def test_readyz_reports_a_stuck_tick(serve: Serve) -> None:
    async with serve() as server:
        body = await (await server.client.get("/readyz")).json()
        assert body["checks"]["resolver"]["ok"] is True
        # The periodic work hangs (a stuck tick), for what looks like a minute.
        entered, release = asyncio.Event(), asyncio.Event()

        async def hang(now: float) -> None:
            entered.set()
            await release.wait()

        server.service.tick = hang  # type: ignore[method-assign]
        await asyncio.wait_for(entered.wait(), 10)
        server.service.last_tick_at -= 60
        try:
            resp = await server.client.get("/readyz")
            assert resp.status == 503
            assert (await resp.json())["checks"]["resolver"]["ok"] is False
        finally:
            release.set()


async def test_metrics_on_their_own_listener(serve: Serve) -> None:
    async with serve(metrics_listen="127.0.0.1:0") as server:
        port = server.app[METRICS_PORT]
        scanner = await server.add_scanner("s-entrance")
        body = batch_body("s-entrance", batch_id="b" * 32)
        for _ in range(2):  # the second is a duplicate of the first
            assert (await server.signed(scanner, "POST", BATCHES, body)).status == 200
        scanner.secret = "wrong"
        assert (await server.signed(scanner, "POST", BATCHES, batch_body("s-entrance"))).status
        # The main listener does not serve them.
        assert (await server.client.get("/metrics")).status == 404

        url = f"http://127.0.0.1:{port}/metrics"
        async with aiohttp.ClientSession() as session, session.get(url) as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"].startswith("text/plain")
            samples = _samples(await resp.text())
    assert samples[("bulle_scanner_batches_total", (("outcome", "accepted"),))] == 1
    assert samples[("bulle_scanner_batches_total", (("outcome", "duplicate"),))] == 1
    assert samples[("bulle_scanner_sightings_total", ())] == 1
    refused = ("bulle_requests_refused_total", (("area", "scanner"), ("code", "bad_signature")))
    assert samples[refused] == 1
    assert (
        samples[("bulle_requests_refused_total", (("area", "other"), ("code", "not_found")))] == 1
    )
    assert samples[("bulle_scanners_registered", ())] == 1
    assert samples[("bulle_scanner_up", (("scanner", "s-entrance"),))] == 1
    assert samples[("bulle_board_connections", ())] == 0
    assert samples[("bulle_queue_depth", (("queue", "batch_commits"),))] == 0
    assert samples[("bulle_queue_depth", (("queue", "allowlist_long_polls"),))] == 0


async def test_tick_time_and_long_polls_are_measured(serve: Serve) -> None:
    async with serve(metrics_listen="127.0.0.1:0") as server:
        url = f"http://127.0.0.1:{server.app[METRICS_PORT]}/metrics"
        scanner = await server.add_scanner("s-entrance")
        version = server.service.coordinator.resolver.version
        poll = asyncio.create_task(
            server.signed(scanner, "GET", f"/api/scanner/v1/allowlist?since={version}&wait=20")
        )
        async with aiohttp.ClientSession() as session:

            async def scrape() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
                async with session.get(url) as resp:
                    return _samples(await resp.text())

            # The periodic tick runs every second; the long poll is held until it times out.
            deadline = time.monotonic() + 15
            while True:
                samples = await scrape()
                polls = samples[("bulle_queue_depth", (("queue", "allowlist_long_polls"),))]
                if samples[("bulle_tick_seconds_count", ())] >= 1 and polls == 1:
                    break
                assert time.monotonic() < deadline, samples
                await asyncio.sleep(0.1)
        poll.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await poll


async def test_metrics_token_is_required_when_set(serve: Serve) -> None:
    settings = {"metrics_listen": "127.0.0.1:0", "metrics_token": TOKEN}
    async with serve(**settings) as server:
        url = f"http://127.0.0.1:{server.app[METRICS_PORT]}/metrics"
        async with aiohttp.ClientSession() as session:
            async with session.get(url) as resp:
                assert resp.status == 401
            async with session.get(url, headers={"Authorization": "Bearer nope"}) as resp:
                assert resp.status == 401
            headers = {"Authorization": f"Bearer {TOKEN}"}
            async with session.get(url, headers=headers) as resp:
                assert resp.status == 200


def test_metrics_on_another_address_need_a_token() -> None:
    with pytest.raises(ConfigError, match=r"metrics_listen: 0\.0\.0\.0 is reachable"):
        load_config('metrics_listen = "0.0.0.0:9464"', {})
    assert load_config(f'metrics_listen = "0.0.0.0:9464"\nmetrics_token = "{TOKEN}"', {})
    with pytest.raises(ConfigError, match="expected HOST:PORT"):
        load_config('metrics_listen = "9464"', {})


def test_scanner_up_reads_the_last_contact() -> None:
    from store_server.metrics import Metrics

    metrics = Metrics()
    now = time.time()
    rows = [
        {
            "id": "s-a",
            "revoked_at": None,
            "last_seen_at": now - 5,
            "heartbeat": {"outbox_depth": 7},
        },
        {"id": "s-b", "revoked_at": None, "last_seen_at": now - 600, "heartbeat": None},
        {"id": "s-c", "revoked_at": now, "last_seen_at": now, "heartbeat": None},
    ]
    metrics.set_scanners(rows, now)
    samples = _samples(metrics.exposition().decode())
    assert samples[("bulle_scanner_up", (("scanner", "s-a"),))] == 1
    assert samples[("bulle_scanner_up", (("scanner", "s-b"),))] == 0
    assert ("bulle_scanner_up", (("scanner", "s-c"),)) not in samples
    assert samples[("bulle_scanner_outbox_depth", (("scanner", "s-a"),))] == 7
    assert samples[("bulle_scanners_registered", ())] == 2
