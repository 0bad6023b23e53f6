"""The schema, as migrations applied when the database opens, written once for both engines.

Each migration is recorded by its function name: on SQLite in sqlite-utils'
``_sqlite_migrations`` table (as since the first release), on PostgreSQL in
``bulle_migrations``. Never rename one or change what it does; add a new one instead.

A migration's DDL is written in SQLite's words and goes through :func:`schema`, which maps it
for PostgreSQL (`pg.ddl`: BIGINT, DOUBLE PRECISION, BYTEA, identity columns, the append-only
triggers as a PL/pgSQL function); what has no common form is spelt out per engine.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from sqlite_utils.migrations import Migrations

from store_server.errors import ConfigError
from store_server.storage import pg
from store_server.storage.notify import NOTIFY_DDL

migrations = Migrations("bulle-store-server")
logger = logging.getLogger(__name__)


def schema(db: Any, script: str) -> None:
    """Run a migration's DDL script on either engine."""
    if isinstance(db, pg.PgHandle):
        db.executescript(pg.ddl(script))
    else:
        db.executescript(script)


def apply_migrations(db: Any) -> None:
    """Apply the pending migrations (SQLite: sqlite-utils; PostgreSQL: :func:`_apply_pg`).

    Which ones and how long they took go to the log: a migration that rebuilds a large table
    delays an upgraded server's first start, and the operator should see why.
    """
    if isinstance(db, pg.PgHandle):
        pending = pending_pg(db)
    else:
        pending = [m.name for m in migrations.pending(db)]
    if not pending:
        return
    logger.info("applying %d schema migrations: %s", len(pending), ", ".join(pending))
    started = time.monotonic()
    if isinstance(db, pg.PgHandle):
        _apply_pg(db)
    else:
        migrations.apply(db)
    logger.info("schema migrations applied in %.1f s", time.monotonic() - started)


def _has_table(db: pg.PgHandle, name: str) -> bool:
    found = db.execute("SELECT to_regclass(?)", [name]).fetchone()
    return found is not None and found[0] is not None


def applied_pg(db: pg.PgHandle) -> list[str]:
    """The migrations recorded in a PostgreSQL database, oldest first."""
    if not _has_table(db, pg.MIGRATIONS_TABLE):
        return []
    return [
        str(row["name"])
        for row in db.query(
            f"SELECT name FROM {pg.MIGRATIONS_TABLE} WHERE migration_set = ?"  # noqa: S608
            " ORDER BY applied_at, name",
            [migrations.name],
        )
    ]


class SchemaError(ConfigError):
    """The database's schema is behind this release and this connection may not migrate it."""

    def __init__(self, message: str) -> None:
        super().__init__(message, key="database_url")


def pending_pg(db: pg.PgHandle) -> list[str]:
    done = set(applied_pg(db))
    return [m.name for m in migrations._migrations if m.name not in done]


def _apply_pg(db: pg.PgHandle) -> None:
    """Each pending migration in a transaction of its own, with its record (PostgreSQL's DDL
    is transactional); an advisory lock keeps two servers starting at once from racing.

    A database already up to date is only read: the store server's own role (which may not
    change the schema, docs/operations.md) opens it; the owner role migrates it.
    """
    if not pending_pg(db):
        return
    import psycopg  # not loaded on SQLite (see storage.pg)

    db.execute("SELECT pg_advisory_lock(?)", [pg.MIGRATION_LOCK])
    try:
        _apply_pg_locked(db)
    except psycopg.errors.InsufficientPrivilege:
        raise SchemaError(
            f"database_url: the database lacks migrations {', '.join(pending_pg(db))} and"
            " this role may not create them: run `store-server db migrate` as the database's"
            " owner role, then `store-server db grant ROLE` (docs/operations.md, Running on"
            " PostgreSQL)"
        ) from None
    finally:
        db.execute("SELECT pg_advisory_unlock(?)", [pg.MIGRATION_LOCK])


def _apply_pg_locked(db: pg.PgHandle) -> None:
    if not _has_table(db, pg.MIGRATIONS_TABLE):
        db.execute(
            f"CREATE TABLE {pg.MIGRATIONS_TABLE} (migration_set TEXT NOT NULL,"
            " name TEXT NOT NULL, applied_at DOUBLE PRECISION NOT NULL,"
            " PRIMARY KEY (migration_set, name))"
        )
    done = set(applied_pg(db))
    for migration in migrations._migrations:
        if migration.name in done:
            continue
        with db.conn.transaction():
            migration.fn(db)  # type: ignore[arg-type]
            db.execute(
                f"INSERT INTO {pg.MIGRATIONS_TABLE} (migration_set, name, applied_at)"  # noqa: S608
                " VALUES (?, ?, ?)",
                [migrations.name, migration.name, time.time()],
            )


