"""After a restore, the customers' erasures and withdrawals that came later are kept.

A backup holds the customers of its day. Restoring it must not bring back a customer who erased
their data, or a consent withdrawn, after the backup was taken: the database the restore
replaced still records those refusals in its consent log (pseudonymous: keyed subject
references, never an id). They are applied again to the restored database, through the same
storage functions as the app's own erasure and withdrawal, each logged with channel
``restore`` so the consent proof shows what happened and when. Grants made after the backup
are not brought back: the customer gives them again in the app (the privacy-safe direction).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from store_server.consent import ChainedEntry, LogEntry, subject_ref
from store_server.storage import consents, customers
from store_server.storage.database import Handle, connect_reader

RESTORE_CHANNEL = "restore"
"""The consent log's channel of the refusals applied again after a restore."""

_REFUSALS = ("erase", "withdraw")


@dataclass(frozen=True, slots=True)
class Reapplied:
    erased: int
    withdrawn: int


def refusals_after(
    replaced: Sequence[ChainedEntry], restored: Sequence[ChainedEntry]
) -> list[LogEntry]:
    """The erasures and withdrawals of ``replaced`` that ``restored`` does not hold (pure).

    When the restored log is a prefix of the replaced one (the usual case: the replaced
    database grew from the backup), that is every refusal past the prefix; otherwise every
    refusal later than the restored log's last entry.
    """
    if not restored:
        later = list(replaced)
    else:
        last = restored[-1]
        by_seq = {row.seq: row for row in replaced}
        if by_seq.get(last.seq) is not None and by_seq[last.seq].entry_hash == last.entry_hash:
            later = [row for row in replaced if row.seq > last.seq]
        else:
            later = [row for row in replaced if row.entry.at > last.entry.at]
    return [row.entry for row in later if row.entry.action in _REFUSALS]


def reapply_refusals(
    db: Handle, replaced_path: Path, pseudonym_key: bytes, store_id: str, now: float
) -> Reapplied:
    """Apply again to ``db`` (the restored database) the refusals recorded after its backup
    in the database kept at ``replaced_path``."""
    replaced_db = connect_reader(replaced_path)
    try:
        replaced = consents.consent_log_rows(replaced_db)
    finally:
        replaced_db.conn.close()
    later = refusals_after(replaced, consents.consent_log_rows(db))
    if not later:
        return Reapplied(0, 0)
    by_ref = {subject_ref(pseudonym_key, cid): cid for cid in customers.customer_ids(db)}
    erased = withdrawn = 0
    for entry in later:
        customer_id = by_ref.get(entry.subject_ref)
        if customer_id is None:
            continue  # not in the restored database (or erased just above)
        if entry.action == "erase":
            result = customers.erase_customer(
                db,
                customer_id=customer_id,
                subject_ref=entry.subject_ref,
                channel=RESTORE_CHANNEL,
                app_version=None,
                now=now,
            )
            del by_ref[entry.subject_ref]
            erased += int(result.erased)
        else:
            consents.withdraw_consent(
                db,
                customer_id=customer_id,
                subject_ref=entry.subject_ref,
                purposes=(entry.purpose,),  # type: ignore[arg-type]
                channel=RESTORE_CHANNEL,
                app_version=None,
                now=now,
                store_id=store_id,
            )
            withdrawn += 1
    return Reapplied(erased, withdrawn)
