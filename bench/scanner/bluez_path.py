"""bleak's own BlueZ per-advertisement cost versus the daemon's, measured in one process.

Imported by ``bench_scanner.py``. What a BlueZ scanner does for each advertisement:

1. dbus-fast unmarshals the ``org.freedesktop.DBus.Properties.PropertiesChanged`` signal that
   bluetoothd emits on the device object (``RSSI`` plus ``ManufacturerData`` or ``ServiceData``);
2. bleak's ``BlueZManager._parse_msg`` updates its property cache and runs the advertisement
   callbacks of the adapter;
3. bleak's ``BleakScannerBlueZDBus._handle_advertising_data`` builds ``AdvertisementData``,
   updates ``seen_devices`` and calls the detection callbacks;
4. our detection callback: ``scanner.ble.advert_from_bleak`` then ``Daemon.on_advert`` (parse,
   allowlist match, aggregation).

Steps 1-3 are bleak's cost (timed with a no-op detection callback); step 4 is ours, timed alone
on the very ``(BLEDevice, AdvertisementData)`` pairs bleak produced. The messages are marshalled
bytes, exactly what arrives from the bus socket; no bus, no bluetoothd and no radio are involved,
so the figures leave out the socket read and bluetoothd itself (bleak's real cost is higher, our
share lower). The manager and the scanner are bleak's real classes, wired through their (private)
callback registry the way ``BlueZManager.active_scan`` does.
"""

from __future__ import annotations

import io
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bleak.backends.bluezdbus.manager import BlueZManager
from bleak.backends.bluezdbus.scanner import BleakScannerBlueZDBus
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData
from dbus_fast import Message, Variant
from dbus_fast._private.unmarshaller import Unmarshaller

from scanner.allowlist import Allowlist
from scanner.ble import advert_from_bleak
from scanner.config import ScannerConfig
from scanner.daemon import Daemon

# The adapter every simulated device hangs off (BlueZ's object path layout).
ADAPTER_PATH = "/org/bluez/hci0"
# Devices sending each kind of frame (same company ids / service UUIDs): a few hundred devices
# per kind, as on a busy shop floor.
DEVICES_PER_KIND = 300

Advert = tuple[dict[int, bytes], dict[str, bytes]]
DetectionCallback = Callable[[BLEDevice, AdvertisementData], None]


def _adv_variants(md: dict[int, bytes], sd: dict[str, bytes], rssi: int) -> dict[str, Variant]:
    props: dict[str, Variant] = {"RSSI": Variant("n", rssi)}
    if md:
        props["ManufacturerData"] = Variant("a{qv}", {k: Variant("ay", v) for k, v in md.items()})
    if sd:
        props["ServiceData"] = Variant("a{sv}", {k: Variant("ay", v) for k, v in sd.items()})
    return props


def _device_props(address: str) -> dict[str, Variant]:
    return {
        "Address": Variant("s", address),
        "AddressType": Variant("s", "random"),
        "Alias": Variant("s", address.replace(":", "-")),
        "Adapter": Variant("o", ADAPTER_PATH),
        "UUIDs": Variant("as", []),
        "Paired": Variant("b", False),
        "Connected": Variant("b", False),
        "RSSI": Variant("n", -90),
    }


def _wire(messages: list[Message]) -> bytes:
    out = bytearray()
    for serial, msg in enumerate(messages, start=1):
        msg.serial = serial
        out += msg._marshall(False)
    return bytes(out)


def _reader(data: bytes) -> Callable[[], Message | None]:
    """Returns, call after call, the messages marshalled in ``data`` (as read from a socket)."""
    return Unmarshaller(io.BytesIO(data), None, False).unmarshall


def _cost(run: Callable[[], None], count: int) -> float:
    """Cost per item of one run, in microseconds."""
    start = time.perf_counter()
    run()
    return (time.perf_counter() - start) / count * 1e6


def _summary(costs: list[float]) -> dict[str, float]:
    return {"best": min(costs), "median": statistics.median(costs)}