@migrations()
def m001_initial(db: Any) -> None:
    schema(
        db,
        """
        CREATE TABLE scanners (
            id TEXT PRIMARY KEY,
            store_id TEXT NOT NULL,
            secret_wrapped BLOB NOT NULL,
            created_at REAL NOT NULL,
            revoked_at REAL,
            last_heartbeat TEXT,
            last_seen_at REAL
        );
        CREATE TABLE scanner_batches (
            scanner_id TEXT NOT NULL REFERENCES scanners(id),
            batch_id TEXT NOT NULL,
            accepted INTEGER NOT NULL,
            received_at REAL NOT NULL,
            PRIMARY KEY (scanner_id, batch_id)
        );
        CREATE TABLE customers (
            id TEXT PRIMARY KEY,
            token_hash TEXT NOT NULL UNIQUE,
            created_at REAL NOT NULL,
            display_name TEXT,
            title TEXT,
            name_form TEXT NOT NULL DEFAULT 'no_name',
            language TEXT NOT NULL DEFAULT 'fr',
            greet_mode TEXT NOT NULL DEFAULT 'on_arrival',
            quiet_start TEXT,
            quiet_end TEXT,
            not_today TEXT,
            pickup_code TEXT NOT NULL
        );
        CREATE TABLE identities (
            customer_id TEXT PRIMARY KEY REFERENCES customers(id) ON DELETE CASCADE,
            key_wrapped BLOB NOT NULL,
            k INTEGER NOT NULL,
            clock_offset_s REAL NOT NULL,
            created_at REAL NOT NULL
        );
        CREATE TABLE consent_texts (
            hash TEXT PRIMARY KEY,
            purpose TEXT NOT NULL,
            version INTEGER NOT NULL,
            text_fr TEXT NOT NULL,
            text_en TEXT NOT NULL,
            UNIQUE (purpose, version)
        );
        CREATE TABLE consents (
            customer_id TEXT NOT NULL REFERENCES customers(id) ON DELETE CASCADE,
            purpose TEXT NOT NULL CHECK (purpose IN ('greeting', 'stock_check')),
            scope TEXT NOT NULL,
            text_hash TEXT NOT NULL REFERENCES consent_texts(hash),
            granted_at REAL NOT NULL,
            expires_at REAL NOT NULL,
            PRIMARY KEY (customer_id, purpose)
        );
        CREATE TABLE consent_log (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            subject_ref TEXT NOT NULL,
            purpose TEXT NOT NULL,
            action TEXT NOT NULL CHECK (action IN ('grant', 'withdraw', 'renew', 'erase')),
            text_hash TEXT,
            scope TEXT,
            channel TEXT NOT NULL,
            app_version TEXT,
            at REAL NOT NULL,
            prev_hash TEXT NOT NULL,
            entry_hash TEXT NOT NULL UNIQUE
        );
        CREATE TRIGGER consent_log_no_update BEFORE UPDATE ON consent_log
        BEGIN SELECT RAISE(ABORT, 'consent_log is append-only'); END;
        CREATE TRIGGER consent_log_no_delete BEFORE DELETE ON consent_log
        BEGIN SELECT RAISE(ABORT, 'consent_log is append-only'); END;
        CREATE TABLE catalog (
            sku TEXT PRIMARY KEY,
            name_fr TEXT NOT NULL,
            name_en TEXT NOT NULL
        );
        CREATE TABLE stock (
            store_id TEXT NOT NULL,
            sku TEXT NOT NULL REFERENCES catalog(sku),
            count INTEGER NOT NULL CHECK (count >= 0),
            aisle TEXT NOT NULL,
            PRIMARY KEY (store_id, sku)
        );
        CREATE TABLE wishlist (
            customer_id TEXT NOT NULL REFERENCES customers(id) ON DELETE CASCADE,
            sku TEXT NOT NULL REFERENCES catalog(sku),
            added_at REAL NOT NULL,
            PRIMARY KEY (customer_id, sku)
        );
        CREATE TABLE visits (
            id INTEGER PRIMARY KEY,
            customer_id TEXT NOT NULL REFERENCES customers(id) ON DELETE CASCADE,
            arrived_at REAL NOT NULL,
            left_at REAL,
            zone TEXT,
            via TEXT NOT NULL
        );
        CREATE INDEX visits_customer ON visits(customer_id);
        CREATE TABLE decisions (
            id INTEGER PRIMARY KEY,
            customer_id TEXT NOT NULL REFERENCES customers(id) ON DELETE CASCADE,
            visit_id INTEGER REFERENCES visits(id) ON DELETE CASCADE,
            at REAL NOT NULL,
            outcome TEXT NOT NULL,
            reason TEXT NOT NULL
        );
        CREATE TABLE cards (
            id TEXT PRIMARY KEY,
            customer_id TEXT NOT NULL REFERENCES customers(id) ON DELETE CASCADE,
            kind TEXT NOT NULL CHECK (kind IN ('greeting', 'stock')),
            created_at REAL NOT NULL,
            payload TEXT NOT NULL,
            state TEXT NOT NULL DEFAULT 'open',
            acked_by TEXT,
            acked_at REAL
        );
        CREATE TABLE messages (
            id INTEGER PRIMARY KEY,
            customer_id TEXT NOT NULL REFERENCES customers(id) ON DELETE CASCADE,
            at REAL NOT NULL,
            body TEXT NOT NULL
        );
        CREATE TABLE access_log (
            id INTEGER PRIMARY KEY,
            customer_id TEXT NOT NULL REFERENCES customers(id) ON DELETE CASCADE,
            staff_user TEXT NOT NULL,
            card_id TEXT,
            action TEXT NOT NULL,
            at REAL NOT NULL
        );
        CREATE TRIGGER access_log_no_update BEFORE UPDATE ON access_log
        BEGIN SELECT RAISE(ABORT, 'access_log is append-only'); END;
        CREATE TABLE staff_users (
            username TEXT PRIMARY KEY,
            password_hash TEXT NOT NULL,
            role TEXT NOT NULL CHECK (role IN ('staff', 'manager')),
            created_at REAL NOT NULL,
            disabled INTEGER NOT NULL DEFAULT 0
        );
        CREATE TABLE sessions (
            id_hash TEXT PRIMARY KEY,
            username TEXT NOT NULL REFERENCES staff_users(username) ON DELETE CASCADE,
            created_at REAL NOT NULL,
            expires_at REAL NOT NULL
        );
        """,
    )
    if isinstance(db, pg.PgHandle):
        # SQLite numbers every row (``rowid``), and the start-up build reads the identities
        # in rowid ranges: PostgreSQL gets the same column.
        db.executescript(
            "ALTER TABLE identities ADD COLUMN rowid BIGINT GENERATED ALWAYS AS IDENTITY;"
            " CREATE UNIQUE INDEX identities_rowid ON identities (rowid);"
        )


