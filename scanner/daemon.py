"""The scanner daemon: BLE -> frame parser -> allowlist -> aggregator -> outbox -> uploader.

Foreign advertisements are dropped in memory inside the bleak callback and never logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, Protocol

import aiohttp

from scanner.aggregate import Aggregator
from scanner.allowlist import Allowlist, AllowlistUpdate
from scanner.ble import AdapterMissingError, AdapterOffError, AdvertCallback, BleError, BleSource
from scanner.config import ScannerConfig, store_beacon_heard
from scanner.errors import ConfigError, ScannerError
from scanner.frames import parse_advertisement
from scanner.health import (
    HealthCounters,
    heartbeat_body,
    scanner_version,
    should_restart,
    snapshot,
)
from scanner.outbox import OutboxWorker
from scanner.records import AdvertRecord
from scanner.uploader import (
    BadCredentialsError,
    ServerRejectedError,
    Uploader,
    UploadError,
    backoff_delay,
    retry_after_of,
)

logger = logging.getLogger(__name__)

# Bound on the last upload attempt during a graceful stop (systemd waits longer than this).
FINAL_UPLOAD_TIMEOUT_S = 2.0
# Watchdog checks run this many times per timeout, so a stall is caught within 1/4 extra.
WATCHDOG_CHECKS_PER_TIMEOUT = 4
# 4xx statuses that mean "try again later" rather than "this batch will never be accepted".
RETRYABLE_CLIENT_STATUSES = (408, 425, 429)
# Long-poll wait asked of the server: under its 30 s maximum, so proxies keep the request open.
ALLOWLIST_LONG_POLL_S = 25.0
# The flush wakes this long after each window boundary: a callback for an advertisement received
# just before the boundary may still be queued behind the event loop's other work (BlueZ
# D-Bus signals arrive a few ms late), and 20 ms is negligible against a 1 s window.
FLUSH_GRACE_S = 0.020


def next_flush_delay(now: float, window_s: float, grace_s: float = FLUSH_GRACE_S) -> float:
    """Seconds from ``now`` until the next window boundary plus ``grace_s`` (pure).

    Windows are aligned on multiples of ``window_s`` (see ``scanner.aggregate``). When ``now`` is
    still within the grace of the boundary just passed, that boundary's flush is still due.
    """
    boundary = math.floor(now / window_s) * window_s
    if now < boundary + grace_s:
        return boundary + grace_s - now
    return boundary + window_s + grace_s - now


def resolve_secret(config: ScannerConfig) -> str:
    """The scanner secret, from the config or from ``secret_file`` (first line, stripped)."""
    if config.secret is not None:
        return config.secret
    if config.secret_file is None:
        raise ConfigError("set secret or secret_file", key="secret")
    try:
        text = Path(config.secret_file).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            f"cannot read {config.secret_file}: {exc.strerror}", key="secret_file"
        ) from exc
    secret = text.strip()
    if not secret:
        raise ConfigError(f"{config.secret_file} is empty", key="secret_file")
    return secret


class AdvertSource(Protocol):
    """Where advertisements come from: a BlueZ adapter (or its stand-ins), or an ESPHome node."""

    @property
    def adapter_state(self) -> str: ...

    @property
    def finished(self) -> asyncio.Event | None: ...

    def heartbeat_node(self) -> dict[str, object] | None: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def restart(self) -> None: ...


class _NodeLog(logging.LoggerAdapter[logging.Logger]):
    """Prefixes the daemon's lines with the node they are about."""

    def __init__(self, base: logging.Logger, scanner_id: str) -> None:
        super().__init__(base, {})
        self._prefix = f"node {scanner_id}: ".replace("%", "%%")

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        return self._prefix + str(msg), kwargs


