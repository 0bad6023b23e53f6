"""The one module that touches bleak: BlueZ, simulated and replay scanning backends.

All three run through ``bleak.BleakScanner`` so that the daemon exercises bleak's own callback
machinery in a real store, in the demo and in the tests. Advertisements are handed to the caller
as ``AdvertRecord`` values; nothing here decides whether one is kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from bleak import BleakScanner
from bleak.args.bluez import BlueZScannerArgs, OrPattern
from bleak.assigned_numbers import AdvertisementDataType
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData, AdvertisementDataCallback, BaseBleakScanner
from bleak.exc import BleakBluetoothNotAvailableError, BleakDBusError, BleakError
from dbus_fast import BusType, Message, MessageType
from dbus_fast.aio import MessageBus

from scanner.config import ScannerConfig
from scanner.errors import ScannerError
from scanner.records import AdvertRecord, parse_record

logger = logging.getLogger(__name__)

AdvertCallback = Callable[[AdvertRecord], None]

# Eddystone's 16-bit service UUID (0xFEAA) as it appears little-endian in AD type 0x16.
EDDYSTONE_UUID16_LE = b"\xaa\xfe"
# Apple company id (0x004C little-endian) followed by the iBeacon type and length bytes.
IBEACON_PREFIX = b"\x4c\x00\x02\x15"
# D-Bus error name when nothing owns org.bluez on the system bus.
DBUS_SERVICE_UNKNOWN = "org.freedesktop.DBus.Error.ServiceUnknown"
# BlueZ error names returned by StartDiscovery / RegisterMonitor on a powered-off adapter.
BLUEZ_NOT_READY = ("org.bluez.Error.NotReady", "org.bluez.Error.Failed")
# A replay with less than this gap between records is delivered without sleeping.
MIN_REPLAY_SLEEP_S = 0.001


class BleError(ScannerError):
    """Scanning could not start or continue."""


class NoSystemBusError(BleError):
    """The D-Bus system bus is not reachable."""


class BluezNotRunningError(BleError):
    """Nothing owns org.bluez on the system bus."""


class AdapterMissingError(BleError):
    """The configured Bluetooth adapter does not exist."""


class AdapterOffError(BleError):
    """The adapter exists but is powered off or blocked."""


def translate_error(exc: BaseException, adapter: str) -> BleError:
    """Map a bleak / dbus-fast failure to one actionable line."""
    if isinstance(exc, BleError):
        return exc
    if isinstance(exc, FileNotFoundError | ConnectionRefusedError):
        return NoSystemBusError(
            "no D-Bus system bus: start dbus (systemctl start dbus) "
            "or check DBUS_SYSTEM_BUS_ADDRESS"
        )
    if isinstance(exc, BleakDBusError):
        if exc.dbus_error == DBUS_SERVICE_UNKNOWN:
            return BluezNotRunningError(
                "BlueZ is not running: install bluez and run systemctl start bluetooth"
            )
        if exc.dbus_error in BLUEZ_NOT_READY:
            return AdapterOffError(
                f"Bluetooth adapter {adapter} is powered off: run "
                f"'rfkill unblock bluetooth' and 'bluetoothctl power on'"
            )
    if isinstance(exc, BleakBluetoothNotAvailableError):
        if "powered" in str(exc).lower():
            return AdapterOffError(
                f"Bluetooth adapter {adapter} is powered off: run 'bluetoothctl power on'"
            )
        return AdapterMissingError(
            f"no Bluetooth adapter {adapter}: plug in a BLE adapter or set 'adapter' "
            "in the config (see 'bluetoothctl list')"
        )
    if isinstance(exc, BleakError) and "not found" in str(exc):
        return AdapterMissingError(
            f"no Bluetooth adapter {adapter}: plug in a BLE adapter or set 'adapter' "
            "in the config (see 'bluetoothctl list')"
        )
    return BleError(f"Bluetooth scanning failed: {type(exc).__name__}: {exc}")


def advert_from_bleak(device: BLEDevice, adv: AdvertisementData) -> AdvertRecord:
    """Copy bleak's advertisement into our record type."""
    return AdvertRecord(
        t=None,
        address=device.address,
        rssi=adv.rssi,
        local_name=adv.local_name,
        tx_power=adv.tx_power,
        manufacturer_data=dict(adv.manufacturer_data),
        service_data=dict(adv.service_data),
        service_uuids=tuple(adv.service_uuids),
    )