@migrations()
def m002_consent_store(db: Any) -> None:
    """Record which store a consent was given at, so `scope = 'store'` can be honoured.

    Rows from before this migration were all given at this server's store: a NULL store id
    counts as "this store".
    """
    db.execute("ALTER TABLE consents ADD COLUMN store_id TEXT")


@migrations()
def m003_scanner_calibration(db: Any) -> None:
    """Calibration offsets set by a manager, overriding the store file's `rssi_offset_db`.

    Kept in the database rather than written back to the store file: configuration files
    stay as the operator wrote them, and every change records who made it and when.
    """
    schema(
        db,
        """
        CREATE TABLE scanner_calibration (
            scanner_id TEXT PRIMARY KEY,
            rssi_offset_db REAL NOT NULL CHECK (rssi_offset_db BETWEEN -30 AND 30),
            updated_by TEXT NOT NULL,
            updated_at REAL NOT NULL
        );
        """,
    )


@migrations()
def m004_legacy_ibeacon(db: Any) -> None:
    """Per-customer opt-in to a static iBeacon id (legacy apps; trackable, off by default)."""
    schema(
        db,
        """
        ALTER TABLE customers ADD COLUMN legacy_ibeacon INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE customers ADD COLUMN ibeacon_id TEXT;
        CREATE UNIQUE INDEX customers_ibeacon_id ON customers(ibeacon_id)
            WHERE ibeacon_id IS NOT NULL;
        """,
    )


