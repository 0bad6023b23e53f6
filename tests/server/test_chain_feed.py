"""Chain mode on one shared database: two store servers, the consent feed between them.

Two real StoreServices (two stores, two floors) on one real database, each with its own
connections, in chain mode, on both engines (a SQLite file shared by two servers, and
PostgreSQL): a consent given through store A is admitted by store B's feed, a withdrawal
through B retracts A's card and takes the customer out of A's resolver, an erasure likewise;
and a server whose view of consents is out of date shows no new card and refuses allowlists
(fail closed). On PostgreSQL, the last test runs both servers' background tasks with their
LISTEN connections: the withdrawal reaches the other store by notification alone.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import sqlite3
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from store_server.app import UNAVAILABLE_RETRY_AFTER_S, load_consent_texts, load_floor
from store_server.config import ServerConfig
from store_server.errors import UnavailableError
from store_server.keywrap import parse_master_key
from store_server.services.consent_feed import WakeupSource
from store_server.services.store import StoreServices
from store_server.storage.database import Database, Target
from store_server.storage.notify import ConsentListener
from store_server.storage.pg import PgTarget
from tests.server.conftest import STORE_FILE, Harness, batch_body, error_of, wait_until

CORNER_FILE = STORE_FILE.with_name("store-corner.toml")
WAIT_S = 10.0  # a bound for a stop that must not hang; generous on a loaded machine
BOUND_S = 30


class Mono:
    """The monotonic clock the consent view reads, moved by the test."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@dataclass
class Chain:
    a: StoreServices
    b: StoreServices
    mono: Mono
    published: dict[str, list[dict[str, Any]]]


def _service(
    target: Target,
    store_file: Path,
    key: str,
    mono: Mono | None,
    wakeups: WakeupSource | None = None,
) -> StoreServices:
    config = ServerConfig(
        db_path="unused.sqlite",
        store_file=str(store_file),
        master_key=key,
        cookie_secure=False,
        consent_staleness_s=BOUND_S,
    )
    service = StoreServices(
        config=config,
        floor=load_floor(store_file),
        db=Database(target),
        master_key=parse_master_key(key),
        consent_texts=load_consent_texts(),
        shared=True,
        wakeups=wakeups,
    )
    assert service.feed is not None
    if mono is not None:
        service.feed._mono = mono  # the view's clock, moved by the test
    return service


@pytest.fixture
async def chain(db_target: Target) -> AsyncIterator[Chain]:
    key = secrets.token_hex(32)
    mono = Mono()
    a = _service(db_target, STORE_FILE, key, mono)
    b = _service(db_target, CORNER_FILE, key, mono)
    published: dict[str, list[dict[str, Any]]] = {"a": [], "b": []}
    a.hub.publish = published["a"].append  # type: ignore[method-assign]
    b.hub.publish = published["b"].append  # type: ignore[method-assign]
    for service in (a, b):
        await service.prepare()
    yield Chain(a, b, mono, published)
    for service in (a, b):
        await service.stop()
        service.db.close()


async def _customer(service: StoreServices) -> str:
    enrolled = await service.customers.enroll(None, "en")
    customer_id = str(enrolled["customer_id"])
    await service.customers.set_preferences(
        customer_id, {"display_name": "Sylvie", "name_form": "first_name"}
    )
    return customer_id


async def _grant(service: StoreServices, customer_id: str, scope: str = "chain") -> None:
    text = next(t for t in load_consent_texts() if t.purpose == "greeting")
    await service.customers.grant(customer_id, "greeting", text.hash, scope, "app", "1.0")  # type: ignore[arg-type]


def _cards(published: list[dict[str, Any]]) -> list[str]:
    return [m["card"]["id"] for m in published if m["type"] == "card"]


def _retracted(published: list[dict[str, Any]]) -> list[str]:
    return [m["id"] for m in published if m["type"] == "retract"]


async def test_a_chain_consent_given_in_a_greets_in_b(chain: Chain) -> None:
    customer = await _customer(chain.a)
    await _grant(chain.a, customer)
    assert customer not in chain.b.coordinator.resolver
    assert chain.b.feed is not None
    await chain.b.feed.catch_up()
    assert customer in chain.b.coordinator.resolver
    assert chain.b.feed.subjects.holds(customer)  # indexed at admission, not at a withdrawal
    await chain.b.customers.check_in(customer, None)
    assert len(_cards(chain.published["b"])) == 1


