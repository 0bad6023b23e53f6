"""Consent over time, on the real StoreServices with an injected clock and a real SQLite file.

- expiry is exact at decision time and the resolver drops the customer at the next tick;
- scope: a chain-wide consent counts here, a consent given at another store does not;
- retention: visits, decisions, closed cards and messages are purged after `retention_s`,
  from the tables, the database file and its WAL;
- a stateful property-based test over grant, withdraw, renew, expire, sighting, check-in,
  erase, purge and restart, checking the privacy invariants after every step.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import shutil
import tempfile
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from store_server.app import load_consent_texts, load_floor
from store_server.config import ServerConfig
from store_server.consent import DEFAULT_CONSENT_DURATION_S, PURPOSES, Purpose
from store_server.eid import IdentityRecord, eid_at
from store_server.errors import RateLimitedError
from store_server.ingest import Batch, Window
from store_server.keywrap import parse_master_key
from store_server.services.store import StoreServices
from store_server.stock import parse_stock_csv
from store_server.storage import catalog as catalog_store
from store_server.storage import consents as consent_store
from store_server.storage import customers as customer_store
from store_server.storage import database
from store_server.storage import scanners as scanner_store
from store_server.storage.database import Database, Target
from store_server.storage.pg import PgTarget
from store_server.storage.pg_cluster import Cluster
from tests import pg
from tests.server.conftest import CATALOG_FILE, STORE_FILE, STORE_ID
from tests.server.traces import file_traces, table_traces

T = TypeVar("T")

# 2027-01-15 15:00 UTC (10:00 in the store's zone): inside opening hours, no quiet hours.
T0 = 1_800_000_000.0
# An item of the demo catalog that is in stock, so a stock card is possible.
IN_STOCK_SKU = "GAS-GASKET-58"
# An interior scanner: a strong window there means the person is inside.
INTERIOR_SCANNER = "s-machines"
# Strong enough for the interior confirmation threshold of the presence engine.
STRONG_RSSI = -55
CHAIN_STORE = "other-store"
# Longer than any run of the stateful model (which advances by consent durations).
UNCONSENTED_TTL_S = 100 * 365 * 24 * 3600


# A consent change happens a millisecond after whatever came before it: the records made at
# the previous instant (an arrival decided at ingest) were made while the consent held, and
# equal timestamps would make the model's half-open intervals call them "after".
CONSENT_STEP_S = 0.001


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


class Store:
    """A StoreServices on a file, driven step by step (no background task)."""

    def __init__(self, directory: Path, clock: Clock, target: Target | None = None) -> None:
        """On a SQLite file in `directory`, or on `target` (a PostgreSQL database)."""
        self.db_path = directory / "store.sqlite"
        self.target: Target = self.db_path if target is None else target
        self.clock = clock
        self.master_key = secrets.token_hex(32)
        self.config = ServerConfig(
            db_path=str(self.db_path),
            database_url=self.target.url if isinstance(self.target, PgTarget) else "",
            store_file=str(STORE_FILE),
            master_key=self.master_key,
            cookie_secure=False,
            # The model has no deletion of enrollments that never consented (it advances by
            # years): kept out of reach here, tested in tests/test_hardening_store.py.
            unconsented_ttl_s=UNCONSENTED_TTL_S,
        )
        self.floor = load_floor(STORE_FILE)
        self.service = self._new_service()

    def _new_service(self) -> StoreServices:
        return StoreServices(
            config=self.config,
            floor=self.floor,
            db=Database(self.target),
            master_key=parse_master_key(self.master_key),
            consent_texts=load_consent_texts(),
            clock=self.clock,
            timezone="America/Montreal",
        )

    async def setup(self) -> None:
        await self.service.prepare()
        items = parse_stock_csv(CATALOG_FILE.read_text("utf-8"))
        secret = self.service.scanners.wrap_scanner_secret(INTERIOR_SCANNER, "s" * 32)
        now = self.clock()

        def fill(db: Any) -> None:
            catalog_store.upsert_stock(db, STORE_ID, items)
            scanner_store.add_scanner(db, INTERIOR_SCANNER, STORE_ID, secret, now)

        await self.service.db.run(fill)

    async def restart(self) -> None:
        await self.service.stop()
        self.service.db.close()
        self.service = self._new_service()
        await self.service.prepare()

    async def close(self) -> None:
        await self.service.stop()
        self.service.db.close()

    async def enroll(self, name: str) -> Customer:
        enrolled = await self.service.customers.enroll(None, "en")
        customer_id = enrolled["customer_id"]
        service = self.service
        now = self.clock()

        def prefs(db: Any) -> dict[str, Any]:
            customer_store.set_preferences(
                db, customer_id, {"display_name": name, "name_form": "first_name"}
            )
            customer_store.set_wishlist(db, customer_id, [IN_STOCK_SKU], now)
            row = database.one(db, "SELECT * FROM customers WHERE id = ?", [customer_id])
            ident = database.one(
                db, "SELECT * FROM identities WHERE customer_id = ?", [customer_id]
            )
            assert row is not None
            assert ident is not None
            return {**row, "clock_offset_s": ident["clock_offset_s"]}

        row = await service.db.run(prefs)
        record = IdentityRecord(
            subject=customer_id,
            identity_key=bytes.fromhex(enrolled["identity_key"]),
            k=enrolled["rotation_exponent"],
            clock_offset_s=row["clock_offset_s"],
        )
        return Customer(
            customer_id, row["token_hash"], row["pickup_code"], name, record, enrolled["token"]
        )

    async def grant(self, customer: Customer, purpose: Purpose, scope: str = "store") -> None:
        text = next(t for t in load_consent_texts() if t.purpose == purpose)
        await self.service.customers.grant(
            customer.customer_id,
            purpose,
            text.hash,
            scope,  # type: ignore[arg-type]
            "app",
            "1.0",
        )

    async def sighting(self, customer: Customer) -> None:
        """Three strong one-second windows of the customer's current EID at an interior scanner."""
        now = self.clock()
        windows = [
            Window(
                id_type="eid",
                id=eid_at(customer.record, t).hex(),
                start=t - 1,
                end=t,
                count=3,
                rssi_max=STRONG_RSSI,
                rssi_median=STRONG_RSSI,
            )
            for t in (now - 2, now - 1, now)
        ]
        batch = Batch(secrets.token_hex(8), STORE_ID, INTERIOR_SCANNER, windows)
        await self.service.scanners.ingest(INTERIOR_SCANNER, STORE_ID, batch)

    async def rows(self, sql: str, params: list[Any] | None = None) -> list[dict[str, Any]]:
        return await self.service.db.run(lambda db: database.rows(db, sql, params or []))

    async def traces(self, needles: list[str]) -> list[str]:
        in_tables = await self.service.db.run(lambda db: table_traces(db, needles))
        return in_tables + file_traces(self.db_path, needles)


