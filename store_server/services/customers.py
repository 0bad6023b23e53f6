"""Customers: enrollment and re-enrollment, consents (grant, withdraw), check-in, their
preferences, wishlist and messages, "my data" and erasure.

Every change is committed first; then the coordinator updates what the server holds in
memory (`Coordinator.admit` on a grant, `Coordinator.forget` when the last consent goes or
the customer is erased).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from store_server import eid
from store_server.checkin_proof import (
    MAX_SIGHTING_AHEAD_S,
    ProofRejected,
    Sighting,
    beacon_settings,
    check_proof,
    proof_events,
)
from store_server.consent import (
    DEFAULT_CONSENT_DURATION_S,
    PURPOSES,
    ChainedEntry,
    ConsentText,
    Purpose,
    Scope,
    checkpoint_key,
    sign_checkpoint,
    verify_checkpoints,
)
from store_server.errors import (
    AuthenticationError,
    ForbiddenError,
    NotFoundError,
    ProofRefusedError,
    RateLimitedError,
    ValidationError,
)
from store_server.identity_load import identity_aad
from store_server.keyseal import ChainKeys, seal, temporary_key_aad
from store_server.keywrap import wrap_key
from store_server.services.board import Board
from store_server.services.coordinator import Coordinator
from store_server.static_ids import new_ibeacon_id
from store_server.storage import consents, customers, visits
from store_server.storage.keys import TemporaryKeyRow
from store_server.tempkeys import (
    KEY_HORIZON_S,
    TemporaryKey,
    TemporaryKeyRecord,
    compute_temporary_keys,
    slots_needed,
)

logger = logging.getLogger(__name__)

# One check-in per customer every 10 s: a tap is a deliberate act, a burst is a bug or abuse.
CHECK_IN_MIN_INTERVAL_S = 10.0


class Customers:
    """What the customer app and the customer pages do."""

    def __init__(
        self, coordinator: Coordinator, board: Board, consent_texts: Iterable[ConsentText]
    ) -> None:
        self._c = coordinator
        self._board = board
        self.config = coordinator.config
        self.db = coordinator.db
        self.clock = coordinator.clock
        self.store_id = coordinator.store_id
        self._consent_texts = tuple(consent_texts)
        self._checkpoint_key = checkpoint_key(coordinator.master_key)
        self._skew = coordinator.config.skew_windows
        self._checkpointed_seq: int | None = None
        self.beacon = beacon_settings(self.config)
        self._box_zones = {box.id: box.zone for box in coordinator.floor.scanners}

    async def prepare(self) -> None:
        """Record the consent texts of this release (the ones already there stay)."""
        await self.db.write(lambda db: consents.ensure_consent_texts(db, self._consent_texts))

    def subject_ref(self, customer_id: str) -> str:
        return self._c.subject_ref(customer_id)

    async def checkpoint_consent_log(self, now: float) -> None:
        """Sign the consent log's head when it has moved since the last checkpoint (within a
        tick of every grant, withdrawal or erasure, and at stop): `consent-log verify` then
        detects a rewritten or deleted entry even where the hashes were recomputed."""
        head = await self.db.read(consents.consent_log_head)
        if head is None or head[0] == self._checkpointed_seq:
            return
        point = sign_checkpoint(self._checkpoint_key, head[0], head[1], now)
        await self.db.write(lambda db: consents.add_checkpoint(db, point))
        self._checkpointed_seq = head[0]
        # The head's hash outside the database: an anchor against rolling the file back.
        logger.info("consent log checkpoint: entry %s, head %s", head[0], head[1][:16])

    async def forget_unconsented(self, enrolled_before: float) -> None:
        """Delete the enrollments made before `enrolled_before` that never gave any consent."""
        candidates = await self.db.read(
            lambda db: customers.unconsented_before(db, enrolled_before)
        )
        if not candidates:
            return
        logged = await self.db.read(consents.logged_subjects)
        # Whoever consented once (and withdrew since) keeps their enrollment and its history.
        doomed = [c for c in candidates if self.subject_ref(c) not in logged]
        if not doomed:
            return
        forgotten = await self.db.write(lambda db: customers.forget_enrollments(db, doomed))
        for customer_id in doomed:
            await self._c.forget(customer_id, "unconsented")
        logger.info("forgot %s enrollments that never gave any consent", forgotten)

    async def enroll(self, app_counter: int | None, language: str) -> dict[str, Any]:
        now = self.clock()
        key = eid.new_identity_key()
        k = self.config.rotation_exponent
        counter = app_counter if app_counter is not None else int(now) % eid.COUNTER_MODULUS
        offset = eid.clock_offset(counter, now)
        chain = self._c.chain
        if chain is None:
            created = await self.db.write(
                lambda db: customers.create_customer(
                    db,
                    key_wrapped_for=lambda cid: wrap_key(
                        self._c.master_key, key, identity_aad(cid)
                    ),
                    k=k,
                    clock_offset_s=offset,
                    language=language,
                    now=now,
                )
            )
        else:
            # Chain mode: the key is sealed to the key authority and dropped; only its
            # temporary keys for now and the next period stay here (docs/privacy.md).
            def temporary_keys_for(cid: str) -> list[TemporaryKeyRow]:
                return temporary_key_rows(chain, cid, key, k, offset, now, self._skew)

            created = await self.db.write(
                lambda db: customers.create_customer(
                    db,
                    key_wrapped_for=lambda cid: seal(chain.public_key, key, identity_aad(cid)),
                    k=k,
                    clock_offset_s=offset,
                    language=language,
                    now=now,
                    wrap="sealed",
                    temporary_keys_for=temporary_keys_for,
                )
            )
        return {
            "customer_id": created.customer_id,
            "token": created.token,
            "identity_key": key.hex(),
            "rotation_exponent": k,
            "beacon_time": eid.beacon_time(now, offset),
        }

    async def rotate_identity(self, customer_id: str, app_counter: int | None) -> dict[str, Any]:
        """Re-enrollment: a new identity key; the old EIDs stop resolving at once.

        The key is committed first, then the resolver is re-keyed (if the customer is in it)
        and long-polling scanners are woken with a delta removing the old EIDs.
        """
        now = self.clock()
        key = eid.new_identity_key()
        k = self.config.rotation_exponent
        counter = app_counter if app_counter is not None else int(now) % eid.COUNTER_MODULUS
        offset = eid.clock_offset(counter, now)
        chain = self._c.chain
        if chain is None:
            wrapped = wrap_key(self._c.master_key, key, identity_aad(customer_id))
            await self.db.write(
                lambda db: customers.rotate_identity(
                    db, customer_id, key_wrapped=wrapped, k=k, clock_offset_s=offset, now=now
                )
            )
            await self._c.rekey(eid.IdentityRecord(customer_id, key, k, offset))
        else:
            sealed = seal(chain.public_key, key, identity_aad(customer_id))
            rows = temporary_key_rows(chain, customer_id, key, k, offset, now, self._skew)
            await self.db.write(
                lambda db: customers.rotate_identity(
                    db,
                    customer_id,
                    key_wrapped=sealed,
                    k=k,
                    clock_offset_s=offset,
                    now=now,
                    wrap="sealed",
                    temporary_keys=rows,
                )
            )
            await self._c.rekey(
                TemporaryKeyRecord(
                    customer_id,
                    k,
                    offset,
                    tuple(
                        TemporaryKey(slot, tk, not_after)
                        for slot, tk, not_after in temporary_keys_in_clear(
                            key, k, offset, now, self._skew
                        )
                    ),
                )
            )
        return {
            "identity_key": key.hex(),
            "rotation_exponent": k,
            "beacon_time": eid.beacon_time(now, offset),
        }

    async def set_legacy_ibeacon(self, customer_id: str, enabled: bool) -> None:
        """Turn the customer's static iBeacon id on (assigning one now) or off (forgetting it).

        Refused when the store does not offer legacy ids (setting ``legacy_ibeacon``).
        """
        if enabled and not self.config.legacy_ibeacon:
            raise ForbiddenError(
                "this store does not offer static iBeacon ids", code="legacy_ibeacon_disabled"
            )
        exists, current = await self.db.read(lambda db: customers.ibeacon_id_of(db, customer_id))
        if not exists:
            raise NotFoundError("unknown customer")
        if enabled and current is not None:
            return  # already on: keep the id the app broadcasts
        new_id = new_ibeacon_id() if enabled else None
        await self.db.write(lambda db: customers.set_legacy_ibeacon(db, customer_id, new_id))
        if await self._c.sync_static([customer_id]):
            await self._c.notify_allowlist()

    async def customer_for_token(self, token: str) -> str:
        customer_id = await self.db.read(lambda db: customers.customer_by_token(db, token))
        if customer_id is None:
            raise AuthenticationError("unknown or revoked app token")
        return customer_id

    # -- consents ------------------------------------------------------------------------

    async def consent_texts(self) -> list[dict[str, Any]]:
        """The current consent texts, French and English, with their hash."""
        return await self.db.read(consents.current_consent_texts)

    async def grant(
        self,
        customer_id: str,
        purpose: Purpose,
        text_hash: str,
        scope: Scope,
        channel: str,
        app_version: str | None,
    ) -> dict[str, Any]:
        now = self.clock()
        # A withdrawal committed while this grant commits is not undone by its admission.
        with self._c.forgets_watched() as forgotten:
            consent = await self.db.write(
                lambda db: consents.grant_consent(
                    db,
                    customer_id=customer_id,
                    subject_ref=self.subject_ref(customer_id),
                    purpose=purpose,
                    text_hash=text_hash,
                    scope=scope,
                    channel=channel,
                    app_version=app_version,
                    now=now,
                    duration_s=DEFAULT_CONSENT_DURATION_S,
                    store_id=self.store_id,
                )
            )
            self._c.note_grant(consent.expires_at)
            await self._c.admit(customer_id, now, forgotten)
        return {
            "purpose": consent.purpose,
            "scope": consent.scope,
            "granted_at": consent.granted_at,
            "expires_at": consent.expires_at,
            "text_hash": consent.text_hash,
        }

    async def withdraw(
        self, customer_id: str, purposes: Iterable[Purpose], channel: str, app_version: str | None
    ) -> dict[str, Any]:
        now = self.clock()
        wanted = tuple(p for p in PURPOSES if p in set(purposes))
        result = await self.db.write(
            lambda db: consents.withdraw_consent(
                db,
                customer_id=customer_id,
                subject_ref=self.subject_ref(customer_id),
                purposes=wanted,
                channel=channel,
                app_version=app_version,
                now=now,
                store_id=self.store_id,
            )
        )
        if result.remaining:
            self._c.publish_retractions(result.retracted_cards, "withdrawn")
        else:
            await self._c.forget(customer_id, "withdrawn", result.retracted_cards)
        return {"withdrawn": list(wanted), "remaining": sorted(result.remaining)}

    async def verify_checkpoints(self, entries: list[ChainedEntry]) -> None:
        """ConsentLogError if an entry no longer matches its signed checkpoint."""
        points = await self.db.read(consents.checkpoints)
        verify_checkpoints(entries, points, self._checkpoint_key)

    async def consent_log(self) -> list[ChainedEntry]:
        """The whole consent log (pseudonymous), oldest first."""
        return await self.db.read(consents.consent_log_rows)

    # -- presence, preferences, data ---------------------------------------------------

    def expire_check_ins(self, now: float) -> None:
        """Drop the check-in times that no longer limit anything (each names a customer)."""
        last = self._c.check_ins
        for stale in [c for c, t in last.items() if now - t >= CHECK_IN_MIN_INTERVAL_S]:
            del last[stale]

    async def check_in(self, customer_id: str, zone: str | None) -> dict[str, Any]:
        """A check-in ("I'm here") from the app: an arrival without a beacon (consenting only).

        RateLimitedError for a second check-in within CHECK_IN_MIN_INTERVAL_S.
        """
        now = self.clock()
        last = self._c.check_ins
        if now - last.get(customer_id, float("-inf")) < CHECK_IN_MIN_INTERVAL_S:
            raise RateLimitedError("one check-in every 10 seconds")
        last[customer_id] = now
        if customer_id not in self._c.resolver:
            return {"checked_in": False, "reason": "no_consent"}
        await self._board.check_in(customer_id, zone, now)
        return {"checked_in": True}

    async def check_in_with_proof(
        self, customer_id: str, sightings: list[Sighting]
    ) -> dict[str, Any]:
        """A proof-of-presence check-in: the store beacons the app ranged (consenting only).

        ProofRefusedError (403, a named code) when no sighting is a minor a box of this store
        broadcast in the current or previous slot: nothing about the customer is recorded or
        logged. A valid proof feeds the presence engine (``checkin_proof.proof_events``); the
        answer says whether the customer is now checked in, or ``not_inside`` yet (the app
        ranges on and posts again).
        """
        if self.beacon is None:
            raise ProofRefusedError(
                "this store's boxes broadcast no store beacon", code="beacon_proof_off"
            )
        now = self.clock()
        if any(s.seen_at - now > MAX_SIGHTING_AHEAD_S for s in sightings):
            raise ValidationError("seen_at is ahead of the store's clock", field="seen_at")
        result = check_proof(self.beacon, self._box_zones, sightings, now)
        if isinstance(result, ProofRejected):
            # Counted without any identifier: a burst of one code is a forger or a bad clock.
            logger.info("proof check-in refused: %s", result.code)
            raise ProofRefusedError(result.message, code=result.code)
        if customer_id not in self._c.resolver:
            return {"checked_in": False, "reason": "no_consent"}
        events = proof_events(self._c.engine, customer_id, result, now)
        await self._board.proof_check_in(customer_id, events, now)
        zone = self._c.engine.zone_of(customer_id)
        if zone is None:
            return {"checked_in": False, "reason": "not_inside"}
        return {"checked_in": True, "via": "beacon_proof", "zone": zone}

    async def preferences(self, customer_id: str) -> dict[str, Any] | None:
        """The customer's preferences, pickup code and legacy iBeacon setting."""
        return await self.db.read(lambda db: customers.preferences_row(db, customer_id))

    async def set_preferences(self, customer_id: str, values: dict[str, Any]) -> None:
        await self.db.write(lambda db: customers.set_preferences(db, customer_id, values))

    async def set_wishlist(self, customer_id: str, skus: list[str]) -> None:
        now = self.clock()
        await self.db.write(lambda db: customers.set_wishlist(db, customer_id, skus, now))

    async def messages(self, customer_id: str) -> list[dict[str, Any]]:
        """The customer's app messages, newest first."""
        store_id = self.store_id
        return await self.db.read(lambda db: visits.messages_of(db, customer_id, store_id))

    async def my_data(self, customer_id: str) -> dict[str, Any]:
        """Every record held about the customer, with their consent history (pseudonymous log)."""
        now = self.clock()
        subject = self.subject_ref(customer_id)
        data = await self.db.read(lambda db: customers.customer_data(db, customer_id, subject, now))
        if data is None:
            raise NotFoundError("no such customer")
        return {"generated_at": now, "store_id": self.store_id, **data}

    async def consents_here(self, customer_id: str) -> list[dict[str, Any]]:
        """The customer's consents that count at this store: chain-wide ones, and those given
        here (a store-scoped consent given at another store of the chain is not one here)."""
        data = await self.my_data(customer_id)
        return [
            c
            for c in data["consents"]
            if c["scope"] == "chain" or c["store_id"] in (None, self.store_id)
        ]

    async def erase(
        self, customer_id: str, channel: str = "app", app_version: str | None = None
    ) -> dict[str, Any]:
        """Erase the customer: their rows and keys go; the consent proof stays pseudonymous."""
        now = self.clock()
        result = await self.db.write(
            lambda db: customers.erase_customer(
                db,
                customer_id=customer_id,
                subject_ref=self.subject_ref(customer_id),
                channel=channel,
                app_version=app_version,
                now=now,
            )
        )
        await self._c.forget(customer_id, "erased", result.retracted_cards)
        return {"erased": result.erased}


def temporary_keys_in_clear(
    identity_key: bytes, k: int, offset: float, now: float, skew: int
) -> list[tuple[int, bytes, float]]:
    """(slot, temporary key, not after) of a new identity, from now to KEY_HORIZON_S ahead."""
    slots = slots_needed(now, k, offset, skew, KEY_HORIZON_S)
    return [
        (tk.slot, tk.key, tk.not_after)
        for tk in compute_temporary_keys(identity_key, k, offset, slots, skew)
    ]


def temporary_key_rows(
    chain: ChainKeys,
    customer_id: str,
    identity_key: bytes,
    k: int,
    offset: float,
    now: float,
    skew: int,
) -> list[TemporaryKeyRow]:
    """A new identity's temporary keys, wrapped for storage (chain mode's enrollment)."""
    return [
        TemporaryKeyRow(
            customer_id,
            slot,
            wrap_key(chain.tk_key, tk, temporary_key_aad(customer_id, slot)),
            k,
            offset,
            not_after,
        )
        for slot, tk, not_after in temporary_keys_in_clear(identity_key, k, offset, now, skew)
    ]