class _RecordBackend(BaseBleakScanner):
    """Common base: feeds AdvertRecords into bleak's detection callbacks."""

    def __init__(
        self,
        detection_callback: AdvertisementDataCallback | None,
        service_uuids: list[str] | None,
        scanning_mode: Literal["active", "passive"] = "active",
        **kwargs: Any,
    ) -> None:
        super().__init__(detection_callback, service_uuids)
        self._task: asyncio.Task[None] | None = None
        self.finished = asyncio.Event()

    def deliver(self, rec: AdvertRecord) -> None:
        """Hand one advertisement to bleak's callback machinery."""
        uuids = list(rec.service_uuids) or list(rec.service_data)
        if not self.is_allowed_uuid(uuids):
            return
        adv = AdvertisementData(
            local_name=rec.local_name,
            manufacturer_data=dict(rec.manufacturer_data),
            service_data=dict(rec.service_data),
            service_uuids=uuids,
            tx_power=rec.tx_power,
            rssi=rec.rssi,
            platform_data=(),
        )
        device = self.create_or_update_device(rec.address, rec.address, rec.local_name, None, adv)
        self.call_detection_callbacks(device, adv)

    async def _feed(self) -> None:
        raise NotImplementedError

    async def _run(self) -> None:
        try:
            await self._feed()
        finally:
            self.finished.set()

    async def start(self) -> None:
        self.seen_devices = {}
        self.finished.clear()
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


class SimulatedBackend(_RecordBackend):
    """Advertisements as JSON lines on an asyncio stream (stdin), delivered at once."""

    def __init__(
        self,
        detection_callback: AdvertisementDataCallback | None,
        service_uuids: list[str] | None,
        scanning_mode: Literal["active", "passive"] = "active",
        *,
        stream: asyncio.StreamReader,
        **kwargs: Any,
    ) -> None:
        super().__init__(detection_callback, service_uuids, scanning_mode)
        self._stream = stream

    async def _feed(self) -> None:
        while True:
            line = await self._stream.readline()
            if not line:
                return
            text = line.decode("utf-8", errors="replace").strip()
            if not text:
                continue
            try:
                rec = parse_record(text)
            except ScannerError as exc:
                # The message describes the record's shape, never its bytes.
                logger.warning("simulated input: skipping a malformed record (%s)", type(exc))
                continue
            self.deliver(rec)