@dataclass(slots=True)
class Customer:
    customer_id: str
    token_hash: str
    pickup_code: str
    name: str
    record: IdentityRecord
    token: str
    # Per purpose: [start, end) intervals in which the consent counted.
    intervals: dict[str, list[list[float]]] = field(default_factory=dict)

    @property
    def needles(self) -> list[str]:
        return [self.customer_id, self.token_hash, self.pickup_code, self.name, self.token]

    def active(self, purpose: str, t: float) -> bool:
        return any(start <= t < end for start, end in self.intervals.get(purpose, []))

    def any_active(self, t: float) -> bool:
        return any(self.active(p, t) for p in PURPOSES)

    def grant(self, purpose: str, now: float) -> None:
        self.end(purpose, now)
        self.intervals.setdefault(purpose, []).append([now, now + DEFAULT_CONSENT_DURATION_S])

    def end(self, purpose: str, now: float) -> None:
        for interval in self.intervals.get(purpose, []):
            interval[1] = min(interval[1], max(interval[0], now))


def run(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, T]) -> T:
    return loop.run_until_complete(coro)


def letters_name() -> str:
    return "Zq" + "".join(secrets.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(10))


# -- example tests -----------------------------------------------------------------------------


@pytest.fixture
async def store(tmp_path: Path, db_target: Target) -> Any:
    """On each engine (tests/conftest.py ``db_target``)."""
    built = Store(tmp_path, Clock(T0), db_target)
    await built.setup()
    try:
        yield built
    finally:
        await built.close()


