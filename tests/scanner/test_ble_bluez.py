"""Our ble.py adapter on bleak's real BlueZ backend, against python-dbusmock's bluez5."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

from scanner.ble import (
    AdapterMissingError,
    AdapterOffError,
    BleSource,
    BluezNotRunningError,
    NoSystemBusError,
    probe_bluez,
)
from scanner.config import ScannerConfig
from scanner.daemon import Daemon
from scanner.records import AdvertRecord
from tests.support import wait_until as wait_for_probe

from .conftest import (
    SCANNER_ID,
    SECRET,
    Api,
    BluezMock,
    PrivateBus,
    _stop,
    start_private_bus,
    wait_until,
)

pytestmark = pytest.mark.bluez

EDDYSTONE = "0000feaa-0000-1000-8000-00805f9b34fb"


def eid_frame(eid: bytes, tx: int = -20) -> bytes:
    return bytes([0x30, tx & 0xFF]) + eid


def make_config(tmp_path: Path, **over: object) -> ScannerConfig:
    base: dict[str, object] = {
        "scanner_id": "s-test",
        "store_id": "demo-store",
        "server_url": "http://127.0.0.1:9",
        "secret": "x",
        "backend": "bluez",
        "adapter": "hci0",
        "outbox_path": str(tmp_path / "outbox.sqlite"),
    }
    base.update(over)
    return ScannerConfig(**base)  # type: ignore[arg-type]


def for_address(got: list[AdvertRecord], address: str) -> list[AdvertRecord]:
    return [r for r in got if r.address == address]


async def test_eid_advert_then_update_then_removal(bluez: BluezMock, tmp_path: Path) -> None:
    got: list[AdvertRecord] = []
    source = BleSource(make_config(tmp_path), got.append)
    await source.start()
    try:
        address = "C0:FF:EE:00:01:01"
        path = await asyncio.to_thread(
            bluez.add_device,
            address,
            -61,
            {EDDYSTONE: eid_frame(bytes.fromhex("0123456789abcdef"))},
        )
        await wait_until(lambda: len(for_address(got, address)) >= 1)
        first = for_address(got, address)[0]
        assert first.rssi == -61
        assert first.service_data[EDDYSTONE] == eid_frame(bytes.fromhex("0123456789abcdef"))

        new = eid_frame(bytes.fromhex("fedcba9876543210"))
        await asyncio.to_thread(bluez.update_device, path, -48, {EDDYSTONE: new})
        await wait_until(lambda: any(r.rssi == -48 for r in for_address(got, address)))
        last = for_address(got, address)[-1]
        assert last.service_data[EDDYSTONE] == new

        before = len(got)
        await asyncio.to_thread(bluez.remove_device, path)
        # A removal produces no advertisement; the scanner keeps running and sees new devices.
        other = "C0:FF:EE:00:01:02"
        await asyncio.to_thread(bluez.add_device, other, -70, {EDDYSTONE: new})
        await wait_until(lambda: len(for_address(got, other)) >= 1)
        assert len(for_address(got[before:], address)) == 0
    finally:
        await source.stop()


async def test_active_mode_uses_discovery(bluez: BluezMock, tmp_path: Path) -> None:
    await asyncio.to_thread(bluez.clear_calls)
    source = BleSource(make_config(tmp_path, scanning_mode="active"), lambda r: None)
    await source.start()
    await source.stop()
    calls = await asyncio.to_thread(bluez.calls)
    assert "StartDiscovery" in calls
    assert "StopDiscovery" in calls
    assert "RegisterMonitor" not in calls


async def test_passive_mode_registers_monitor(bluez: BluezMock, tmp_path: Path) -> None:
    await asyncio.to_thread(bluez.clear_calls)
    got: list[AdvertRecord] = []
    source = BleSource(make_config(tmp_path, scanning_mode="passive"), got.append)
    await source.start()
    try:
        calls = await asyncio.to_thread(bluez.calls)
        assert "RegisterMonitor" in calls
        assert "StartDiscovery" not in calls
        address = "C0:FF:EE:00:02:01"
        await asyncio.to_thread(bluez.add_device, address, -55, {EDDYSTONE: eid_frame(b"\x11" * 8)})
        await wait_until(lambda: len(for_address(got, address)) >= 1)
    finally:
        await source.stop()
    assert "UnregisterMonitor" in await asyncio.to_thread(bluez.calls)


async def test_no_system_bus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", f"unix:path={tmp_path / 'missing_socket'}")
    source = BleSource(make_config(tmp_path), lambda r: None)
    with pytest.raises(NoSystemBusError, match="no D-Bus system bus"):
        await source.start()
    assert isinstance(await probe_bluez("hci0"), NoSystemBusError)


async def test_bus_without_bluez(
    system_bus: PrivateBus, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bus = start_private_bus(tmp_path)
    try:
        monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", bus.address)
        source = BleSource(make_config(tmp_path), lambda r: None)
        with pytest.raises(BluezNotRunningError, match="systemctl start bluetooth"):
            await source.start()
    finally:
        _stop(bus.process)


async def test_bluez_without_adapter(
    system_bus: PrivateBus, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bus = start_private_bus(tmp_path)
    mock = BluezMock(bus)
    try:
        monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", bus.address)
        source = BleSource(make_config(tmp_path), lambda r: None)
        with pytest.raises(AdapterMissingError, match="no Bluetooth adapter hci0"):
            await source.start()
        await asyncio.to_thread(mock.add_adapter, "hci0")
        await asyncio.to_thread(mock.set_adapter_powered, "hci0", False)
        with pytest.raises(AdapterOffError, match="powered off"):
            await source.start()
        assert isinstance(await probe_bluez("hci0"), AdapterOffError)
    finally:
        mock.close()
        _stop(bus.process)
        assert os.environ["DBUS_SYSTEM_BUS_ADDRESS"] == bus.address


async def test_watchdog_restarts_silent_scanning(
    bluez: BluezMock, api: Api, tmp_path: Path
) -> None:
    await asyncio.to_thread(bluez.clear_calls)
    cfg = make_config(
        tmp_path,
        server_url=api.url,
        secret=SECRET,
        scanner_id=SCANNER_ID,
        watchdog_timeout_s=0.4,
        heartbeat_interval_s=0.2,
        allowlist_wait_s=5.0,
    )
    daemon = Daemon(cfg, SECRET)
    stop = asyncio.Event()
    task = asyncio.create_task(daemon.run(stop))
    try:
        await wait_until(lambda: daemon.counters.watchdog_restarts >= 1)
        await wait_until(lambda: any(h["watchdog_restarts"] >= 1 for h in api.state.heartbeats))

        async def scanning_again() -> bool:
            # The restart is counted before it reaches BlueZ: wait for its StartDiscovery.
            calls = await asyncio.to_thread(bluez.calls)
            return calls.count("StartDiscovery") >= 2

        await wait_for_probe(scanning_again, 10.0, "discovery started again after the watchdog")
        await wait_until(lambda: api.state.heartbeats[-1]["adapter"] == "powered")
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=10)


async def _check(config_path: Path, bus_address: str) -> tuple[int, list[str]]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "scanner",
        "check",
        "--config",
        str(config_path),
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "DBUS_SYSTEM_BUS_ADDRESS": bus_address},
    )
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode is not None
    return proc.returncode, out.decode().splitlines()


async def test_check_names_each_bluetooth_failure_in_one_line(
    system_bus: PrivateBus, api: Api, tmp_path: Path
) -> None:
    """`beacon-scanner check` on a bus without BlueZ, then BlueZ without an adapter, then a
    powered-off adapter, then a working one: one FAIL line saying what to do, exit 1, until
    everything works (exit 0)."""
    cfg = tmp_path / "scanner.toml"
    cfg.write_text(
        f'scanner_id = "{SCANNER_ID}"\nstore_id = "demo-store"\nserver_url = "{api.url}"\n'
        f'secret = "{SECRET}"\noutbox_path = "{tmp_path / "outbox.sqlite"}"\n'
    )
    bus = start_private_bus(tmp_path)
    mock: BluezMock | None = None
    try:
        expected = [
            ("BlueZ", "BlueZ is not running: install bluez and run systemctl start bluetooth"),
            ("adapter present", "no Bluetooth adapter hci0: plug in a BLE adapter"),
            ("adapter powered", "Bluetooth adapter hci0 is powered off: run 'rfkill unblock"),
        ]
        for step, (name, message) in enumerate(expected):
            if step == 1:
                mock = await asyncio.to_thread(BluezMock, bus)
            elif step == 2:
                assert mock is not None
                await asyncio.to_thread(mock.add_adapter, "hci0")
                await asyncio.to_thread(mock.set_adapter_powered, "hci0", False)
            status, lines = await _check(cfg, bus.address)
            assert status == 1, lines
            failed = [line for line in lines if line.startswith("FAIL")]
            assert failed == [f"FAIL {name}: {failed[0].split(': ', 1)[1]}"], lines
            assert failed[0].split(": ", 1)[1].startswith(message), lines
            assert "OK   credentials accepted: scanner s-test" in lines
        assert mock is not None
        await asyncio.to_thread(mock.set_adapter_powered, "hci0", True)
        status, lines = await _check(cfg, bus.address)
        assert status == 0, lines
        assert [line[:4] for line in lines] == ["OK  "] * 7, lines
    finally:
        if mock is not None:
            mock.close()
        _stop(bus.process)
