"""The chain's key flow through real servers on one database: store servers that can never
read an identity key (SQLite's authorizer refuses them the column, as PostgreSQL's
privileges do) enroll customers, resolve their EIDs from temporary keys and serve them in the
allowlist; the key authority adopts the sealed keys and keeps temporary keys coming."""

from __future__ import annotations

import contextlib
import io
import secrets
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlite_utils

from store_server import eid
from store_server.keyseal import generate_authority_key
from store_server.storage import database
from store_server.storage import keys as key_store
from store_server.storage.database import Target
from tests.server.chain_helpers import STORE_A, STORE_B, check_in, grant, refresh, two_stores
from tests.server.conftest import Harness, engine_settings


def _deny_identity_keys(action: int, table: str | None, column: str | None, *_: Any) -> int:
    if action == sqlite3.SQLITE_READ and table == "identities" and column == "key_wrapped":
        return sqlite3.SQLITE_DENY
    return sqlite3.SQLITE_OK


@pytest.fixture
def no_identity_keys(
    engine: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[dict[str, Any], Target | None]]:
    """Settings for store servers that may not read identities.key_wrapped, and the target
    the key authority connects to (None: the SQLite file of the servers).

    SQLite: every connection the servers of this test open refuses the column (an
    authorizer). PostgreSQL: the servers connect as a role granted `db grant --chain-store`.
    """
    if engine == "postgres":
        yield from _chain_store_role(request)
        return
    _guard_sqlite(monkeypatch)
    yield {}, None  # noqa: PT022 (the PostgreSQL branch tears down)


def _chain_store_role(
    request: pytest.FixtureRequest,
) -> Iterator[tuple[dict[str, Any], Target | None]]:
    import psycopg

    from store_server.storage import pg_roles
    from store_server.storage.pg import PgHandle, PgTarget

    cluster = request.getfixturevalue("pg_cluster")
    owner_url: str = request.getfixturevalue("pg_url")
    role = f"bulle_store_{secrets.token_hex(4)}"
    owner = database.connect_target(PgTarget(owner_url))
    assert isinstance(owner, PgHandle)
    try:
        owner.execute(f"CREATE ROLE {role} LOGIN")
        pg_roles.grant_server_role(owner, role, identity_keys=False)
        as_store = owner_url.replace("postgresql://bulle@", f"postgresql://{role}@")
        yield {"database_url": as_store}, PgTarget(owner_url)
    finally:
        owner.execute(f"DROP OWNED BY {role}")
        database.close_handle(owner)
        with psycopg.connect(cluster.url(), autocommit=True) as admin:
            admin.execute(f"DROP ROLE {role}")


def _guard_sqlite(monkeypatch: pytest.MonkeyPatch) -> None:
    connect, connect_reader = database.connect, database.connect_reader

    def guarded(opener: Any) -> Any:
        def open_guarded(path: Path) -> sqlite_utils.Database:
            db = opener(path)
            db.conn.set_authorizer(_deny_identity_keys)
            return db

        return open_guarded

    monkeypatch.setattr(database, "connect", guarded(connect))
    monkeypatch.setattr(database, "connect_reader", guarded(connect_reader))


def _key_files(tmp_path: Path) -> tuple[Path, Path]:
    private, public = generate_authority_key()
    private_path, public_path = tmp_path / "authority.pem", tmp_path / "authority.pub.pem"
    private_path.write_bytes(private)
    public_path.write_bytes(public)
    return private_path, public_path


async def _enroll(server: Harness) -> tuple[str, eid.IdentityRecord]:
    resp = await server.client.post("/api/v1/enroll", json={"language": "fr"})
    assert resp.status == 201
    body = await resp.json()
    token = body["token"]
    row = (await server.rows("SELECT customer_id, clock_offset_s, wrap FROM identities"))[-1]
    assert row["wrap"] == "sealed"  # the enrolling server cannot open it again
    record = eid.IdentityRecord(
        row["customer_id"],
        bytes.fromhex(body["identity_key"]),
        body["rotation_exponent"],
        row["clock_offset_s"],
    )
    return token, record


async def _allowlist(server: Harness, store_id: str) -> set[str]:
    scanner = await server.add_scanner(f"s-{store_id}-{time.monotonic_ns()}", store_id)
    resp = await server.signed(scanner, "GET", "/api/scanner/v1/allowlist")
    assert resp.status == 200
    return {entry["id"] for entry in (await resp.json())["entries"]}