def measure_bluez_path(
    corpus: list[Advert],
    addresses: list[str],
    allowlist: Allowlist,
    now: float,
    repeats: int,
) -> dict[str, Any]:
    """Per-advertisement cost (us) of bleak's BlueZ path and of ours, and ours as a share."""
    # One device sends one kind of frame (as a real beacon or phone does), so that BlueZ's
    # property cache, which keeps the last value of each property, never mixes two kinds.
    paths: list[str] = []
    slots: dict[tuple[Any, ...], int] = {}
    kinds: dict[tuple[Any, ...], int] = {}
    address_of: dict[str, str] = {}
    for i, (md, sd) in enumerate(corpus):
        kind = (*sorted(md), *sorted(sd))
        kind_no = kinds.setdefault(kind, len(kinds))
        slot = slots.get(kind, 0)
        slots[kind] = (slot + 1) % DEVICES_PER_KIND
        path = f"{ADAPTER_PATH}/dev_{kind_no}_{slot}"
        address_of.setdefault(path, addresses[i])
        paths.append(path)
    added = [
        Message.new_signal(
            "/",
            "org.freedesktop.DBus.ObjectManager",
            "InterfacesAdded",
            "oa{sa{sv}}",
            [path, {"org.bluez.Device1": _device_props(addr)}],
        )
        for path, addr in address_of.items()
    ]
    changed = [
        Message.new_signal(
            paths[i],
            "org.freedesktop.DBus.Properties",
            "PropertiesChanged",
            "sa{sv}as",
            ["org.bluez.Device1", _adv_variants(md, sd, -50 - i % 40), []],
        )
        for i, (md, sd) in enumerate(corpus)
    ]
    wire = _wire(changed)
    n = len(changed)

    manager = BlueZManager()
    read_added = _reader(_wire(added))
    for _ in added:
        manager._parse_msg(read_added())  # type: ignore[arg-type]

    def bleak_run(callback: DetectionCallback) -> None:
        scanner = BleakScannerBlueZDBus(callback, None, "active", bluez={})
        scanner.seen_devices = {}
        callbacks = manager._advertisement_callbacks[ADAPTER_PATH]
        callbacks.append(scanner._handle_advertising_data)
        try:
            read, parse = _reader(wire), manager._parse_msg
            for _ in range(n):
                parse(read())  # type: ignore[arg-type]
        finally:
            callbacks.remove(scanner._handle_advertising_data)

    def decode_only() -> None:
        read = _reader(wire)
        for _ in range(n):
            read()

    def noop(device: BLEDevice, adv: AdvertisementData) -> None:
        return None

    captured: list[tuple[BLEDevice, AdvertisementData]] = []
    bleak_run(lambda device, adv: captured.append((device, adv)))
    assert len(captured) == n, "every PropertiesChanged must reach the detection callback"

    with tempfile.TemporaryDirectory() as tmp:
        cfg = ScannerConfig(
            scanner_id="s-bench",
            store_id="demo-store",
            server_url="http://127.0.0.1:9",
            secret="x",
            backend="simulated",
            outbox_path=str(Path(tmp) / "outbox.sqlite"),
        )
        daemon = Daemon(cfg, "x", clock=lambda: now)
        daemon.allowlist = allowlist
        on_advert = daemon.on_advert

        def ours_alone() -> None:
            for device, adv in captured:
                on_advert(advert_from_bleak(device, adv))

        ours_alone()
        passed = daemon.counters.frames_passed
        # Interleaved repeats, so that load from other processes hits every figure alike.
        runs: dict[str, list[float]] = {"decode": [], "bleak": [], "ours": []}
        for _ in range(repeats):
            runs["decode"].append(_cost(decode_only, n))
            runs["bleak"].append(_cost(lambda: bleak_run(noop), n))
            runs["ours"].append(_cost(ours_alone, n))
        daemon.outbox.close()
    decode, bleak_cost, ours_cost = (_summary(runs[k]) for k in ("decode", "bleak", "ours"))
    return {
        "adverts": n,
        "devices": len(address_of),
        "passed": passed,
        "dbus_decode_us": decode,
        "bleak_bluez_us": bleak_cost,
        "ours_us": ours_cost,
        "ours_share_of_bleak": {
            "best": ours_cost["best"] / bleak_cost["best"],
            "median": ours_cost["median"] / bleak_cost["median"],
        },
    }
