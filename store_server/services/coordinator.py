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
import ctypes
import functools
import gc
import logging
import time
from array import array
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from store_server import identity
from store_server.config import ServerConfig
from store_server.consent import subject_ref
from store_server.errors import ConfigError
from store_server.floor import Floor
from store_server.hub import BoardHub
from store_server.keywrap import (
    KeyUnwrapper,
    KeyWrapError,
    derive_key,
    identity_aad,
    unwrap_key,
)
from store_server.policy import VisitState
from store_server.presence import PresenceEngine
from store_server.static_ids import StaticIds
from store_server.storage import consents, customers, visits
from store_server.storage.database import Database, Handle, data_version

logger = logging.getLogger(__name__)

# Once a minute, re-read which consents are active if another connection (another process on
# the same database, e.g. a second store's server) has written since the last read: this
# server's own grants, withdrawals and erasures update the resolver at once, and expiries are
# scheduled. A million consenting customers make the full read cost about a second.
CONSENT_REFRESH_S = 60.0
# Re-read them every quarter of an hour anyway: a safety net that costs little.
CONSENT_FULL_REFRESH_S = 900.0
# Identity rows read per database call when loading consenting customers: a few thousand
# keep each round trip cheap and the transient row dicts to about a megabyte.
IDENTITY_CHUNK = 2000

