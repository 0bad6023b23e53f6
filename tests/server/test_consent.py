"""Consent texts, the hash-chained consent log (pure), its append-only table and the CLI check."""

from __future__ import annotations

import dataclasses
import math
import os
import sqlite3
from pathlib import Path
from typing import Any

import psycopg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from store_server import cli
from store_server.app import load_consent_texts
from store_server.consent import (
    GENESIS_HASH,
    ActiveConsent,
    ChainedEntry,
    ConsentText,
    LogEntry,
    active_purposes,
    entry_hash,
    is_active,
    subject_ref,
    verify_chain,
)
from store_server.errors import ConsentLogError, ValidationError
from store_server.storage import consents as consent_store
from store_server.storage import customers as customer_store
from store_server.storage.database import Handle, Target, close_handle, connect_target
from store_server.storage.pg import PgTarget

TEXT = ConsentText("greeting", 1, "Je souhaite être salué·e.", "I wish to be greeted.")


def test_consent_text_hash_is_stable() -> None:
    again = ConsentText("greeting", 1, "Je souhaite être salué·e.", "I wish to be greeted.")
    assert TEXT.hash == again.hash
    assert len(TEXT.hash) == 64
    assert int(TEXT.hash, 16) >= 0


@pytest.mark.parametrize(
    "changed",
    [
        dataclasses.replace(TEXT, purpose="stock_check"),
        dataclasses.replace(TEXT, version=2),
        dataclasses.replace(TEXT, text_fr="Je souhaite être salué·e!"),
        dataclasses.replace(TEXT, text_en="I wish to be greeted!"),
        dataclasses.replace(TEXT, text_en="I wish to be greeted. "),
    ],
)
def test_consent_text_hash_changes_with_any_field(changed: ConsentText) -> None:
    assert changed.hash != TEXT.hash


def test_shipped_consent_texts_have_distinct_hashes() -> None:
    texts = load_consent_texts()
    assert {t.purpose for t in texts} == {"greeting", "stock_check"}
    assert len({t.hash for t in texts}) == len(texts)


def test_active_consent_window() -> None:
    consent = ActiveConsent("greeting", "store", TEXT.hash, granted_at=100.0, expires_at=200.0)
    assert not is_active(consent, 99.9)
    assert is_active(consent, 100.0)
    assert is_active(consent, 199.9)
    assert not is_active(consent, 200.0)
    assert not is_active(None, 150.0)
    other = ActiveConsent("stock_check", "store", TEXT.hash, granted_at=150.0, expires_at=300.0)
    assert active_purposes([consent, other], 160.0) == {"greeting", "stock_check"}
    assert active_purposes([consent, other], 250.0) == {"stock_check"}


def test_subject_ref_is_keyed() -> None:
    a = subject_ref(b"k" * 32, "c_1")
    assert a == subject_ref(b"k" * 32, "c_1")
    assert a != subject_ref(b"j" * 32, "c_1")
    assert a != subject_ref(b"k" * 32, "c_2")
    assert "c_1" not in a


# -- hash chain (pure) -----------------------------------------------------------------------


def make_entries(n: int) -> list[LogEntry]:
    actions = ("grant", "renew", "withdraw")
    return [
        LogEntry(
            subject_ref=f"{i:064x}",
            purpose="greeting" if i % 2 else "stock_check",
            action=actions[i % 3],
            text_hash=None if actions[i % 3] == "withdraw" else TEXT.hash,
            scope=None if actions[i % 3] == "withdraw" else "store",
            channel="app",
            app_version="1.2.3" if i % 2 else None,
            at=1_763_800_000.0 + i,
        )
        for i in range(n)
    ]


def chain(entries: list[LogEntry]) -> list[ChainedEntry]:
    rows: list[ChainedEntry] = []
    prev = GENESIS_HASH
    for seq, entry in enumerate(entries, start=1):
        digest = entry_hash(prev, entry)
        rows.append(ChainedEntry(seq, entry, prev, digest))
        prev = digest
    return rows


def test_verify_chain_counts() -> None:
    assert verify_chain([]) == 0
    assert verify_chain(chain(make_entries(1))) == 1
    assert verify_chain(chain(make_entries(7))) == 7


def test_first_entry_must_link_to_genesis() -> None:
    rows = chain(make_entries(3))
    with pytest.raises(ConsentLogError, match="seq 2"):
        verify_chain(rows[1:])


def test_reordering_is_detected() -> None:
    rows = chain(make_entries(4))
    rows[1], rows[2] = rows[2], rows[1]
    with pytest.raises(ConsentLogError, match="seq 3"):
        verify_chain(rows)


def test_dropping_an_entry_is_detected() -> None:
    rows = chain(make_entries(4))
    del rows[2]
    with pytest.raises(ConsentLogError, match="seq 4"):
        verify_chain(rows)


def _tweak(value: object) -> Any:
    """The smallest change to one field: one character, one ulp, or a value where None was."""
    if value is None:
        return "x"
    if isinstance(value, float):
        return math.nextafter(value, math.inf)
    assert isinstance(value, str)
    last = value[-1]
    return value[:-1] + ("a" if last != "a" else "b")


ENTRY_FIELDS = [f.name for f in dataclasses.fields(LogEntry)]


