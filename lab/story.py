"""The demo's story as a schedule of rounds (pure).

The demo plays the customers of seeds/customers.toml along the floor's walks. One playing is a
*round*: new visitors (fresh enrollments, so no greeting cool-down or earlier visit gets in
the way) walk in at the round's start. A new round starts every `ROUND_S`, before the last
visitor of the previous one has left, so that a board opened at any moment sees a card soon.
A round ends `ROUND_LIFETIME_S` after its start: its phones stop and its customers are erased.

Story time counts seconds from the start of round 0; a demo may start at any story time (the
tests start one "late", the moment the board would be emptiest).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from store_server.floor import Floor, Walk, walk_position

# A new round every 3 minutes: the demo walks last 126-190 s, so the next visitors arrive
# while the last ones of the previous round are still inside.
ROUND_S = 180.0
# A round's phones walk for 4 minutes: the longest walk (190 s) plus time for the server to
# see the visitor leave and take the cards off the board.
ROUND_LIFETIME_S = 240.0


def round_start(index: int) -> float:
    """Story time at which round ``index`` starts."""
    return index * ROUND_S


def live_rounds(story_t: float) -> range:
    """The rounds whose phones walk at story time ``story_t``."""
    last = math.floor(story_t / ROUND_S)
    first = max(0, math.floor((story_t - ROUND_LIFETIME_S) / ROUND_S) + 1)
    return range(first, last + 1)


def inside(floor: Floor, walks: Sequence[Walk], story_t: float) -> bool:
    """Whether a visitor on one of ``walks`` is inside the store (in a zone) at ``story_t``."""
    for index in live_rounds(story_t):
        local = story_t - round_start(index)
        if local >= ROUND_LIFETIME_S:
            continue
        for walk in walks:
            position = walk_position(walk, local)
            if position is not None and floor.zone_at(*position) is not None:
                return True
    return False


def longest_wait(
    floor: Floor, walks: Sequence[Walk], start: float, end: float, step: float = 1.0
) -> float:
    """The longest time, over moments in [start, end), until a visitor on ``walks`` is inside.

    The board shows a card once such a visitor has been detected: this is the part of the wait
    set by the story, before the radio, the scanners and the server add theirs.
    """
    worst = 0.0
    t = start
    while t < end:
        wait = 0.0
        while not inside(floor, walks, t + wait):
            wait += step
            if wait > ROUND_S:
                return math.inf
        worst = max(worst, wait)
        t += step
    return worst