@migrations()
def m005_consents_active_index(db: Any) -> None:
    """A covering index for the active-consent queries run at start-up and every minute.

    ``SELECT DISTINCT customer_id ... WHERE granted_at <= ? AND expires_at > ? AND <scope>``
    walked the primary-key index in customer order and read the table row of every entry
    (one random page read per consent: about 2.5 s with a million). With every column it
    reads in the index, the query is one sequential scan of the index.
    """
    db.execute(
        "CREATE INDEX consents_active ON consents"
        " (customer_id, granted_at, expires_at, scope, store_id)"
    )


@migrations()
def m006_consent_checkpoints(db: Any) -> None:
    """Signed checkpoints of the consent log's head (``consent.verify_checkpoints``):
    append-only, like the log itself."""
    schema(
        db,
        """
        CREATE TABLE consent_checkpoints (
            seq INTEGER PRIMARY KEY,
            entry_hash TEXT NOT NULL,
            at REAL NOT NULL,
            mac TEXT NOT NULL
        );
        CREATE TRIGGER consent_checkpoints_no_update BEFORE UPDATE ON consent_checkpoints
        BEGIN SELECT RAISE(ABORT, 'consent_checkpoints is append-only'); END;
        CREATE TRIGGER consent_checkpoints_no_delete BEFORE DELETE ON consent_checkpoints
        BEGIN SELECT RAISE(ABORT, 'consent_checkpoints is append-only'); END;
        """,
    )


@migrations()
def m007_chain_stores(db: Any) -> None:
    """Chain mode: many stores' servers on one database.

    - Visits, decisions, cards, messages and the access log record the store they belong to:
      every read of them names the server's store, so one store's pages never show
      another's. Rows from before (NULL) belong to the single store that wrote them: a
      server outside chain mode claims them at start-up (``visits.claim_unowned``); on
      SQLite the access log's append-only trigger lets that claim, and nothing else, update
      a row (a PostgreSQL database has no such rows: it is newer than store ids).
    - ``identities.wrap`` says how the identity key is wrapped: ``master`` (the master key,
      a single shop), ``sealed`` (RSA-OAEP to the key authority's public key: written by a
      chain's store servers, which cannot open it) or ``authority`` (the authority's own key).
    - ``eid_temporary_keys``: the Eddystone-EID temporary keys (one per 2**16 s slot of the
      app's counter) the key authority computes for consenting customers, wrapped under a key
      derived from the master key. A chain's store servers resolve EIDs from these only.
    """
    schema(
        db,
        """
        ALTER TABLE visits ADD COLUMN store_id TEXT;
        ALTER TABLE decisions ADD COLUMN store_id TEXT;
        ALTER TABLE cards ADD COLUMN store_id TEXT;
        ALTER TABLE messages ADD COLUMN store_id TEXT;
        ALTER TABLE access_log ADD COLUMN store_id TEXT;
        CREATE INDEX cards_store_state ON cards (store_id, state);
        CREATE INDEX access_log_store ON access_log (store_id, id);
        CREATE INDEX consents_unowned ON consents (customer_id) WHERE store_id IS NULL;
        ALTER TABLE identities ADD COLUMN wrap TEXT NOT NULL DEFAULT 'master'
            CHECK (wrap IN ('master', 'sealed', 'authority'));
        CREATE TABLE eid_temporary_keys (
            customer_id TEXT NOT NULL REFERENCES customers(id) ON DELETE CASCADE,
            slot INTEGER NOT NULL,
            tk_wrapped BLOB NOT NULL,
            k INTEGER NOT NULL,
            clock_offset_s REAL NOT NULL,
            not_after REAL NOT NULL,
            created_at REAL NOT NULL,
            PRIMARY KEY (customer_id, slot)
        );
        CREATE INDEX eid_temporary_keys_not_after ON eid_temporary_keys (not_after);
        """,
    )
    if not isinstance(db, pg.PgHandle):
        db.executescript(
            """
            DROP TRIGGER access_log_no_update;
            CREATE TRIGGER access_log_no_update BEFORE UPDATE ON access_log
            WHEN NOT (OLD.store_id IS NULL AND NEW.store_id IS NOT NULL AND NEW.id = OLD.id
                AND NEW.customer_id = OLD.customer_id AND NEW.staff_user = OLD.staff_user
                AND NEW.card_id IS OLD.card_id AND NEW.action = OLD.action AND NEW.at = OLD.at)
            BEGIN SELECT RAISE(ABORT, 'access_log is append-only'); END;
            """
        )


