"""Scanner test fixtures: a signature-verifying scanner API on 127.0.0.1, and a private
system bus with python-dbusmock's BlueZ for bleak's real BlueZ backend."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.support import require_component

SCANNER_ID = "s-test"
STORE_ID = "demo-store"
SECRET = "test-secret-0123456789"


async def wait_until(pred: Callable[[], bool], limit_s: float = 10.0) -> None:
    """Wait until ``pred()`` holds (state owned by another task or process), or fail."""
    async with asyncio.timeout(limit_s):
        while not pred():  # noqa: ASYNC110 - the state lives outside this task
            await asyncio.sleep(0.01)


# --------------------------------------------------------------------------------------
# Scanner API test server (an edge fake that verifies docs/api.md signing)
# --------------------------------------------------------------------------------------


@dataclass
class ApiState:
    secret: str = SECRET
    fail_next: int = 0
    down: bool = False
    batches: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    batch_posts: int = 0
    heartbeats: list[dict[str, Any]] = field(default_factory=list)
    nonces: set[str] = field(default_factory=set)
    rejected: list[str] = field(default_factory=list)
    allowlist_version: int = 1
    allowlist_entries: list[dict[str, Any]] = field(default_factory=list)
    allowlist_gets: int = 0
    # When set, every batch is refused with this status (after signature checks).
    refuse_status: int | None = None
    # The top-level fields of each batch body received (docs/api.md: the one wire form).
    forms: list[tuple[str, ...]] = field(default_factory=list)

    def windows(self) -> list[dict[str, Any]]:
        return [w for ws in self.batches.values() for w in ws]


def _err(status: int, code: str, field: str | None = None) -> web.Response:
    error = {"code": code, "message": code}
    if field is not None:
        error["field"] = field
    return web.json_response({"error": error}, status=status)


def _verify(request: web.Request, body: bytes, state: ApiState) -> str | None:
    h = request.headers
    names = (
        "X-Bulle-Scanner",
        "X-Bulle-Timestamp",
        "X-Bulle-Nonce",
        "Content-Digest",
        "X-Bulle-Signature",
    )
    if any(n not in h for n in names):
        return "unsigned"
    if h["X-Bulle-Scanner"] != SCANNER_ID:
        return "unknown_scanner"
    if abs(int(h["X-Bulle-Timestamp"]) - time.time()) > 60:
        return "stale"
    if h["X-Bulle-Nonce"] in state.nonces:
        return "replayed"
    digest = "sha-256=:" + base64.b64encode(hashlib.sha256(body).digest()).decode() + ":"
    if h["Content-Digest"] != digest:
        return "bad_digest"
    text = "\n".join(
        [
            "bulle-v1",
            request.method,
            request.path_qs,
            h["X-Bulle-Scanner"],
            h["X-Bulle-Timestamp"],
            h["X-Bulle-Nonce"],
            h["Content-Digest"],
        ]
    )
    mac = hmac.new(state.secret.encode(), text.encode(), hashlib.sha256).digest()
    if not hmac.compare_digest(base64.b64encode(mac).decode(), h["X-Bulle-Signature"]):
        return "bad_signature"
    state.nonces.add(h["X-Bulle-Nonce"])
    return None


def make_api(state: ApiState) -> web.Application:
    async def guard(request: web.Request) -> tuple[bytes, web.Response | None]:
        body = await request.read()
        if state.down:
            return body, _err(503, "down")
        problem = _verify(request, body, state)
        if problem is not None:
            state.rejected.append(problem)
            return body, _err(401, problem)
        if state.fail_next > 0:
            state.fail_next -= 1
            return body, _err(503, "unavailable")
        return body, None

    async def batches(request: web.Request) -> web.StreamResponse:
        body, bad = await guard(request)
        state.batch_posts += 1
        if bad is not None:
            return bad
        if state.refuse_status is not None:
            return _err(state.refuse_status, "refused")
        data = json.loads(body)
        if data["store_id"] != STORE_ID:
            return _err(403, "wrong_store")
        state.forms.append(tuple(sorted(data)))
        dup = data["batch_id"] in state.batches
        if not dup:
            state.batches[data["batch_id"]] = data["windows"]
        accepted = len(state.batches[data["batch_id"]])
        return web.json_response(
            {"batch_id": data["batch_id"], "accepted": accepted, "duplicate": dup}
        )

    async def allowlist(request: web.Request) -> web.StreamResponse:
        _, bad = await guard(request)
        state.allowlist_gets += 1
        if bad is not None:
            return bad
        since = request.query.get("since")
        if since is not None and int(since) == state.allowlist_version:
            wait = min(float(request.query.get("wait", "0")), 0.2)
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline and int(since) == state.allowlist_version:
                await __import__("asyncio").sleep(0.02)
        return web.json_response(
            {
                "version": state.allowlist_version,
                "full": True,
                "entries": state.allowlist_entries,
                "removed": [],
            }
        )

    async def heartbeat(request: web.Request) -> web.StreamResponse:
        body, bad = await guard(request)
        if bad is not None:
            return bad
        state.heartbeats.append(json.loads(body))
        return web.json_response({"ok": True, "server_time": time.time()})

    app = web.Application()
    app.router.add_post("/api/scanner/v1/batches", batches)
    app.router.add_get("/api/scanner/v1/allowlist", allowlist)
    app.router.add_post("/api/scanner/v1/heartbeat", heartbeat)
    return app


@dataclass
class Api:
    state: ApiState
    url: str


@pytest.fixture
async def api() -> AsyncIterator[Api]:
    state = ApiState()
    server = TestServer(make_api(state), host="127.0.0.1")
    await server.start_server()
    try:
        yield Api(state=state, url=str(server.make_url("")).rstrip("/"))
    finally:
        await server.close()


# --------------------------------------------------------------------------------------
# Private system bus + python-dbusmock bluez5
# --------------------------------------------------------------------------------------

BUS_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_type="method_call"/>
    <allow send_destination="*" eavesdrop="true"/>
    <allow receive_sender="*"/>
    <allow eavesdrop="true"/>
  </policy>
</busconfig>
"""