def _authority_run(target: Target, master_key: str, private_pem: Path, now: float) -> Any:
    """The key authority's run, on a connection of its own (headquarters' role)."""
    from store_server.keyseal import chain_keys, load_private_key
    from store_server.services.authority import plan_run

    if isinstance(target, Path):  # not through `connect`: the authority may read the keys
        raw: Any = sqlite_utils.Database(sqlite3.connect(target, isolation_level=None))
    else:
        raw = database.connect_target(target)
    try:
        pem = private_pem.read_bytes()
        keys = chain_keys(bytes.fromhex(master_key), None, pem)
        identities = key_store.identities_for_authority(raw, now)
        plan = plan_run(
            identities,
            private_key=load_private_key(pem),
            master_key=bytes.fromhex(master_key),
            tk_key=keys.tk_key,
            now=now,
            skew=1,
        )
        return key_store.record_authority_run(raw, plan.adopted, plan.temporary_keys, now)
    finally:
        raw.conn.close()


def _target(guard: tuple[dict[str, Any], Target | None], server: Harness) -> Target:
    return guard[1] if guard[1] is not None else Path(server.config.db_path)


async def test_store_servers_resolve_without_identity_keys(
    tmp_path: Path, no_identity_keys: tuple[dict[str, Any], Target | None]
) -> None:
    private, public = _key_files(tmp_path)
    async with two_stores(
        tmp_path,
        chain_mode=True,
        authority_public_key_file=str(public),
        **no_identity_keys[0],
    ) as (a, b):
        # The guard holds: these servers' connections cannot read an identity key.
        with pytest.raises(Exception, match=r"(?i)prohibited|permission denied"):
            await a.service.db.read(
                lambda db: db.execute("SELECT key_wrapped FROM identities").fetchall()
            )
        authority = _target(no_identity_keys, a)
        token, record = await _enroll(b)
        await grant(b, token, "greeting", "chain")
        await refresh(a, b)
        now = time.time()
        broadcast = eid.eid_at(record, now)
        for server, store_id in ((a, STORE_A), (b, STORE_B)):
            assert server.service.coordinator.resolver.resolve(broadcast, now) == record.subject
            assert broadcast.hex() in await _allowlist(server, store_id)
        assert await check_in(a, token)

        # The authority adopts the sealed key and keeps the keys for now and the next period.
        adopted, written = _authority_run(authority, a.master_key, private, now)
        assert adopted == 1
        assert written == 0  # the enrollment already stored them
        wraps = await a.rows("SELECT wrap FROM identities")
        assert wraps == [{"wrap": "authority"}]
        # A day and a half later, the authority has run again: the servers follow.
        later = now + 1.5 * 65_536
        _authority_run(authority, a.master_key, private, later)
        coordinator = a.service.coordinator
        coordinator._keys_read_at = float("-inf")
        await coordinator.refresh_temporary_keys(later)
        coordinator.resolver.advance(later)
        assert coordinator.resolver.resolve(eid.eid_at(record, later), later) == record.subject
        # Without the authority, a server's keys run out: it recognises nobody.
        b.service.coordinator.resolver.advance(later + 2 * 65_536)
        assert b.service.coordinator.resolver.entries(later + 2 * 65_536) == []

        # A withdrawal leaves no temporary key behind, anywhere.
        resp = await b.client.post(
            "/api/v1/consents/withdraw",
            json={"purposes": ["greeting"]},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert resp.status == 200
        assert await a.rows("SELECT customer_id FROM eid_temporary_keys") == []


async def test_the_key_authority_server_serves_a_customer_who_consents_later(
    tmp_path: Path, engine: str, request: pytest.FixtureRequest
) -> None:
    """Enrolled, keys purged (no consent within the grace), then a consent: the authority
    server computes the keys, and another store's server picks them up."""
    private, public = _key_files(tmp_path)
    on_engine = engine_settings(engine, request)
    async with two_stores(
        tmp_path, chain_mode=True, authority_public_key_file=str(public), **on_engine
    ) as (a, b):
        token, record = await _enroll(b)
        await b.service.db.run(lambda db: db.execute("DELETE FROM eid_temporary_keys"))
        await grant(b, token, "greeting", "chain")
        now = time.time()
        # Consenting, but no key yet: held, recognised by check-in, no EID listed.
        assert record.subject in b.service.coordinator.resolver
        assert b.service.coordinator.resolver.entries(now) == []
        # ... and not recomputed every second meanwhile.
        resolver = b.service.coordinator.resolver
        before = resolver.eid_computations
        for second in range(1, 60):
            resolver.advance(now + second)
        assert resolver.eid_computations - before <= 3
        del a
        other = tmp_path / "hq"
        other.mkdir()
        from tests.server.conftest import running_server

        async with running_server(
            other,
            db_path=b.config.db_path,
            master_key=b.master_key,
            chain_mode=True,
            key_authority=True,
            authority_key_file=str(private),
            **on_engine,
        ) as hq:
            assert hq.service.authority is not None
            # Its start-up ran the authority: keys stored, the sealed identity adopted.
            assert await hq.rows("SELECT wrap FROM identities") == [{"wrap": "authority"}]
            assert hq.service.coordinator.resolver.resolve(eid.eid_at(record, now), now)
            coordinator = b.service.coordinator
            coordinator._keys_read_at = float("-inf")
            await coordinator.refresh_temporary_keys(time.time())
            now = time.time()
            assert coordinator.resolver.resolve(eid.eid_at(record, now), now) == record.subject


async def test_chain_keys_commands(tmp_path: Path) -> None:
    """`chain-keys init` writes the pair (never over an existing one); `chain-keys run` at
    headquarters adopts what a store server sealed."""
    from store_server.cli import main
    from tests.server.conftest import STORE_FILE, running_server

    def run(*argv: str) -> tuple[int, str]:
        out = io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
            code = main(list(argv))
        return code, out.getvalue()

    keys_dir = tmp_path / "keys"
    assert run("chain-keys", "init", "--out", str(keys_dir))[0] == 0
    private = keys_dir / "authority.pem"
    assert private.stat().st_mode & 0o777 == 0o600
    assert run("chain-keys", "init", "--out", str(keys_dir))[0] == 2
    db_path = tmp_path / "chain.sqlite"
    master = "ab" * 32
    async with running_server(
        tmp_path,
        db_path=str(db_path),
        master_key=master,
        chain_mode=True,
        authority_public_key_file=str(keys_dir / "authority.pub.pem"),
    ) as store:
        token, _ = await _enroll(store)
        await grant(store, token, "greeting", "chain")
    settings = tmp_path / "hq.toml"
    settings.write_text(
        f'db_path = "{db_path}"\nstore_file = "{STORE_FILE}"\nmaster_key = "{master}"\n'
        f'authority_key_file = "{private}"\n',
        "utf-8",
    )
    code, printed = run("chain-keys", "run", "--config", str(settings))
    assert code == 0
    assert "1 consenting customers" in printed
    assert "1 identities adopted" in printed
    raw = sqlite3.connect(db_path)
    try:
        assert raw.execute("SELECT wrap FROM identities").fetchall() == [("authority",)]
    finally:
        raw.close()


async def test_a_single_shop_joins_a_chain(tmp_path: Path) -> None:
    """A shop's database (identity keys under the master key) becomes a chain's: the key
    authority adopts its keys, and the shop's server, now in chain mode, resolves from
    temporary keys."""
    from tests.server.conftest import running_server

    private, public = _key_files(tmp_path)
    master = secrets.token_hex(32)
    db_path = tmp_path / "shop.sqlite"
    async with running_server(tmp_path, db_path=str(db_path), master_key=master) as shop:
        token = await shop.enroll()
        assert (await shop.grant(token, "greeting")).status == 201
        rows = await shop.rows("SELECT customer_id, wrap FROM identities")
        assert [r["wrap"] for r in rows] == ["master"]
    now = time.time()
    adopted, written = _authority_run(db_path, master, private, now)
    assert adopted == 1
    assert written >= 2
    async with running_server(
        tmp_path,
        db_path=str(db_path),
        master_key=master,
        chain_mode=True,
        authority_public_key_file=str(public),
    ) as chain:
        customer = rows[0]["customer_id"]
        assert customer in chain.service.coordinator.resolver
        assert len(chain.service.coordinator.resolver.entries(time.time())) == 3
