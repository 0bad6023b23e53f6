"""The server's start-up load of consenting customers' identities, on a real SQLite file.

Both read paths (one scan of the identities table for many customers, look-ups by id for a
few) give a resolver that recognises every consenting customer's current EID; a tampered row
is left out and logged; a wrong master key is a clear configuration error.
"""

from __future__ import annotations

import logging
import secrets
from pathlib import Path
from typing import Any

import pytest

from store_server import identity, service
from store_server.config import ServerConfig
from store_server.errors import ConfigError
from store_server.keywrap import parse_master_key
from tests.server.test_consent_lifecycle import T0, Clock, Customer, Store

pytestmark = pytest.mark.asyncio


async def _store_with(tmp_path: Path, consenting: int, others: int) -> tuple[Store, list[Customer]]:
    store = Store(tmp_path, Clock(T0))
    await store.setup()
    customers = [await store.enroll(f"c{i}") for i in range(consenting + others)]
    for customer in customers[:consenting]:
        await store.grant(customer, "greeting")
    return store, customers


def _recognised(store: Store, customers: list[Customer]) -> list[bool]:
    now = store.clock()
    return [
        store.service.resolver.resolve(identity.eid_at(c.record, now), now) == c.customer_id
        for c in customers
    ]


@pytest.mark.parametrize("chunk", [3, 1000], ids=["table-scan", "look-ups"])
async def test_restart_recognises_exactly_the_consenting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk: int
) -> None:
    monkeypatch.setattr(service, "IDENTITY_CHUNK", chunk)
    store, customers = await _store_with(tmp_path, consenting=7, others=3)
    try:
        await store.restart()
        assert _recognised(store, customers) == [True] * 7 + [False] * 3
        assert len(store.service.resolver) == 7
    finally:
        await store.close()


async def test_a_tampered_identity_is_left_out_and_logged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(service, "IDENTITY_CHUNK", 3)
    store, customers = await _store_with(tmp_path, consenting=5, others=0)
    victim = customers[2].customer_id

    def tamper(db: Any) -> None:
        blob = db.execute(
            "SELECT key_wrapped FROM identities WHERE customer_id = ?", [victim]
        ).fetchone()[0]
        flipped = bytes([blob[-1] ^ 1])
        db.execute(
            "UPDATE identities SET key_wrapped = ? WHERE customer_id = ?",
            [blob[:-1] + flipped, victim],
        )

    try:
        await store.service.db.run(tamper)
        with caplog.at_level(logging.ERROR, logger="store_server.service"):
            await store.restart()
        assert _recognised(store, customers) == [True, True, False, True, True]
        assert "1 stored identities could not be unwrapped" in caplog.text
        assert victim not in caplog.text  # no customer identifier in the logs
    finally:
        await store.close()


async def test_a_wrong_master_key_is_a_configuration_error(tmp_path: Path) -> None:
    store, _ = await _store_with(tmp_path, consenting=3, others=0)
    await store.service.stop()
    store.service.db.close()
    store.master_key = secrets.token_hex(32)
    store.config = ServerConfig(
        db_path=str(store.db_path),
        store_file=store.config.store_file,
        master_key=store.master_key,
        cookie_secure=False,
    )
    store.service = store._new_service()
    assert store.service._master_key == parse_master_key(store.master_key)
    try:
        with pytest.raises(ConfigError, match="none of the 3 stored identities") as raised:
            await store.service.prepare()
        assert raised.value.key == "master_key"
    finally:
        await store.service.stop()
        store.service.db.close()
