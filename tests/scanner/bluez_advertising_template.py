"""python-dbusmock template: bluez5 with an LE advertising manager that behaves like BlueZ's.

Loaded by path (`python -m dbusmock --system -t <this file>`). Everything of dbusmock's bluez5
template, except that each adapter's `org.bluez.LEAdvertisingManager1` now does what
bluetoothd does with a registration, over real D-Bus:

- `RegisterAdvertisement(path, options)` calls back the registering client (`GetAll` on its
  `org.bluez.LEAdvertisement1` object) before answering, records the properties it read, and
  refuses a registration whose properties cannot be read (`org.bluez.Error.Failed`) or an
  already registered path (`org.bluez.Error.AlreadyExists`);
- `UnregisterAdvertisement(path)` forgets it (BlueZ calls no `Release` then);
- removing the adapter calls `Release` on each advertisement still registered, as bluetoothd
  does when an adapter goes away;
- a client leaving the bus loses its advertisements.

The log of these events is read with `org.bulle.Test.AdvertisingLog()` on the adapter object:
an array of (event, path, properties), event one of "register", "unregister", "release",
"client-gone".
"""

from __future__ import annotations

from typing import Any

import dbus
import dbus.service
from dbusmock import mockobject
from dbusmock.templates import bluez5

BUS_NAME = bluez5.BUS_NAME
MAIN_OBJ = bluez5.MAIN_OBJ
SYSTEM_BUS = bluez5.SYSTEM_BUS
IS_OBJECT_MANAGER = bluez5.IS_OBJECT_MANAGER

LE_MANAGER = bluez5.LE_ADVERTISING_MANAGER_IFACE
LE_ADVERTISEMENT = bluez5.LE_ADVERTISEMENT_IFACE
TEST_IFACE = "org.bulle.Test"
PROPERTIES = "org.freedesktop.DBus.Properties"
# bluetoothd's timeout for a client's answer (D-Bus's default).
CALLBACK_TIMEOUT_S = 25.0

# Everything bluez5 offers on its mock interfaces (AddDevice, RemoveAdapterWithDevices, ...).
for _name in dir(bluez5):
    _fn = getattr(bluez5, _name)
    if hasattr(_fn, "_dbus_interface") and _name not in ("AddAdapter", "RemoveAdapter"):
        globals()[_name] = _fn


def load(mock: Any, parameters: dict[str, Any]) -> None:
    bluez5.load(mock, parameters)


def _log(adapter: Any, event: str, path: str, props: dict[str, Any] | None = None) -> None:
    adapter.adv_log.append(
        (
            dbus.String(event),
            dbus.String(path),
            dbus.Dictionary(props or {}, signature="sv"),
        )
    )
    adapter.call_log.append((0, event, [path]))


def _update_counts(adapter: Any) -> None:
    active = len(adapter.adv_owners)
    adapter.UpdateProperties(
        LE_MANAGER,
        {
            "ActiveInstances": dbus.Byte(active),
            "SupportedInstances": dbus.Byte(bluez5.MAX_ADVERTISEMENT_INSTANCES - active),
        },
    )