@migrations()
def m008_staff_store(db: Any) -> None:
    """A staff account may belong to one store: it signs in on that store's servers only.

    NULL: every store of the database (the accounts made before, and a chain's headquarters
    accounts made with ``user add`` without ``--store``).
    """
    db.execute("ALTER TABLE staff_users ADD COLUMN store_id TEXT")


@migrations()
def m009_consent_per_store(db: Any) -> None:
    """A customer may hold a store-scoped consent at several stores of a chain.

    ``place`` is where a consent counts: the store it was given at for ``scope = 'store'``,
    empty for the whole chain; the key becomes (customer, purpose, place), so a store-scoped
    consent given at a second store no longer replaces the first one's.
    """
    if isinstance(db, pg.PgHandle):
        db.executescript(
            """
            ALTER TABLE consents ADD COLUMN place TEXT NOT NULL DEFAULT '';
            UPDATE consents SET place = coalesce(store_id, '') WHERE scope = 'store';
            ALTER TABLE consents DROP CONSTRAINT consents_pkey;
            ALTER TABLE consents ADD PRIMARY KEY (customer_id, purpose, place);
            """
        )
        return
    # SQLite cannot change a primary key: the table is rebuilt, its rows copied.
    db.executescript(
        """
        CREATE TABLE consents_by_place (
            customer_id TEXT NOT NULL REFERENCES customers(id) ON DELETE CASCADE,
            purpose TEXT NOT NULL CHECK (purpose IN ('greeting', 'stock_check')),
            scope TEXT NOT NULL,
            text_hash TEXT NOT NULL REFERENCES consent_texts(hash),
            granted_at REAL NOT NULL,
            expires_at REAL NOT NULL,
            store_id TEXT,
            place TEXT NOT NULL DEFAULT '',
            PRIMARY KEY (customer_id, purpose, place)
        );
        INSERT INTO consents_by_place (customer_id, purpose, scope, text_hash, granted_at,
            expires_at, store_id, place)
        SELECT customer_id, purpose, scope, text_hash, granted_at, expires_at, store_id,
            CASE WHEN scope = 'store' THEN coalesce(store_id, '') ELSE '' END FROM consents;
        DROP TABLE consents;
        ALTER TABLE consents_by_place RENAME TO consents;
        CREATE INDEX consents_active ON consents
            (customer_id, granted_at, expires_at, scope, store_id);
        CREATE INDEX consents_unowned ON consents (customer_id) WHERE store_id IS NULL;
        """
    )


@migrations()
def m010_consent_notify(db: Any) -> None:
    """Chain mode: every consent-log commit notifies channel ``bulle_consent`` with the new
    entry's sequence number (`store_server.storage.notify`). PostgreSQL only: a SQLite
    database has one server, which applies its own writes in-process."""
    if isinstance(db, pg.PgHandle):
        db.executescript(NOTIFY_DDL)


@migrations()
def m011_calibration_samples(db: Any) -> None:
    """What online calibration learned: the samples of each box's radio and its latest fit.

    A sample is a box, a distance, the walls in between and an RSSI: it names no customer. The
    samples are kept (at most ``calibration.MAX_SAMPLES`` per box) so that a restart goes on
    learning from where it was; the fit is kept to show it and to apply it at start-up.
    """
    schema(
        db,
        """
        CREATE TABLE calibration_samples (
            id INTEGER PRIMARY KEY,
            scanner_id TEXT NOT NULL,
            distance_m REAL NOT NULL,
            walls_db REAL NOT NULL,
            rssi_dbm REAL NOT NULL,
            source TEXT NOT NULL CHECK (source IN ('walk', 'check_in', 'box')),
            at REAL NOT NULL
        );
        CREATE INDEX calibration_samples_scanner ON calibration_samples (scanner_id, id);
        CREATE TABLE calibration_fits (
            scanner_id TEXT PRIMARY KEY,
            rssi_offset_db REAL NOT NULL,
            path_loss_exponent REAL NOT NULL,
            samples INTEGER NOT NULL,
            places INTEGER NOT NULL,
            residual_db REAL NOT NULL,
            usable INTEGER NOT NULL,
            updated_at REAL NOT NULL
        );
        """,
    )
