"""The store beacon on air: scanner.bluez_advertising against a BlueZ-like advertising manager.

The mock (tests/scanner/bluez_advertising_template.py) reads the box's advertisement back over
real D-Bus at each registration, as bluetoothd does, so these tests see what a phone would
receive. Time is driven through the advertiser's clock; no test waits for a real slot.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import signal
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from scanner import bluez_advertising
from scanner.bluez_advertising import (
    ADVERTISEMENT_PATH,
    AdvertisingError,
    BeaconSettings,
    StoreBeaconAdvertiser,
    probe_advertising,
)
from store_beacon import SLOT_S, minor_for
from tests.support import wait_until as wait_for_probe

from .conftest import SCANNER_ID, SECRET, Api, BluezMock, PrivateBus, _stop, start_private_bus

pytestmark = pytest.mark.bluez

KEY = bytes(range(16, 48))
CHAIN = uuid.UUID("b0110000-0000-4000-8000-00000000c4a1")
MAJOR = 42
SLOT = 5_900_000
# Generous: D-Bus round trips through a mock process on a loaded 2-core machine.
LIMIT_S = 30.0


def settings(adapter: str = "hci0", **over: Any) -> BeaconSettings:
    values: dict[str, Any] = {
        "adapter": adapter,
        "box_id": SCANNER_ID,
        "chain_uuid": CHAIN,
        "major": MAJOR,
        "key": KEY,
        "measured_power": -59,
    }
    values.update(over)
    return BeaconSettings(**values)


def expected_payload(slot: int, power: int = -59) -> bytes:
    """The iBeacon of docs/api.md, written out (minor computed here from the spec)."""
    message = (
        b"bulle-store-beacon-v1"
        + MAJOR.to_bytes(2, "big")
        + len(SCANNER_ID).to_bytes(2, "big")
        + SCANNER_ID.encode()
        + slot.to_bytes(8, "big")
    )
    minor = hmac.new(KEY, message, hashlib.sha256).digest()[:2]
    assert int.from_bytes(minor, "big") == minor_for(KEY, MAJOR, SCANNER_ID, slot)
    return (
        b"\x02\x15"
        + CHAIN.bytes
        + MAJOR.to_bytes(2, "big")
        + minor
        + power.to_bytes(1, "big", signed=True)
    )


def on_air(props: dict[str, Any]) -> tuple[str, bytes]:
    """(Type, Apple manufacturer data) of the properties the mock read."""
    data = props["ManufacturerData"]
    assert list(data) == [0x004C], data
    return str(props["Type"]), bytes(data[0x004C])


async def events(mock: BluezMock, adapter: str = "hci0") -> list[tuple[str, str, dict[str, Any]]]:
    log = await asyncio.to_thread(mock.advertising_log, adapter)
    return [e for e in log if e[1] == ADVERTISEMENT_PATH]


async def wait_events(
    mock: BluezMock,
    pred: Callable[[list[tuple[str, str, dict[str, Any]]]], bool],
    what: str,
    adapter: str = "hci0",
) -> list[tuple[str, str, dict[str, Any]]]:
    async def probe() -> list[tuple[str, str, dict[str, Any]]] | None:
        try:
            found = await events(mock, adapter)
        except Exception:  # the adapter or the mock is not there (yet)
            return None
        return found if pred(found) else None

    return await wait_for_probe(probe, LIMIT_S, what)


async def test_registers_rotates_at_the_slot_boundary_and_withdraws_on_stop(
    bluez: BluezMock,
) -> None:
    before = len(await events(bluez))
    now = [SLOT * SLOT_S + SLOT_S - 0.5]
    advertiser = StoreBeaconAdvertiser(settings(), clock=lambda: now[0])
    stop = asyncio.Event()
    task = asyncio.create_task(advertiser.run(stop))
    try:
        log = await wait_events(bluez, lambda e: len(e) > before, "the first registration")
        event, _, props = log[before]
        assert event == "register"
        assert on_air(props) == ("broadcast", expected_payload(SLOT))
        manager = await asyncio.to_thread(bluez.advertising_manager)
        assert manager["ActiveInstances"] == 1
        held = await asyncio.to_thread(bluez.registered_ibeacons)
        assert held == {ADVERTISEMENT_PATH: expected_payload(SLOT)}

        # Half a second later: the next slot. The box registers the new minor.
        now[0] += 1.0
        advertiser.poke()
        log = await wait_events(bluez, lambda e: len(e) >= before + 3, "the next slot's minor")
        assert [e[0] for e in log[before:]] == ["register", "unregister", "register"]
        assert on_air(log[before + 2][2]) == ("broadcast", expected_payload(SLOT + 1))
        assert expected_payload(SLOT) != expected_payload(SLOT + 1)

        # Within the slot nothing changes, however often the clock is looked at.
        looks = advertiser.looks
        now[0] += 10.0
        advertiser.poke()
        await wait_for_probe(
            lambda: _value(advertiser.looks > looks), LIMIT_S, "the clock looked at again"
        )
        assert advertiser.registrations == 2
    finally:
        stop.set()
        await asyncio.wait_for(task, LIMIT_S)
    log = await events(bluez)
    assert [e[0] for e in log[before:]] == ["register", "unregister", "register", "unregister"]
    assert (await asyncio.to_thread(bluez.advertising_manager))["ActiveInstances"] == 0
    assert advertiser.on_air is None


async def test_tx_power_is_asked_of_bluez(bluez: BluezMock) -> None:
    before = len(await events(bluez))
    advertiser = StoreBeaconAdvertiser(
        settings(tx_power=-8, measured_power=-70), clock=lambda: SLOT * SLOT_S
    )
    stop = asyncio.Event()
    task = asyncio.create_task(advertiser.run(stop))
    try:
        log = await wait_events(bluez, lambda e: len(e) > before, "a registration")
        props = log[before][2]
        assert props["TxPower"] == -8
        assert on_air(props)[1] == expected_payload(SLOT, power=-70)
    finally:
        stop.set()
        await asyncio.wait_for(task, LIMIT_S)


async def test_survives_adapter_removal_and_bluetoothd_restart(
    system_bus: PrivateBus, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """BlueZ releases the advertisement when the adapter goes; the box registers it again
    when an adapter is back, and again after bluetoothd itself restarted."""
    monkeypatch.setattr(bluez_advertising, "RETRY_MAX_S", 0.5)  # retry quickly in a test
    bus = start_private_bus(tmp_path)
    mock = await asyncio.to_thread(BluezMock, bus)
    await asyncio.to_thread(mock.add_adapter, "hci0")
    advertiser = StoreBeaconAdvertiser(
        settings(), clock=lambda: SLOT * SLOT_S, bus_address=bus.address
    )
    stop = asyncio.Event()
    task = asyncio.create_task(advertiser.run(stop))
    try:
        await wait_events(mock, lambda e: [x[0] for x in e] == ["register"], "registration")
        await asyncio.to_thread(mock.remove_adapter, "hci0")
        await wait_for_probe(
            lambda: _value(advertiser.on_air is None), LIMIT_S, "the release to be seen"
        )
        await asyncio.to_thread(mock.add_adapter, "hci0")
        log = await wait_events(mock, lambda e: len(e) >= 1, "registration on the new adapter")
        assert on_air(log[0][2])[1] == expected_payload(SLOT)

        # bluetoothd goes away and comes back: a new process, nothing registered.
        await asyncio.to_thread(mock.close)
        mock = await asyncio.to_thread(BluezMock, bus)
        await asyncio.to_thread(mock.add_adapter, "hci0")
        log = await wait_events(mock, lambda e: len(e) >= 1, "registration after the restart")
        assert log[0][0] == "register"
        assert on_air(log[0][2])[1] == expected_payload(SLOT)
        # Counted once BlueZ's answer is back, which may come after the mock logged the call.
        await wait_for_probe(
            lambda: _value(advertiser.registrations == 3), LIMIT_S, "the third registration"
        )
    finally:
        stop.set()
        await asyncio.wait_for(task, LIMIT_S)
        assert [e[0] for e in await events(mock)] == ["register", "unregister"]
        await asyncio.to_thread(mock.close)
        _stop(bus.process)


async def test_survives_a_system_bus_restart(
    system_bus: PrivateBus, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """dbus itself dies and restarts (and bluetoothd with it): the box notices the lost
    connection and registers again on the new bus, without waiting for the next slot."""
    monkeypatch.setattr(bluez_advertising, "RETRY_MAX_S", 0.5)  # retry quickly in a test
    bus = start_private_bus(tmp_path)
    mock = await asyncio.to_thread(BluezMock, bus)
    await asyncio.to_thread(mock.add_adapter, "hci0")
    advertiser = StoreBeaconAdvertiser(
        settings(), clock=lambda: SLOT * SLOT_S, bus_address=bus.address
    )
    stop = asyncio.Event()
    task = asyncio.create_task(advertiser.run(stop))
    try:
        await wait_events(mock, lambda e: [x[0] for x in e] == ["register"], "registration")
        # The bus dies first (SIGKILL: a dbus-daemon stopping cleanly would still announce
        # that org.bluez lost its owner): only the lost connection tells the box.
        bus.process.kill()
        _stop(bus.process)  # reaped, its pipe closed
        await asyncio.to_thread(mock.close)
        (tmp_path / "system_bus_socket").unlink(missing_ok=True)
        bus = start_private_bus(tmp_path)  # the same address
        mock = await asyncio.to_thread(BluezMock, bus)
        await asyncio.to_thread(mock.add_adapter, "hci0")
        log = await wait_events(mock, lambda e: len(e) >= 1, "registration on the new bus")
        assert log[0][0] == "register"
        assert on_air(log[0][2])[1] == expected_payload(SLOT)
        # Counted once BlueZ's answer is back, which may come after the mock logged the call
        # (read at once, it was still 1 in a fresh-clone CI run).
        await wait_for_probe(
            lambda: _value(advertiser.registrations == 2), LIMIT_S, "the second registration"
        )
    finally:
        stop.set()
        await asyncio.wait_for(task, LIMIT_S)
        await asyncio.to_thread(mock.close)
        _stop(bus.process)


async def test_an_unexpected_error_is_retried_not_raised(
    bluez: BluezMock, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Whatever goes wrong with the beacon, the advertiser logs it once and tries again:
    it never takes scanning down with it."""
    monkeypatch.setattr(bluez_advertising, "RETRY_MAX_S", 0.2)
    real = bluez_advertising.advertised_now
    failures = [RuntimeError("boom")]

    def flaky(*args: Any) -> Any:
        if failures:
            raise failures.pop()
        return real(*args)

    monkeypatch.setattr(bluez_advertising, "advertised_now", flaky)
    before = len(await events(bluez))
    advertiser = StoreBeaconAdvertiser(settings(), clock=lambda: SLOT * SLOT_S)
    stop = asyncio.Event()
    task = asyncio.create_task(advertiser.run(stop))
    try:
        await wait_events(bluez, lambda e: len(e) > before, "a registration after the error")
    finally:
        stop.set()
        await asyncio.wait_for(task, LIMIT_S)
    assert "store beacon off the air: RuntimeError: boom (retrying)" in caplog.text