async def test_expiry_is_exact_and_the_resolver_drops_at_next_tick(store: Store) -> None:
    customer = await store.enroll(letters_name())
    await store.grant(customer, "greeting")
    assert customer.customer_id in store.service.coordinator.resolver
    # One second before expiry the consent still counts.
    store.clock.t = T0 + DEFAULT_CONSENT_DURATION_S - 1
    await store.service.tick(store.clock.t)
    assert customer.customer_id in store.service.coordinator.resolver
    # At the expiry instant, before any tick: a check-in decides nothing and records nothing.
    store.clock.t = T0 + DEFAULT_CONSENT_DURATION_S
    assert await store.service.customers.check_in(customer.customer_id, None) == {
        "checked_in": True
    }
    assert await store.rows("SELECT * FROM decisions") == []
    assert await store.rows("SELECT * FROM visits") == []
    # The next tick (one second later) takes the customer out of the resolver and the list.
    version = store.service.coordinator.resolver.version
    store.clock.t += 1
    await store.service.tick(store.clock.t)
    assert customer.customer_id not in store.service.coordinator.resolver
    assert store.service.coordinator.resolver.version > version
    assert await store.service.customers.check_in(customer.customer_id, None) == {
        "checked_in": False,
        "reason": "no_consent",
    }


async def test_open_cards_are_retracted_when_the_consent_lapses(store: Store) -> None:
    customer = await store.enroll(letters_name())
    await store.grant(customer, "greeting")
    retracted: list[dict[str, Any]] = []
    store.service.hub.publish = retracted.append  # type: ignore[method-assign]
    store.clock.t = T0 + DEFAULT_CONSENT_DURATION_S - 100  # still present at the expiry
    await store.service.customers.check_in(customer.customer_id, None)
    cards = await store.rows("SELECT id, state FROM cards")
    assert [c["state"] for c in cards] == ["open"]
    store.clock.t = T0 + DEFAULT_CONSENT_DURATION_S
    await store.service.tick(store.clock.t)
    assert await store.rows("SELECT id, state FROM cards") == [
        {"id": cards[0]["id"], "state": "retracted"}
    ]
    assert {"type": "retract", "id": cards[0]["id"], "reason": "expired"} in retracted
    assert customer.customer_id not in store.service.coordinator.engine.present()


async def test_renewal_before_expiry_extends_and_is_logged(store: Store) -> None:
    customer = await store.enroll(letters_name())
    await store.grant(customer, "stock_check")
    store.clock.t = T0 + DEFAULT_CONSENT_DURATION_S - 10
    await store.grant(customer, "stock_check")
    store.clock.t = T0 + DEFAULT_CONSENT_DURATION_S + 10
    await store.service.tick(store.clock.t)
    assert customer.customer_id in store.service.coordinator.resolver
    log = await store.service.db.run(consent_store.consent_log_rows)
    assert [e.entry.action for e in log] == ["grant", "renew"]
    # After the lapse, granting again is a new grant, not a renewal.
    store.clock.t = T0 + 3 * DEFAULT_CONSENT_DURATION_S
    await store.grant(customer, "stock_check")
    log = await store.service.db.run(consent_store.consent_log_rows)
    assert [e.entry.action for e in log] == ["grant", "renew", "grant"]


