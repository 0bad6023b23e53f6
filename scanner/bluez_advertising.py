"""The store beacon on air: BlueZ's LE advertising manager over D-Bus (dbus-fast, no bleak).

The box exports an ``org.bluez.LEAdvertisement1`` object (a non-connectable "broadcast"
advertisement carrying an iBeacon: the chain's UUID, the store's major, this slot's minor from
``store_beacon``) and registers it with the adapter's ``org.bluez.LEAdvertisingManager1``,
which reads its properties back over D-Bus. At each slot boundary the advertisement is
registered again with the new minor (BlueZ reads properties at registration on every version
that has the interface; watching later property changes came only in newer ones). On stop it
is unregistered. When bluetoothd restarts (its bus name changes owner), calls ``Release`` or
refuses, the registration is retried with a capped back-off.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from dbus_fast import BusType, DBusError, Message, MessageType, PropertyAccess, Variant
from dbus_fast.aio import MessageBus
from dbus_fast.annotations import DBusInt16, DBusSignature, DBusStr
from dbus_fast.service import ServiceInterface, dbus_property, method

from scanner.config import ScannerConfig
from scanner.errors import ConfigError, ScannerError
from scanner.frames import IBeaconFrame, encode_ibeacon
from store_beacon import StoreBeacon, advertised_now, key_from_text, next_slot_at, slot_of

logger = logging.getLogger(__name__)

BLUEZ = "org.bluez"
LE_ADVERTISING_MANAGER = "org.bluez.LEAdvertisingManager1"
LE_ADVERTISEMENT = "org.bluez.LEAdvertisement1"
PROPERTIES = "org.freedesktop.DBus.Properties"
# Where the box exports its one advertisement object (any path of ours will do).
ADVERTISEMENT_PATH = "/org/bulle/scanner/store_beacon"
# Apple's company identifier, under which iBeacon manufacturer data is carried.
APPLE_COMPANY_ID = 0x004C
# The longest sleep between looks at the clock, so an NTP step is caught within it.
MAX_WAIT_S = 30.0
# Back-off between registration attempts while BlueZ or the adapter is away: first and cap.
RETRY_FIRST_S = 1.0
RETRY_MAX_S = 30.0
# Bound on the unregistration at stop (systemd's stop timeout is 15 s; the upload gets 2 s).
UNREGISTER_TIMEOUT_S = 2.0
# How long `beacon-scanner check` waits for BlueZ's answer.
PROBE_TIMEOUT_S = 10.0


class AdvertisingError(ScannerError):
    """The store beacon cannot be broadcast."""


@dataclass(frozen=True, slots=True)
class BeaconSettings:
    """What the box needs to broadcast the store beacon ([advertise] and the key's bytes)."""

    adapter: str
    box_id: str
    chain_uuid: uuid.UUID
    major: int
    key: bytes
    measured_power: int
    tx_power: int | None = None


def read_key(path: str) -> bytes:
    """The store beacon key from its file; ConfigError naming ``advertise.key_file``."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}", key="advertise.key_file") from exc
    try:
        return key_from_text(text)
    except ValueError as exc:
        raise ConfigError(f"{path}: {exc}", key="advertise.key_file") from None


def beacon_settings(config: ScannerConfig) -> BeaconSettings:
    """The advertiser's settings from a validated config with ``[advertise] enabled``."""
    a = config.advertise
    if not a.enabled or a.uuid is None or a.major is None or a.key_file is None:
        raise ConfigError("the store beacon is not enabled", key="advertise.enabled")
    return BeaconSettings(
        adapter=config.adapter,
        box_id=config.scanner_id,
        chain_uuid=uuid.UUID(a.uuid),
        major=a.major,
        key=read_key(a.key_file),
        measured_power=a.measured_power,
        tx_power=a.tx_power,
    )


def ibeacon_payload(beacon: StoreBeacon, measured_power: int) -> bytes:
    """Apple's manufacturer data for ``beacon``: 0x02 0x15, UUID, major, minor, power."""
    return encode_ibeacon(
        IBeaconFrame(str(beacon.uuid), beacon.major, beacon.minor, measured_power)
    )


# A D-Bus method without out arguments, as dbus-fast reads it from the annotation.
_NoReply = Annotated[None, DBusSignature("")]


class _Advertisement(ServiceInterface):
    """The exported ``org.bluez.LEAdvertisement1``; BlueZ reads it at each registration."""

    def __init__(self, on_release: Callable[[], None]) -> None:
        super().__init__(LE_ADVERTISEMENT)
        self.payload = b""
        self._on_release = on_release

    @dbus_property(access=PropertyAccess.READ)
    def Type(self) -> DBusStr:
        return "broadcast"

    @dbus_property(access=PropertyAccess.READ)
    def ManufacturerData(
        self,
    ) -> Annotated[dict[int, Variant], DBusSignature("a{qv}")]:
        return {APPLE_COMPANY_ID: Variant("ay", self.payload)}

    @method()
    def Release(self) -> _NoReply:
        self._on_release()


class _AdvertisementWithTxPower(_Advertisement):
    """The same, asking BlueZ for a transmit power (``TxPower``, BlueZ 5.56 and later)."""

    def __init__(self, on_release: Callable[[], None], tx_power: int) -> None:
        super().__init__(on_release)
        self._tx_power = tx_power

    @dbus_property(access=PropertyAccess.READ)
    def TxPower(self) -> DBusInt16:
        return self._tx_power


class _BluezChanged(Exception):
    """bluetoothd left the bus or came back, or the bus itself went: registrations are gone."""


def _check_reply(reply: Message | None, what: str) -> Message:
    if reply is None:
        raise AdvertisingError(f"{what}: no answer from BlueZ")
    if reply.message_type == MessageType.ERROR:
        detail = reply.body[0] if reply.body else ""
        raise DBusError(reply.error_name or "org.freedesktop.DBus.Error.Failed", str(detail))
    return reply


def describe_error(exc: BaseException, adapter: str) -> str:
    """One actionable line for a failure to reach BlueZ's advertising manager."""
    if isinstance(exc, FileNotFoundError | ConnectionRefusedError):
        return "no D-Bus system bus: start dbus or check DBUS_SYSTEM_BUS_ADDRESS"
    if isinstance(exc, DBusError):
        name = exc.type
        if name == "org.freedesktop.DBus.Error.ServiceUnknown":
            return "BlueZ is not running: install bluez and run systemctl start bluetooth"
        if name in ("org.freedesktop.DBus.Error.UnknownObject",):
            return f"no Bluetooth adapter {adapter}: plug in a BLE adapter or set 'adapter'"
        if name in (
            "org.freedesktop.DBus.Error.UnknownInterface",
            "org.freedesktop.DBus.Error.UnknownMethod",
            "org.freedesktop.DBus.Error.InvalidArgs",
        ):
            return (
                f"adapter {adapter} cannot advertise (no {LE_ADVERTISING_MANAGER}): "
                "BlueZ 5.43 or later and a Bluetooth LE adapter are needed"
            )
        if name == "org.bluez.Error.NotPermitted":
            return f"adapter {adapter} has no free advertising instance: {exc.text}"
        return f"BlueZ refused the store beacon: {name}: {exc.text}"
    return f"{type(exc).__name__}: {exc}"


class StoreBeaconAdvertiser:
    """Keeps the store beacon registered with BlueZ, with this slot's minor, until stopped.

    ``clock`` gives unix time (tests drive it, then call ``poke``); ``bus_address`` is the
    system bus (None: the default, or DBUS_SYSTEM_BUS_ADDRESS).
    """

    def __init__(
        self,
        settings: BeaconSettings,
        *,
        clock: Callable[[], float] = time.time,
        bus_address: str | None = None,
    ) -> None:
        self.settings = settings
        self._clock = clock
        self._bus_address = bus_address
        self._wake = asyncio.Event()
        self._released = False
        self.registrations = 0
        """Successful registrations (the first, each slot's, each after BlueZ came back)."""
        self.looks = 0
        """Times the clock was looked at while registered (tests wait on it)."""
        self.on_air: StoreBeacon | None = None
        """What BlueZ currently holds, or None."""
        self._last_error: str | None = None

    def poke(self) -> None:
        """Look at the clock and BlueZ again now (after a clock change; tests)."""
        self._wake.set()

    def _release(self) -> None:
        logger.warning("BlueZ released the store beacon; registering it again")
        self._released = True
        self._wake.set()

    async def _wait(self, stop: asyncio.Event, seconds: float) -> None:
        waiter = asyncio.ensure_future(stop.wait())
        woken = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait(
                {waiter, woken}, timeout=max(0.0, seconds), return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            waiter.cancel()
            woken.cancel()
        self._wake.clear()

    async def run(self, stop: asyncio.Event) -> None:
        """Broadcast until ``stop`` is set, then withdraw the advertisement."""
        delay = RETRY_FIRST_S
        while not stop.is_set():
            try:
                await self._session(stop)
                delay = RETRY_FIRST_S
            except _BluezChanged:
                logger.info("BlueZ or the system bus restarted: registering the store beacon again")
                delay = RETRY_FIRST_S
                continue
            except Exception as exc:  # scanning goes on whatever happens to the beacon
                message = describe_error(exc, self.settings.adapter)
                if message != self._last_error:
                    logger.warning("store beacon off the air: %s (retrying)", message)
                    self._last_error = message
            if stop.is_set():
                break
            await self._wait(stop, delay)
            delay = min(delay * 2, RETRY_MAX_S)

    async def _connect(self) -> MessageBus:
        if self._bus_address is not None:
            return await MessageBus(bus_address=self._bus_address).connect()
        return await MessageBus(bus_type=BusType.SYSTEM).connect()

    async def _session(self, stop: asyncio.Event) -> None:
        """One connection to the bus: register, follow the slots, unregister at stop."""
        bus = await self._connect()
        changed = asyncio.Event()

        def on_message(msg: Message) -> None:
            if (
                msg.message_type == MessageType.SIGNAL
                and msg.member == "NameOwnerChanged"
                and msg.body
                and msg.body[0] == BLUEZ
            ):
                changed.set()
                self._wake.set()

        s = self.settings
        advert: _Advertisement = (
            _Advertisement(self._release)
            if s.tx_power is None
            else _AdvertisementWithTxPower(self._release, s.tx_power)
        )

        def on_disconnect(_: object) -> None:
            # The system bus went away (dbus restarted): so did every registration on it.
            changed.set()
            self._wake.set()

        bus.add_message_handler(on_message)
        disconnected = asyncio.ensure_future(bus.wait_for_disconnect())  # type: ignore[no-untyped-call]
        disconnected.add_done_callback(on_disconnect)
        try:
            await self._add_match(bus)
            bus.export(ADVERTISEMENT_PATH, advert)
            slot: int | None = None
            while not stop.is_set():
                if changed.is_set():
                    self.on_air = None
                    raise _BluezChanged
                now = self._clock()
                if self._released or slot != slot_of(now):
                    if self.on_air is not None and not self._released:
                        await self._call(bus, "UnregisterAdvertisement", "o", [ADVERTISEMENT_PATH])
                    self.on_air = None
                    self._released = False
                    beacon = advertised_now(s.key, s.chain_uuid, s.major, s.box_id, now)
                    advert.payload = ibeacon_payload(beacon, s.measured_power)
                    await self._call(
                        bus, "RegisterAdvertisement", "oa{sv}", [ADVERTISEMENT_PATH, {}]
                    )
                    self.on_air = beacon
                    self.registrations += 1
                    slot = slot_of(now)
                    if self._last_error is not None:
                        logger.info("store beacon on the air again")
                        self._last_error = None
                    logger.debug("store beacon: slot %d registered", slot)
                self.looks += 1
                await self._wait(stop, min(next_slot_at(now) - now, MAX_WAIT_S))
        finally:
            with contextlib.suppress(Exception):
                await self._withdraw(bus, changed)
            disconnected.remove_done_callback(on_disconnect)
            disconnected.cancel()
            bus.remove_message_handler(on_message)
            # A bus already gone has nothing to undo.
            with contextlib.suppress(Exception):
                bus.unexport(ADVERTISEMENT_PATH)
            with contextlib.suppress(Exception):
                bus.disconnect()

    async def _withdraw(self, bus: MessageBus, changed: asyncio.Event) -> None:
        if self.on_air is None or changed.is_set() or self._released:
            self.on_air = None
            return
        self.on_air = None
        async with asyncio.timeout(UNREGISTER_TIMEOUT_S):
            await self._call(bus, "UnregisterAdvertisement", "o", [ADVERTISEMENT_PATH])
        logger.info("store beacon withdrawn")

    async def _add_match(self, bus: MessageBus) -> None:
        rule = (
            "type='signal',sender='org.freedesktop.DBus',interface='org.freedesktop.DBus',"
            f"member='NameOwnerChanged',arg0='{BLUEZ}'"
        )
        reply = await bus.call(
            Message(
                destination="org.freedesktop.DBus",
                path="/org/freedesktop/DBus",
                interface="org.freedesktop.DBus",
                member="AddMatch",
                signature="s",
                body=[rule],
            )
        )
        _check_reply(reply, "AddMatch")

    async def _call(self, bus: MessageBus, member: str, signature: str, body: list[object]) -> None:
        reply = await bus.call(
            Message(
                destination=BLUEZ,
                path=f"/org/bluez/{self.settings.adapter}",
                interface=LE_ADVERTISING_MANAGER,
                member=member,
                signature=signature,
                body=body,
            )
        )
        _check_reply(reply, member)


async def probe_advertising(adapter: str, bus_address: str | None = None) -> str:
    """What ``beacon-scanner check`` says when the adapter can advertise; raises
    AdvertisingError with one actionable line when it cannot."""
    try:
        async with asyncio.timeout(PROBE_TIMEOUT_S):
            bus = await (
                MessageBus(bus_address=bus_address)
                if bus_address is not None
                else MessageBus(bus_type=BusType.SYSTEM)
            ).connect()
            try:
                reply = await bus.call(
                    Message(
                        destination=BLUEZ,
                        path=f"/org/bluez/{adapter}",
                        interface=PROPERTIES,
                        member="GetAll",
                        signature="s",
                        body=[LE_ADVERTISING_MANAGER],
                    )
                )
            finally:
                bus.disconnect()
            props = _check_reply(reply, "GetAll").body[0]
    except TimeoutError:
        raise AdvertisingError(
            f"BlueZ did not answer within {PROBE_TIMEOUT_S:g} s: run systemctl restart bluetooth"
        ) from None
    except (DBusError, OSError, EOFError) as exc:
        raise AdvertisingError(describe_error(exc, adapter)) from None
    if not props:
        raise AdvertisingError(
            describe_error(DBusError("org.freedesktop.DBus.Error.UnknownInterface", ""), adapter)
        )
    free = int(props["SupportedInstances"].value) if "SupportedInstances" in props else 0
    active = int(props["ActiveInstances"].value) if "ActiveInstances" in props else 0
    if free < 1:
        raise AdvertisingError(
            f"adapter {adapter} has no free advertising instance ({active} in use by other "
            "programs): stop them or use another adapter"
        )
    return f"{adapter}: {free} free advertising instance{'s' if free != 1 else ''}"