async def test_a_store_scoped_consent_stays_in_its_store(chain: Chain) -> None:
    customer = await _customer(chain.a)
    await _grant(chain.a, customer, scope="store")
    assert chain.b.feed is not None
    await chain.b.feed.catch_up()
    assert customer not in chain.b.coordinator.resolver


async def test_a_withdrawal_in_b_retracts_the_card_in_a(chain: Chain) -> None:
    customer = await _customer(chain.a)
    await _grant(chain.a, customer)
    await chain.a.customers.check_in(customer, None)
    [card] = _cards(chain.published["a"])
    assert chain.b.feed is not None
    assert chain.a.feed is not None
    await chain.b.feed.catch_up()
    version = chain.a.coordinator.resolver.version
    await chain.b.customers.withdraw(customer, ["greeting"], "app", "1.0")
    assert customer not in chain.b.coordinator.resolver
    assert await chain.a.feed.catch_up() == 1
    assert card in _retracted(chain.published["a"])
    assert customer not in chain.a.coordinator.resolver
    assert chain.a.coordinator.resolver.version != version  # the allowlist moved
    assert customer not in chain.a.coordinator.shown
    assert not chain.a.feed.subjects.holds(customer)  # the pseudonym index let go too


async def test_an_erasure_in_b_reaches_a(chain: Chain) -> None:
    customer = await _customer(chain.a)
    await _grant(chain.a, customer)
    await chain.a.customers.check_in(customer, None)
    [card] = _cards(chain.published["a"])
    assert chain.a.feed is not None
    await chain.b.customers.erase(customer)
    await chain.a.feed.catch_up()
    assert card in _retracted(chain.published["a"])
    assert customer not in chain.a.coordinator.resolver


async def test_a_feed_applies_nothing_twice(chain: Chain) -> None:
    customer = await _customer(chain.a)
    await _grant(chain.a, customer)
    await chain.a.customers.withdraw(customer, ["greeting"], "app", "1.0")
    assert chain.a.feed is not None
    await chain.a.feed.catch_up()  # its own withdrawal: already applied in-process
    before = list(chain.published["a"])
    await chain.a.feed.catch_up()
    assert chain.published["a"] == before


async def test_a_stale_view_shows_no_new_card_and_refuses_allowlists(chain: Chain) -> None:
    customer = await _customer(chain.a)
    await _grant(chain.a, customer)
    assert chain.a.feed is not None
    chain.mono.t += BOUND_S + 1  # no catch-up for longer than the bound
    assert chain.a.feed.status().state == "stale"
    await chain.a.customers.check_in(customer, None)
    assert _cards(chain.published["a"]) == []
    with pytest.raises(UnavailableError) as refused:
        await chain.a.scanners.allowlist(None, 0)
    assert refused.value.code == "consent_view_stale"
    assert refused.value.status == 503
    # A catch-up makes it fresh again.
    await chain.a.feed.catch_up()
    assert (await chain.a.scanners.allowlist(None, 0))["full"] is True


async def test_after_a_loss_the_pending_withdrawal_is_applied_before_any_card(
    chain: Chain,
) -> None:
    customer = await _customer(chain.a)
    await _grant(chain.a, customer)
    assert chain.a.feed is not None
    assert chain.b.feed is not None
    await chain.b.feed.catch_up()
    chain.b.feed.view.lost(chain.mono())  # B loses the database...
    await chain.a.customers.withdraw(customer, ["greeting"], "app", "1.0")  # ...meanwhile
    chain.mono.t += 1
    chain.b.feed.view.reconnected()
    assert chain.b.feed.status().state == "recovering"
    await chain.b.customers.check_in(customer, None)
    assert _cards(chain.published["b"]) == []  # not before the catch-up
    await chain.b.feed.catch_up()
    assert chain.b.feed.fresh()
    assert customer not in chain.b.coordinator.resolver
    assert _cards(chain.published["b"]) == []


