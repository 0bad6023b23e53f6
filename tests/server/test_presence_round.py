"""The service's presence round runs in slices and lets the event loop run between them."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from store_server.presence import PresenceEvent
from store_server.services import store as services_store
from tests.server.test_consent_lifecycle import T0, Clock, Store

pytestmark = pytest.mark.asyncio


async def test_round_in_slices_with_the_loop_running_between(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(services_store, "PRESENCE_SLICE", 100)
    store = Store(tmp_path, Clock(T0))
    await store.setup()
    try:
        engine = store.service.coordinator.engine
        names = [f"street-{i}" for i in range(250)]
        # Phones on the pavement: pending windows, and no arrival to act on.
        engine.observe_many("s-entrance", names, [T0] * 250, [-88.0] * 250, [3] * 250)
        assert engine.pending() == 250
        slices: list[int] = []
        original = engine.tick

        def tick(now: float, limit: int | None = None) -> list[PresenceEvent]:
            slices.append(engine.pending())
            return original(now, limit)

        monkeypatch.setattr(engine, "tick", tick)
        turns = 0
        done = False

        async def other_work() -> None:
            nonlocal turns
            while not done:
                turns += 1
                await asyncio.sleep(0)

        other = asyncio.create_task(other_work())
        await asyncio.sleep(0)
        await store.service.tick(T0 + 0.5)
        done = True
        await other
        assert slices == [250, 150, 50]
        assert engine.pending() == 0
        assert turns >= len(slices)  # the loop ran between slices
        assert engine.present() == {}
    finally:
        await store.close()