async def _value(x: bool) -> bool:
    return x


async def test_probe_names_what_is_missing(bluez: BluezMock) -> None:
    assert await probe_advertising("hci0") == "hci0: 5 free advertising instances"
    with pytest.raises(AdvertisingError, match="no Bluetooth adapter hci7"):
        await probe_advertising("hci7")
    await asyncio.to_thread(bluez.set_advertising_manager, "hci0", SupportedInstances=0)
    try:
        with pytest.raises(AdvertisingError, match="no free advertising instance"):
            await probe_advertising("hci0")
    finally:
        await asyncio.to_thread(bluez.set_advertising_manager, "hci0", SupportedInstances=5)


async def test_check_has_one_store_beacon_line(bluez: BluezMock, api: Api, tmp_path: Path) -> None:
    key = tmp_path / "store-beacon-key"
    key.write_text(KEY.hex() + "\n")
    cfg = tmp_path / "scanner.toml"
    base = (
        f'scanner_id = "{SCANNER_ID}"\nstore_id = "demo-store"\nserver_url = "{api.url}"\n'
        f'secret = "{SECRET}"\noutbox_path = "{tmp_path / "outbox.sqlite"}"\n'
        f'[advertise]\nenabled = true\nuuid = "{CHAIN}"\nmajor = {MAJOR}\n'
    )

    async def check(key_file: Path) -> tuple[int, list[str]]:
        cfg.write_text(base + f'key_file = "{key_file}"\n')
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "scanner",
            "check",
            "--config",
            str(cfg),
            stdout=asyncio.subprocess.PIPE,
            env={**os.environ},
        )
        out, _ = await asyncio.wait_for(proc.communicate(), timeout=60)
        assert proc.returncode is not None
        return proc.returncode, out.decode().splitlines()

    status, lines = await check(key)
    assert status == 0, lines
    assert "OK   store beacon: store 42, hci0: 5 free advertising instances" in lines
    status, lines = await check(tmp_path / "missing")
    assert status == 1, lines
    failed = [line for line in lines if line.startswith("FAIL")]
    assert len(failed) == 1, lines
    assert failed[0].startswith("FAIL store beacon: advertise.key_file: cannot read"), lines


