"""The presence engine's decisions from a subject's belief: arrived, zone changed, left (pure).

:mod:`presence` runs the filter and keeps each subject's :class:`Subject`; after each update it
asks :func:`decide` what the new belief (the share inside the shop, and each zone's share of it)
means, under the :class:`PresenceSettings` rules: *arrived* once the inside belief reaches
``arrive_p`` (held ``arrive_hold_s``) if the belief saw the phone walk within
``arrive_walked_within_s`` (else once held ``arrive_standing_s``), *left* once it stays under
``left_p`` for ``left_hold_s``, and the shown zone changes only when another zone holds
``zone_switch_margin`` more of the inside belief than the shown zone
(``zone_switch_margin_standing`` when the belief says the customer is standing), for
``zone_hold_s``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from store_server.presence_types import EventKind, PresenceSettings

__all__ = ["Subject", "decide"]

# A belief with at least this share in its walking layers is a walker's (else standing).
WALKING_P = 0.5


@dataclass(slots=True)
class Subject:
    """What the engine decided about one subject so far (its belief is in the table's row
    ``slot``)."""

    slot: int
    arrived: bool = False
    zone: str | None = None
    challenger: str | None = None
    challenger_since: float = 0.0
    p_inside: float = 0.0
    p_zone: float = 0.0
    p_walking: float = 0.0  # the belief's share in its walking layers
    inside_since: float = math.nan
    walked_t: float = -math.inf  # the latest update whose belief said "walking" enough


def decide(
    state: Subject,
    inside: float,
    zones: npt.NDArray[np.float32],
    now: float,
    out_since: float,
    checked_in: float,
    settings: PresenceSettings,
    zone_ids: tuple[str, ...],
) -> tuple[EventKind | None, float]:
    """The event the belief makes at ``now`` (None: none), updating ``state``, and since when
    the belief says "out" (NaN: it does not). ``inside`` is the belief that the subject is in
    the shop, ``zones`` each zone's share of it (``zone_ids`` order); ``checked_in`` the time of
    the latest check-in."""
    leader = int(np.argmax(zones))
    if not state.arrived:
        if state.p_walking >= settings.arrive_walked_p:
            state.walked_t = now
        if inside < settings.arrive_p:
            state.inside_since = math.nan
            return None, out_since
        if math.isnan(state.inside_since):
            state.inside_since = now
        held = now - state.inside_since
        if held < settings.arrive_hold_s:
            return None, out_since
        if (
            now - state.walked_t > settings.arrive_walked_within_s
            and held < settings.arrive_standing_s
        ):
            return None, out_since
        state.arrived = True
        state.zone = zone_ids[leader]
        state.p_zone = float(zones[leader])
        state.challenger = None
        return "arrived", math.nan
    if inside < settings.left_p and now - checked_in >= settings.check_in_trust_s:
        if math.isnan(out_since):
            out_since = now
        if now - out_since >= settings.left_hold_s:
            return "left", out_since
        return None, out_since
    current = zone_ids.index(state.zone) if state.zone in zone_ids else -1
    state.p_zone = float(zones[current]) if current >= 0 else 0.0
    if state.p_walking >= WALKING_P:
        margin = settings.zone_switch_margin
    else:
        margin = settings.zone_switch_margin_standing
    if leader == current or zones[leader] - state.p_zone < margin:
        state.challenger = None
        return None, math.nan
    challenger = zone_ids[leader]
    if state.challenger != challenger:
        state.challenger, state.challenger_since = challenger, now
    if now - state.challenger_since < settings.zone_hold_s:
        return None, math.nan
    state.zone, state.challenger = challenger, None
    state.p_zone = float(zones[leader])
    return "zone_changed", math.nan
