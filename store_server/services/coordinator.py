"""The coordinator: the server's shared in-memory state and the privacy-critical orderings.

It owns what the other services share: the EID resolver, the presence engine, the board hub,
the open visits and greeting times, the static iBeacon ids, and the allowlist version that
long-polling scanners wait on. The order of operations carries the privacy invariants:

- only customers with an active consent are in the resolver, so a sighting of anyone else
  resolves to nothing and is dropped without a trace (invariant 1): :meth:`refresh_consenting`
  at start-up, on expiry and when another process wrote; :meth:`admit` on a grant;
- every way a customer leaves (withdrawal, expiry, erasure) ends in :meth:`forget`, called
  after the database committed: the customer leaves the resolver, the engine and every
  in-memory map, the allowlist is bumped (waking long-polling scanners) and their cards
  leave the boards (invariant 3).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from store_server import eid
from store_server.calibration_online import OnlineCalibration, box_places, zone_places
from store_server.config import ServerConfig
from store_server.consent import subject_ref
from store_server.errors import ConfigError
from store_server.floor import Floor
from store_server.hub import BoardHub
from store_server.identity_load import (
    BUILD_WORKERS,
    BackgroundBuild,
    LoadedIdentities,
    identity_aad,
    read_identities,
    read_temporary_keys,
)
from store_server.keyseal import ChainKeys
from store_server.keywrap import pseudonym_key, unwrap_key
from store_server.policy import VisitState
from store_server.presence import PresenceEngine
from store_server.resolver import EidResolver, Record
from store_server.static_ids import StaticIds
from store_server.storage import consents, customers, keys, visits
from store_server.storage.database import Database, Handle, data_version

logger = logging.getLogger(__name__)

# Once a minute, re-read which consents are active if another connection (another process on
# the same database, e.g. a second store's server) has written since the last read: this
# server's own grants, withdrawals and erasures update the resolver at once, and expiries are
# scheduled. A million consenting customers make the full read cost about a second.
CONSENT_REFRESH_S = 60.0
# Re-read them every quarter of an hour anyway: a safety net that costs little.
CONSENT_FULL_REFRESH_S = 900.0
# From this many identities to load at once, read them with one scan of the identities table
# rather than by id (about ten times faster per identity).
IDENTITY_CHUNK = 2000
# From this many identities to load at once (a start-up), their EIDs are built in the
# background while the server already serves (in-process before serving, 50,000 take about
# 0.7 s): in a database reader thread, the server's memory only.
BUILD_IN_WORKERS_MIN = 50_000
# From this many, in worker processes instead: two cores for the AES work of a very large
# store (16 us of CPU an identity: 8 s at 500,000), each worker a Python process of its own
# (60-180 MB); below it, the reader thread finishes in a few seconds.
BUILD_PROCESSES_MIN = 500_000
# Identities unwrapped in-process before a background build: if none unwraps, the master key
# is wrong, and the server refuses to start rather than recognise nobody.
MASTER_KEY_PROBE = 16
# Chain mode: every 30 s, read the temporary keys the key authority (or another server's
# enrollment) stored since the last read: a customer whose first keys come from the authority
# is recognised within its run interval plus this.
TEMPORARY_KEY_REFRESH_S = 30.0
# ... reading back this much before the last read: the servers' clocks, which stamp the keys,
# may differ by this much (NTP keeps them far closer; re-reading a key changes nothing).
TEMPORARY_KEY_CLOCK_MARGIN_S = 300.0

ForgetReason = Literal["withdrawn", "expired", "erased", "unconsented"]
"""Why a customer is forgotten; the boards are told it with each retracted card."""


@dataclass(slots=True)
class Visit:
    """A customer's visit in progress: its row, its zone, what was shown during it."""

    visit_id: int | None
    zone: str | None
    state: VisitState = field(default_factory=VisitState)