class Daemon:
    """Owns the pipeline state; ``run`` drives it until ``stop`` is set.

    ``source_factory`` builds the advertisement source from the daemon's ``on_advert``; by
    default the BlueZ / simulated / replay source of ``scanner.ble``.
    """

    def __init__(
        self,
        config: ScannerConfig,
        secret: str,
        *,
        stdin: asyncio.StreamReader | None = None,
        clock: Callable[[], float] = time.time,
        source_factory: Callable[[AdvertCallback], AdvertSource] | None = None,
    ) -> None:
        self.config = config
        self._secret = secret
        self._clock = clock
        self.allowlist = Allowlist(
            legacy_ibeacon=config.legacy_ibeacon, store_beacon=store_beacon_heard(config)
        )
        self.aggregator = Aggregator(config.window_s)
        self.counters = HealthCounters()
        self.outbox = OutboxWorker(
            config.outbox_path,
            max_rows=config.outbox_max_rows,
            max_bytes=config.outbox_max_bytes,
            max_age_s=config.outbox_max_age_s,
        )
        # Several nodes' pipelines share one process and one log: each line names its box.
        self._log: logging.Logger | logging.LoggerAdapter[logging.Logger] = (
            _NodeLog(logger, config.scanner_id) if config.backend == "esphome" else logger
        )
        self.source: AdvertSource
        if source_factory is not None:
            self.source = source_factory(self.on_advert)
        else:
            self.source = BleSource(config, self.on_advert, stream=stdin)
        self._have_allowlist = False
        self._adapter_state = "off"
        self._upload_kick = asyncio.Event()
        # Set while the server refuses our credentials, so the error is logged once per streak.
        self._credentials_refused = False
        self._allowlist_ready = asyncio.Event()

    # -- hot path (bleak callback) -------------------------------------------------------
    def on_advert(self, rec: AdvertRecord) -> None:
        """Parse, filter and aggregate one advertisement. Never logs its content."""
        now = self._clock()
        self.counters.frames_seen += 1
        self.counters.last_advert_at = now
        frame = parse_advertisement(rec.manufacturer_data, rec.service_data)
        key = self.allowlist.match(frame, now)
        if key is None:
            return
        self.counters.frames_passed += 1
        tx_power = getattr(frame, "tx_power", None)
        if tx_power is None:
            tx_power = getattr(frame, "power", None)
        self.aggregator.add(key, rec.rssi, tx_power, now)

    # -- loops -----------------------------------------------------------------------------
    async def _sleep(self, stop: asyncio.Event, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=seconds)

    async def _flush_loop(self, stop: asyncio.Event) -> None:
        # Wake just after each window boundary, so a finished window is queued (and the
        # uploader kicked) at once rather than up to a window later.
        while not stop.is_set():
            await self._sleep(stop, next_flush_delay(self._clock(), self.config.window_s))
            if stop.is_set():
                return
            now = self._clock()
            self.allowlist.expire(now)
            windows = self.aggregator.flush(now)
            if windows:
                await self.outbox.put(windows, now)
                self._upload_kick.set()

    async def upload_once(self, uploader: Uploader) -> bool:
        """Send the next pending batch; True if one was acknowledged. Raises UploadError."""
        batch = await self.outbox.next_batch(self.config.batch_max_windows, self._clock())
        if batch is None:
            return False
        try:
            await uploader.post_batch(batch)
        except ServerRejectedError as exc:
            if 400 <= exc.status < 500 and exc.status not in RETRYABLE_CLIENT_STATUSES:
                # The server will never accept this batch; keeping it would block the queue.
                # Its windows are counted as dropped (heartbeat ``outbox_dropped``).
                dropped = await self.outbox.discard(batch.batch_id)
                self._log.error(
                    "server refused a batch for good, dropped its %d windows: %s", dropped, exc
                )
                return False
            raise
        await self.outbox.ack(batch.batch_id, sent=len(batch.windows))
        self.counters.last_upload_at = self._clock()
        return True

    async def _upload_loop(self, stop: asyncio.Event, uploader: Uploader) -> None:
        attempt = 0
        while not stop.is_set():
            try:
                sent = await self.upload_once(uploader)
            except UploadError as exc:
                if isinstance(exc, BadCredentialsError):
                    self._refused(exc)
                attempt += 1
                await self._sleep(stop, backoff_delay(attempt, retry_after=retry_after_of(exc)))
                continue
            attempt = 0
            if sent:
                self._credentials_refused = False
            if not sent:
                self._upload_kick.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        _first(stop.wait(), self._upload_kick.wait()),
                        timeout=self.config.upload_interval_s,
                    )

    async def _allowlist_loop(self, stop: asyncio.Event, uploader: Uploader) -> None:
        attempt = 0
        while not stop.is_set():
            since = self.allowlist.version if self._have_allowlist else None
            try:
                data = await uploader.fetch_allowlist(since, ALLOWLIST_LONG_POLL_S)
                update = AllowlistUpdate.from_wire(data)
            except UploadError as exc:
                if isinstance(exc, BadCredentialsError):
                    # Without an accepted allowlist nothing passes, so no batch would ever
                    # report this: the allowlist loop must say it too.
                    self._refused(exc)
                attempt += 1
                self.allowlist.expire(self._clock())
                await self._sleep(stop, backoff_delay(attempt, retry_after=retry_after_of(exc)))
                continue
            except ScannerError as exc:
                self._log.error("server sent an invalid allowlist: %s", exc)
                attempt += 1
                await self._sleep(stop, backoff_delay(attempt))
                continue
            attempt = 0
            self._credentials_refused = False
            self.allowlist.apply(update, self._clock())
            if not self._have_allowlist:
                self._log.info("allowlist received (version %s)", self.allowlist.version)
            self._have_allowlist = True
            self._allowlist_ready.set()

    def _refused(self, exc: BadCredentialsError) -> None:
        """Log a credentials refusal once until a request is accepted again."""
        if not self._credentials_refused:
            self._credentials_refused = True
            self._log.error("%s", exc)

    async def _heartbeat_loop(self, stop: asyncio.Event, uploader: Uploader) -> None:
        previous = snapshot(self.counters, self._clock())
        version = scanner_version()
        while not stop.is_set():
            await self._sleep(stop, self.config.heartbeat_interval_s)
            if stop.is_set():
                return
            now = self._clock()
            depth, dropped = await self.outbox.stats()
            body = heartbeat_body(
                store_id=self.config.store_id,
                scanner_id=self.config.scanner_id,
                counters=self.counters,
                previous=previous,
                now=now,
                outbox_depth=depth,
                outbox_dropped=dropped,
                allowlist_version=self.allowlist.version if self._have_allowlist else None,
                readings_unusable=self.aggregator.unusable,
                adapter=self.adapter_state,
                version=version,
                node=self.source.heartbeat_node(),
            )
            previous = snapshot(self.counters, now)
            with contextlib.suppress(UploadError):
                await uploader.post_heartbeat(body)

    @property
    def adapter_state(self) -> str:
        if self.config.backend != "bluez":
            return self.source.adapter_state
        return self._adapter_state

    async def _watchdog_loop(self, stop: asyncio.Event) -> None:
        timeout = self.config.watchdog_timeout_s
        while not stop.is_set():
            await self._sleep(stop, timeout / WATCHDOG_CHECKS_PER_TIMEOUT)
            now = self._clock()
            if stop.is_set() or not should_restart(self.counters.last_advert_at, now, timeout):
                continue
            self._log.warning("no advertisement for %.0f s: restarting scanning", timeout)
            self.counters.watchdog_restarts += 1
            self.counters.last_advert_at = now
            try:
                await self.source.restart()
                self._adapter_state = "powered"
            except AdapterOffError as exc:
                self._adapter_state = "off"
                self._log.error("%s", exc)
            except AdapterMissingError as exc:
                self._adapter_state = "missing"
                self._log.error("%s", exc)
            except BleError as exc:
                self._log.error("%s", exc)

    async def _final_upload(self, uploader: Uploader) -> None:
        async def drain() -> None:
            while await self.upload_once(uploader):
                pass

        try:
            await asyncio.wait_for(drain(), timeout=FINAL_UPLOAD_TIMEOUT_S)
        except (TimeoutError, UploadError):
            depth, _ = await self.outbox.stats()
            self._log.info("%d windows stay queued for the next start", depth)

    async def run(self, stop: asyncio.Event) -> None:
        """Scan and report until ``stop`` is set (or a replay/simulated input ends)."""
        async with aiohttp.ClientSession() as session:
            uploader = Uploader(
                session,
                server_url=self.config.server_url,
                store_id=self.config.store_id,
                scanner_id=self.config.scanner_id,
                secret=self._secret,
                clock=self._clock,
            )
            loops: list[Coroutine[Any, Any, None]] = [
                self._flush_loop(stop),
                self._upload_loop(stop, uploader),
                self._allowlist_loop(stop, uploader),
                self._heartbeat_loop(stop, uploader),
            ]
            tasks = [asyncio.create_task(c) for c in loops]
            try:
                # Without an allowlist every advertisement is dropped: give the server a moment.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        _first(stop.wait(), self._allowlist_ready.wait()),
                        timeout=self.config.allowlist_wait_s,
                    )
                if not self._allowlist_ready.is_set():
                    self._log.warning(
                        "no allowlist after %.0f s: scanning anyway, dropping everything until "
                        "one arrives",
                        self.config.allowlist_wait_s,
                    )
                await self.source.start()
                self._adapter_state = "powered"
                self.counters.last_advert_at = self._clock()
                if self.config.backend == "bluez":
                    tasks.append(asyncio.create_task(self._watchdog_loop(stop)))
                finished = self.source.finished
                if finished is not None:
                    await _first(stop.wait(), finished.wait())
                else:
                    await stop.wait()
            finally:
                stop.set()
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                await self.source.stop()
                now = self._clock()
                try:
                    await self.outbox.put(self.aggregator.flush_all(), now)
                    await self._final_upload(uploader)
                finally:
                    await self.outbox.aclose()
                self._log.info("scanner stopped")


