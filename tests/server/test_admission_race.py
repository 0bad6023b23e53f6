"""An admission read before a withdrawal never holds the withdrawn customer again.

On PostgreSQL the consent feed reads the customers granted since its cursor, then admits each:
a withdrawal through this server could commit and `forget` the customer while that read (or
the admission's own read of the identity) was running, and the admission then put them back in
the resolver until the feed's next pass (tests/server/test_api.py::test_grant_then_withdraw
failed about one run in five on PostgreSQL). The admission's read is held here on a thread
event, so that the forget lands inside it every time.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from store_server.storage import customers as customer_store
from tests.server.conftest import Harness, bearer

# A guard on each wait below, for a hang only (the read is released by the test).
HANG_GUARD_S = 30.0


class HeldRead:
    """`customers.identity_rows`, held once armed until the test releases it."""

    def __init__(self, read: Callable[..., Any]) -> None:
        self._read = read
        self.armed = False
        self.entered = threading.Event()
        self.release = threading.Event()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.armed:
            self.entered.set()
            assert self.release.wait(HANG_GUARD_S)
        return self._read(*args, **kwargs)


@pytest.fixture
def held(monkeypatch: pytest.MonkeyPatch) -> Iterator[HeldRead]:
    held = HeldRead(customer_store.identity_rows)
    monkeypatch.setattr(customer_store, "identity_rows", held)
    yield held
    held.release.set()


async def _consenting_customer(server: Harness) -> tuple[str, str]:
    token = await server.enroll()
    assert (await server.grant(token, "greeting")).status == 201
    customer_id = await server.service.customers.customer_for_token(token)
    return token, customer_id


async def _withdraw_all(server: Harness, token: str) -> None:
    resp = await server.client.post("/api/v1/consents/withdraw", headers=bearer(token))
    assert resp.status == 200


async def test_a_withdrawal_during_an_admission_is_not_undone(
    server: Harness, held: HeldRead
) -> None:
    coordinator = server.service.coordinator
    token, customer_id = await _consenting_customer(server)
    assert customer_id in coordinator.resolver
    # What the feed does: it read the grant (the customer is not held yet), then admits.
    with coordinator.forgets_watched() as forgotten:
        coordinator.resolver.remove(customer_id)
        held.armed = True
        admission = asyncio.create_task(coordinator.admit(customer_id, 0.0, forgotten))
        assert await asyncio.to_thread(held.entered.wait, HANG_GUARD_S)
        await _withdraw_all(server, token)  # commits, then forgets, during the admission
        held.release.set()
        await asyncio.wait_for(admission, HANG_GUARD_S)
    assert customer_id not in coordinator.resolver


async def test_an_admission_still_holds_a_customer_who_consents_again(
    server: Harness, held: HeldRead
) -> None:
    coordinator = server.service.coordinator
    token, customer_id = await _consenting_customer(server)
    with coordinator.forgets_watched() as forgotten:
        coordinator.resolver.remove(customer_id)
        held.armed = True
        admission = asyncio.create_task(coordinator.admit(customer_id, 0.0, forgotten))
        assert await asyncio.to_thread(held.entered.wait, HANG_GUARD_S)
        await _withdraw_all(server, token)
        # Consents again before the admission goes on: their grant's own admission waits for
        # the held read too, so both end only once it is released.
        regrant = asyncio.create_task(server.grant(token, "greeting"))
        held.release.set()
        await asyncio.wait_for(admission, HANG_GUARD_S)
        assert (await asyncio.wait_for(regrant, HANG_GUARD_S)).status == 201
    assert customer_id in coordinator.resolver