async def test_scope_chain_counts_here_store_scope_elsewhere_does_not(store: Store) -> None:
    here = await store.enroll(letters_name())
    chain = await store.enroll(letters_name())
    elsewhere = await store.enroll(letters_name())
    await store.grant(here, "greeting", "store")
    text = next(t for t in load_consent_texts() if t.purpose == "greeting")

    def given_at_other_store(db: Any) -> None:
        for customer, scope in ((chain, "chain"), (elsewhere, "store")):
            consent_store.grant_consent(
                db,
                customer_id=customer.customer_id,
                subject_ref=store.service.customers.subject_ref(customer.customer_id),
                purpose="greeting",
                text_hash=text.hash,
                scope=scope,  # type: ignore[arg-type]
                channel="app",
                app_version=None,
                now=T0,
                duration_s=DEFAULT_CONSENT_DURATION_S,
                store_id=CHAIN_STORE,
            )

    await store.service.db.run(given_at_other_store)
    await store.restart()
    resolver = store.service.coordinator.resolver
    assert here.customer_id in resolver
    assert chain.customer_id in resolver
    assert elsewhere.customer_id not in resolver
    store.clock.t += 1
    for customer in (here, chain, elsewhere):
        await store.service.customers.check_in(customer.customer_id, None)
    greeted = await store.rows("SELECT customer_id FROM cards WHERE kind = 'greeting'")
    assert {r["customer_id"] for r in greeted} == {here.customer_id, chain.customer_id}


async def test_retention_purges_visits_decisions_cards_messages(store: Store) -> None:
    customer = await store.enroll(letters_name())
    other = await store.enroll(letters_name())
    for c in (customer, other):
        await store.grant(c, "greeting")
        await store.grant(c, "stock_check")
    await store.service.customers.check_in(customer.customer_id, "parts")
    cards = await store.rows("SELECT id FROM cards")
    assert len(cards) == 2
    await store.service.board.close_card(cards[0]["id"], "alice", "greeted")
    assert len(await store.rows("SELECT * FROM messages")) == 1
    # Text found only in the purged card (the access log keeps the card ids for the customer).
    needles = [f"Hello {customer.name}"]
    assert await store.traces(needles) != []  # the scan sees it before the purge
    # The customer leaves (a check-in keeps them present for 15 min); a day later the purge
    # runs at a tick, and a fresh visit of the other customer survives it.
    store.clock.t = T0 + 1000
    await store.service.tick(store.clock.t)
    assert (await store.rows("SELECT left_at FROM visits"))[0]["left_at"] is not None
    store.clock.t = T0 + 1000 + store.config.retention_s + 60
    await store.service.tick(store.clock.t)
    assert await store.rows("SELECT * FROM visits") == []
    await store.service.customers.check_in(other.customer_id, None)
    assert await store.service.board.purge(store.clock.t) == 0  # a fresh visit is kept
    assert await store.traces(needles) == []
    for table in ("visits", "decisions", "messages"):
        remaining = await store.rows(f"SELECT customer_id FROM {table}")
        assert {r["customer_id"] for r in remaining} == {other.customer_id}, table
    assert {r["customer_id"] for r in await store.rows("SELECT customer_id FROM cards")} == {
        other.customer_id
    }
    # Consent proof and the customer's profile are not visit records: they stay.
    assert len(await store.service.db.run(consent_store.consent_log_rows)) == 4
    assert len(await store.rows("SELECT * FROM customers")) == 2


# -- the stateful property-based test ----------------------------------------------------------

purposes_st = st.sampled_from(PURPOSES)


