"""The store service: wires storage, identity, presence, policy and the board hub.

This is the one stateful object of the server. HTTP views call it; it calls the pure
modules with the current time and runs database work on the database thread. The order of
operations carries the privacy invariants:

- only customers with an active consent are in the EID resolver, so a sighting of anyone
  else resolves to nothing and is dropped without a trace (invariant 1);
- a withdrawal commits first, then leaves the resolver and the presence engine, bumps the
  allowlist (waking long-polling scanners) and retracts the customer's cards (invariant 3);
- a card is inserted in the same transaction that re-checks the consent, so a withdrawal
  that committed before can never be followed by a card.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
import hmac
import logging
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from store_server import eid
from store_server.config import ServerConfig
from store_server.consent import (
    DEFAULT_CONSENT_DURATION_S,
    PURPOSES,
    ChainedEntry,
    ConsentText,
    Purpose,
    Scope,
    checkpoint_key,
    sign_checkpoint,
    subject_ref,
    verify_checkpoints,
)
from store_server.errors import (
    AuthenticationError,
    ConfigError,
    ForbiddenError,
    NotFoundError,
    ValidationError,
)
from store_server.floor import Floor
from store_server.hub import BoardHub
from store_server.identity_load import (
    BackgroundBuild,
    LoadedIdentities,
    identity_aad,
    read_identities,
)
from store_server.ingest import Batch, Heartbeat
from store_server.keywrap import unwrap_key, wrap_key
from store_server.policy import Decision, Trigger, VisitState, decide
from store_server.presence import PresenceEngine, PresenceEvent
from store_server.resolver import AllowlistItem, EidResolver
from store_server.services.staff import StaffService
from store_server.signing import NonceStore, SignedHeaders, verify
from store_server.static_ids import StaticIds, new_ibeacon_id
from store_server.storage import catalog, consents, customers, scanners, visits
from store_server.storage.batch_log import BatchLog
from store_server.storage.database import Database, Handle, data_version

logger = logging.getLogger(__name__)


# Phones per slice of the presence round: about 10 ms of CPU with 20 boxes (bench/presence), so
# the event loop is never held long, and few slices per round.
PRESENCE_SLICE = 100
# The presence engine and the resolver advance once a second: the aggregation window.
TICK_S = 1.0
# Once a minute, re-read which consents are active if another connection (another process on
# the same database, e.g. a second store's server) has written since the last read: this
# server's own grants, withdrawals and erasures update the resolver at once, and expiries are
# scheduled. A million consenting customers make the full read cost about a second.
CONSENT_REFRESH_S = 60.0
# Re-read them every quarter of an hour anyway: a safety net that costs little.
CONSENT_FULL_REFRESH_S = 900.0
# A window older than this when it reaches the server (outbox backlog) is counted but does
# not drive presence: greeting someone who left an hour ago would be wrong.
STALE_WINDOW_S = 30.0
# Calibration offsets beyond 30 dB mean a broken antenna or a wrong placement, not a
# calibration: refuse them.
MAX_CALIBRATION_DB = 30.0
# Longest allowed long poll for the allowlist (seconds).
MAX_ALLOWLIST_WAIT_S = 30.0
# From this many identities to load at once, read them with one scan of the identities table
# rather than by id (about ten times faster per identity).
IDENTITY_CHUNK = 2000
# From this many identities to load at once (a start-up), their EIDs are built in worker
# processes while the server already serves: in-process, 50,000 take about 0.7 s.
BUILD_IN_WORKERS_MIN = 50_000
# Identities unwrapped in-process before a background build: if none unwraps, the master key
# is wrong, and the server refuses to start rather than recognise nobody.
MASTER_KEY_PROBE = 16


@dataclass(slots=True)
class _Visit:
    visit_id: int | None
    zone: str | None
    state: VisitState = field(default_factory=VisitState)


def derive_key(master_key: bytes, label: str) -> bytes:
    return hmac.new(master_key, b"bulle/" + label.encode(), hashlib.sha256).digest()


def pseudonym_key(master_key: bytes) -> bytes:
    """The key of the consent log's subject references (see consent.subject_ref)."""
    return derive_key(master_key, "consent-pseudonym")


