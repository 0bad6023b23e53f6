"""The store's services, wired: what the app factory builds and the views reach.

`StoreServices` makes the coordinator (shared state) and the services around it, runs the
once-a-second tick (presence timeouts, EID rotation, consent expiry, retention purge) and
starts and stops them in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable

from store_server.config import ServerConfig
from store_server.consent import ConsentText
from store_server.floor import Floor
from store_server.keyseal import ChainKeys
from store_server.services.authority import KeyAuthority
from store_server.services.board import Board
from store_server.services.calibration import CalibrationService
from store_server.services.catalog import Catalog
from store_server.services.consent_feed import ConsentFeed, WakeupSource
from store_server.services.coordinator import (
    IDENTITY_CHUNK,
    Coordinator,
    release_startup_garbage,
)
from store_server.services.customers import Customers
from store_server.services.scanners import ScannerGateway
from store_server.services.staff import StaffService
from store_server.storage import visits
from store_server.storage.database import Database, data_version

logger = logging.getLogger(__name__)

# Phones per slice of the presence round: about 4 ms of CPU with 20 boxes and 2,400 cells
# (bench/presence: the pending phones are taken by neighbourhood, 25 of them one block of the
# engine's update), so the event loop is never held long.
PRESENCE_SLICE = 25
# The presence engine and the resolver advance once a second: the aggregation window.
TICK_S = 1.0


class StoreServices:
    """The coordinator and the services of one store, and their life cycle."""

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
        chain: ChainKeys | None = None,
        shared: bool = False,
        wakeups: WakeupSource | None = None,
    ) -> None:
        self.config = config
        self.floor = floor
        self.store_id = floor.store_id
        self.db = db
        self.clock = clock
        self.coordinator = Coordinator(
            config=config, floor=floor, db=db, master_key=master_key, clock=clock, chain=chain
        )
        # The chain's key authority, if this server is it (config `key_authority`).
        self.authority: KeyAuthority | None = None
        if chain is not None and chain.private_key is not None and config.key_authority:
            self.authority = KeyAuthority(
                db,
                private_key=chain.private_key,
                master_key=master_key,
                tk_key=chain.tk_key,
                skew=config.skew_windows,
            )
        self._last_authority_run = float("-inf")
        self._authority_task: asyncio.Task[None] | None = None
        self.hub = self.coordinator.hub
        self.board = Board(self.coordinator, timezone)
        self.scanners = ScannerGateway(self.coordinator, self.board)
        self.customers = Customers(self.coordinator, self.board, consent_texts)
        self.catalog = Catalog(db, self.store_id)
        self.staff = StaffService(db, clock, self.store_id)
        self.calibration = CalibrationService(self.coordinator)
        # Chain mode (a database shared by many store servers): follow the consent log for
        # what the other servers wrote, and fail closed when this view of it is out of date.
        self.feed: ConsentFeed | None = None
        if shared:
            self.feed = ConsentFeed(
                self.coordinator, bound_s=config.consent_staleness_s, wakeups=wakeups
            )
            self.coordinator.consent_fresh = self.feed.fresh
        self._tasks: list[asyncio.Task[None]] = []
        # Observability (metrics): the periodic tick's duration is handed to this callback.
        self.tick_observer: Callable[[float], None] | None = None
        # When the periodic tick last completed (time.monotonic()): the resolver advances to
        # the next EID window and presence decides departures there; /readyz checks it runs.
        self.last_tick_at = time.monotonic()
        self._last_purge = float("-inf")  # -inf: the first `tick` purges

    def queue_depths(self) -> dict[str, int]:
        """Work waiting inside the server, by queue (for the metrics)."""
        return {
            "batch_commits": self.scanners.pending_batches,
            "allowlist_long_polls": self.scanners.long_polls_waiting,
        }

    @property
    def timezone_name(self) -> str | None:
        """The store's IANA time zone name, if the store file sets one."""
        return self.board.timezone_name

    async def prepare(self) -> None:
        """Load the consent texts, calibrations and consenting customers (no background task)."""
        await self.customers.prepare()
        if not self.config.chain_mode:
            # A single shop: rows from before stores were recorded are all this store's.
            store_id = self.store_id
            claimed = await self.db.write(lambda db: visits.claim_unowned(db, store_id))
            if claimed:
                logger.info("recorded this store on %d rows from an earlier release", claimed)
        if self.authority is not None:
            # The keys of the customers who consent, before this server loads its own.
            now = self.clock()
            await self.authority.run(now)
            self._last_authority_run = now
        await self.calibration.prepare()
        if self.feed is not None:
            await self.feed.begin()  # before the full read: what follows it is replayed
        await self.coordinator.refresh_consenting(self.clock())
        if len(self.coordinator.resolver) >= IDENTITY_CHUNK and not self.coordinator.building:
            release_startup_garbage()

    async def start(self) -> None:
        await self.prepare()
        if self.feed is not None:
            self.feed.start()
        self._tasks.append(asyncio.create_task(self._tick_loop(), name="bulle-tick"))

    async def release_long_polls(self) -> None:
        """At shutdown: answer every held allowlist long poll now, so none is cut."""
        await self.coordinator.release_long_polls()

    async def stop(self) -> None:
        if self.feed is not None:
            await self.feed.close()
        await self.scanners.close()
        with contextlib.suppress(Exception):  # best effort: the next start signs it anyway
            await self.customers.checkpoint_consent_log(self.clock())
        await self.coordinator.close()
        if self._authority_task is not None:
            self._tasks.append(self._authority_task)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        await self.hub.close_all()
        self.staff.close()

    async def ping_writer(self) -> None:
        """Return once the writer thread has run a trivial statement (readiness probe)."""
        await self.db.write(data_version)

    async def _presence_round(self, now: float) -> None:
        """The presence filter for every phone with new windows, a slice at a time.

        Each slice is at most PRESENCE_SLICE phones, and the event loop runs between slices
        (batches, pages, WebSockets), so the round never holds the loop for long (bench/presence:
        about 4 ms of CPU per slice of 25 phones with 20 boxes). Slices are bounded by the
        phones pending when the round starts: windows arriving meanwhile wait for the next one.
        """
        engine = self.coordinator.engine
        await self.board.handle_events(engine.tick(now, limit=PRESENCE_SLICE))
        for _ in range(engine.pending() // PRESENCE_SLICE + 1):
            if not engine.pending():
                break
            await asyncio.sleep(0)
            await self.board.handle_events(
                engine.tick(max(now, self.clock()), limit=PRESENCE_SLICE)
            )

    async def _tick_loop(self) -> None:
        self.coordinator.last_refresh = self._last_purge = self.clock()
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
        coordinator = self.coordinator
        await self._presence_round(now)
        await self.calibration.tick(now)
        if coordinator.resolver.advance(now):
            await coordinator.notify_allowlist()
        await coordinator.refresh_if_due(now)
        if (
            self.authority is not None
            and now - self._last_authority_run >= self.config.chain_keys_interval_s
            and (self._authority_task is None or self._authority_task.done())
        ):
            # Beside the tick, not in it: a run reads every consenting identity.
            self._last_authority_run = now
            self._authority_task = asyncio.create_task(
                self._run_authority(self.authority, now), name="bulle-key-authority"
            )
        await coordinator.refresh_temporary_keys(now)
        self.customers.expire_check_ins(now)
        if now - self._last_purge >= self.config.purge_interval_s:
            self._last_purge = now
            await self.purge(now)
        await self.customers.checkpoint_consent_log(now)

    @staticmethod
    async def _run_authority(authority: KeyAuthority, now: float) -> None:
        try:
            await authority.run(now)
        except Exception:
            logger.exception("key authority run failed; retrying at the next interval")

    async def purge(self, now: float) -> int:
        """Delete what is older than the retention (visits, decisions, cards, messages) and
        the enrollments that never gave any consent within `unconsented_ttl_s`; return how
        many visits went."""
        purged = await self.board.purge(now)
        await self.customers.forget_unconsented(now - self.config.unconsented_ttl_s)
        return purged