class ReplayBackend(_RecordBackend):
    """A recorded JSON-lines file replayed with its ``t`` spacing scaled by ``speed``."""

    def __init__(
        self,
        detection_callback: AdvertisementDataCallback | None,
        service_uuids: list[str] | None,
        scanning_mode: Literal["active", "passive"] = "active",
        *,
        path: str,
        speed: float = 1.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(detection_callback, service_uuids, scanning_mode)
        self._path = Path(path)
        self._speed = speed

    async def _feed(self) -> None:
        loop = asyncio.get_running_loop()
        lines = await asyncio.to_thread(self._path.read_text, encoding="utf-8")
        start_wall = loop.time()
        first_t: float | None = None
        for number, line in enumerate(lines.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                rec = parse_record(line)
            except ScannerError:
                logger.warning("replay %s: skipping malformed line %d", self._path, number)
                continue
            if self._speed > 0 and rec.t is not None:
                if first_t is None:
                    first_t = rec.t
                due = start_wall + (rec.t - first_t) / self._speed
                delay = due - loop.time()
                if delay > MIN_REPLAY_SLEEP_S:
                    await asyncio.sleep(delay)
            else:
                await asyncio.sleep(0)
            self.deliver(rec)


def _or_patterns(legacy_ibeacon: bool) -> list[OrPattern]:
    patterns = [OrPattern(0, AdvertisementDataType.SERVICE_DATA_UUID16, EDDYSTONE_UUID16_LE)]
    if legacy_ibeacon:
        patterns.append(
            OrPattern(0, AdvertisementDataType.MANUFACTURER_SPECIFIC_DATA, IBEACON_PREFIX)
        )
    return patterns


class BleSource:
    """Scans with the configured backend and calls ``on_advert`` for every advertisement."""

    def __init__(
        self,
        config: ScannerConfig,
        on_advert: AdvertCallback,
        *,
        stream: asyncio.StreamReader | None = None,
    ) -> None:
        self._config = config
        self._on_advert = on_advert
        self._stream = stream
        self._scanner: BleakScanner | None = None

    @property
    def adapter_state(self) -> str:
        """Heartbeat ``adapter`` value for the non-radio backends, else the last known."""
        if self._config.backend == "simulated":
            return "simulated"
        if self._config.backend == "replay":
            return "replay"
        return "powered" if self._scanner is not None else "off"

    def heartbeat_node(self) -> None:
        """No ``node`` object in the heartbeat: this box is its own radio."""

    @property
    def finished(self) -> asyncio.Event | None:
        """Set when a replay or simulated input has ended (None for BlueZ)."""
        if self._scanner is None:
            return None
        backend = self._scanner._backend
        return backend.finished if isinstance(backend, _RecordBackend) else None

    def _callback(self, device: BLEDevice, adv: AdvertisementData) -> None:
        self._on_advert(advert_from_bleak(device, adv))

    def _make_scanner(self) -> BleakScanner:
        cfg = self._config
        if cfg.backend == "simulated":
            if self._stream is None:
                raise BleError("simulated backend needs an input stream (the daemon's stdin)")
            return BleakScanner(self._callback, backend=SimulatedBackend, stream=self._stream)
        if cfg.backend == "replay":
            if cfg.replay_file is None:
                raise BleError("replay backend needs replay_file")
            return BleakScanner(
                self._callback,
                backend=ReplayBackend,
                path=cfg.replay_file,
                speed=cfg.replay_speed,
            )
        bluez: BlueZScannerArgs = {"adapter": cfg.adapter}
        if cfg.scanning_mode == "passive":
            bluez["or_patterns"] = list(_or_patterns(cfg.legacy_ibeacon))
        return BleakScanner(self._callback, scanning_mode=cfg.scanning_mode, bluez=bluez)

    async def start(self) -> None:
        """Start scanning; raises a BleError subclass with one actionable line."""
        try:
            scanner = self._make_scanner()
            if self._config.backend == "bluez":
                await check_adapter_powered(self._config.adapter)
            await scanner.start()
        except BleError:
            raise
        except Exception as exc:
            raise translate_error(exc, self._config.adapter) from exc
        self._scanner = scanner
        logger.info("scanning started (backend %s)", self._config.backend)

    async def stop(self) -> None:
        """Stop scanning; errors while stopping are logged, not raised."""
        scanner, self._scanner = self._scanner, None
        if scanner is None:
            return
        try:
            await scanner.stop()
        except Exception as exc:  # a dead bus while stopping must not mask the stop
            logger.warning("stopping the scanner failed: %s", translate_error(exc, ""))

    async def restart(self) -> None:
        """Stop and start again (watchdog)."""
        await self.stop()
        await self.start()


# How long `beacon-scanner check` waits for BlueZ to start and stop a scan.
PROBE_TIMEOUT_S = 10.0


async def check_adapter_powered(adapter: str) -> None:
    """Raise AdapterOffError if BlueZ reports ``adapter`` as not powered.

    bleak does not look at ``Powered`` when an adapter is named explicitly, and BlueZ may then
    accept StartDiscovery yet deliver nothing.
    """
    bus = await MessageBus(bus_type=BusType.SYSTEM).connect()
    try:
        reply = await bus.call(
            Message(
                destination="org.bluez",
                path=f"/org/bluez/{adapter}",
                interface="org.freedesktop.DBus.Properties",
                member="Get",
                signature="ss",
                body=["org.bluez.Adapter1", "Powered"],
            )
        )
    finally:
        bus.disconnect()
    if reply is None or reply.message_type != MessageType.METHOD_RETURN:
        # Missing adapter or BlueZ: let bleak's own start report it precisely.
        return
    if not reply.body[0].value:
        raise AdapterOffError(
            f"Bluetooth adapter {adapter} is powered off: run "
            "'rfkill unblock bluetooth' and 'bluetoothctl power on'"
        )


async def probe_bluez(adapter: str) -> BleError | None:
    """Start and stop an active scan on ``adapter``; the translated error, or None if it works."""
    scanner = BleakScanner(None, bluez={"adapter": adapter})
    try:
        async with asyncio.timeout(PROBE_TIMEOUT_S):
            await check_adapter_powered(adapter)
            await scanner.start()
            await scanner.stop()
    except TimeoutError:
        return BleError(
            f"BlueZ did not answer within {PROBE_TIMEOUT_S:g} s: run systemctl restart bluetooth"
        )
    except Exception as exc:
        return translate_error(exc, adapter)
    return None
