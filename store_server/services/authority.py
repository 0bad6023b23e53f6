"""The key authority of a chain: the only holder of the customers' identity keys.

One run (`KeyAuthority.run`, every ``chain_keys_interval_s`` on the server with
``key_authority = true``, or ``store-server chain-keys run`` at headquarters):

1. reads the identities of the customers with an active consent at any store, with the
   temporary-key slots already stored (a reader thread);
2. for each customer missing a slot from now to ``tempkeys.KEY_HORIZON_S`` ahead, or whose key
   is still sealed (enrolled through a store server) or wrapped under the master key (a
   single shop that joined the chain), opens the identity key, computes the missing
   temporary keys and wraps them for the store servers; a sealed or master-wrapped key is
   re-wrapped under the authority's own key (a worker thread: :func:`plan_run`, no I/O);
3. writes all of it in one transaction, and deletes the temporary keys out of use or of
   customers who no longer consent anywhere (the writer thread).

Identity keys of customers without any consent are never opened.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric import rsa

from store_server.identity_load import identity_aad
from store_server.keyseal import authority_wrap_key, temporary_key_aad, unseal
from store_server.keywrap import KeyUnwrapper, KeyWrapError, wrap_key
from store_server.storage import keys
from store_server.storage.database import Database
from store_server.tempkeys import KEY_HORIZON_S, compute_temporary_keys, slots_needed

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class AuthorityPlan:
    """What one run writes: adopted identities (customer, old blob, new blob), new temporary
    keys, and how many identities could not be opened."""

    adopted: list[tuple[str, bytes, bytes]] = field(default_factory=list)
    temporary_keys: list[keys.TemporaryKeyRow] = field(default_factory=list)
    unreadable: int = 0
    opened: int = 0


@dataclass(frozen=True, slots=True)
class AuthorityRun:
    """The figures of one run (logged; the command prints them)."""

    consenting: int
    opened: int
    adopted: int
    keys_written: int
    unreadable: int


def plan_run(
    identities: Iterable[keys.AuthorityIdentity],
    *,
    private_key: rsa.RSAPrivateKey,
    master_key: bytes,
    tk_key: bytes,
    now: float,
    skew: int,
) -> AuthorityPlan:
    """The run's work for these identities at ``now`` (crypto only, no I/O)."""
    plan = AuthorityPlan()
    own = authority_wrap_key(private_key)
    open_own = KeyUnwrapper(own)
    open_master = KeyUnwrapper(master_key)
    for identity in identities:
        needed = slots_needed(now, identity.k, identity.clock_offset_s, skew, KEY_HORIZON_S)
        missing = [slot for slot in needed if slot not in identity.slots]
        if not missing and identity.wrap == "authority":
            continue  # nothing to do: the key stays closed
        subject = identity_aad(identity.customer_id)
        try:
            if identity.wrap == "sealed":
                key = unseal(private_key, identity.key_wrapped, subject)
            elif identity.wrap == "master":
                key = open_master(identity.key_wrapped, subject)
            else:
                key = open_own(identity.key_wrapped, subject)
        except KeyWrapError:
            plan.unreadable += 1
            continue
        plan.opened += 1
        if identity.wrap != "authority":
            plan.adopted.append(
                (identity.customer_id, identity.key_wrapped, wrap_key(own, key, subject))
            )
        for tk in compute_temporary_keys(key, identity.k, identity.clock_offset_s, missing, skew):
            plan.temporary_keys.append(
                keys.TemporaryKeyRow(
                    identity.customer_id,
                    tk.slot,
                    wrap_key(tk_key, tk.key, temporary_key_aad(identity.customer_id, tk.slot)),
                    identity.k,
                    identity.clock_offset_s,
                    tk.not_after,
                )
            )
    return plan


class KeyAuthority:
    """Runs of the key authority against one database."""

    def __init__(
        self,
        db: Database,
        *,
        private_key: rsa.RSAPrivateKey,
        master_key: bytes,
        tk_key: bytes,
        skew: int,
    ) -> None:
        self._db = db
        self._private_key = private_key
        self._master_key = master_key
        self._tk_key = tk_key
        self._skew = skew

    def _plan(self, identities: list[keys.AuthorityIdentity], now: float) -> AuthorityPlan:
        return plan_run(
            identities,
            private_key=self._private_key,
            master_key=self._master_key,
            tk_key=self._tk_key,
            now=now,
            skew=self._skew,
        )

    async def run(self, now: float) -> AuthorityRun:
        """One run in the server (reads, crypto and the write each off the event loop)."""
        identities = await self._db.read(lambda db: keys.identities_for_authority(db, now))
        plan = await asyncio.to_thread(self._plan, identities, now)
        adopted, written = await self._db.write(
            lambda db: keys.record_authority_run(db, plan.adopted, plan.temporary_keys, now)
        )
        return self._report(len(identities), plan, adopted, written)

    def run_sync(self, now: float) -> AuthorityRun:
        """One run outside the event loop (the ``chain-keys run`` command)."""
        identities = self._db.read_sync(lambda db: keys.identities_for_authority(db, now))
        plan = self._plan(identities, now)
        adopted, written = self._db.write_sync(
            lambda db: keys.record_authority_run(db, plan.adopted, plan.temporary_keys, now)
        )
        return self._report(len(identities), plan, adopted, written)

    @staticmethod
    def _report(consenting: int, plan: AuthorityPlan, adopted: int, written: int) -> AuthorityRun:
        run = AuthorityRun(consenting, plan.opened, adopted, written, plan.unreadable)
        if plan.unreadable:
            logger.error(
                "key authority: %d identity keys could not be opened (tampered rows, or"
                " another authority's key)",
                plan.unreadable,
            )
        if written or adopted:
            logger.info(
                "key authority: %d temporary keys written, %d identities adopted",
                written,
                adopted,
            )
        return run
