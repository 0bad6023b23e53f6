"""The independent security review's findings, continued (tests/test_hardening.py has the
first part): enrollment limits and purge, scanners of another store, the OpenAPI document's
error answers, the consent log's signed checkpoints, customers' text never in the log, the
static iBeacon id in "my data", and retention seen in the database file and its WAL. Every
test runs against the real server (aiohttp on 127.0.0.1) on both engines (a real SQLite file,
a real PostgreSQL database: tests/pg.py) and failed before its fix; the purge's byte-level
check of the file and its WAL is SQLite's, its PostgreSQL counterpart checks what every role
can still read.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import sqlite3
import struct
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from store_server import cli
from store_server.config import (
    DEFAULT_ENROLL_RATE_LIMIT,
    DEFAULT_ENROLL_RATE_LIMIT_TOTAL,
    ServerConfig,
)
from store_server.consent import GENESIS_HASH, LogEntry, entry_hash
from store_server.views.customer_api import api
from tests import pg
from tests.server.conftest import (
    Harness,
    Serve,
    batch_body,
    bearer,
    engine_server,
    error_of,
    running_server,
    serve,
    wait_until,
)
from tests.test_security import PLACEHOLDER, Credentials, credentials, routes

# Fixtures, imported so that this top-level module can use them.
__all__ = ["engine_server", "serve"]

# The review's burst: 200 anonymous enrollments at once.
ENROLL_BURST = 200
# A string no route has any reason to log.
CANARY = "canary-7f3a9c-Sylvie.Bedard@example.com"
OVERSIZED = 2 * 1024 * 1024


# -- 5. enrollment: rate-limited, and forgotten when it never consents ---------------------


@pytest.fixture
def server(engine_server: Harness) -> Harness:
    """The server on each engine (tests/conftest.py ``engine``)."""
    return engine_server


@pytest.fixture
async def default_limits(serve: Serve) -> AsyncIterator[Harness]:
    """A server with the shipped enrollment limits (the shared fixture raises them)."""
    async with serve(
        enroll_rate_limit=DEFAULT_ENROLL_RATE_LIMIT,
        enroll_rate_limit_total=DEFAULT_ENROLL_RATE_LIMIT_TOTAL,
        trusted_proxies=("127.0.0.1",),
    ) as harness:
        yield harness


async def test_05_anonymous_enrollment_is_rate_limited(default_limits: Harness) -> None:
    server = default_limits

    async def enroll(address: str) -> int:
        resp = await server.client.post(
            "/api/v1/enroll", json={}, headers={"X-Forwarded-For": address}
        )
        await resp.read()
        return resp.status

    statuses = Counter(await asyncio.gather(*(enroll("203.0.113.9") for _ in range(ENROLL_BURST))))
    allowed = int(DEFAULT_ENROLL_RATE_LIMIT.split("/")[0])
    assert statuses == {201: allowed, 429: ENROLL_BURST - allowed}
    assert len(await server.rows("SELECT id FROM customers")) == allowed
    assert await enroll("198.51.100.4") == 201  # another address is not held up


async def test_05_enrollments_that_never_consent_are_forgotten(server: Harness) -> None:
    never, consenting, withdrawn = [await server.enroll() for _ in range(3)]
    assert (await server.grant(consenting, "greeting")).status == 201
    assert (await server.grant(withdrawn, "greeting")).status == 201
    resp = await server.client.post("/api/v1/consents/withdraw", json={}, headers=bearer(withdrawn))
    assert resp.status == 200
    await server.client.put("/api/v1/wishlist", json={"skus": []}, headers=bearer(never))
    # Not yet: enrolled less than unconsented_ttl_s ago.
    await server.service.purge(time.time())
    assert len(await server.rows("SELECT id FROM customers")) == 3
    await server.service.purge(time.time() + server.config.unconsented_ttl_s + 1)
    assert (await server.client.get("/api/v1/me", headers=bearer(never))).status == 401
    for token in (consenting, withdrawn):  # they gave consent once: kept, with their proof
        assert (await server.client.get("/api/v1/me", headers=bearer(token))).status == 200
    assert len(await server.rows("SELECT id FROM customers")) == 2
    assert len(await server.rows("SELECT * FROM identities")) == 2


# -- 7. a scanner registered for another store ---------------------------------------------


async def test_07_scanner_of_another_store_is_refused(server: Harness) -> None:
    scanner = await server.add_scanner("s-elsewhere", store_id="other-store")
    answers = [
        await server.signed(
            scanner,
            "POST",
            "/api/scanner/v1/batches",
            batch_body(scanner.scanner_id, store_id="other-store"),
        ),
        await server.signed(scanner, "GET", "/api/scanner/v1/allowlist"),
        await server.signed(
            scanner,
            "POST",
            "/api/scanner/v1/heartbeat",
            json.dumps({"scanner_id": "s-elsewhere", "sent_at": time.time()}).encode(),
        ),
    ]
    for resp in answers:
        assert resp.status == 403
        assert (await error_of(resp))["code"] == "wrong_store"
    assert await server.rows("SELECT * FROM scanner_batches") == []


# -- 8. the OpenAPI document lists every error answer --------------------------------------


async def test_08_openapi_lists_every_error_answer(server: Harness) -> None:
    document = await (await server.client.get("/api/openapi.json")).json()
    token = await server.enroll()
    seen: list[tuple[str, str, int]] = []
    for op in api.operations:
        path = op.path
        attempts: list[dict[str, Any]] = [
            {"data": b"{" + b" " * OVERSIZED + b"}", "headers": bearer(token)},
            {"data": b"\xff", "headers": bearer(token) | {"Content-Type": "application/json"}},
        ]
        if op.auth:
            attempts.append({"headers": {}})
        for attempt in attempts:
            resp = await server.client.request(op.method, path, **attempt)
            await resp.read()
            seen.append((op.method, path, resp.status))
    # A store that does not offer static ids refuses them (403).
    resp = await server.client.put(
        "/api/v1/preferences", json={"legacy_ibeacon": True}, headers=bearer(token)
    )
    seen.append(("PUT", "/api/v1/preferences", resp.status))
    undocumented = [
        (method, path, status)
        for method, path, status in seen
        if status >= 400 and str(status) not in document["paths"][path][method.lower()]["responses"]
    ]
    assert undocumented == []
    assert {status for *_, status in seen} >= {401, 403, 413}


# -- 8. the consent log: someone who can write the file cannot rewrite it ------------------


def _rewrite_entry(config: ServerConfig, seq: int) -> None:
    """What someone with write access but no master key can do (the file's owner on SQLite,
    the database's owner or superuser on PostgreSQL): change an entry past the append-only
    trigger and recompute every hash after it, so that the chain alone still verifies."""
    if config.database_url:
        with psycopg.connect(config.database_url, row_factory=dict_row) as pg:
            pg.execute("ALTER TABLE consent_log DISABLE TRIGGER consent_log_no_update")
            _rewrite(lambda sql, params: pg.execute(sql.replace("?", "%s"), params), seq)
        return
    lite = sqlite3.connect(config.db_path)
    lite.row_factory = sqlite3.Row
    lite.execute("DROP TRIGGER consent_log_no_update")
    _rewrite(lite.execute, seq)
    lite.commit()
    lite.close()


def _rewrite(execute: Callable[[str, list[Any]], Any], seq: int) -> None:
    execute("UPDATE consent_log SET channel = 'in_store' WHERE seq = ?", [seq])
    prev = GENESIS_HASH
    for row in execute("SELECT * FROM consent_log ORDER BY seq", []).fetchall():
        entry = LogEntry(
            row["subject_ref"],
            row["purpose"],
            row["action"],
            row["text_hash"],
            row["scope"],
            row["channel"],
            row["app_version"],
            row["at"],
        )
        digest = entry_hash(prev, entry)
        execute(
            "UPDATE consent_log SET prev_hash = ?, entry_hash = ? WHERE seq = ?",
            [prev, digest, row["seq"]],
        )
        prev = digest


async def test_08_consent_log_rewrite_is_detected(
    serve: Serve,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in list(os.environ):
        if name.startswith("BULLE_"):
            monkeypatch.delenv(name)
    async with serve() as server:
        token = await server.enroll()
        assert (await server.grant(token, "greeting")).status == 201
        assert (await server.grant(token, "stock_check")).status == 201
        resp = await server.client.post("/api/v1/consents/withdraw", json={}, headers=bearer(token))
        assert resp.status == 200
        config = server.config
    # The server signed the head at the latest when it stopped.
    where = (
        f'database_url = "{config.database_url}"\n'
        if config.database_url
        else f'db_path = "{config.db_path}"\n'
    )
    settings = tmp_path / "server.toml"
    settings.write_text(
        where + f'master_key = "{config.master_key}"\nstore_file = "{config.store_file}"\n',
        "utf-8",
    )
    assert cli.main(["consent-log", "verify", "--config", str(settings)]) == 0
    out = capsys.readouterr().out
    assert re.search(r"4 entries, hash chain intact, \d+ signed checkpoints up to entry 4", out)
    _rewrite_entry(config, 2)
    assert cli.main(["consent-log", "verify", "--config", str(settings)]) == 2
    captured = capsys.readouterr()
    assert "OK" not in captured.out
    assert "no longer matches its signed checkpoint" in captured.err


# -- 9. nothing a customer typed reaches the log -------------------------------------------


class _AllRecords(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.texts: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.texts.append(self.format(record))


@pytest.fixture
def every_log_line() -> Iterator[_AllRecords]:
    handler = _AllRecords()
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


async def test_09_check_in_with_an_unknown_zone(
    server: Harness, every_log_line: _AllRecords
) -> None:
    token = await server.enroll()
    assert (await server.grant(token, "greeting")).status == 201
    resp = await server.client.post(
        "/api/v1/check-in", json={"zone": CANARY[:60]}, headers=bearer(token)
    )
    assert resp.status == 422
    assert (await error_of(resp))["field"] == "zone"
    # The refused check-in did not use up the customer's slot.
    resp = await server.client.post("/api/v1/check-in", json={}, headers=bearer(token))
    assert resp.status == 200
    assert not [line for line in every_log_line.texts if CANARY[:20] in line]


async def test_09_no_customer_text_reaches_the_log_on_any_route(
    server: Harness, every_log_line: _AllRecords
) -> None:
    """Every route, with the canary in the query string, the user agent, the referer, a
    made-up header, the JSON and form bodies (every field name and value) and the path."""
    creds = await credentials(server)
    sent = 0
    for method, path in routes(server.app):
        if path.startswith("/ws/"):
            continue
        headers = creds.for_request(method, path, b"") | {
            "User-Agent": CANARY,
            "Referer": f"https://example.com/{CANARY}",
            "X-Canary": CANARY,
        }
        bodies: list[tuple[bytes, str]] = [
            (json.dumps(_canary_body()).encode(), "application/json"),
            (f"username={CANARY}&password={CANARY}&count={CANARY}".encode(), _FORM),
        ]
        for body, kind in bodies:
            resp = await server.client.request(
                method,
                f"{path}?q={CANARY}",
                data=body,
                headers=headers | {"Content-Type": kind},
                allow_redirects=False,
            )
            await resp.read()
            sent += 1
        resp = await server.client.get(f"/api/v1/{CANARY}", headers=headers)
        await resp.read()

    # A last request, whose access line means every earlier one was logged too.
    def logins() -> int:
        return sum('"GET /login ' in text for text in every_log_line.texts)

    before = logins()
    assert (await server.client.get("/login")).status == 200
    await wait_until(lambda: logins() > before)
    assert sent > 40
    leaked = [line for line in every_log_line.texts if CANARY[:20] in line]
    assert leaked == []


_FORM = "application/x-www-form-urlencoded"


def _canary_body() -> dict[str, Any]:
    fields = {
        "zone",
        "display_name",
        "title",
        "app_version",
        "channel",
        "purpose",
        "text_hash",
        "skus",
        "language",
        "not_today",
        "scanner_id",
        "batch_id",
        "store_id",
        CANARY,
    }
    body: dict[str, Any] = {name: CANARY for name in fields}
    body["skus"] = [CANARY]
    return body


# -- 4. hostile inputs, continued: a NUL character, which PostgreSQL refuses in text --------


NUL = "a\u0000b"
# Percent-encoded: in a query string, a form or a path.
NUL_ENCODED = "a%00b"


async def test_04_nul_characters_are_refused_without_a_server_error(server: Harness) -> None:
    """A NUL in every JSON field, form field, query parameter and path segment of every
    route, signed in as a manager, an app and a scanner: never a 5xx. SQLite stores NULs;
    PostgreSQL refuses them in a text parameter, and the sign-in form passed one to it
    (a 500 for anyone, before the fix)."""
    await server.add_staff("margot", "correct horse battery", "manager")
    resp = await server.client.post(
        "/login",
        data={"username": "margot", "password": "correct horse battery"},
        allow_redirects=False,
    )
    morsel = resp.cookies.get("bulle_session")
    assert morsel is not None
    creds = await credentials(server)
    creds = Credentials(morsel.value, creds.token, creds.secret)
    body = dict.fromkeys(_canary_body(), NUL) | {"skus": [NUL]}
    form = "&".join(
        f"{name}={NUL_ENCODED}" for name in ("username", "password", "count", "aisle", "role")
    )
    failures: list[tuple[str, str, int]] = []
    for method, path in routes(server.app):
        if path in ("/readyz", "/metrics") or path.startswith("/ws/"):
            continue  # not ready without a scanner heard from; boards: tests/test_security.py
        for data, kind in ((json.dumps(body).encode(), "application/json"), (form.encode(), _FORM)):
            for where in {
                f"{path}?q=a%00b&since=a%00&wait=1%00",
                path.replace(PLACEHOLDER, NUL_ENCODED),
            }:
                resp = await server.client.request(
                    method,
                    where,
                    data=data,
                    headers=creds.for_request(method, where, data) | {"Content-Type": kind},
                    allow_redirects=False,
                )
                await resp.read()
                if resp.status >= 500:
                    failures.append((method, where, resp.status))
    assert failures == []


# -- 10. the static iBeacon id is in "my data" ---------------------------------------------


async def test_10_my_data_and_export_include_the_static_ibeacon_id(serve: Serve) -> None:
    async with serve(legacy_ibeacon=True) as server:
        token = await server.enroll()
        assert (await server.grant(token, "greeting")).status == 201
        resp = await server.client.put(
            "/api/v1/preferences", json={"legacy_ibeacon": True}, headers=bearer(token)
        )
        assert resp.status == 200
        ibeacon_id = (await resp.json())["ibeacon_id"]
        assert ibeacon_id
        for path in ("/api/v1/me", "/api/v1/me/export"):
            data = await (await server.client.get(path, headers=bearer(token))).json()
            assert data["profile"]["ibeacon_id"] == ibeacon_id, path
            assert data["profile"]["legacy_ibeacon"] is True


# -- 12. retention: a setting, and gone from the file and the WAL --------------------------


# The tables the retention purge empties.
PURGED = ("visits", "decisions", "cards", "messages")
# How long the periodic purge (every second) may take to come round on a loaded machine.
PURGE_GUARD_S = 20.0


async def _purgeable_rows(server: Harness) -> None:
    """A customer who consents, keeps a wishlist and checks in: a visit, decisions, a card and
    messages, all due for the purge one second later."""
    token = await server.enroll()
    for purpose in ("greeting", "stock_check"):
        assert (await server.grant(token, purpose)).status == 201
    skus = [(await server.rows("SELECT sku FROM catalog LIMIT 1"))[0]["sku"]]
    await server.client.put("/api/v1/wishlist", json={"skus": skus}, headers=bearer(token))
    resp = await server.client.post("/api/v1/check-in", json={}, headers=bearer(token))
    assert resp.status == 200
    made = await _counts(server)
    assert made["visits"] > 0, made
    assert made["decisions"] > 0, made
    assert made["cards"] > 0, made


async def _counts(server: Harness) -> dict[str, int]:
    return {t: len(await server.rows(f"SELECT * FROM {t}")) for t in PURGED}


async def _traces(server: Harness) -> list[Any]:
    """What only these rows hold: the cards' ids and payloads, the messages' bodies, and the
    times of the visits, decisions and messages."""
    traces: list[Any] = [
        value
        for row in await server.rows("SELECT id, payload FROM cards")
        for value in row.values()
    ]
    traces += [r["body"] for r in await server.rows("SELECT body FROM messages")]
    for query in (
        "SELECT arrived_at AS t FROM visits",
        "SELECT at AS t FROM decisions",
        "SELECT at AS t FROM messages",
    ):
        traces += [r["t"] for r in await server.rows(query)]
    assert len(traces) >= 5
    return traces


async def _purged(server: Harness) -> None:
    """Until the periodic purge (purge_interval_s) has taken every row older than 1 s."""
    found = await _counts(server)
    deadline = time.monotonic() + PURGE_GUARD_S
    while any(found.values()) and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
        found = await _counts(server)
    assert found == dict.fromkeys(PURGED, 0)


async def test_12_purge_leaves_nothing_in_the_database_or_the_wal(tmp_path: Path) -> None:
    """SQLite only, by nature: the bytes of the database file and its -wal file
    (secure_delete and the WAL's truncation). PostgreSQL's counterpart is the next test."""
    async with running_server(tmp_path, retention_s=1, purge_interval_s=1) as server:
        await _purgeable_rows(server)
        # SQLite stores a REAL as 8 bytes.
        traces = [
            struct.pack(">d", t) if isinstance(t, float) else str(t).encode()
            for t in await _traces(server)
        ]
        await _purged(server)
        db_path = server.db_path
        for suffix in ("", "-wal"):
            data = db_path.with_name(db_path.name + suffix).read_bytes()
            for trace in traces:
                assert trace not in data, (suffix, trace)


@pytest.mark.postgres
async def test_12_purge_on_postgresql_leaves_nothing_any_role_can_read(
    tmp_path: Path, pg_url: str
) -> None:
    """PostgreSQL's counterpart of the test above. A deleted row's bytes stay in dead tuples
    and in the WAL until vacuum and recycling (docs/privacy.md says so); what PostgreSQL
    guarantees is that no query, as any role, finds the row again: no other table (a feed, a
    copy, a log) keeps what the purge took. Every column of every table is searched as text,
    before the purge (where it finds every trace: the search can fail) and after it."""
    async with running_server(
        tmp_path, database_url=pg_url, retention_s=1, purge_interval_s=1
    ) as server:
        await _purgeable_rows(server)
        # A double as PostgreSQL prints it is Python's shortest repr too.
        traces = [str(t) for t in await _traces(server)]
        before = "\n".join(await asyncio.to_thread(pg.every_value, pg_url))
        assert [t for t in traces if t not in before] == []
        await _purged(server)
        after = await asyncio.to_thread(pg.every_value, pg_url)
        assert [(t, v) for v in after for t in traces if t in v] == []


async def test_08_manager_page_shows_a_rewrite_of_the_consent_log(server: Harness) -> None:
    token = await server.enroll()
    assert (await server.grant(token, "greeting")).status == 201
    assert (await server.grant(token, "stock_check")).status == 201
    await server.service.customers.checkpoint_consent_log(time.time())
    await server.add_staff("margot", "correct horse battery", "manager")
    resp = await server.client.post(
        "/login",
        data={"username": "margot", "password": "correct horse battery"},
        allow_redirects=False,
    )
    morsel = resp.cookies.get("bulle_session")
    assert morsel is not None
    manager = {"Cookie": f"bulle_session={morsel.value}", "Accept-Language": "en"}
    page = await (await server.client.get("/manager/consent-log", headers=manager)).text()
    assert "Chain broken" not in page
    _rewrite_entry(server.config, 1)  # and every hash after it, as the chain allows
    page = await (await server.client.get("/manager/consent-log", headers=manager)).text()
    assert "Chain broken at entry No. 2" in page
