"""The schema, as sqlite-utils migrations applied when the database opens.

Each migration is recorded by its function name in the ``_sqlite_migrations`` table: never
rename one or change what it does; add a new one instead.
"""

from __future__ import annotations

import sqlite_utils
from sqlite_utils.migrations import Migrations

migrations = Migrations("bulle-store-server")


@migrations()
def m001_initial(db: sqlite_utils.Database) -> None:
    db.executescript(
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
        """
    )


@migrations()
def m002_consent_store(db: sqlite_utils.Database) -> None:
    """Record which store a consent was given at, so `scope = 'store'` can be honoured.

    Rows from before this migration were all given at this server's store: a NULL store id
    counts as "this store".
    """
    db.execute("ALTER TABLE consents ADD COLUMN store_id TEXT")


@migrations()
def m003_scanner_calibration(db: sqlite_utils.Database) -> None:
    """Calibration offsets set by a manager, overriding the store file's `rssi_offset_db`.

    Kept in the database rather than written back to the store file: configuration files
    stay as the operator wrote them, and every change records who made it and when.
    """
    db.executescript(
        """
        CREATE TABLE scanner_calibration (
            scanner_id TEXT PRIMARY KEY,
            rssi_offset_db REAL NOT NULL CHECK (rssi_offset_db BETWEEN -30 AND 30),
            updated_by TEXT NOT NULL,
            updated_at REAL NOT NULL
        );
        """
    )


@migrations()
def m004_legacy_ibeacon(db: sqlite_utils.Database) -> None:
    """Per-customer opt-in to a static iBeacon id (legacy apps; trackable, off by default)."""
    db.executescript(
        """
        ALTER TABLE customers ADD COLUMN legacy_ibeacon INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE customers ADD COLUMN ibeacon_id TEXT;
        CREATE UNIQUE INDEX customers_ibeacon_id ON customers(ibeacon_id)
            WHERE ibeacon_id IS NOT NULL;
        """
    )


@migrations()
def m005_consents_active_index(db: sqlite_utils.Database) -> None:
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
def m006_consent_checkpoints(db: sqlite_utils.Database) -> None:
    """Signed checkpoints of the consent log's head (``consent.verify_checkpoints``):
    append-only, like the log itself."""
    db.executescript(
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
        """
    )


@migrations()
def m007_calibration_samples(db: sqlite_utils.Database) -> None:
    """What online calibration learned: the samples of each box's radio and its latest fit.

    A sample is a box, a distance, the walls in between and an RSSI: it names no customer. The
    samples are kept (at most ``calibration.MAX_SAMPLES`` per box) so that a restart goes on
    learning from where it was; the fit is kept to show it and to apply it at start-up.
    """
    db.executescript(
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
        """
    )