class Coordinator:
    """The shared in-memory state of the server, and the steps that must stay in order."""

    def __init__(
        self,
        *,
        config: ServerConfig,
        floor: Floor,
        db: Database,
        master_key: bytes,
        clock: Callable[[], float],
        chain: ChainKeys | None = None,
    ) -> None:
        self.config = config
        # Chain mode: the resolver holds temporary keys only, never an identity key.
        self.chain = chain
        self.floor = floor
        self.store_id = floor.store_id
        self.db = db
        self.clock = clock
        self.hub = BoardHub()
        self.resolver = EidResolver(skew_windows=config.skew_windows)
        self._build: BackgroundBuild | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.engine = PresenceEngine(floor)
        settings = self.engine.settings
        # Online calibration listens to the calibration phone and to located check-ins.
        self.calibration = OnlineCalibration(
            zone_places(floor, self.engine.grid),
            box_places(floor, self.engine.grid),
            settings.reference_rssi_dbm,
            settings.path_loss_exponent,
            from_check_ins=config.calibration_from_check_ins,
        )
        self._master_key = master_key
        self._pseudonym_key = pseudonym_key(master_key)
        # Open visits and the last greeting time of each customer (the greeting cooldown).
        self.visits: dict[str, Visit] = {}
        self.last_greeted: dict[str, float] = {}
        # Last check-in of each customer (one every few seconds: see Customers.check_in).
        self.check_ins: dict[str, float] = {}
        # Legacy static iBeacon ids served to scanners, versioned with the resolver.
        self.static = StaticIds()
        # Consenting customers whose stored identity did not load (see _note_unreadable).
        self.unreadable: set[str] = set()
        self.allowlist_changed = asyncio.Condition()
        self.closing = False  # set at shutdown: long polls answer at once
        # When the next active consent lapses: the tick refreshes the resolver at that instant.
        self.next_expiry: float | None = None
        # Last consent refresh; -inf: the first `refresh_if_due` does it.
        self.last_refresh = float("-inf")
        self._last_full_refresh = float("-inf")
        self._data_version: int | None = None  # PRAGMA data_version at the last full read
        self._keys_read_at = float("-inf")  # chain mode: last read of new temporary keys
        # The cards shown on this server's boards, by customer: a withdrawal or erasure made
        # through another server (chain mode) retracts them here, although that server
        # already retracted (or, erasing, deleted) them in the shared database.
        self.shown: dict[str, set[str]] = {}
        # Whether this server may act on its view of consents (a new card, an allowlist):
        # always on one shop's own database; in chain mode, the consent feed's fresh view.
        self.consent_fresh: Callable[[], bool] = lambda: True
        # Called with the customer at the end of every forget (the consent feed's pseudonyms).
        self.on_forget: list[Callable[[str], None]] = []
        # Called with the customer once admitted on a grant (the consent feed's pseudonyms).
        self.on_admit: list[Callable[[str], None]] = []
        # The customers forgotten while each admission in progress was reading (see
        # `forgets_watched`).
        self._forget_watches: list[set[str]] = []

    @property
    def building(self) -> bool:
        """Whether the start-up build of the EIDs is running in the background."""
        return self._build is not None

    async def close(self) -> None:
        """Stop the background identity build, if one runs."""
        if self._build is not None:
            self._build.close()
            self._build = None
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()

    @property
    def master_key(self) -> bytes:
        return self._master_key

    def subject_ref(self, customer_id: str) -> str:
        """The customer's keyed pseudonym, the only name the consent log and audits use."""
        return subject_ref(self._pseudonym_key, customer_id)

    # -- leaving ---------------------------------------------------------------------------

    async def forget(
        self, customer_id: str, reason: ForgetReason, retracted_cards: Iterable[str] = ()
    ) -> None:
        """Drop everything held in memory about the customer; call after the commit.

        The one road out for withdrawal, expiry and erasure: the engine, the open visit, the
        greeting and check-in times, the resolver (the allowlist version moves, so the
        scanners drop the customer's EIDs at their next poll, woken now), the static id, and
        the customer's cards on the boards (``retracted_cards``, retracted in the database by
        the caller's transaction), each sent with ``reason``.
        """
        for watch in self._forget_watches:
            watch.add(customer_id)
        self.engine.forget(customer_id)
        self.calibration.forget(customer_id)
        self.visits.pop(customer_id, None)
        self.last_greeted.pop(customer_id, None)
        self.check_ins.pop(customer_id, None)
        self.unreadable.discard(customer_id)
        shown = self.shown.pop(customer_id, set())
        removed = self.resolver.remove(customer_id)
        # After the resolver: the customer is no longer due a static id, so it leaves too.
        if await self.sync_static([customer_id]) or removed:
            await self.notify_allowlist()
        cards = list(retracted_cards)
        self.publish_retractions([*cards, *sorted(shown.difference(cards))], reason)
        for hook in self.on_forget:
            hook(customer_id)

    def note_shown(self, customer_id: str, card_ids: Iterable[str]) -> None:
        """These cards of the customer are on this server's boards."""
        ids = list(card_ids)
        if ids:
            self.shown.setdefault(customer_id, set()).update(ids)

    def retract_shown(self, customer_id: str, reason: str) -> None:
        """Take the customer's cards off this server's boards (they stay in memory otherwise)."""
        self.publish_retractions(sorted(self.shown.pop(customer_id, set())), reason)

    def publish_retractions(self, card_ids: Iterable[str], reason: str) -> None:
        """Tell the boards these cards are gone, and why."""
        for card_id in card_ids:
            self.hub.publish({"type": "retract", "id": card_id, "reason": reason})

    # -- the allowlist ---------------------------------------------------------------------

    async def notify_allowlist(self) -> None:
        async with self.allowlist_changed:
            self.allowlist_changed.notify_all()

    async def release_long_polls(self) -> None:
        """At shutdown: answer every held allowlist long poll now, so none is cut."""
        self.closing = True
        await self.notify_allowlist()

    async def sync_static(self, customer_ids: Iterable[str]) -> bool:
        """Serve exactly the legacy iBeacon ids of these customers that are due; True if changed.

        Due: the server setting ``legacy_ibeacon`` is on, the customer is in the resolver (an
        active consent) and enabled a static id in their preferences.
        """
        if not self.config.legacy_ibeacon and not self.static:
            return False  # nothing served and nothing to serve: no change whatever the ids
        ids = list(dict.fromkeys(customer_ids))
        wanted: dict[str, str] = {}
        eligible = [c for c in ids if c in self.resolver] if self.config.legacy_ibeacon else []
        if eligible:
            wanted = await self.db.read(lambda db: customers.legacy_ibeacon_ids(db, eligible))
        return self.static.update(ids, wanted, self.resolver.touch)

    # -- joining ---------------------------------------------------------------------------

    def note_grant(self, expires_at: float) -> None:
        """A consent was granted until `expires_at`: refresh the resolver then at the latest."""
        if self.next_expiry is None or expires_at < self.next_expiry:
            self.next_expiry = expires_at

    @contextlib.contextmanager
    def forgets_watched(self) -> Iterator[set[str]]:
        """The customers forgotten while the block runs. A consent read before a withdrawal
        committed may be acted on after its `forget`: the admission then checks again, so
        that a withdrawn customer is never held again (pass the set to `admit`)."""
        watch: set[str] = set()
        self._forget_watches.append(watch)
        try:
            yield watch
        finally:
            self._forget_watches.remove(watch)

    async def admit(self, customer_id: str, now: float, forgotten: set[str] | None = None) -> None:
        """A consent was committed: hold the customer in the resolver, if not already there.

        ``forgotten``: from `forgets_watched`, opened before the consent was read. If the
        customer was forgotten since (a withdrawal that committed meanwhile), they are held
        only if a consent of theirs is still active when read again.
        """
        recheck = False
        while customer_id not in self.resolver:
            with self.forgets_watched() as meanwhile:
                if recheck and not await self.db.read(
                    lambda db: consents.active_purposes_at(
                        db, customer_id, self.store_id, self.clock()
                    )
                ):
                    return
                if self.chain is not None:
                    records = (await self._load_identities([customer_id])).records
                else:
                    rows = await self.db.read(lambda db: customers.identity_rows(db, [customer_id]))
                    records = [self._identity_record(row) for row in rows]
                if customer_id in meanwhile or (forgotten is not None and customer_id in forgotten):
                    recheck, forgotten = True, None
                    continue
                self.resolver.upsert_many(records, now)
            await self.sync_static([customer_id])
            await self.notify_allowlist()
            for hook in self.on_admit:
                hook(customer_id)
            return

    async def rekey(self, record: Record) -> None:
        """A new identity key was committed (re-enrollment): the old EIDs stop resolving now."""
        customer_id = record.subject
        if customer_id in self.resolver or customer_id in self.unreadable:
            # A customer whose stored identity did not load is recognised again from now on.
            self.unreadable.discard(customer_id)
            self.resolver.upsert(record, self.clock())
            await self.notify_allowlist()

    async def refresh_if_due(self, now: float) -> None:
        """The tick's consent work: re-read the consenting customers when one lapsed, when
        another connection wrote (checked every CONSENT_REFRESH_S), and every
        CONSENT_FULL_REFRESH_S anyway."""
        expired = self.next_expiry is not None and now >= self.next_expiry
        if expired or now - self.last_refresh >= CONSENT_REFRESH_S:
            self.last_refresh = now
            if (
                expired
                or now - self._last_full_refresh >= CONSENT_FULL_REFRESH_S
                or await self.db.run(data_version) != self._data_version
            ):
                await self.refresh_consenting(now)

    async def refresh_consenting(self, now: float) -> None:
        """Make the resolver hold exactly the customers with an active consent."""
        store_id = self.store_id

        def read(db: Handle) -> tuple[int, list[str], float | None]:
            # The version first: a commit by another connection after it shows at the next check.
            return (
                data_version(db),
                consents.consenting_customer_ids(db, now, store_id),
                consents.next_consent_expiry(db, now, store_id),
            )

        self._data_version, found, self.next_expiry = await self.db.run(read)
        self._last_full_refresh = now
        if self.chain is not None and self._keys_read_at == float("-inf"):
            # The first load reads every key stored so far: the refresh takes newer ones.
            self._keys_read_at = now
        changed = False
        if len(self.resolver) or self.static or self.unreadable:
            ids = set(found)
            for subject in [s for s in self.resolver.subjects() if s not in ids]:
                retracted = await self.db.write(
                    functools.partial(
                        visits.retract_cards_of, customer_id=subject, now=now, store_id=store_id
                    )
                )
                await self.forget(subject, "expired", retracted)
            gone = [c for c in self.static.customers() if c not in ids]
            self.unreadable &= ids  # no longer consenting: nothing to recognise either way
            del ids  # freed before the identities load, not held through it
            resolver = self.resolver
            unreadable = self.unreadable
            missing = [i for i in found if i not in resolver and i not in unreadable]
        else:
            # The first load: nothing to remove or compare, and the query's ids are distinct.
            gone, missing = [], found
        del found
        if missing:
            if not (
                self.chain is None
                and len(missing) >= BUILD_IN_WORKERS_MIN
                and self._build is None
                and await self._build_in_background(missing, now)
            ):
                started = time.perf_counter()
                loaded = await self._load_identities(missing)
                self._note_unreadable(
                    loaded.unreadable, len(loaded.records), first_load=len(self.resolver) == 0
                )
                self.resolver.upsert_many(loaded.records, now)
                if len(missing) >= IDENTITY_CHUNK:
                    logger.info(
                        "loaded %d identities in %.2f s",
                        len(missing),
                        time.perf_counter() - started,
                    )
                del loaded
            changed = True
        changed |= await self.sync_static([*gone, *missing])
        if changed:
            await self.notify_allowlist()

    def _note_unreadable(self, unreadable: list[str], loaded: int, *, first_load: bool) -> None:
        """Remember (and log once, without identifiers) the identities that did not load.

        They are not read again until their row changes (re-enrollment) or their consent
        ends. If nothing at all unwraps on the first load, the master key is the likely
        culprit: a configuration error, rather than a server that recognises nobody.
        """
        if not unreadable:
            return
        if first_load and not loaded:
            raise ConfigError(
                f"none of the {len(unreadable)} stored identities could be unwrapped: "
                "is master_key the one this database was created with?",
                key="master_key",
            )
        self.unreadable.update(unreadable)
        logger.error(
            "%d stored identities could not be loaded (tampered or corrupt rows); those "
            "customers will not be recognised until they re-enroll",
            len(unreadable),
        )

    async def _load_identities(self, customer_ids: list[str]) -> LoadedIdentities:
        """The identities of these customers, unwrapped, in the database thread (in chain
        mode, their temporary keys: the identity keys are never read).

        The resolver keeps the caller's id strings. Many customers: one scan of the
        identities table; a few (consents granted since the last refresh): looked up by id.
        """
        scan = len(customer_ids) >= IDENTITY_CHUNK
        chain = self.chain
        if chain is not None:
            now = self.clock()
            return await self.db.read(
                lambda db: read_temporary_keys(db, chain.tk_key, customer_ids, now, scan=scan)
            )
        return await self.db.read(
            lambda db: read_identities(db, self._master_key, customer_ids, scan=scan)
        )

    async def refresh_temporary_keys(self, now: float) -> None:
        """Chain mode: take the temporary keys stored since the last read (by the key
        authority, or by another server's enrollment) for the customers held; every
        TEMPORARY_KEY_REFRESH_S (the tick calls this every second)."""
        if self.chain is None or now - self._keys_read_at < TEMPORARY_KEY_REFRESH_S:
            return
        since = self._keys_read_at - TEMPORARY_KEY_CLOCK_MARGIN_S
        self._keys_read_at = now
        fresh = await self.db.read(lambda db: keys.temporary_keys_since(db, since, now))
        held = [c for c in dict.fromkeys(row.customer_id for row in fresh) if c in self.resolver]
        if not held:
            return
        removals = self.resolver.removals
        loaded = await self._load_identities(held)
        if self.resolver.removals != removals:  # someone left meanwhile: keep only the held
            loaded.records = [r for r in loaded.records if r.subject in self.resolver]
        before = self.resolver.version
        self.resolver.upsert_many(loaded.records, now)
        if self.resolver.version != before:
            await self.notify_allowlist()

    async def _build_in_background(self, customer_ids: list[str], now: float) -> bool:
        """Count these customers as consenting now; build their EIDs in the background.

        The server serves meanwhile (check-ins, boards, the customer API); a customer's EIDs
        resolve once their part is installed. A few identities are unwrapped here first: if
        none does, False, and the caller loads them in-process, where a wrong master key
        stops the start-up.
        """
        probe = await self._load_identities(customer_ids[:MASTER_KEY_PROBE])
        if not probe.records:
            return False
        del probe
        self.resolver.expect(customer_ids)
        rowids = await self.db.read(customers.identity_rowid_range)
        build = BackgroundBuild(
            self.resolver,
            target=self.db.target,
            master_key=self._master_key,
            on_progress=self.notify_allowlist,
            read=self.db.read,
            workers=BUILD_WORKERS if len(customer_ids) >= BUILD_PROCESSES_MIN else 0,
        )
        self._build = build

        async def run() -> None:
            try:
                await self._finish_build(build, customer_ids, now, rowids)
            finally:
                self._build = None

        self._tasks.append(asyncio.create_task(run(), name="bulle-identity-build"))
        return True

    async def _finish_build(
        self, build: BackgroundBuild, customer_ids: list[str], now: float, rowids: tuple[int, int]
    ) -> None:
        """Run a background build, then account for the customers it did not install."""
        try:
            installed, unreadable = await build.run(now, self.store_id, rowids)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("background identity build failed; loading in-process")
            installed, unreadable = 0, []
        unreadable = [s for s in unreadable if self.resolver.is_expected(s)]
        for subject in unreadable:
            self.resolver.remove(subject)  # consenting, but not recognisable
        # Anyone still expected (a consent given between the two reads, a failed build) is
        # loaded here, so that no consenting customer is left unrecognised.
        waiting = [c for c in customer_ids if self.resolver.is_expected(c)]
        if waiting:
            loaded = await self._load_identities(waiting)
            for subject in loaded.unreadable:
                self.resolver.remove(subject)
            unreadable += loaded.unreadable
            installed += len(loaded.records)
            self.resolver.upsert_many(loaded.records, self.clock())
        self._note_unreadable(unreadable, installed, first_load=False)
        await self.sync_static(customer_ids)
        await self.notify_allowlist()
        release_startup_garbage()

    def _identity_record(self, row: dict[str, Any]) -> eid.IdentityRecord:
        key = unwrap_key(self._master_key, row["key_wrapped"], identity_aad(row["customer_id"]))
        return eid.IdentityRecord(
            subject=row["customer_id"],
            identity_key=key,
            k=row["k"],
            clock_offset_s=row["clock_offset_s"],
        )


def release_startup_garbage() -> None:
    """After a bulk load: collect, then freeze the survivors.

    The loaded identities live as long as the process: frozen, later full collections skip
    them.
    """
    gc.collect()
    gc.freeze()