@dbus.service.method(
    LE_MANAGER,
    in_signature="oa{sv}",
    out_signature="",
    sender_keyword="sender",
    connection_keyword="connection",
    async_callbacks=("ok", "fail"),
)
def RegisterAdvertisement(
    adapter: Any,
    path: str,
    options: dict[str, Any],
    sender: str,
    connection: Any,
    ok: Any,
    fail: Any,
) -> None:
    path = str(path)
    adapter.call_log.append((0, "RegisterAdvertisement", [path, options]))
    if path in adapter.adv_owners or path in adapter.adv_pending:
        fail(dbus.exceptions.DBusException("Already Exists", name="org.bluez.Error.AlreadyExists"))
        return
    if len(adapter.adv_owners) >= bluez5.MAX_ADVERTISEMENT_INSTANCES:
        fail(
            dbus.exceptions.DBusException(
                "Maximum advertisements reached", name="org.bluez.Error.NotPermitted"
            )
        )
        return
    adapter.adv_pending.add(path)

    def read(props: dict[str, Any]) -> None:
        adapter.adv_pending.discard(path)
        if "Type" not in props:
            fail(
                dbus.exceptions.DBusException(
                    "Failed to parse advertisement", name="org.bluez.Error.Failed"
                )
            )
            return
        adapter.adv_owners[path] = str(sender)
        if str(sender) not in adapter.adv_watches:
            adapter.adv_watches[str(sender)] = connection.watch_name_owner(
                str(sender), lambda owner, s=str(sender): _owner_changed(adapter, s, owner)
            )
        _log(adapter, "register", path, props)
        _update_counts(adapter)
        ok()

    def refused(error: Exception) -> None:
        adapter.adv_pending.discard(path)
        fail(
            dbus.exceptions.DBusException(
                f"Failed to read the advertisement: {error}", name="org.bluez.Error.Failed"
            )
        )

    connection.call_async(
        str(sender),
        path,
        PROPERTIES,
        "GetAll",
        "s",
        (LE_ADVERTISEMENT,),
        read,
        refused,
        timeout=CALLBACK_TIMEOUT_S,
    )


@dbus.service.method(LE_MANAGER, in_signature="o", out_signature="", sender_keyword="sender")
def UnregisterAdvertisement(adapter: Any, path: str, sender: str) -> None:
    path = str(path)
    adapter.call_log.append((0, "UnregisterAdvertisement", [path]))
    if adapter.adv_owners.get(path) != str(sender):
        raise dbus.exceptions.DBusException("Does Not Exist", name="org.bluez.Error.DoesNotExist")
    del adapter.adv_owners[path]
    _log(adapter, "unregister", path)
    _update_counts(adapter)


def _owner_changed(adapter: Any, sender: str, owner: str) -> None:
    if owner:
        return
    for path, who in list(adapter.adv_owners.items()):
        if who == sender:
            del adapter.adv_owners[path]
            _log(adapter, "client-gone", path)
    watch = adapter.adv_watches.pop(sender, None)
    if watch is not None:
        watch.cancel()
    if mockobject.objects.get(adapter.path) is adapter:
        _update_counts(adapter)


@dbus.service.method(bluez5.BLUEZ_MOCK_IFACE, in_signature="ss", out_signature="s")
def AddAdapter(self: Any, device_name: str, system_name: str) -> str:
    path = bluez5.AddAdapter(self, device_name, system_name)
    adapter = mockobject.objects[path]
    adapter.adv_owners = {}
    adapter.adv_pending = set()
    adapter.adv_watches = {}
    adapter.adv_log = []
    if LE_MANAGER in adapter.methods:
        for name, fn in (
            ("RegisterAdvertisement", RegisterAdvertisement),
            ("UnregisterAdvertisement", UnregisterAdvertisement),
        ):
            adapter.methods[LE_MANAGER][name] = (
                fn._dbus_in_signature,
                fn._dbus_out_signature,
                "",
                fn,
            )
    adapter.AddMethod(TEST_IFACE, "AdvertisingLog", "", "a(ssa{sv})", "ret = self.adv_log")
    return path


@dbus.service.method(bluez5.BLUEZ_MOCK_IFACE, in_signature="s")
def RemoveAdapter(self: Any, device_name: str) -> None:
    adapter = mockobject.objects.get("/org/bluez/" + device_name)
    if adapter is not None:
        for path, sender in list(getattr(adapter, "adv_owners", {}).items()):
            adapter.connection.call_async(
                sender, path, LE_ADVERTISEMENT, "Release", "", (), None, None
            )
            _log(adapter, "release", path)
        if hasattr(adapter, "adv_owners"):
            adapter.adv_owners.clear()
            for watch in adapter.adv_watches.values():
                watch.cancel()
            adapter.adv_watches.clear()
    bluez5.RemoveAdapter(self, device_name)