async def _first(*aws: Awaitable[object]) -> None:
    """Return when the first of ``aws`` completes; cancel the others."""
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()


async def _stdin_reader() -> asyncio.StreamReader:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    return reader


async def run_daemon(
    config: ScannerConfig,
    *,
    stop: asyncio.Event | None = None,
    stdin: asyncio.StreamReader | None = None,
) -> None:
    """Run the scanner until ``stop`` is set, or until SIGTERM/SIGINT when ``stop`` is None."""
    if config.backend == "esphome":
        from scanner.nodes import run_nodes  # aioesphomeapi is an optional dependency

        await _run_with_signals(stop, lambda s: run_nodes(config, s))
        return
    secret = resolve_secret(config)

    advertiser = None
    if config.advertise.enabled:
        from scanner.bluez_advertising import StoreBeaconAdvertiser, beacon_settings

        advertiser = StoreBeaconAdvertiser(beacon_settings(config))

    async def one_box(s: asyncio.Event) -> None:
        reader = stdin
        if reader is None and config.backend == "simulated":
            reader = await _stdin_reader()
        if advertiser is None:
            await Daemon(config, secret, stdin=reader).run(s)
            return
        # The store beacon goes on the air beside scanning and is withdrawn when it stops.
        on_air = asyncio.create_task(advertiser.run(s))
        try:
            await Daemon(config, secret, stdin=reader).run(s)
        finally:
            s.set()
            await on_air

    await _run_with_signals(stop, one_box)


async def _run_with_signals(
    stop: asyncio.Event | None, body: Callable[[asyncio.Event], Awaitable[None]]
) -> None:
    """Run ``body(stop)``; without ``stop``, one set by SIGTERM/SIGINT."""
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    if stop is None:
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
    try:
        await body(stop)
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
