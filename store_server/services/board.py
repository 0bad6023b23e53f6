"""The board: presence events become decisions and typed cards on the staff boards, with
the access log of every card a staff member was shown.

A card is inserted in the same transaction that re-reads the customer's consent
(``storage.visits.record_trigger``), so a withdrawal that committed before can never be
followed by a card; one that commits after retracts it.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from dataclasses import replace
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from store_server.errors import NotFoundError
from store_server.floor_map import zone_counts
from store_server.policy import Decision, Trigger, TriggerKind, VisitState, decide
from store_server.presence import PresenceEvent
from store_server.presence_types import Via
from store_server.services.coordinator import Coordinator, Visit
from store_server.storage import customers, visits

# What staff can do with a card: greet the customer, bring the item, or dismiss it.
CARD_ACTIONS = ("greeted", "brought", "dismissed")


class Board:
    """Decisions, cards and the staff boards' view of them."""

    def __init__(self, coordinator: Coordinator, timezone: str | None = None) -> None:
        self._c = coordinator
        self.hub = coordinator.hub
        self.db = coordinator.db
        self.clock = coordinator.clock
        self.store_id = coordinator.store_id
        self._tz = ZoneInfo(timezone) if timezone else None

    @property
    def timezone_name(self) -> str | None:
        """The store's IANA time zone name, if the store file sets one."""
        return self._tz.key if self._tz is not None else None

    # -- presence events -----------------------------------------------------------------

    async def handle_events(self, events: list[PresenceEvent]) -> None:
        for event in events:
            if event.kind == "arrived":
                # An arrival told by the app (tapped or proven) is a check-in for the policy.
                kind: TriggerKind = "arrived" if event.via == "beacon" else "check_in"
                await self._on_trigger(
                    event.subject, Trigger(kind, event.t, event.zone), via=event.via
                )
            elif event.kind == "zone_changed":
                visit = self._c.visits.get(event.subject)
                if visit is not None:
                    visit.zone = event.zone
                    await self._publish_zone(event.subject, event.zone)
            elif event.kind == "left":
                await self._on_left(event.subject, event.t)

    async def check_in(self, customer_id: str, zone: str | None, now: float) -> None:
        """An "I'm here" tapped in the app: the engine learns the arrival, and a visit not
        checked in yet is decided on again (a card that needed a check-in may now show)."""
        await self.handle_events(self._c.engine.check_in(customer_id, now, zone))
        if zone is not None:
            # A check-in located at a zone: the phone's next windows calibrate the boxes.
            self._c.calibration.check_in(customer_id, zone, now)
        await self._checked_in(customer_id, zone, now, "check_in")

    async def proof_check_in(
        self, customer_id: str, events: list[PresenceEvent], now: float
    ) -> None:
        """The engine's events after a proof-of-presence check-in (``checkin_proof``); once the
        customer is present, the visit counts as checked in."""
        await self.handle_events(events)
        if self._c.engine.zone_of(customer_id) is not None:
            await self._checked_in(customer_id, None, now, "beacon_proof")

    async def _checked_in(self, customer_id: str, zone: str | None, now: float, via: Via) -> None:
        visit = self._c.visits.get(customer_id)
        if visit is not None and not visit.state.checked_in:
            await self._on_trigger(
                customer_id, Trigger("check_in", now, zone or visit.zone), via=via
            )

    def zone_counts(self) -> dict[str, int]:
        """How many consenting customers are present in each zone (open visits; no one named)."""
        return zone_counts(
            (visit.zone for visit in self._c.visits.values()),
            (zone.id for zone in self._c.floor.zones),
        )

    def _local(self, now: float) -> datetime:
        return datetime.fromtimestamp(now, self._tz)

    async def _on_trigger(self, customer_id: str, trigger: Trigger, *, via: str) -> None:
        if not self._c.consent_fresh():
            return  # fail closed: no new card from a view of consents that may be out of date
        now = self.clock()
        local = self._local(now)
        visit = self._c.visits.get(customer_id)
        state = (
            visit.state
            if visit is not None
            else VisitState(last_greeted_at=self._c.last_greeted.get(customer_id))
        )
        zone = trigger.zone

        store_id = self.store_id
        recorded = await self.db.write(
            lambda db: visits.record_trigger(
                db,
                customer_id=customer_id,
                store_id=store_id,
                read_snapshot=lambda db: customers.snapshot(db, customer_id, store_id, now),
                decide=lambda snap, greeted: decide(
                    trigger, snap, _with_last_greeting(state, greeted), local=local, now=now
                ),
                make_cards=lambda decision: self._cards_for(decision, zone, now),
                visit_id=visit.visit_id if visit is not None else None,
                zone=zone,
                via=via,
                now=now,
            )
        )
        if recorded is None:
            return  # gone, or no consent: nothing was recorded
        if customer_id not in self._c.resolver:
            # Forgotten (withdrawn, erased, expired) while this was being committed: that
            # later transaction retracted these cards, and nothing of the customer is kept.
            return
        decision, cards = recorded.decision, recorded.cards
        new_state = VisitState(
            greeted=state.greeted or decision.greeting is not None,
            stock_shown=state.stock_shown or decision.stock is not None,
            last_greeted_at=now if decision.greeting is not None else state.last_greeted_at,
            checked_in=state.checked_in
            or trigger.kind == "check_in"
            or via in ("check_in", "beacon_proof"),
        )
        if decision.greeting is not None:
            self._c.last_greeted[customer_id] = now
        self._c.visits[customer_id] = Visit(recorded.visit_id, zone, new_state)
        self._c.note_shown(customer_id, [card["id"] for card in cards])
        for card in cards:
            self.hub.publish({"type": "card", "card": card})
        await self._log_access([(customer_id, card["id"]) for card in cards])

    def _cards_for(self, decision: Decision, zone: str | None, now: float) -> list[dict[str, Any]]:
        zone_names = self._zone_names(zone)
        cards: list[dict[str, Any]] = []
        if decision.greeting is not None:
            cards.append(
                {
                    "id": "k_" + secrets.token_hex(8),
                    "kind": "greeting",
                    "text": decision.greeting.text,
                    "language": decision.greeting.language,
                    "named": decision.greeting.named,
                    "zone": zone,
                    "zone_name": zone_names,
                    "arrived_at": now,
                }
            )
        if decision.stock is not None:
            cards.append(
                {
                    "id": "k_" + secrets.token_hex(8),
                    "kind": "stock",
                    "pickup_code": decision.stock.pickup_code,
                    "name": decision.stock.name,
                    "language": decision.stock.language,
                    "zone": zone,
                    "zone_name": zone_names,
                    "arrived_at": now,
                    "items": [
                        {
                            "sku": i.sku,
                            "name": {"fr": i.name_fr, "en": i.name_en},
                            "count": i.count,
                            "aisle": i.aisle,
                        }
                        for i in decision.stock.items
                    ],
                }
            )
        return cards

    def _zone_names(self, zone: str | None) -> dict[str, str] | None:
        if zone is None:
            return None
        try:
            z = self._c.floor.zone(zone)
        except Exception:
            return None
        return {"fr": z.name_fr, "en": z.name_en}

    async def _publish_zone(self, customer_id: str, zone: str | None) -> None:
        store_id = self.store_id
        ids = await self.db.read(lambda db: visits.open_card_ids(db, customer_id, store_id))
        for card_id in ids:
            self.hub.publish(
                {"type": "zone", "id": card_id, "zone": zone, "zone_name": self._zone_names(zone)}
            )

    async def _on_left(self, customer_id: str, t: float) -> None:
        visit = self._c.visits.pop(customer_id, None)
        now = self.clock()

        visit_id = visit.visit_id if visit is not None else None
        store_id = self.store_id
        retracted = await self.db.write(
            lambda db: visits.end_visit(db, visit_id, customer_id, t, now, store_id)
        )
        # Every card of the customer shown here goes, not only those this visit's end retracted:
        # another server's withdrawal may have retracted some in the database already, and once
        # `shown` is emptied here, that withdrawal's `forget` finds nothing to take off.
        shown = self._c.shown.pop(customer_id, set())
        self._c.publish_retractions([*retracted, *sorted(shown.difference(retracted))], "left")

    async def _log_access(
        self, shown: list[tuple[str, str]], users: Iterable[str] | None = None
    ) -> None:
        usernames = sorted(set(users if users is not None else self.hub.usernames()))
        if not shown or not usernames:
            return
        now, store_id = self.clock(), self.store_id
        await self.db.write(lambda db: visits.log_cards_shown(db, shown, usernames, now, store_id))

    # -- boards and audit -----------------------------------------------------------------

    async def snapshot(self, username: str) -> dict[str, Any]:
        """The open cards for a board that (re)connects; logged as shown to `username`."""
        store_id = self.store_id
        cards = await self.db.read(lambda db: visits.open_cards(db, store_id))
        for card, customer, _ in cards:
            self._c.note_shown(customer, [card])
        await self._log_access([(customer, card) for card, customer, _ in cards], users=[username])
        return {"type": "snapshot", "cards": [payload for _, _, payload in cards]}

    async def close_card(self, card_id: str, username: str, action: str) -> None:
        if action not in CARD_ACTIONS:
            raise NotFoundError(f"unknown action {action!r}")
        now, store_id = self.clock(), self.store_id
        closed = await self.db.write(
            lambda db: visits.close_card(db, card_id, username, action, now, store_id)
        )
        if closed is not None:
            self.hub.publish({"type": "closed", "id": card_id, "action": action, "by": username})

    async def access_log(self, viewer: str, limit: int) -> list[dict[str, Any]]:
        """The newest `limit` access log entries, each with the customer's pseudonymous
        reference instead of their id; the view itself is logged for every customer shown."""
        store_id = self.store_id
        entries = await self.db.read(lambda db: visits.access_log_rows(db, limit, store_id))
        now = self.clock()
        shown = [str(e["customer_id"]) for e in entries]
        await self.db.write(
            lambda db: visits.log_views(db, viewer, shown, "audit_view", now, store_id)
        )
        for entry in entries:
            entry["subject"] = self._c.subject_ref(str(entry.pop("customer_id")))
        return entries

    async def purge(self, now: float) -> int:
        """Delete what is older than the retention period (visits, decisions, closed cards,
        messages); the number of visits deleted."""
        cutoff, store_id = now - self._c.config.retention_s, self.store_id
        return await self.db.write(lambda db: visits.purge(db, cutoff, store_id))


def _with_last_greeting(state: VisitState, greeted_at: float | None) -> VisitState:
    """The visit's state with the last greeting at this store by any of its servers (two
    servers of one store share the cooldown through the database, not their memories)."""
    if greeted_at is None or (state.last_greeted_at or float("-inf")) >= greeted_at:
        return state
    return replace(state, last_greeted_at=greeted_at)