async def test_sigterm_withdraws_the_beacon(bluez: BluezMock, api: Api, tmp_path: Path) -> None:
    """`beacon-scanner run` with [advertise]: on the air beside scanning, withdrawn on SIGTERM."""
    before = len(await events(bluez))
    key = tmp_path / "store-beacon-key"
    key.write_text(KEY.hex() + "\n")
    cfg = tmp_path / "scanner.toml"
    cfg.write_text(
        f'scanner_id = "{SCANNER_ID}"\nstore_id = "demo-store"\nserver_url = "{api.url}"\n'
        f'secret = "{SECRET}"\noutbox_path = "{tmp_path / "outbox.sqlite"}"\n'
        "allowlist_wait_s = 0\n"
        f'[advertise]\nenabled = true\nuuid = "{CHAIN}"\nmajor = {MAJOR}\nkey_file = "{key}"\n'
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "scanner",
        "run",
        "--config",
        str(cfg),
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        log = await wait_events(bluez, lambda e: len(e) > before, "the daemon's registration")
        assert log[before][0] == "register"
        _, payload = on_air(log[before][2])
        assert payload[:20] == b"\x02\x15" + CHAIN.bytes + MAJOR.to_bytes(2, "big")
        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), LIMIT_S)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, err.decode()
    assert [e[0] for e in await events(bluez)][before:] == ["register", "unregister"]
    assert "store beacon withdrawn" in err.decode()