@pytest.mark.postgres
async def test_on_postgres_a_withdrawal_reaches_the_other_store_by_notification(
    pg_url: str,
) -> None:
    """Both servers running (feeds, LISTEN connections, ticks): no manual catch-up. The poll
    is set to an hour, so only the notification can carry the withdrawal in time."""
    key = secrets.token_hex(32)
    target = PgTarget(pg_url)
    a = _service(target, STORE_FILE, key, None, ConsentListener(pg_url))
    b = _service(target, CORNER_FILE, key, None, ConsentListener(pg_url))
    published: list[dict[str, Any]] = []
    a.hub.publish = published.append  # type: ignore[method-assign]
    for service in (a, b):
        assert service.feed is not None
        service.feed._poll_s = 3600.0
        await service.start()
    try:
        listening = [s.feed for s in (a, b) if s.feed is not None]
        await wait_until(lambda: all(f.listening for f in listening))
        customer = await _customer(a)
        await _grant(a, customer)
        await wait_until(lambda: customer in b.coordinator.resolver)  # the grant, notified
        await a.customers.check_in(customer, None)
        [card] = _cards(published)
        await b.customers.withdraw(customer, ["greeting"], "app", "1.0")
        await wait_until(lambda: card in _retracted(published))
        assert customer not in a.coordinator.resolver
    finally:
        for service in (a, b):
            await service.stop()
            service.db.close()


# -- over HTTP: what a scanner sees ---------------------------------------------------------


async def test_a_stale_view_answers_scanners_503_with_a_retry_after(server: Harness) -> None:
    scanner = await server.add_scanner("s-entrance")
    server.service.coordinator.consent_fresh = lambda: False
    resp = await server.signed(scanner, "GET", "/api/scanner/v1/allowlist")
    assert resp.status == 503
    assert (await error_of(resp))["code"] == "consent_view_stale"
    assert resp.headers["Retry-After"] == str(UNAVAILABLE_RETRY_AFTER_S)
    # Batches are still taken while they can be stored: nothing is lost meanwhile.
    resp = await server.signed(scanner, "POST", "/api/scanner/v1/batches", batch_body("s-entrance"))
    assert resp.status == 200


async def test_a_batch_that_cannot_be_stored_is_refused_503(
    server: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    scanner = await server.add_scanner("s-entrance")

    async def down(*args: object) -> tuple[bool, int]:
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(server.service.scanners._batches, "record", down)
    resp = await server.signed(scanner, "POST", "/api/scanner/v1/batches", batch_body("s-entrance"))
    assert resp.status == 503  # a 5xx: the scanner keeps the batch (only a 4xx drops it)
    assert (await error_of(resp))["code"] == "database_unavailable"
    assert resp.headers["Retry-After"] == str(UNAVAILABLE_RETRY_AFTER_S)


class _Deaf:
    """A wakeup source that ignores its cancellation, as psycopg's LISTEN may when its peer
    goes quiet; it ends only when the test lets it go."""

    def __init__(self) -> None:
        self.cancelled = asyncio.Event()
        self.release = asyncio.Event()

    async def run(self, wake: Callable[[], None], connected: Callable[[bool], None]) -> None:
        while not self.release.is_set():
            try:
                await self.release.wait()
            except asyncio.CancelledError:
                self.cancelled.set()  # swallowed


async def test_a_stop_does_not_hang_on_a_task_that_ignores_its_cancellation(
    db_target: Target, caplog: pytest.LogCaptureFixture
) -> None:
    deaf = _Deaf()
    service = _service(db_target, STORE_FILE, secrets.token_hex(32), None, wakeups=deaf)
    await service.prepare()
    feed = service.feed
    assert feed is not None
    feed.start()
    try:
        await asyncio.sleep(0)  # the tasks begin
        with caplog.at_level(logging.WARNING, logger="store_server.services.consent_feed"):
            await asyncio.wait_for(feed.close(timeout_s=0.2), timeout=WAIT_S)
        assert deaf.cancelled.is_set()
        assert "bulle-consent-listen" in caplog.text  # named, and left behind
        assert "bulle-consent-feed" not in caplog.text  # the others did stop
    finally:
        deaf.release.set()
        await service.stop()
        service.db.close()
