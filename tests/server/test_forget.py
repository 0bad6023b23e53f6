"""After a withdrawal, an expiry or an erasure, nothing of the customer stays in the server's
memory: the object graph of the services is walked and searched for the customer's id and
pseudonym, after they were greeted, checked in and given a static iBeacon id."""

from __future__ import annotations

import array
import dataclasses
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from store_server.consent import DEFAULT_CONSENT_DURATION_S, PURPOSES
from store_server.storage.database import Target
from tests.server.test_consent_lifecycle import T0, Clock, Customer, Store, letters_name

# Leaves of the object graph that hold no state of the server's own.
_OPAQUE = (
    types.ModuleType,
    type,
    types.FunctionType,
    types.BuiltinFunctionType,
    types.MethodType,
    int,
    float,
    complex,
    bool,
    type(None),
)


def _children(obj: Any) -> Iterator[tuple[str, Any]]:
    if isinstance(obj, dict):
        for key, value in obj.items():
            yield f"[key {key!r:.40}]", key
            yield f"[{key!r:.40}]", value
    elif isinstance(obj, list | tuple | set | frozenset) or type(obj).__name__ == "deque":
        for index, item in enumerate(obj):
            yield f"[{index}]", item
    elif type(obj).__module__.startswith("store_server."):
        # The server's own objects: every attribute, in __dict__ or in slots.
        names = set(getattr(obj, "__dict__", {}))
        for cls in type(obj).__mro__:
            slots = cls.__dict__.get("__slots__", ())
            names |= {slots} if isinstance(slots, str) else set(slots)
        for name in sorted(names):
            if hasattr(obj, name):
                yield f".{name}", getattr(obj, name)


def _holds(obj: Any, needles: list[str]) -> bool:
    if isinstance(obj, str):
        return any(n in obj for n in needles)
    if isinstance(obj, bytes | bytearray | memoryview | array.array | np.ndarray):
        if isinstance(obj, np.ndarray) and obj.dtype == object:
            return False  # walked item by item
        raw = bytes(obj) if not isinstance(obj, array.array | np.ndarray) else obj.tobytes()
        return any(n.encode() in raw for n in needles)
    return False


def memory_traces(root: Any, needles: list[str]) -> list[str]:
    """Paths from `root` to every string or buffer in memory that contains a needle."""
    found: list[str] = []
    seen: set[int] = set()
    stack: list[tuple[str, Any]] = [("services", root)]
    while stack:
        path, obj = stack.pop()
        if isinstance(obj, _OPAQUE):
            continue
        if _holds(obj, needles):  # every path to a shared string is reported
            found.append(path)
            continue
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, np.ndarray) and obj.dtype == object:
            stack.extend((f"{path}[{i}]", item) for i, item in enumerate(obj.ravel()))
            continue
        stack.extend((path + step, child) for step, child in _children(obj))
    return found


async def _greeted_and_checked_in(store: Store) -> Customer:
    """A customer with every kind of in-memory state: resolver, engine, visit, greeting time,
    check-in time, static iBeacon id."""
    customer = await store.enroll(letters_name())
    for purpose in PURPOSES:
        await store.grant(customer, purpose)
    customers = store.service.customers
    await customers.set_legacy_ibeacon(customer.customer_id, True)
    await store.sighting(customer)
    store.clock.t += 1
    await customers.check_in(customer.customer_id, None)
    coordinator = store.service.coordinator
    assert customer.customer_id in coordinator.visits
    assert customer.customer_id in coordinator.last_greeted
    assert customer.customer_id in coordinator.check_ins
    assert customer.customer_id in coordinator.static.customers()
    return customer


@pytest.mark.parametrize("reason", ["withdrawn", "erased", "expired"])
async def test_nothing_of_a_forgotten_customer_stays_in_memory(
    tmp_path: Path, db_target: Target, reason: str
) -> None:
    store = Store(tmp_path, Clock(T0), db_target)
    store.config = dataclasses.replace(store.config, legacy_ibeacon=True)
    store.service.db.close()  # the first service never started: its database only
    store.service = store._new_service()
    await store.setup()
    try:
        customer = await _greeted_and_checked_in(store)
        other = await _greeted_and_checked_in(store)
        services = store.service
        needles = [customer.customer_id, services.customers.subject_ref(customer.customer_id)]
        # The walk does find the customer while they are known (the test can fail).
        before = memory_traces(services, needles)
        for where in ("visits", "last_greeted", "check_ins", "resolver", "engine", "static"):
            assert any(f".{where}" in path for path in before), (where, before)
        if reason == "withdrawn":
            await services.customers.withdraw(customer.customer_id, PURPOSES, "app", None)
        elif reason == "erased":
            await services.customers.erase(customer.customer_id)
        else:
            store.clock.t = T0 + DEFAULT_CONSENT_DURATION_S + 1
            # The other customer renews just before: only the first one lapses.
            store.clock.t -= 2
            for purpose in PURPOSES:
                await store.grant(other, purpose)
            store.clock.t += 2
            await services.tick(store.clock())
        assert memory_traces(services, needles) == []
        # Everyone else is still held.
        assert other.customer_id in services.coordinator.resolver
        assert memory_traces(services, [other.customer_id])
    finally:
        await store.close()