@dataclass
class PrivateBus:
    address: str
    socket_dir: Path
    process: subprocess.Popen[bytes]


def start_private_bus(tmp: Path) -> PrivateBus:
    sock = tmp / "system_bus_socket"
    conf = tmp / "bus.conf"
    conf.write_text(BUS_CONFIG.format(socket=sock))
    proc = subprocess.Popen(
        ["dbus-daemon", f"--config-file={conf}", "--nofork", "--print-address=1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().decode().strip()
    if not line:
        proc.terminate()
        raise RuntimeError("dbus-daemon did not start")
    return PrivateBus(address=f"unix:path={sock}", socket_dir=tmp, process=proc)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()


@pytest.fixture(scope="session")
def system_bus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateBus]:
    """A private system bus; DBUS_SYSTEM_BUS_ADDRESS points at it for the whole session."""
    require_component("bluez")
    bus = start_private_bus(tmp_path_factory.mktemp("sysbus"))
    old = os.environ.get("DBUS_SYSTEM_BUS_ADDRESS")
    os.environ["DBUS_SYSTEM_BUS_ADDRESS"] = bus.address
    try:
        yield bus
    finally:
        if old is None:
            os.environ.pop("DBUS_SYSTEM_BUS_ADDRESS", None)
        else:
            os.environ["DBUS_SYSTEM_BUS_ADDRESS"] = old
        _stop(bus.process)


def _wait_for_name(bus_address: str, name: str, timeout: float = 15.0) -> None:
    import dbus

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            conn = dbus.bus.BusConnection(bus_address)
            try:
                if conn.name_has_owner(name):
                    return
            finally:
                conn.close()
        except dbus.exceptions.DBusException:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{name} did not appear on the bus")


# python-dbusmock's bluez5 template with a BlueZ-like LE advertising manager (its docstring).
BLUEZ_TEMPLATE = Path(__file__).with_name("bluez_advertising_template.py")


class BluezMock:
    """Drives python-dbusmock's bluez5 template (extended: BLUEZ_TEMPLATE) over dbus-python."""

    def __init__(self, bus: PrivateBus) -> None:
        import dbus

        self._dbus = dbus
        self.bus = bus
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "dbusmock", "--system", "-t", str(BLUEZ_TEMPLATE)],
            env={**os.environ, "DBUS_SYSTEM_BUS_ADDRESS": bus.address},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _wait_for_name(bus.address, "org.bluez")
        self.conn = dbus.bus.BusConnection(bus.address)
        root = self.conn.get_object("org.bluez", "/")
        self.bluez = dbus.Interface(root, "org.bluez.Mock")
        self.mock = dbus.Interface(root, "org.freedesktop.DBus.Mock")

    def close(self) -> None:
        self.conn.close()
        _stop(self.proc)

    def add_adapter(self, name: str = "hci0") -> str:
        return str(self.bluez.AddAdapter(name, "bulle-test"))

    def set_adapter_powered(self, name: str, powered: bool) -> None:
        dbus = self._dbus
        obj = self.conn.get_object("org.bluez", f"/org/bluez/{name}")
        dbus.Interface(obj, "org.freedesktop.DBus.Mock").UpdateProperties(
            "org.bluez.Adapter1",
            dbus.Dictionary({"Powered": dbus.Boolean(powered)}, signature="sv"),
        )

    def remove_adapter(self, name: str = "hci0") -> None:
        self.bluez.RemoveAdapter(name)

    def advertising_log(self, adapter: str = "hci0") -> list[tuple[str, str, dict[str, Any]]]:
        """(event, advertisement path, properties BlueZ read) for each registration event."""
        obj = self.conn.get_object("org.bluez", f"/org/bluez/{adapter}")
        log = self._dbus.Interface(obj, "org.bulle.Test").AdvertisingLog()
        return [(str(event), str(path), dict(props)) for event, path, props in log]

    def registered_ibeacons(self, adapter: str = "hci0") -> dict[str, bytes]:
        """Apple manufacturer data (iBeacon: 0x02 0x15, UUID, major, minor, power) of each
        advertisement registered now on ``adapter``, as BlueZ read it from its owner."""
        held: dict[str, bytes] = {}
        for event, path, props in self.advertising_log(adapter):
            if event == "register":
                held[path] = bytes(props.get("ManufacturerData", {}).get(0x004C, b""))
            else:
                held.pop(path, None)
        return held

    def advertising_manager(self, adapter: str = "hci0") -> dict[str, Any]:
        obj = self.conn.get_object("org.bluez", f"/org/bluez/{adapter}")
        props = self._dbus.Interface(obj, "org.freedesktop.DBus.Properties")
        return dict(props.GetAll("org.bluez.LEAdvertisingManager1"))

    def set_advertising_manager(self, adapter: str, **values: Any) -> None:
        obj = self.conn.get_object("org.bluez", f"/org/bluez/{adapter}")
        self._dbus.Interface(obj, "org.freedesktop.DBus.Mock").UpdateProperties(
            "org.bluez.LEAdvertisingManager1",
            self._dbus.Dictionary(
                {k: self._dbus.Byte(v) for k, v in values.items()}, signature="sv"
            ),
        )

    def calls(self, path: str = "/org/bluez/hci0") -> list[str]:
        obj = self.conn.get_object("org.bluez", path)
        calls = self._dbus.Interface(obj, "org.freedesktop.DBus.Mock").GetCalls()
        return [str(c[1]) for c in calls]

    def clear_calls(self, path: str = "/org/bluez/hci0") -> None:
        obj = self.conn.get_object("org.bluez", path)
        self._dbus.Interface(obj, "org.freedesktop.DBus.Mock").ClearCalls()

    def _adv_props(
        self,
        rssi: int,
        service_data: dict[str, bytes],
        manufacturer_data: dict[int, bytes] | None = None,
    ) -> dict[str, Any]:
        dbus = self._dbus
        return {
            "RSSI": dbus.Int16(rssi),
            "ServiceData": dbus.Dictionary(
                {k: dbus.Array(list(v), signature="y") for k, v in service_data.items()},
                signature="sv",
            ),
            "ManufacturerData": dbus.Dictionary(
                {
                    dbus.UInt16(k): dbus.Array(list(v), signature="y")
                    for k, v in (manufacturer_data or {}).items()
                },
                signature="qv",
            ),
        }

    def add_device(
        self,
        address: str,
        rssi: int,
        service_data: dict[str, bytes],
        adapter: str = "hci0",
        manufacturer_data: dict[int, bytes] | None = None,
    ) -> str:
        dbus = self._dbus
        path = f"/org/bluez/{adapter}/dev_" + address.replace(":", "_")
        props = {
            "Address": dbus.String(address),
            "AddressType": dbus.String("random"),
            "Alias": dbus.String(address.replace(":", "-")),
            "Adapter": dbus.ObjectPath(f"/org/bluez/{adapter}"),
            "UUIDs": dbus.Array(list(service_data), signature="s"),
            "Paired": dbus.Boolean(False),
            "Connected": dbus.Boolean(False),
            "Trusted": dbus.Boolean(False),
            "Blocked": dbus.Boolean(False),
            "LegacyPairing": dbus.Boolean(False),
            "ServicesResolved": dbus.Boolean(False),
            **self._adv_props(rssi, service_data, manufacturer_data),
        }
        self.mock.AddObject(
            path,
            "org.bluez.Device1",
            dbus.Dictionary(props, signature="sv"),
            dbus.Array([], signature="(ssss)"),
        )
        self.mock.EmitSignal(
            "org.freedesktop.DBus.ObjectManager",
            "InterfacesAdded",
            "oa{sa{sv}}",
            [
                dbus.ObjectPath(path),
                dbus.Dictionary(
                    {"org.bluez.Device1": dbus.Dictionary(props, signature="sv")},
                    signature="sa{sv}",
                ),
            ],
        )
        return path

    def update_device(
        self,
        path: str,
        rssi: int,
        service_data: dict[str, bytes],
        manufacturer_data: dict[int, bytes] | None = None,
    ) -> None:
        dbus = self._dbus
        obj = self.conn.get_object("org.bluez", path)
        dbus.Interface(obj, "org.freedesktop.DBus.Mock").UpdateProperties(
            "org.bluez.Device1",
            dbus.Dictionary(self._adv_props(rssi, service_data, manufacturer_data), signature="sv"),
        )

    def remove_device(self, path: str) -> None:
        dbus = self._dbus
        self.mock.RemoveObject(dbus.ObjectPath(path))
        self.mock.EmitSignal(
            "org.freedesktop.DBus.ObjectManager",
            "InterfacesRemoved",
            "oas",
            [dbus.ObjectPath(path), dbus.Array(["org.bluez.Device1"], signature="s")],
        )


@pytest.fixture(scope="session")
def bluez(system_bus: PrivateBus) -> Iterator[BluezMock]:
    """Mocked BlueZ with adapter hci0 on the private system bus (shared by the session)."""
    mock = BluezMock(system_bus)
    mock.add_adapter("hci0")
    try:
        yield mock
    finally:
        mock.close()