@settings(deadline=None)  # a loaded 2-core machine stalls some examples past 200 ms
@given(
    n=st.integers(1, 6),
    data=st.data(),
)
def test_any_one_field_change_is_detected(n: int, data: st.DataObject) -> None:
    rows = chain(make_entries(n))
    index = data.draw(st.integers(0, n - 1), label="entry")
    name = data.draw(st.sampled_from([*ENTRY_FIELDS, "prev_hash", "entry_hash"]), label="field")
    row = rows[index]
    if name in ENTRY_FIELDS:
        entry = dataclasses.replace(row.entry, **{name: _tweak(getattr(row.entry, name))})
        rows[index] = dataclasses.replace(row, entry=entry)
    else:
        rows[index] = dataclasses.replace(row, **{name: _tweak(getattr(row, name))})
    with pytest.raises(ConsentLogError) as info:
        verify_chain(rows)
    # The break is reported at the altered entry, or at the next one for its stored hash.
    assert f"seq {row.seq}" in str(info.value) or f"seq {row.seq + 1}" in str(info.value)


# -- database --------------------------------------------------------------------------------

NOW = 1_763_800_000.0
PSEUDONYM_KEY = b"p" * 32


@pytest.fixture
def db(handle: Handle) -> Handle:
    """A fresh database on each engine (tests/conftest.py ``handle``), with the texts."""
    consent_store.ensure_consent_texts(handle, load_consent_texts())
    return handle


def _customer(db: Handle) -> str:
    created = customer_store.create_customer(
        db,
        key_wrapped_for=lambda cid: b"w" * 44,
        k=9,
        clock_offset_s=0.0,
        language="fr",
        now=NOW,
    )
    return created.customer_id


def _hash_of(purpose: str) -> str:
    return next(t.hash for t in load_consent_texts() if t.purpose == purpose)


def _fill_log(db: Handle) -> str:
    customer = _customer(db)
    ref = subject_ref(PSEUDONYM_KEY, customer)
    for at, purpose in ((NOW, "greeting"), (NOW + 1, "stock_check"), (NOW + 2, "greeting")):
        consent_store.grant_consent(
            db,
            customer_id=customer,
            subject_ref=ref,
            purpose=purpose,  # type: ignore[arg-type]
            text_hash=_hash_of(purpose),
            scope="store",
            channel="app",
            app_version="1.0",
            now=at,
            duration_s=3600,
        )
    consent_store.withdraw_consent(
        db,
        customer_id=customer,
        subject_ref=ref,
        purposes=("greeting",),
        channel="web",
        app_version=None,
        now=NOW + 3,
    )
    return customer


def test_grant_renew_withdraw_are_chained(db: Handle) -> None:
    customer = _fill_log(db)
    rows = consent_store.consent_log_rows(db)
    assert [(r.entry.purpose, r.entry.action) for r in rows] == [
        ("greeting", "grant"),
        ("stock_check", "grant"),
        ("greeting", "renew"),
        ("greeting", "withdraw"),
    ]
    assert verify_chain(rows) == 4
    assert rows[3].entry.text_hash is None
    assert {c.purpose for c in consent_store.consents_of(db, customer)} == {"stock_check"}
    # The log holds a pseudonym, never the customer id.
    dump = "\n".join(str(r) for r in db.query("SELECT * FROM consent_log"))
    assert customer not in dump


def test_grant_with_text_of_other_purpose_is_refused(db: Handle) -> None:
    customer = _customer(db)
    with pytest.raises(ValidationError) as info:
        consent_store.grant_consent(
            db,
            customer_id=customer,
            subject_ref="r",
            purpose="greeting",
            text_hash=_hash_of("stock_check"),
            scope="store",
            channel="app",
            app_version=None,
            now=NOW,
            duration_s=3600,
        )
    assert info.value.field == "text_hash"
    assert consent_store.consent_log_rows(db) == []


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE consent_log SET channel = 'web' WHERE seq = 2",
        "UPDATE consent_log SET at = at + 1",
        "DELETE FROM consent_log WHERE seq = 1",
        "DELETE FROM consent_log",
    ],
)
def test_consent_log_is_append_only(db: Handle, engine: str, statement: str) -> None:
    _fill_log(db)
    before = list(db.query("SELECT * FROM consent_log ORDER BY seq"))
    refused = sqlite3.IntegrityError if engine == "sqlite" else psycopg.errors.IntegrityError
    with pytest.raises(refused, match="append-only"):
        db.execute(statement)
    assert list(db.query("SELECT * FROM consent_log ORDER BY seq")) == before


# -- CLI -------------------------------------------------------------------------------------


def test_cli_verify_detects_tampering(
    db_target: Target,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in list(os.environ):
        if name.startswith("BULLE_"):
            monkeypatch.delenv(name)
    config = tmp_path / "server.toml"
    if isinstance(db_target, PgTarget):
        where = f'database_url = "{db_target.url}"\n'
    else:
        where = f'db_path = "{db_target}"\n'
    config.write_text(where + f'master_key = "{"ab" * 32}"\n', "utf-8")
    database = connect_target(db_target)
    consent_store.ensure_consent_texts(database, load_consent_texts())
    _fill_log(database)
    close_handle(database)

    assert cli.main(["consent-log", "verify", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "consent log OK: 4 entries" in out

    # Tampering with the file (or as the database's superuser), past the trigger.
    if isinstance(db_target, PgTarget):
        with psycopg.connect(db_target.url, autocommit=True) as raw:
            raw.execute("ALTER TABLE consent_log DISABLE TRIGGER consent_log_no_update")
            raw.execute("UPDATE consent_log SET channel = 'in_store' WHERE seq = 2")
    else:
        lite = sqlite3.connect(db_target)
        lite.execute("DROP TRIGGER consent_log_no_update")
        lite.execute("UPDATE consent_log SET channel = 'in_store' WHERE seq = 2")
        lite.commit()
        lite.close()

    assert cli.main(["consent-log", "verify", "--config", str(config)]) == 2
    captured = capsys.readouterr()
    assert "OK" not in captured.out
    assert "seq 2" in captured.err
    assert "altered" in captured.err
