"""The manager's floor map: the floor in SVG coordinates, boxes' health, counts per zone (pure).

The floor's y axis runs into the shop from the street (y < 0); on the map the street is at the
bottom, as a manager standing in the doorway sees the shop. Everything is in metres: the SVG's
``viewBox`` scales it to the screen.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from store_server.floor import Floor, Zone
from store_server.geometry import Point, Segment

__all__ = ["BoxHealth", "FloorMap", "box_health", "floor_map", "zone_counts"]

# Room around the drawing so that edge boxes and labels are not cut (m).
MAP_MARGIN_M = 0.8
# A zone's name and its count form a block about 1.2 m high (text sizes are in metres) and
# about this wide per character of the longer name: the block must sit inside its zone.
LABEL_HALF_HEIGHT_M = 0.6
LABEL_CHAR_WIDTH_M = 0.22
# ...and keep this far from every box's dot (its radius and a gap).
LABEL_CLEARANCE_M = 0.45
# Places tried for the block: a lattice over the zone at this pitch, the nearest to its centre
# that fits wins (the centre itself when nothing fits).
LABEL_PITCH_M = 0.25

BoxHealth = Literal["active", "node_down", "stale", "revoked", "unregistered"]


@dataclass(frozen=True, slots=True)
class MapZone:
    id: str
    name_fr: str
    name_en: str
    points: str  # SVG polygon points
    label_x: float
    label_y: float


@dataclass(frozen=True, slots=True)
class MapBox:
    id: str
    zone: str
    x: float
    y: float


@dataclass(frozen=True, slots=True)
class MapLine:
    x1: float
    y1: float
    x2: float
    y2: float


@dataclass(frozen=True, slots=True)
class FloorMap:
    view_box: str
    width_m: float
    height_m: float
    outline: str
    walkable: tuple[str, ...]
    walls: tuple[MapLine, ...]
    doors: tuple[MapLine, ...]
    window_front: tuple[MapLine, ...]
    pavement: tuple[float, float, float, float]  # x, y, width, height
    zones: tuple[MapZone, ...]
    boxes: tuple[MapBox, ...]


def floor_map(floor: Floor) -> FloorMap:
    """The floor's shapes, transformed into the map's coordinates."""
    xs = [x for x, _ in floor.outline]
    ys = [y for _, y in floor.outline] + [floor.pavement_y_min]
    x0, x1 = min(xs) - MAP_MARGIN_M, max(xs) + MAP_MARGIN_M
    y0, y1 = min(ys) - MAP_MARGIN_M, max(ys) + MAP_MARGIN_M

    def point(p: Point) -> tuple[float, float]:
        return (round(p[0] - x0, 3), round(y1 - p[1], 3))

    def points(polygon: Iterable[Point]) -> str:
        return " ".join(f"{x:g},{y:g}" for x, y in map(point, polygon))

    def line(segment: Segment) -> MapLine:
        (ax, ay), (bx, by) = point(segment[0]), point(segment[1])
        return MapLine(ax, ay, bx, by)

    zones = []
    for zone in floor.zones:
        lx, ly = point(_label_point(floor, zone))
        zones.append(MapZone(zone.id, zone.name_fr, zone.name_en, points(zone.polygon), lx, ly))
    boxes = tuple(MapBox(s.id, s.zone, *point(s.position)) for s in floor.scanners)
    px, py = point((min(xs), floor.pavement_y_max))
    pavement = (px, py, round(max(xs) - min(xs), 3), floor.pavement_y_max - floor.pavement_y_min)
    width, height = round(x1 - x0, 3), round(y1 - y0, 3)
    return FloorMap(
        view_box=f"0 0 {width:g} {height:g}",
        width_m=width,
        height_m=height,
        outline=points(floor.outline),
        walkable=tuple(points(area) for area in floor.walkable),
        walls=tuple(line(w) for w in floor.walls),
        doors=tuple(line(d) for d in floor.doors),
        window_front=tuple(line(w) for w in floor.window_front),
        pavement=pavement,
        zones=tuple(zones),
        boxes=boxes,
    )


def _label_point(floor: Floor, zone: Zone) -> Point:
    """Where the zone's name and count go: inside it, clear of the boxes, near its centre."""
    cx, cy = zone.centroid()
    half_w = LABEL_CHAR_WIDTH_M * max(len(zone.name_fr), len(zone.name_en)) / 2.0
    half_h = LABEL_HALF_HEIGHT_M
    x0, y0, x1, y1 = zone.rect
    candidates = [
        (x0 + i * LABEL_PITCH_M, y0 + j * LABEL_PITCH_M)
        for i in range(int((x1 - x0) / LABEL_PITCH_M) + 1)
        for j in range(int((y1 - y0) / LABEL_PITCH_M) + 1)
    ]
    candidates.sort(key=lambda p: math.dist(p, (cx, cy)))
    for x, y in candidates:
        corners = [(x + sx * half_w, y + sy * half_h) for sx in (-1, 1) for sy in (-1, 1)]
        if not all(zone.contains(*corner) for corner in corners):
            continue
        if all(
            math.dist(
                (min(max(bx, x - half_w), x + half_w), min(max(by, y - half_h), y + half_h)),
                (bx, by),
            )
            >= LABEL_CLEARANCE_M
            for bx, by in (spec.position for spec in floor.scanners)
        ):
            return (x, y)
    return (cx, cy)


def box_health(row: Mapping[str, Any] | None, now: float, stale_s: float) -> BoxHealth:
    """A box's health as the scanners page shows it: registered, heartbeat age, its node."""
    if row is None:
        return "unregistered"
    if row.get("revoked_at") is not None:
        return "revoked"
    seen = row.get("last_seen_at")
    if seen is None or now - float(seen) > stale_s:
        return "stale"
    node = (row.get("heartbeat") or {}).get("node")
    if isinstance(node, Mapping) and not node.get("connected", True):
        return "node_down"
    return "active"


def zone_counts(zones: Iterable[str | None], zone_ids: Iterable[str]) -> dict[str, int]:
    """How many present customers are in each zone (every zone listed, 0 if empty)."""
    counts = dict.fromkeys(zone_ids, 0)
    for zone in zones:
        if zone in counts:
            counts[zone] += 1
    return counts