ForgetReason = Literal["withdrawn", "expired", "erased"]
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
    ) -> None:
        self.config = config
        self.floor = floor
        self.store_id = floor.store_id
        self.db = db
        self.clock = clock
        self.hub = BoardHub()
        self.resolver = identity.EidResolver(skew_windows=config.skew_windows)
        self.engine = PresenceEngine(floor)
        self._master_key = master_key
        self._pseudonym_key = derive_key(master_key, "consent-pseudonym")
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
        self.engine.forget(customer_id)
        self.visits.pop(customer_id, None)
        self.last_greeted.pop(customer_id, None)
        self.check_ins.pop(customer_id, None)
        self.unreadable.discard(customer_id)
        removed = self.resolver.remove(customer_id)
        # After the resolver: the customer is no longer due a static id, so it leaves too.
        if await self.sync_static([customer_id]) or removed:
            await self.notify_allowlist()
        self.publish_retractions(retracted_cards, reason)

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

    async def admit(self, customer_id: str, now: float) -> None:
        """A consent was committed: hold the customer in the resolver, if not already there."""
        if customer_id in self.resolver:
            return
        rows = await self.db.read(lambda db: customers.identity_rows(db, [customer_id]))
        for row in rows:
            self.resolver.upsert(self._identity_record(row), now)
        await self.sync_static([customer_id])
        await self.notify_allowlist()

    async def rekey(self, record: identity.IdentityRecord) -> None:
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
        changed = False
        if len(self.resolver) or self.static or self.unreadable:
            ids = set(found)
            for subject in [s for s in self.resolver.subjects() if s not in ids]:
                retracted = await self.db.write(
                    functools.partial(visits.retract_cards_of, customer_id=subject, now=now)
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
            started = time.perf_counter()
            loaded = await self._identity_columns(missing)
            unwrapped = time.perf_counter()
            self._note_unreadable(loaded, first_load=len(self.resolver) == 0)
            self.resolver.upsert_columns(loaded.build(), now)
            del loaded
            if len(missing) >= IDENTITY_CHUNK:
                logger.info(
                    "loaded %d identities: read and unwrapped in %.2f s, EIDs built in %.2f s",
                    len(missing),
                    unwrapped - started,
                    time.perf_counter() - unwrapped,
                )
            changed = True
        changed |= await self.sync_static([*gone, *missing])
        if changed:
            await self.notify_allowlist()

    def _note_unreadable(self, loaded: _ColumnsBuilder, *, first_load: bool) -> None:
        """Remember (and log once, without identifiers) the identities that did not load.

        They are not read again until their row changes (re-enrollment) or their consent
        ends. If nothing at all unwraps on the first load, the master key is the likely
        culprit: a configuration error, rather than a server that recognises nobody.
        """
        if not loaded.unreadable:
            return
        if first_load and not loaded.count:
            raise ConfigError(
                f"none of the {len(loaded.unreadable)} stored identities could be unwrapped: "
                "is master_key the one this database was created with?",
                key="master_key",
            )
        self.unreadable.update(loaded.unreadable)
        logger.error(
            "%d stored identities could not be loaded (tampered or corrupt rows); those "
            "customers will not be recognised until they re-enroll",
            len(loaded.unreadable),
        )

    async def _identity_columns(self, customer_ids: list[str]) -> _ColumnsBuilder:
        """The identities of these customers as columns, unwrapped.

        No object is kept per identity: keys, exponents and offsets go straight into flat
        columns, and the resolver keeps the caller's id strings (one string per subject, not
        two: about 7 MB with 100k identities). Many customers (start-up): one scan of the
        identities table, in the database thread, about ten times faster than looking them
        up; a few (consents granted since the last refresh): IDENTITY_CHUNK at a time.
        """
        columns = _ColumnsBuilder(KeyUnwrapper(self._master_key))
        wanted = {customer_id: customer_id for customer_id in customer_ids}
        if len(customer_ids) >= IDENTITY_CHUNK:

            def scan(db: Handle) -> None:
                for batch in customers.identity_batches(db):
                    for customer_id, blob, k, offset in batch:
                        subject = wanted.get(customer_id)
                        if subject is not None:
                            columns.add(subject, blob, k, offset)

            await self.db.read(scan)
            return columns
        for start in range(0, len(customer_ids), IDENTITY_CHUNK):
            chunk = customer_ids[start : start + IDENTITY_CHUNK]
            rows = await self.db.read(
                functools.partial(customers.identity_rows, customer_ids=chunk)
            )
            for row in rows:
                columns.add(
                    wanted.get(row["customer_id"], row["customer_id"]),
                    row["key_wrapped"],
                    row["k"],
                    row["clock_offset_s"],
                )
            del rows
        return columns

    def _identity_record(self, row: dict[str, Any]) -> identity.IdentityRecord:
        key = unwrap_key(self._master_key, row["key_wrapped"], identity_aad(row["customer_id"]))
        return identity.IdentityRecord(
            subject=row["customer_id"],
            identity_key=key,
            k=row["k"],
            clock_offset_s=row["clock_offset_s"],
        )


def release_startup_garbage() -> None:
    """After a bulk load: collect, freeze the survivors and hand free heap back to the OS.

    The loaded identities live as long as the process: frozen, later full collections skip
    them. glibc keeps the heap freed by the load (row dicts, list growth, dict resizes);
    ``malloc_trim`` returns it (about 13 MB with 100k identities). No-op without glibc.
    """
    gc.collect()
    gc.freeze()
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (AttributeError, OSError):
        return
    trim(0)


class _ColumnsBuilder:
    """Unwraps stored identities into :class:`identity.IdentityColumns`, one row at a time.

    A row that does not unwrap (tampered, or another master key) or holds an impossible
    exponent or clock offset is left out and its customer listed in ``unreadable``: that
    customer is simply not recognised, and everyone else still is.
    """

    __slots__ = ("_keys", "_ks", "_offsets", "_subjects", "_unwrap", "unreadable")

    def __init__(self, unwrap: KeyUnwrapper) -> None:
        self._unwrap = unwrap
        self.unreadable: list[str] = []
        self._subjects: list[str] = []
        self._keys = bytearray()
        self._ks = array("B")
        self._offsets = array("d")

    def add(self, subject: str, blob: bytes, k: int, offset: float) -> None:
        """Add one stored identity, or list it in ``unreadable``."""
        try:
            key = self._unwrap(blob, identity_aad(subject))
        except KeyWrapError:
            self.unreadable.append(subject)
            return
        if (
            type(k) is not int
            or not 0 <= k <= identity.MAX_ROTATION_EXPONENT
            or not isinstance(offset, int | float)
            or not abs(offset) <= identity.MAX_CLOCK_OFFSET_S  # NaN fails too
        ):
            self.unreadable.append(subject)
            return
        self._ks.append(k)
        self._offsets.append(offset)
        self._keys += key
        self._subjects.append(subject)

    @property
    def count(self) -> int:
        """Identities loaded so far (the unreadable ones not counted)."""
        return len(self._subjects)

    def build(self) -> identity.IdentityColumns:
        return identity.IdentityColumns(self._subjects, self._keys, self._ks, self._offsets)