class ConsentLifecycle(RuleBasedStateMachine):
    customers = Bundle("customers")

    def __init__(self, cluster: Cluster | None = None) -> None:
        """On a SQLite file, or on a fresh database of `cluster` (PostgreSQL)."""
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.dir = Path(tempfile.mkdtemp(prefix="bulle-consent-"))
        self.clock = Clock(T0)
        self.cluster = cluster
        self.pg_name: str | None = None
        target: Target | None = None
        if cluster is not None:
            self.pg_name, url = pg.new_database(cluster)
            target = PgTarget(url)
        self.store = Store(self.dir, self.clock, target)
        run(self.loop, self.store.setup())
        self.live: list[Customer] = []
        self.erased: list[Customer] = []
        self.ticked = True

    def teardown(self) -> None:
        try:
            run(self.loop, self.store.close())
        finally:
            self.loop.close()
            shutil.rmtree(self.dir, ignore_errors=True)
            if self.cluster is not None and self.pg_name is not None:
                self.cluster.drop_database(self.pg_name)

    # -- helpers ------------------------------------------------------------------------------

    def advance(self, seconds: float, tick: bool = True) -> None:
        self.clock.t += seconds
        self.ticked = tick
        if tick:
            run(self.loop, self.store.service.tick(self.clock.t))

    @property
    def now(self) -> float:
        return self.clock.t

    # -- rules --------------------------------------------------------------------------------

    @initialize(target=customers)
    def first_customer(self) -> Customer:
        return self.enroll_customer()

    @precondition(lambda self: len(self.live) < 3)
    @rule(target=customers)
    def enroll(self) -> Customer:
        return self.enroll_customer()

    def enroll_customer(self) -> Customer:
        customer = run(self.loop, self.store.enroll(letters_name()))
        self.live.append(customer)
        return customer

    @rule(customer=customers, purpose=purposes_st)
    def grant(self, customer: Customer, purpose: Purpose) -> None:
        if customer in self.erased:
            return
        self.advance(CONSENT_STEP_S, tick=False)
        run(self.loop, self.store.grant(customer, purpose))
        customer.grant(purpose, self.now)

    @rule(customer=customers, purpose=purposes_st)
    def renew(self, customer: Customer, purpose: Purpose) -> None:
        """Re-grant while still active: logged as a renewal."""
        # `grant` advances the clock by CONSENT_STEP_S first: still active then, not just now
        # (a consent lapsing within that step is renewed as a new grant, rightly).
        if customer in self.erased or not customer.active(purpose, self.now + CONSENT_STEP_S):
            return
        before = len(run(self.loop, self.store.service.db.run(consent_store.consent_log_rows)))
        self.grant(customer, purpose)
        log = run(self.loop, self.store.service.db.run(consent_store.consent_log_rows))
        assert len(log) == before + 1
        assert log[-1].entry.action == "renew"

    @rule(customer=customers, which=st.sets(purposes_st, min_size=1))
    def withdraw(self, customer: Customer, which: set[Purpose]) -> None:
        if customer in self.erased:
            return
        self.advance(CONSENT_STEP_S, tick=False)
        run(
            self.loop,
            self.store.service.customers.withdraw(customer.customer_id, which, "app", None),
        )
        for purpose in which:
            customer.end(purpose, self.now)
        if not customer.any_active(self.now):
            assert customer.customer_id not in self.store.service.coordinator.resolver
        open_cards = run(
            self.loop,
            self.store.rows(
                "SELECT id FROM cards WHERE customer_id = ? AND state = 'open'",
                [customer.customer_id],
            ),
        )
        assert open_cards == []

    @rule(tick=st.booleans())
    def expire(self, tick: bool) -> None:
        """Jump to the exact instant the earliest active consent lapses."""
        ends = [
            end
            for c in self.live
            for intervals in c.intervals.values()
            for start, end in intervals
            if start <= self.now < end
        ]
        if not ends:
            return
        self.advance(min(ends) - self.now, tick)

    @rule(seconds=st.sampled_from([1.0, 5.0, 40.0, 900.0, 4 * 3600.0]))
    def wait(self, seconds: float) -> None:
        self.advance(seconds)

    @rule(customer=customers)
    def sighting(self, customer: Customer) -> None:
        if customer in self.erased:
            return
        self.advance(1.0)  # the service ticks every second before windows come in
        run(self.loop, self.store.sighting(customer))

    @rule(customer=customers, zone=st.sampled_from([None, "entrance", "parts"]))
    def check_in(self, customer: Customer, zone: str | None) -> None:
        if customer in self.erased:
            return
        try:
            answer = run(
                self.loop, self.store.service.customers.check_in(customer.customer_id, zone)
            )
        except RateLimitedError:
            return  # a second check-in within CHECK_IN_MIN_INTERVAL_S: refused, nothing read
        if not customer.any_active(self.now) and self.ticked:
            assert answer == {"checked_in": False, "reason": "no_consent"}

    @rule(customer=consumes(customers))
    def erase(self, customer: Customer) -> None:
        if customer in self.erased:
            return
        result = run(self.loop, self.store.service.customers.erase(customer.customer_id))
        assert result == {"erased": True}
        self.live.remove(customer)
        self.erased.append(customer)
        assert customer.customer_id not in self.store.service.coordinator.resolver

    @rule()
    def purge(self) -> None:
        self.advance(self.store.config.retention_s + 1.0)  # the tick runs the purge
        cutoff = self.now - self.store.config.retention_s
        stale = run(
            self.loop,
            self.store.rows(
                "SELECT 'v' AS t FROM visits WHERE coalesce(left_at, arrived_at) < ?"
                " UNION ALL SELECT 'd' FROM decisions WHERE at < ?"
                " UNION ALL SELECT 'm' FROM messages WHERE at < ?"
                " UNION ALL SELECT 'c' FROM cards WHERE created_at < ? AND state != 'open'",
                [cutoff] * 4,
            ),
        )
        assert stale == []

    @rule()
    def restart(self) -> None:
        run(self.loop, self.store.restart())
        self.ticked = True

    # -- invariants ---------------------------------------------------------------------------

    @invariant()
    def nothing_without_consent(self) -> None:
        if not hasattr(self, "store"):
            return
        by_id = {c.customer_id: c for c in self.live}
        q = self.store.rows
        for row in run(self.loop, q("SELECT customer_id, at FROM decisions")):
            assert by_id[row["customer_id"]].any_active(row["at"]), row
        for row in run(self.loop, q("SELECT customer_id, arrived_at FROM visits")):
            assert by_id[row["customer_id"]].any_active(row["arrived_at"]), row
        for row in run(self.loop, q("SELECT customer_id, at FROM messages")):
            assert by_id[row["customer_id"]].active("stock_check", row["at"]), row
        for row in run(self.loop, q("SELECT customer_id, kind, created_at, payload FROM cards")):
            customer = by_id[row["customer_id"]]
            at = row["created_at"]
            payload = json.loads(row["payload"])
            if row["kind"] == "greeting":
                assert customer.active("greeting", at), row
                assert payload["named"]
                assert customer.name in payload["text"]
            else:
                assert customer.active("stock_check", at), row
                if not customer.active("greeting", at):
                    # Stock consent alone never shows a name.
                    assert payload["name"] is None
                    assert customer.name not in row["payload"]

    @invariant()
    def resolver_holds_only_consenting(self) -> None:
        if not hasattr(self, "store") or not self.ticked:
            return
        allowed = {c.customer_id for c in self.live if c.any_active(self.now)}
        assert set(self.store.service.coordinator.resolver.subjects()) <= allowed

    @invariant()
    def erased_leave_no_trace(self) -> None:
        if not hasattr(self, "store"):
            return
        for customer in self.erased:
            assert run(self.loop, self.store.traces(customer.needles)) == []


ConsentLifecycle.TestCase.settings = settings(
    max_examples=25,
    stateful_step_count=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestConsentLifecycle = ConsentLifecycle.TestCase


@pytest.mark.postgres
def test_the_consent_lifecycle_on_postgres(pg_cluster: Cluster) -> None:
    """The same state machine on PostgreSQL (fewer examples: each is a fresh database)."""
    run_state_machine_as_test(
        lambda: ConsentLifecycle(pg_cluster),
        settings=settings(
            max_examples=8,
            stateful_step_count=20,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
