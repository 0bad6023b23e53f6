"""A customer leaving takes every card of theirs off this server's boards.

In chain mode another store's server can withdraw a consent: it retracts the customer's cards
in the shared database, and this server's consent feed then forgets the customer and takes
their cards off its boards. If the customer's visit ends here while that `forget` is under way,
the visit's end retracts nothing more in the database (the cards are retracted already): it
must still take the cards off the boards, or the withdrawal's `forget` finds nothing left to
take off and the card stays on the staff tablets (bench/faults/chain_outage.py caught it).
"""

from __future__ import annotations

from typing import Any

from store_server.presence import PresenceEvent
from store_server.storage import visits
from tests.server.chain_helpers import check_in
from tests.server.conftest import Harness
from tests.support import wait_until

# A bound on waiting for the check-in's card, for a hang only.
CARD_WAIT_S = 10.0


async def test_leaving_takes_off_cards_already_retracted_elsewhere(server: Harness) -> None:
    service = server.service
    coordinator = service.coordinator
    token = await server.enroll()
    assert (await server.grant(token, "greeting")).status == 201
    customer_id = await service.customers.customer_for_token(token)
    await check_in(server, token)

    async def shown() -> set[str]:
        return set(coordinator.shown.get(customer_id, set()))

    cards = await wait_until(shown, CARD_WAIT_S, "the check-in's card on the board")
    # Another server's withdrawal: the cards retracted in the shared database only.
    now = coordinator.clock()
    assert set(await service.db.write(lambda db: visits.retract_cards_of(db, customer_id, now)))
    published: list[dict[str, Any]] = []
    publish = service.hub.publish

    def record(message: dict[str, Any]) -> None:
        published.append(message)
        publish(message)

    service.hub.publish = record  # type: ignore[method-assign]
    await service.board.handle_events([PresenceEvent("left", customer_id, None, now, ())])
    retracted = {m["id"] for m in published if m["type"] == "retract"}
    assert cards <= retracted
    assert customer_id not in coordinator.shown
