"""The lab's scenarios on each example floor: where people walk, stop and look in (pure data).

Coordinates in metres on the floor of ``seeds/<file>``. Legs are ``(x, y, pause_s)``: walk to the
point, then stand there for ``pause_s``. Every leg stays on walkable ground and goes through
doors and openings, never through a wall.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["FLOORS", "FloorScenarios", "Leg"]

Leg = tuple[float, float, float]


@dataclass(frozen=True, slots=True)
class FloorScenarios:
    store_file: str
    door_x: tuple[float, float]  # customers cross the door between these x
    diagonal: tuple[Leg, ...]  # from the door, in and out again (ends at the door)
    boundary: tuple[Leg, ...]  # 0.5 m either side of zone edges (ends at the door)
    dwell_mid: tuple[tuple[float, float], ...]  # the middle of each zone
    dwell_edge: tuple[tuple[float, float], ...]  # 0.5 m from a zone edge
    glass_x: tuple[tuple[float, float], ...]  # window shoppers stand at these x (not the door)
    near_door: tuple[float, float]  # where a short visit stops


FLOORS = {
    "demo": FloorScenarios(
        store_file="store.toml",
        door_x=(5.3, 6.7),
        diagonal=(
            (7.0, 1.2, 20.0),
            (9.0, 4.0, 30.0),
            (10.5, 7.0, 40.0),
            (1.5, 7.0, 30.0),
            (2.0, 1.5, 20.0),
        ),
        boundary=(
            (6.5, 5.5, 0.0),
            (11.5, 5.5, 10.0),
            (11.5, 6.5, 0.0),
            (6.5, 6.5, 10.0),
            (6.5, 3.5, 10.0),
            (5.5, 3.5, 0.0),
            (5.5, 7.5, 10.0),
            (6.5, 7.5, 0.0),
            (6.5, 1.0, 0.0),
        ),
        dwell_mid=((9.0, 1.25), (3.0, 5.25), (9.0, 4.25), (9.0, 7.0)),
        dwell_edge=((9.0, 2.0), (5.5, 5.0), (9.0, 5.5), (6.5, 7.0)),
        glass_x=((0.5, 4.5), (7.5, 11.5)),
        near_door=(6.0, 1.5),
    ),
    "corner": FloorScenarios(
        store_file="store-corner.toml",
        door_x=(6.8, 7.7),
        diagonal=(
            (8.0, 4.0, 30.0),
            (2.0, 4.0, 30.0),
            (1.6, 7.5, 0.0),
            (1.6, 9.0, 30.0),
            (1.6, 7.5, 0.0),
            (3.0, 1.5, 20.0),
        ),
        boundary=(
            (9.5, 3.0, 0.0),
            (4.5, 3.0, 10.0),
            (4.5, 5.5, 10.0),
            (3.5, 5.5, 0.0),
            (3.5, 3.0, 10.0),
            (3.5, 2.0, 0.0),
            (9.5, 2.0, 10.0),
            (7.25, 1.0, 0.0),
            (2.0, 3.0, 0.0),
            (0.5, 7.5, 0.0),
            (3.5, 7.5, 10.0),
            (1.6, 7.5, 0.0),
            (1.6, 8.5, 0.0),
            (3.5, 8.5, 10.0),
            (1.6, 8.5, 0.0),
            (1.6, 7.5, 0.0),
            (3.0, 2.0, 0.0),
        ),
        dwell_mid=((5.0, 1.25), (7.0, 4.25), (2.0, 5.25), (2.0, 9.25)),
        dwell_edge=((5.0, 2.0), (4.5, 4.5), (3.5, 4.5), (2.5, 8.5)),
        glass_x=((0.5, 6.0), (8.5, 9.5)),
        near_door=(7.25, 1.5),
    ),
}