class StoreService:
    def __init__(
        self,
        *,
        config: ServerConfig,
        floor: Floor,
        db: Database,
        master_key: bytes,
        consent_texts: Iterable[ConsentText],
        clock: Callable[[], float] = time.time,
        timezone: str | None = None,
    ) -> None:
        self.config = config
        self.floor = floor
        self.store_id = floor.store_id
        self.db = db
        self.hub = BoardHub()
        self.clock = clock
        self._master_key = master_key
        self._pseudonym_key = pseudonym_key(master_key)
        self._checkpoint_key = checkpoint_key(master_key)
        self._checkpointed_seq: int | None = None
        self._consent_texts = tuple(consent_texts)
        self.resolver = EidResolver(skew_windows=config.skew_windows)
        self._build: BackgroundBuild | None = None
        self.engine = PresenceEngine(floor)
        self._visits: dict[str, _Visit] = {}
        self._last_greeted: dict[str, float] = {}
        self._allowlist_changed = asyncio.Condition()
        self._closing = False  # set at shutdown: long polls answer at once
        self._nonces = NonceStore(2 * config.signature_tolerance_s)
        # Scanner registrations last read (secret unwrapped), by scanner id.
        self._registrations: dict[str, ScannerRegistration] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._tz = ZoneInfo(timezone) if timezone else None
        self.frames_resolved = 0
        self.frames_unresolved = 0
        # When the next active consent lapses: the tick refreshes the resolver at that instant.
        self._next_expiry: float | None = None
        # Last consent refresh and purge; -inf: the first `tick` does both.
        self._last_refresh = float("-inf")
        self._last_full_refresh = float("-inf")
        self._data_version: int | None = None  # PRAGMA data_version at the last full read
        self._last_purge = float("-inf")
        # Legacy static iBeacon ids served to scanners, versioned with the resolver.
        self._static = StaticIds()
        # Consenting customers whose stored identity did not load (see _note_unreadable).
        self._unreadable: set[str] = set()
        self._batches = BatchLog(db)
        self.staff = StaffService(db, clock)
        # Observability (metrics): the periodic tick's duration is handed to this callback,
        # and the allowlist long polls held open are counted.
        self.tick_observer: Callable[[float], None] | None = None
        self.long_polls_waiting = 0
        # When the periodic tick last completed (time.monotonic()): the resolver advances to
        # the next EID window and presence decides departures there; /readyz checks it runs.
        self.last_tick_at = time.monotonic()

    def queue_depths(self) -> dict[str, int]:
        """Work waiting inside the server, by queue (for the metrics)."""
        return {
            "batch_commits": self._batches.pending,
            "allowlist_long_polls": self.long_polls_waiting,
        }

    @property
    def timezone_name(self) -> str | None:
        """The store's IANA time zone name, if the store file sets one."""
        return self._tz.key if self._tz is not None else None

    # -- life cycle ----------------------------------------------------------------------

    async def prepare(self) -> None:
        """Load the consent texts and the consenting customers (no background task)."""
        await self.db.write(lambda db: consents.ensure_consent_texts(db, self._consent_texts))
        for scanner_id, offset in (await self.db.read(scanners.calibration_overrides)).items():
            if scanner_id in self.engine.calibration():
                self.engine.set_calibration(scanner_id, offset)
        await self._refresh_consenting(self.clock())
        if len(self.resolver) >= IDENTITY_CHUNK and self._build is None:
            release_startup_garbage()

    async def start(self) -> None:
        await self.prepare()
        self._tasks.append(asyncio.create_task(self._tick_loop(), name="bulle-tick"))

    async def stop(self) -> None:
        await self._batches.close()
        with contextlib.suppress(Exception):  # best effort: the next start signs it anyway
            await self.checkpoint_consent_log(self.clock())
        if self._build is not None:
            self._build.close()
            self._build = None
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        await self.hub.close_all()
        self.staff.close()

    async def _presence_round(self, now: float) -> None:
        """The presence filter for every phone with new windows, a slice at a time.

        Each slice is at most PRESENCE_SLICE phones, and the event loop runs between slices
        (batches, pages, WebSockets), so the round never holds the loop for long (bench/presence:
        about 10 ms of CPU per slice of 100 phones with 20 boxes). Slices are bounded by the
        phones pending when the round starts: windows arriving meanwhile wait for the next one.
        """
        engine = self.engine
        await self._handle_events(engine.tick(now, limit=PRESENCE_SLICE))
        for _ in range(engine.pending() // PRESENCE_SLICE + 1):
            if not engine.pending():
                break
            await asyncio.sleep(0)
            await self._handle_events(engine.tick(max(now, self.clock()), limit=PRESENCE_SLICE))

    async def _tick_loop(self) -> None:
        self._last_refresh = self._last_purge = self.clock()
        while True:
            await asyncio.sleep(TICK_S)
            started = time.perf_counter()
            try:
                await self.tick(self.clock())
            except Exception:
                logger.exception("periodic work failed; retrying at the next tick")
            self.last_tick_at = time.monotonic()
            if self.tick_observer is not None:
                self.tick_observer(time.perf_counter() - started)

    async def tick(self, now: float) -> None:
        """One step of periodic work at `now` (the background task calls it every TICK_S)."""
        await self._presence_round(now)
        if self.resolver.advance(now):
            await self._notify_allowlist()
        expired = self._next_expiry is not None and now >= self._next_expiry
        if expired or now - self._last_refresh >= CONSENT_REFRESH_S:
            self._last_refresh = now
            if (
                expired
                or now - self._last_full_refresh >= CONSENT_FULL_REFRESH_S
                or await self.db.run(data_version) != self._data_version
            ):
                await self._refresh_consenting(now)
        if now - self._last_purge >= self.config.purge_interval_s:
            self._last_purge = now
            await self.purge(now)
        await self.checkpoint_consent_log(now)

    async def checkpoint_consent_log(self, now: float) -> None:
        """Sign the consent log's head when it has moved since the last checkpoint (within a
        tick of every grant, withdrawal or erasure, and at stop): `consent-log verify` then
        detects a rewritten or deleted entry even where the hashes were recomputed."""
        head = await self.db.read(consents.consent_log_head)
        if head is None or head[0] == self._checkpointed_seq:
            return
        point = sign_checkpoint(self._checkpoint_key, head[0], head[1], now)
        await self.db.write(lambda db: consents.add_checkpoint(db, point))
        self._checkpointed_seq = head[0]
        # The head's hash outside the database: an anchor against rolling the file back.
        logger.info("consent log checkpoint: entry %s, head %s", head[0], head[1][:16])

    async def _refresh_consenting(self, now: float) -> None:
        """Make the resolver hold exactly the customers with an active consent."""
        store_id = self.store_id

        def read(db: Handle) -> tuple[int, list[str], float | None]:
            # The version first: a commit by another connection after it shows at the next check.
            return (
                data_version(db),
                consents.consenting_customer_ids(db, now, store_id),
                consents.next_consent_expiry(db, now, store_id),
            )

        self._data_version, found, self._next_expiry = await self.db.run(read)
        self._last_full_refresh = now
        changed = False
        if len(self.resolver) or self._static or self._unreadable:
            ids = set(found)
            for subject in [s for s in self.resolver.subjects() if s not in ids]:
                changed |= self.resolver.remove(subject)
                self.engine.forget(subject)
                self._visits.pop(subject, None)
                await self._retract(subject, now, "expired")
            gone = [c for c in self._static.customers() if c not in ids]
            self._unreadable &= ids  # no longer consenting: nothing to recognise either way
            del ids  # freed before the identities load, not held through it
            resolver = self.resolver
            unreadable = self._unreadable
            missing = [i for i in found if i not in resolver and i not in unreadable]
        else:
            # The first load: nothing to remove or compare, and the query's ids are distinct.
            gone, missing = [], found
        del found
        if missing:
            if not (
                len(missing) >= BUILD_IN_WORKERS_MIN
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
        changed |= await self._sync_static([*gone, *missing])
        if changed:
            await self._notify_allowlist()

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
        self._unreadable.update(unreadable)
        logger.error(
            "%d stored identities could not be loaded (tampered or corrupt rows); those "
            "customers will not be recognised until they re-enroll",
            len(unreadable),
        )

    async def _load_identities(self, customer_ids: list[str]) -> LoadedIdentities:
        """The identities of these customers, unwrapped, in the database thread.

        The resolver keeps the caller's id strings. Many customers: one scan of the
        identities table; a few (consents granted since the last refresh): looked up by id.
        """
        scan = len(customer_ids) >= IDENTITY_CHUNK
        return await self.db.read(
            lambda db: read_identities(db, self._master_key, customer_ids, scan=scan)
        )

    async def _build_in_background(self, customer_ids: list[str], now: float) -> bool:
        """Count these customers as consenting now; build their EIDs in worker processes.

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
            db_path=self.db.path,
            master_key=self._master_key,
            on_progress=self._notify_allowlist,
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
        await self._sync_static(customer_ids)
        await self._notify_allowlist()
        release_startup_garbage()

    def _identity_record(self, row: dict[str, Any]) -> eid.IdentityRecord:
        key = unwrap_key(self._master_key, row["key_wrapped"], identity_aad(row["customer_id"]))
        return eid.IdentityRecord(
            subject=row["customer_id"],
            identity_key=key,
            k=row["k"],
            clock_offset_s=row["clock_offset_s"],
        )

    async def release_long_polls(self) -> None:
        """At shutdown: answer every held allowlist long poll now, so none is cut."""
        self._closing = True
        await self._notify_allowlist()

    async def _retract(self, customer_id: str, now: float, reason: str) -> None:
        retracted = await self.db.write(lambda db: visits.retract_cards_of(db, customer_id, now))
        self._publish_retractions(retracted, reason)

    def _publish_retractions(self, card_ids: Iterable[str], reason: str) -> None:
        """Tell the boards these cards are gone, and why."""
        for card_id in card_ids:
            self.hub.publish({"type": "retract", "id": card_id, "reason": reason})

    async def _sync_static(self, customer_ids: Iterable[str]) -> bool:
        """Serve exactly the legacy iBeacon ids of these customers that are due; True if changed.

        Due: the server setting ``legacy_ibeacon`` is on, the customer is in the resolver (an
        active consent) and enabled a static id in their preferences.
        """
        if not self.config.legacy_ibeacon and not self._static:
            return False  # nothing served and nothing to serve: no change whatever the ids
        ids = list(dict.fromkeys(customer_ids))
        wanted: dict[str, str] = {}
        eligible = [c for c in ids if c in self.resolver] if self.config.legacy_ibeacon else []
        if eligible:
            wanted = await self.db.read(lambda db: customers.legacy_ibeacon_ids(db, eligible))
        return self._static.update(ids, wanted, self.resolver.touch)

    async def _notify_allowlist(self) -> None:
        async with self._allowlist_changed:
            self._allowlist_changed.notify_all()

    # -- scanners ------------------------------------------------------------------------

    def wrap_scanner_secret(self, scanner_id: str, secret: str) -> bytes:
        return wrap_key(self._master_key, secret.encode(), _aad("scanner", scanner_id))

    async def authenticate_scanner(
        self, signed: SignedHeaders, method: str, path_qs: str, body: bytes
    ) -> str:
        """Verify a signed request; return the scanner's store id."""
        # Read the registration on every request: a revocation made by another process
        # (`store-server scanner revoke`) takes effect at the scanner's next request.
        row = await self.db.read(lambda db: scanners.scanner_row(db, signed.scanner_id))
        return self._verify_with(
            self._registration(signed.scanner_id, row), signed, method, path_qs, body
        )

    async def authenticate_batch(
        self, signed: SignedHeaders, method: str, path_qs: str, body: bytes
    ) -> ScannerRegistration:
        """:meth:`authenticate_scanner` for a batch, whose registration is re-read later.

        The signature is checked with the secret of the registration last read for this
        scanner (reading it first if there is none, or if that secret does not verify: it may
        have been replaced). The registration itself is checked again by :meth:`ingest`, in
        the transaction that records the batch: a scanner revoked or re-registered by another
        process meanwhile has its batch refused there, before anything of it is kept. So a
        revocation still takes effect at the scanner's next request, without a database round
        trip per batch before that transaction.
        """
        known = self._registrations.get(signed.scanner_id)
        if known is not None:
            try:
                self._verify_with(known, signed, method, path_qs, body)
            except AuthenticationError as exc:
                if exc.code != "bad_signature":
                    raise
            else:
                return known
        row = await self.db.read(lambda db: scanners.scanner_row(db, signed.scanner_id))
        known = self._registration(signed.scanner_id, row)
        self._verify_with(known, signed, method, path_qs, body)
        return known

    def _registration(self, scanner_id: str, row: dict[str, Any] | None) -> ScannerRegistration:
        """The usable registration of a scanner row (cached); AuthenticationError if none."""
        if row is None or row["revoked_at"] is not None:
            self._registrations.pop(scanner_id, None)
            raise AuthenticationError("unknown or revoked scanner", code="unknown_scanner")
        if str(row["store_id"]) != self.store_id:
            # Registered for another store (a database shared by a chain's servers): this
            # server neither takes its batches nor shows it this store's allowlist.
            raise ForbiddenError("this scanner is registered for another store", code="wrong_store")
        wrapped = bytes(row["secret_wrapped"])
        known = self._registrations.get(scanner_id)
        if known is None or known.secret_wrapped != wrapped:
            plain = unwrap_key(self._master_key, wrapped, _aad("scanner", scanner_id))
            known = ScannerRegistration(scanner_id, str(row["store_id"]), wrapped, plain.decode())
            self._registrations[scanner_id] = known
        return known

    def _verify_with(
        self,
        registration: ScannerRegistration,
        signed: SignedHeaders,
        method: str,
        path_qs: str,
        body: bytes,
    ) -> str:
        verify(
            signed,
            secret=registration.secret,
            method=method,
            path_qs=path_qs,
            body=body,
            now=self.clock(),
            tolerance_s=self.config.signature_tolerance_s,
            nonces=self._nonces,
        )
        return registration.store_id

    async def ingest(
        self,
        scanner_id: str,
        store_id: str,
        batch: Batch,
        *,
        registration: ScannerRegistration | None = None,
    ) -> dict[str, Any]:
        """Resolve, record and observe one batch; answer once its id is durably recorded.

        Each window's identifier is resolved (at the window's end, or now if later); a
        window that resolves to nobody is counted and dropped. The fresh resolved windows
        are grouped by time, each subject's first window of a time kept. The batch id is
        committed (with other batches arriving meanwhile: one transaction, one fsync) before
        anything reaches the engine; a batch id already committed is answered as a duplicate
        and not observed again. With ``registration`` (from :meth:`authenticate_batch`), that
        transaction also checks that it is still the scanner's registration, and the batch
        is refused if not.
        """
        if batch.store_id != store_id or batch.scanner_id != scanner_id:
            raise ForbiddenError(
                "this scanner is not registered for that store", code="wrong_store"
            )
        now = self.clock()
        accepted = len(batch.windows)
        resolved = 0
        # Window time -> subject -> (rssi median, count): the fresh windows to observe.
        by_time: dict[float, dict[str, tuple[float, int]]] = {}
        for window in batch.windows:
            t = min(window.end, now)
            subject = self._resolve(window.id_type, window.id, t)
            if subject is None:
                continue
            resolved += 1
            if now - t <= STALE_WINDOW_S:
                by_time.setdefault(t, {}).setdefault(subject, (window.rssi_median, window.count))
        removals = self.resolver.removals  # subjects named in `by_time` are all held now
        expected = registration.secret_wrapped if registration is not None else None
        inserted, previous = await self._batches.record(
            scanner_id, batch.batch_id, accepted, now, expected
        )
        if previous < 0:
            self._registrations.pop(scanner_id, None)
            raise AuthenticationError("unknown or revoked scanner", code="unknown_scanner")
        if not inserted:
            return {"batch_id": batch.batch_id, "accepted": previous, "duplicate": True}
        self.frames_unresolved += accepted - resolved
        self.frames_resolved += resolved
        # Withdrawn or erased while the batch id was being committed: the engine must not hold
        # anything about them again (forget() ran already). Checked only if anyone left.
        recheck = self.resolver.removals != removals
        events: list[PresenceEvent] = []
        for t in sorted(by_time):
            windows = by_time[t]
            subjects = [s for s in windows if not recheck or s in self.resolver]
            if not subjects:
                continue
            # Observe, then decide the arrivals these windows make at once (at the windows'
            # time), rather than at the next tick up to 1 s later.
            taken = self.engine.observe_many(
                scanner_id,
                subjects,
                [t] * len(subjects),
                [windows[s][0] for s in subjects],
                [windows[s][1] for s in subjects],
            )
            if taken:
                events.extend(self.engine.decide_arrivals(taken, t))
        if events:
            await self._handle_events(events)
        return {"batch_id": batch.batch_id, "accepted": accepted, "duplicate": False}

    def _resolve(self, id_type: str, ident: str, t: float) -> str | None:
        """The consenting customer behind a window's identifier at ``t``, or None."""
        if id_type == "eid":
            return self.resolver.resolve(bytes.fromhex(ident), t)
        if self.config.legacy_ibeacon:
            # Legacy static ids (when the store offers them): their holders are in the resolver.
            subject = self._static.customer_of.get(ident)
            if subject is not None and subject in self.resolver:
                return subject
        return None

    async def heartbeat(self, scanner_id: str, store_id: str, body: Heartbeat) -> dict[str, Any]:
        if body.store_id != store_id or body.scanner_id != scanner_id:
            raise ForbiddenError(
                "this scanner is not registered for that store", code="wrong_store"
            )
        now = self.clock()
        payload = {f: getattr(body, f) for f in body.__struct_fields__}
        await self.db.write(lambda db: scanners.record_heartbeat(db, scanner_id, payload, now))
        return {"ok": True, "server_time": now}

    async def allowlist(self, since: int | None, wait_s: float) -> dict[str, Any]:
        wait_s = max(0.0, min(wait_s, MAX_ALLOWLIST_WAIT_S))
        if since is not None and since == self.resolver.version and wait_s > 0:
            # asyncio.timeout cancels this task itself: wait_for around Condition.wait would
            # cancel an inner task and, on shutdown, leave the lock released twice.
            self.long_polls_waiting += 1
            try:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait_s), self._allowlist_changed:
                        await self._allowlist_changed.wait_for(
                            lambda: self.resolver.version != since or self._closing
                        )
            finally:
                self.long_polls_waiting -= 1
        now = self.clock()
        version = self.resolver.version
        delta = self.resolver.changes_since(since) if since is not None else None
        static = self._static.entries(now)
        if since is not None and since == version:
            return {"version": version, "full": False, "entries": static, "removed": []}
        if delta is not None and since is not None:
            return {
                "version": delta.version,
                "full": False,
                "entries": [_wire_entry(item) for item in delta.added] + static,
                "removed": [eid.hex() for eid in delta.removed] + self._static.removed_since(since),
            }
        return {
            "version": version,
            "full": True,
            "entries": [_wire_entry(item) for item in self.resolver.entries(now)] + static,
            "removed": [],
        }

    # -- presence events -----------------------------------------------------------------

    async def _handle_events(self, events: list[PresenceEvent]) -> None:
        for event in events:
            if event.kind == "arrived":
                await self._on_trigger(
                    event.subject, Trigger("arrived", event.t, event.zone), via=event.via
                )
            elif event.kind == "zone_changed":
                visit = self._visits.get(event.subject)
                if visit is not None:
                    visit.zone = event.zone
                    await self._publish_zone(event.subject, event.zone)
            elif event.kind == "left":
                await self._on_left(event.subject, event.t)

    def _local(self, now: float) -> datetime:
        return datetime.fromtimestamp(now, self._tz)

    async def _on_trigger(self, customer_id: str, trigger: Trigger, *, via: str) -> None:
        now = self.clock()
        local = self._local(now)
        visit = self._visits.get(customer_id)
        state = (
            visit.state
            if visit is not None
            else VisitState(last_greeted_at=self._last_greeted.get(customer_id))
        )
        zone = trigger.zone

        store_id = self.store_id
        recorded = await self.db.write(
            lambda db: visits.record_trigger(
                db,
                customer_id=customer_id,
                read_snapshot=lambda db: customers.snapshot(db, customer_id, store_id, now),
                decide=lambda snap: decide(trigger, snap, state, local=local, now=now),
                make_cards=lambda decision: self._cards_for(decision, zone, now),
                visit_id=visit.visit_id if visit is not None else None,
                zone=zone,
                via=via,
                now=now,
            )
        )
        if recorded is None:
            return  # gone, or no consent: nothing was recorded
        decision, cards = recorded.decision, recorded.cards
        new_state = VisitState(
            greeted=state.greeted or decision.greeting is not None,
            stock_shown=state.stock_shown or decision.stock is not None,
            last_greeted_at=now if decision.greeting is not None else state.last_greeted_at,
            checked_in=state.checked_in or trigger.kind == "check_in" or via == "check_in",
        )
        if decision.greeting is not None:
            self._last_greeted[customer_id] = now
        self._visits[customer_id] = _Visit(recorded.visit_id, zone, new_state)
        for card in cards:
            self.hub.publish({"type": "card", "card": card})
        await self._log_access([(customer_id, card["id"]) for card in cards])

    def _cards_for(self, decision: Decision, zone: str | None, now: float) -> list[dict[str, Any]]:
        zone_names = self._zone_names(zone)
        cards: list[dict[str, Any]] = []
        if decision.greeting is not None:
            cards.append(
                {
                    "id": "k_" + secrets.token_hex(8),
                    "kind": "greeting",
                    "text": decision.greeting.text,
                    "language": decision.greeting.language,
                    "named": decision.greeting.named,
                    "zone": zone,
                    "zone_name": zone_names,
                    "arrived_at": now,
                }
            )
        if decision.stock is not None:
            cards.append(
                {
                    "id": "k_" + secrets.token_hex(8),
                    "kind": "stock",
                    "pickup_code": decision.stock.pickup_code,
                    "name": decision.stock.name,
                    "language": decision.stock.language,
                    "zone": zone,
                    "zone_name": zone_names,
                    "arrived_at": now,
                    "items": [
                        {
                            "sku": i.sku,
                            "name": {"fr": i.name_fr, "en": i.name_en},
                            "count": i.count,
                            "aisle": i.aisle,
                        }
                        for i in decision.stock.items
                    ],
                }
            )
        return cards

    def _zone_names(self, zone: str | None) -> dict[str, str] | None:
        if zone is None:
            return None
        try:
            z = self.floor.zone(zone)
        except Exception:
            return None
        return {"fr": z.name_fr, "en": z.name_en}

    async def _publish_zone(self, customer_id: str, zone: str | None) -> None:
        ids = await self.db.read(lambda db: visits.open_card_ids(db, customer_id))
        for card_id in ids:
            self.hub.publish(
                {"type": "zone", "id": card_id, "zone": zone, "zone_name": self._zone_names(zone)}
            )

    async def _on_left(self, customer_id: str, t: float) -> None:
        visit = self._visits.pop(customer_id, None)
        now = self.clock()

        visit_id = visit.visit_id if visit is not None else None
        retracted = await self.db.write(
            lambda db: visits.end_visit(db, visit_id, customer_id, t, now)
        )
        self._publish_retractions(retracted, "left")

    async def _log_access(
        self, shown: list[tuple[str, str]], users: Iterable[str] | None = None
    ) -> None:
        usernames = sorted(set(users if users is not None else self.hub.usernames()))
        if not shown or not usernames:
            return
        now = self.clock()

        await self.db.write(lambda db: visits.log_cards_shown(db, shown, usernames, now))

    async def set_calibration(self, scanner_id: str, rssi_offset_db: float, username: str) -> None:
        """Store a manager's calibration offset and apply it to the engine at once."""
        if scanner_id not in self.engine.calibration():
            raise NotFoundError(f"no scanner {scanner_id!r} on this store's floor")
        if not -MAX_CALIBRATION_DB <= rssi_offset_db <= MAX_CALIBRATION_DB:
            raise ValidationError(
                f"between -{MAX_CALIBRATION_DB:g} and {MAX_CALIBRATION_DB:g} dB",
                field="rssi_offset_db",
            )
        now = self.clock()
        await self.db.write(
            lambda db: scanners.set_calibration(db, scanner_id, rssi_offset_db, username, now)
        )
        self.engine.set_calibration(scanner_id, rssi_offset_db)

    # -- manager pages -------------------------------------------------------------------

    async def ping_writer(self) -> None:
        """Return once the writer thread has run a trivial statement (readiness probe)."""
        await self.db.write(data_version)

    async def scanner_rows(self) -> list[dict[str, Any]]:
        """Registered scanners with their last heartbeat (never their secrets)."""
        return await self.db.read(scanners.scanner_rows)

    async def register_scanner(self, scanner_id: str) -> str:
        """Register (or re-register) a scanner for this store; its new secret, shown once."""
        secret = secrets.token_urlsafe(32)
        wrapped = self.wrap_scanner_secret(scanner_id, secret)
        now, store_id = self.clock(), self.store_id
        await self.db.write(lambda db: scanners.add_scanner(db, scanner_id, store_id, wrapped, now))
        return secret

    async def revoke_scanner(self, scanner_id: str) -> None:
        now = self.clock()
        await self.db.write(lambda db: scanners.revoke_scanner(db, scanner_id, now))

    async def import_stock(self, items: list[dict[str, Any]]) -> int:
        store_id = self.store_id
        return await self.db.write(lambda db: catalog.upsert_stock(db, store_id, items))

    async def set_stock(self, sku: str, count: int, aisle: str) -> None:
        store_id = self.store_id
        await self.db.write(lambda db: catalog.set_stock(db, store_id, sku, count, aisle))

    async def consent_log(self) -> list[ChainedEntry]:
        """The whole consent log (pseudonymous), oldest first."""
        return await self.db.read(consents.consent_log_rows)

    async def verify_checkpoints(self, entries: list[ChainedEntry]) -> None:
        """ConsentLogError if an entry no longer matches its signed checkpoint."""
        points = await self.db.read(consents.checkpoints)
        verify_checkpoints(entries, points, self._checkpoint_key)

    async def access_log(self, viewer: str, limit: int) -> list[dict[str, Any]]:
        """The newest `limit` access log entries, each with the customer's pseudonymous
        reference instead of their id; the view itself is logged for every customer shown."""
        entries = await self.db.read(lambda db: visits.access_log_rows(db, limit))
        now = self.clock()
        shown = [str(e["customer_id"]) for e in entries]
        await self.db.write(lambda db: visits.log_views(db, viewer, shown, "audit_view", now))
        for entry in entries:
            entry["subject"] = self.subject_ref(str(entry.pop("customer_id")))
        return entries

    # -- staff board ---------------------------------------------------------------------

    async def board_snapshot(self, username: str) -> dict[str, Any]:
        cards = await self.db.read(visits.open_cards)
        await self._log_access([(customer, card) for card, customer, _ in cards], users=[username])
        return {"type": "snapshot", "cards": [payload for _, _, payload in cards]}

    async def close_card(self, card_id: str, username: str, action: str) -> None:
        if action not in ("greeted", "brought", "dismissed"):
            raise NotFoundError(f"unknown action {action!r}")
        now = self.clock()

        closed = await self.db.write(
            lambda db: visits.close_card(db, card_id, username, action, now)
        )
        if closed is not None:
            self.hub.publish({"type": "closed", "id": card_id, "action": action, "by": username})

    # -- customers -----------------------------------------------------------------------

    async def enroll(self, app_counter: int | None, language: str) -> dict[str, Any]:
        now = self.clock()
        key = eid.new_identity_key()
        k = self.config.rotation_exponent
        counter = app_counter if app_counter is not None else int(now) % eid.COUNTER_MODULUS
        offset = eid.clock_offset(counter, now)
        created = await self.db.write(
            lambda db: customers.create_customer(
                db,
                key_wrapped_for=lambda cid: wrap_key(self._master_key, key, identity_aad(cid)),
                k=k,
                clock_offset_s=offset,
                language=language,
                now=now,
            )
        )
        return {
            "customer_id": created.customer_id,
            "token": created.token,
            "identity_key": key.hex(),
            "rotation_exponent": k,
            "beacon_time": eid.beacon_time(now, offset),
        }

    async def rotate_identity(self, customer_id: str, app_counter: int | None) -> dict[str, Any]:
        """Re-enrollment: a new identity key; the old EIDs stop resolving at once.

        The key is committed first, then the resolver is re-keyed (if the customer is in it)
        and long-polling scanners are woken with a delta removing the old EIDs.
        """
        now = self.clock()
        key = eid.new_identity_key()
        k = self.config.rotation_exponent
        counter = app_counter if app_counter is not None else int(now) % eid.COUNTER_MODULUS
        offset = eid.clock_offset(counter, now)
        wrapped = wrap_key(self._master_key, key, identity_aad(customer_id))
        await self.db.write(
            lambda db: customers.rotate_identity(
                db, customer_id, key_wrapped=wrapped, k=k, clock_offset_s=offset, now=now
            )
        )
        if customer_id in self.resolver or customer_id in self._unreadable:
            # A customer whose stored identity did not load is recognised again from now on.
            self._unreadable.discard(customer_id)
            self.resolver.upsert(eid.IdentityRecord(customer_id, key, k, offset), self.clock())
            await self._notify_allowlist()
        return {
            "identity_key": key.hex(),
            "rotation_exponent": k,
            "beacon_time": eid.beacon_time(now, offset),
        }

    async def set_legacy_ibeacon(self, customer_id: str, enabled: bool) -> None:
        """Turn the customer's static iBeacon id on (assigning one now) or off (forgetting it).

        Refused when the store does not offer legacy ids (setting ``legacy_ibeacon``).
        """
        if enabled and not self.config.legacy_ibeacon:
            raise ForbiddenError(
                "this store does not offer static iBeacon ids", code="legacy_ibeacon_disabled"
            )
        exists, current = await self.db.read(lambda db: customers.ibeacon_id_of(db, customer_id))
        if not exists:
            raise NotFoundError("unknown customer")
        if enabled and current is not None:
            return  # already on: keep the id the app broadcasts
        new_id = new_ibeacon_id() if enabled else None
        await self.db.write(lambda db: customers.set_legacy_ibeacon(db, customer_id, new_id))
        if await self._sync_static([customer_id]):
            await self._notify_allowlist()

    async def consent_texts(self) -> list[dict[str, Any]]:
        """The current consent texts, French and English, with their hash."""
        return await self.db.read(consents.current_consent_texts)

    async def catalog(self) -> list[dict[str, Any]]:
        """The catalog with this store's stock and aisles."""
        store_id = self.store_id
        return await self.db.read(lambda db: catalog.stock_rows(db, store_id))

    async def preferences(self, customer_id: str) -> dict[str, Any] | None:
        """The customer's preferences, pickup code and legacy iBeacon setting."""
        return await self.db.read(lambda db: customers.preferences_row(db, customer_id))

    async def set_preferences(self, customer_id: str, values: dict[str, Any]) -> None:
        await self.db.write(lambda db: customers.set_preferences(db, customer_id, values))

    async def set_wishlist(self, customer_id: str, skus: list[str]) -> None:
        now = self.clock()
        await self.db.write(lambda db: customers.set_wishlist(db, customer_id, skus, now))

    async def messages(self, customer_id: str) -> list[dict[str, Any]]:
        """The customer's app messages, newest first."""
        return await self.db.read(lambda db: visits.messages_of(db, customer_id))

    async def customer_for_token(self, token: str) -> str:
        customer_id = await self.db.read(lambda db: customers.customer_by_token(db, token))
        if customer_id is None:
            raise AuthenticationError("unknown or revoked app token")
        return customer_id

    def subject_ref(self, customer_id: str) -> str:
        return subject_ref(self._pseudonym_key, customer_id)

    async def grant(
        self,
        customer_id: str,
        purpose: Purpose,
        text_hash: str,
        scope: Scope,
        channel: str,
        app_version: str | None,
    ) -> dict[str, Any]:
        now = self.clock()
        consent = await self.db.write(
            lambda db: consents.grant_consent(
                db,
                customer_id=customer_id,
                subject_ref=self.subject_ref(customer_id),
                purpose=purpose,
                text_hash=text_hash,
                scope=scope,
                channel=channel,
                app_version=app_version,
                now=now,
                duration_s=DEFAULT_CONSENT_DURATION_S,
                store_id=self.store_id,
            )
        )
        if self._next_expiry is None or consent.expires_at < self._next_expiry:
            self._next_expiry = consent.expires_at
        if customer_id not in self.resolver:
            rows = await self.db.read(lambda db: customers.identity_rows(db, [customer_id]))
            for row in rows:
                self.resolver.upsert(self._identity_record(row), now)
            await self._sync_static([customer_id])
            await self._notify_allowlist()
        return {
            "purpose": consent.purpose,
            "scope": consent.scope,
            "granted_at": consent.granted_at,
            "expires_at": consent.expires_at,
            "text_hash": consent.text_hash,
        }

    async def withdraw(
        self, customer_id: str, purposes: Iterable[Purpose], channel: str, app_version: str | None
    ) -> dict[str, Any]:
        now = self.clock()
        wanted = tuple(p for p in PURPOSES if p in set(purposes))
        result = await self.db.write(
            lambda db: consents.withdraw_consent(
                db,
                customer_id=customer_id,
                subject_ref=self.subject_ref(customer_id),
                purposes=wanted,
                channel=channel,
                app_version=app_version,
                now=now,
                store_id=self.store_id,
            )
        )
        if not result.remaining:
            self.engine.forget(customer_id)
            self._visits.pop(customer_id, None)
            removed = self.resolver.remove(customer_id)
            if await self._sync_static([customer_id]) or removed:
                await self._notify_allowlist()
        self._publish_retractions(result.retracted_cards, "withdrawn")
        return {"withdrawn": list(wanted), "remaining": sorted(result.remaining)}

    async def check_in(self, customer_id: str, zone: str | None) -> dict[str, Any]:
        now = self.clock()
        if customer_id not in self.resolver:
            return {"checked_in": False, "reason": "no_consent"}
        await self._handle_events(self.engine.check_in(customer_id, now, zone))
        visit = self._visits.get(customer_id)
        if visit is not None and not visit.state.checked_in:
            await self._on_trigger(
                customer_id, Trigger("check_in", now, zone or visit.zone), via="check_in"
            )
        return {"checked_in": True}

    async def my_data(self, customer_id: str) -> dict[str, Any]:
        """Every record held about the customer, with their consent history (pseudonymous log)."""
        now = self.clock()
        subject = self.subject_ref(customer_id)
        data = await self.db.read(lambda db: customers.customer_data(db, customer_id, subject, now))
        if data is None:
            raise NotFoundError("no such customer")
        return {"generated_at": now, "store_id": self.store_id, **data}

    async def erase(
        self, customer_id: str, channel: str = "app", app_version: str | None = None
    ) -> dict[str, Any]:
        """Erase the customer: their rows and keys go; the consent proof stays pseudonymous."""
        now = self.clock()
        result = await self.db.write(
            lambda db: customers.erase_customer(
                db,
                customer_id=customer_id,
                subject_ref=self.subject_ref(customer_id),
                channel=channel,
                app_version=app_version,
                now=now,
            )
        )
        self.engine.forget(customer_id)
        self._visits.pop(customer_id, None)
        self._last_greeted.pop(customer_id, None)
        removed = self.resolver.remove(customer_id)
        # After the resolver: the customer is no longer due a static id, so it leaves too.
        if await self._sync_static([customer_id]) or removed:
            await self._notify_allowlist()
        self._publish_retractions(result.retracted_cards, "erased")
        return {"erased": result.erased}

    async def purge(self, now: float) -> int:
        """Delete what is older than the retention (visits, decisions, cards, messages) and
        the enrollments that never gave any consent within `unconsented_ttl_s`; return how
        many visits went."""
        cutoff = now - self.config.retention_s
        purged = await self.db.write(lambda db: visits.purge(db, cutoff))
        await self._forget_unconsented(now - self.config.unconsented_ttl_s)
        return purged

    async def _forget_unconsented(self, enrolled_before: float) -> None:
        candidates = await self.db.read(
            lambda db: customers.unconsented_before(db, enrolled_before)
        )
        if not candidates:
            return
        logged = await self.db.read(consents.logged_subjects)
        # Whoever consented once (and withdrew since) keeps their enrollment and its history.
        doomed = [c for c in candidates if self.subject_ref(c) not in logged]
        if not doomed:
            return
        forgotten = await self.db.write(lambda db: customers.forget_enrollments(db, doomed))
        for customer_id in doomed:
            self.engine.forget(customer_id)
        logger.info("forgot %s enrollments that never gave any consent", forgotten)


@dataclass(frozen=True, slots=True)
class ScannerRegistration:
    """A scanner's registration as last read: its store and its secret (wrapped and plain)."""

    scanner_id: str
    store_id: str
    secret_wrapped: bytes = field(repr=False)
    secret: str = field(repr=False)


def release_startup_garbage() -> None:
    """After a bulk load: collect, then freeze the survivors.

    The loaded identities live as long as the process: frozen, later full collections skip
    them.
    """
    gc.collect()
    gc.freeze()


def scanner_aad(scanner_id: str) -> bytes:
    return _aad("scanner", scanner_id)


def _aad(kind: str, subject: str) -> bytes:
    return f"bulle/{kind}/{subject}".encode()


def _wire_entry(item: AllowlistItem) -> dict[str, Any]:
    return {"id_type": "eid", "id": item.eid.hex(), "not_after": item.not_after}
