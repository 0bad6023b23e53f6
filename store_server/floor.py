"""The store floor model: zones, scanners and simulated walks (pure, no I/O).

Coordinates are metres. ``x`` runs along the shop front, ``y`` runs into the shop. The street is
``y < 0`` and the shop window is the line ``y = 0``; the door is the part of that line with
``door_x_min <= x <= door_x_max``. The caller reads the TOML file and hands the parsed mapping to
:func:`floor_from_dict`, which validates it and raises :class:`FloorError` naming the faulty key.

Beyond that rectangle the floor may say (all optional, see docs/presence.md): the ``outline``
polygon of the shop, interior ``walls`` (segments), ``walkable`` areas (polygons: a stock room or a
counter is left out), ``doors`` and the ``window_front`` (segments on the outline), each box's
``height_m``, and zones as ``polygon`` instead of ``rect``. Left out, the outline is the
``width_m`` x ``depth_m`` rectangle, the whole of it is walkable, the door is the
``door_x_min``-``door_x_max`` part of the front and the window front is the whole front.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from store_server.geometry import (
    Point,
    Segment,
    on_segment,
    point_in_polygon,
    polygon_area,
    polygon_edges,
)

__all__ = [
    "Floor",
    "FloorError",
    "ScannerSpec",
    "Walk",
    "Zone",
    "floor_from_dict",
]

# A box with no height given: on a shelf at chest height, level with a phone in the hand.
DEFAULT_BOX_HEIGHT_M = 1.2
# Boxes sit between the floor and a high ceiling.
MAX_BOX_HEIGHT_M = 6.0
# A wall between a phone and a box costs this much when the floor does not say (plasterboard).
DEFAULT_WALL_ATTENUATION_DB = 3.0


class FloorError(ValueError):
    """The floor description is invalid, or a lookup named something the floor does not hold."""


@dataclass(frozen=True, slots=True)
class Zone:
    """A named area of the shop: a polygon; ``rect`` is its bounding box.

    Built from a rectangle ``(x_min, y_min, x_max, y_max)`` alone, the polygon is that rectangle.
    """

    id: str
    name_fr: str
    name_en: str
    rect: tuple[float, float, float, float]
    polygon: tuple[Point, ...] = ()

    def __post_init__(self) -> None:
        if not self.polygon:
            x0, y0, x1, y1 = self.rect
            object.__setattr__(self, "polygon", ((x0, y0), (x1, y0), (x1, y1), (x0, y1)))

    def contains(self, x: float, y: float) -> bool:
        """Whether the point lies in the polygon (edges included)."""
        x_min, y_min, x_max, y_max = self.rect
        if not (x_min <= x <= x_max and y_min <= y <= y_max):
            return False
        return point_in_polygon((x, y), self.polygon)

    def centroid(self) -> Point:
        """The polygon's centre of area (where a check-in without position is placed)."""
        area = polygon_area(self.polygon)
        if area == 0.0:
            x0, y0, x1, y1 = self.rect
            return ((x0 + x1) / 2.0, (y0 + y1) / 2.0)
        cx = cy = 0.0
        for (x0, y0), (x1, y1) in polygon_edges(self.polygon):
            cross = x0 * y1 - x1 * y0
            cx += (x0 + x1) * cross
            cy += (y0 + y1) * cross
        return (cx / (6.0 * area), cy / (6.0 * area))


@dataclass(frozen=True, slots=True)
class ScannerSpec:
    """A scanner as installed: where it is, which zone it reports, and its calibration.

    ``interior``: a strong sighting by this scanner means the person is really inside the shop
    (it is far enough from the window that nobody outside can look strong to it).
    ``rssi_offset_db``: the calibration offset the presence engine ADDS to every RSSI the scanner
    reports, to bring it to the common reference (a radio that reads 3 dB low has offset +3).
    """

    id: str
    zone: str
    position: tuple[float, float]
    interior: bool
    rssi_offset_db: float
    height_m: float = DEFAULT_BOX_HEIGHT_M


@dataclass(frozen=True, slots=True)
class Walk:
    """A timed path: waypoints ``(t_s, x, y)`` followed at constant speed between points.

    The phone is out of range before the first point and after the last one; the whole walk
    repeats every ``repeat_s`` seconds.
    """

    id: str
    repeat_s: float
    points: tuple[tuple[float, float, float], ...]


@dataclass(frozen=True, slots=True)
class Floor:
    """The shop floor: its outline, door, pavement, zones, scanners and demo walks."""

    store_id: str
    name: str
    width_m: float
    depth_m: float
    door_x_min: float
    door_x_max: float
    pavement_y_min: float
    pavement_y_max: float
    front_attenuation_db: float
    zones: tuple[Zone, ...]
    scanners: tuple[ScannerSpec, ...]
    walks: tuple[Walk, ...]
    outline: tuple[Point, ...] = ()
    walls: tuple[Segment, ...] = ()
    walkable: tuple[tuple[Point, ...], ...] = ()
    doors: tuple[Segment, ...] = ()
    window_front: tuple[Segment, ...] = ()
    wall_attenuation_db: float = DEFAULT_WALL_ATTENUATION_DB
    _rectangular: bool = field(default=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        w, d = self.width_m, self.depth_m
        if not self.outline:
            object.__setattr__(self, "outline", ((0.0, 0.0), (w, 0.0), (w, d), (0.0, d)))
            object.__setattr__(self, "_rectangular", True)
        if not self.walkable:
            object.__setattr__(self, "walkable", (self.outline,))
        if not self.doors:
            object.__setattr__(self, "doors", (((self.door_x_min, 0.0), (self.door_x_max, 0.0)),))
        if not self.window_front:
            object.__setattr__(self, "window_front", (((0.0, 0.0), (w, 0.0)),))

    def is_inside(self, x: float, y: float) -> bool:
        """Whether the point is inside the shop (on the outline, e.g. the window line, counts)."""
        if not (0.0 <= x <= self.width_m and 0.0 <= y <= self.depth_m):
            return False
        return self._rectangular or point_in_polygon((x, y), self.outline)

    def is_walkable(self, x: float, y: float) -> bool:
        """Whether a customer can stand at the point (inside and in a walkable area)."""
        return self.is_inside(x, y) and any(point_in_polygon((x, y), p) for p in self.walkable)

    def barriers(self) -> tuple[Segment, ...]:
        """Everything a person cannot walk through: the outline's edges and interior walls.

        Doors are openings in the outline: see :meth:`through_door`.
        """
        return tuple(polygon_edges(self.outline)) + self.walls

    def through_door(self, point: Point) -> bool:
        """Whether a crossing of the outline at ``point`` goes through a door."""
        return any(on_segment(point, door) for door in self.doors)

    def on_window_front(self, point: Point) -> bool:
        """Whether a crossing of the outline at ``point`` goes through the window front."""
        return any(on_segment(point, front) for front in self.window_front)

    def zone_at(self, x: float, y: float) -> str | None:
        """The id of the zone holding the point, ``None`` outside the shop.

        On a shared edge the zone listed first wins. A point inside the shop that no zone covers
        also gives ``None``.
        """
        if not self.is_inside(x, y):
            return None
        for zone in self.zones:
            if zone.contains(x, y):
                return zone.id
        return None

    def zone(self, zone_id: str) -> Zone:
        """The zone with this id; :class:`FloorError` if there is none."""
        for zone in self.zones:
            if zone.id == zone_id:
                return zone
        raise FloorError(f"unknown zone {zone_id!r}")

    def scanner(self, scanner_id: str) -> ScannerSpec:
        """The scanner with this id; :class:`FloorError` if there is none."""
        for spec in self.scanners:
            if spec.id == scanner_id:
                return spec
        raise FloorError(f"unknown scanner {scanner_id!r}")

    def walk(self, walk_id: str) -> Walk:
        """The walk with this id; :class:`FloorError` if there is none."""
        for walk in self.walks:
            if walk.id == walk_id:
                return walk
        raise FloorError(f"unknown walk {walk_id!r}")

    def door_zone(self) -> str | None:
        """The zone just inside the middle of the door (where a check-in without zone lands)."""
        return self.zone_at((self.door_x_min + self.door_x_max) / 2.0, 0.0)

    def position_at(self, walk: Walk, t: float) -> tuple[float, float] | None:
        """Where a phone following ``walk`` is at time ``t``, ``None`` when it is out of range."""
        return walk_position(walk, t)


def walk_position(walk: Walk, t: float) -> tuple[float, float] | None:
    """Position on ``walk`` at ``t`` (modulo ``repeat_s``), ``None`` outside its time range."""
    points = walk.points
    local = math.fmod(t, walk.repeat_s)
    if local < 0.0:
        local += walk.repeat_s
    if local < points[0][0] or local > points[-1][0]:
        return None
    times = [p[0] for p in points]
    index = bisect.bisect_right(times, local)
    if index >= len(points):
        return (points[-1][1], points[-1][2])
    t0, x0, y0 = points[index - 1]
    t1, x1, y1 = points[index]
    if t1 <= t0:
        return (x1, y1)
    share = (local - t0) / (t1 - t0)
    return (x0 + (x1 - x0) * share, y0 + (y1 - y0) * share)


# --- validation -------------------------------------------------------------------------------


def _section(data: Mapping[str, object], key: str) -> Mapping[str, object]:
    value = data.get(key)
    if not isinstance(value, Mapping):
        raise FloorError(f"{key}: expected a table")
    return value


def _tables(data: Mapping[str, object], key: str) -> list[Mapping[str, object]]:
    value = data.get(key)
    if not isinstance(value, Sequence) or isinstance(value, str | bytes):
        raise FloorError(f"{key}: expected an array of tables")
    tables: list[Mapping[str, object]] = []
    for index, item in enumerate(value):
        if not isinstance(item, Mapping):
            raise FloorError(f"{key}[{index}]: expected a table")
        tables.append(item)
    return tables


def _str(table: Mapping[str, object], key: str, where: str) -> str:
    value = table.get(key)
    if not isinstance(value, str) or not value:
        raise FloorError(f"{where}.{key}: expected a non-empty string")
    return value


def _num(table: Mapping[str, object], key: str, where: str) -> float:
    value = table.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise FloorError(f"{where}.{key}: expected a number")
    number = float(value)
    if not math.isfinite(number):
        raise FloorError(f"{where}.{key}: expected a finite number")
    return number


def _nums(value: object, length: int, where: str) -> tuple[float, ...]:
    if not isinstance(value, Sequence) or isinstance(value, str | bytes) or len(value) != length:
        raise FloorError(f"{where}: expected an array of {length} numbers")
    numbers: list[float] = []
    for item in value:
        if isinstance(item, bool) or not isinstance(item, int | float):
            raise FloorError(f"{where}: expected an array of {length} numbers")
        if not math.isfinite(float(item)):
            raise FloorError(f"{where}: expected finite numbers")
        numbers.append(float(item))
    return tuple(numbers)


def _point(value: object, where: str) -> Point:
    x, y = _nums(value, 2, where)
    return (x, y)


def _polygon(value: object, where: str) -> tuple[Point, ...]:
    if not isinstance(value, Sequence) or isinstance(value, str | bytes) or len(value) < 3:
        raise FloorError(f"{where}: expected at least three [x, y] points")
    polygon = tuple(_point(item, f"{where}[{i}]") for i, item in enumerate(value))
    if abs(polygon_area(polygon)) < 1e-6:
        raise FloorError(f"{where}: the polygon has no area")
    return polygon


def _segment(value: object, where: str) -> Segment:
    if not isinstance(value, Sequence) or isinstance(value, str | bytes) or len(value) != 2:
        raise FloorError(f"{where}: expected two [x, y] points")
    first, second = _point(value[0], f"{where}[0]"), _point(value[1], f"{where}[1]")
    if first == second:
        raise FloorError(f"{where}: the two ends are the same point")
    return (first, second)


def _list(data: Mapping[str, object], key: str, where: str) -> Sequence[object]:
    value = data.get(key, [])
    if not isinstance(value, Sequence) or isinstance(value, str | bytes):
        raise FloorError(f"{where}.{key}: expected an array")
    return value


def _zone(table: Mapping[str, object], where: str) -> Zone:
    if "polygon" in table:
        polygon = _polygon(table.get("polygon"), f"{where}.polygon")
        xs, ys = [p[0] for p in polygon], [p[1] for p in polygon]
        rect: tuple[float, ...] = (min(xs), min(ys), max(xs), max(ys))
    else:
        rect = _nums(table.get("rect"), 4, f"{where}.rect")
        if rect[0] >= rect[2] or rect[1] >= rect[3]:
            raise FloorError(f"{where}.rect: expected [x_min, y_min, x_max, y_max] with min < max")
        polygon = ()
    return Zone(
        id=_str(table, "id", where),
        name_fr=_str(table, "name_fr", where),
        name_en=_str(table, "name_en", where),
        rect=(rect[0], rect[1], rect[2], rect[3]),
        polygon=polygon,
    )


def _scanner(table: Mapping[str, object], where: str, zone_ids: set[str]) -> ScannerSpec:
    zone = _str(table, "zone", where)
    if zone not in zone_ids:
        raise FloorError(f"{where}.zone: unknown zone {zone!r}")
    position = _nums(table.get("position"), 2, f"{where}.position")
    interior = table.get("interior")
    if not isinstance(interior, bool):
        raise FloorError(f"{where}.interior: expected true or false")
    offset = table.get("rssi_offset_db", 0.0)
    offset_value = _num({"rssi_offset_db": offset}, "rssi_offset_db", where)
    height = _num({"height_m": table.get("height_m", DEFAULT_BOX_HEIGHT_M)}, "height_m", where)
    if not 0.0 <= height <= MAX_BOX_HEIGHT_M:
        raise FloorError(f"{where}.height_m: expected 0 to {MAX_BOX_HEIGHT_M:g} m")
    return ScannerSpec(
        id=_str(table, "id", where),
        zone=zone,
        position=(position[0], position[1]),
        interior=interior,
        rssi_offset_db=offset_value,
        height_m=height,
    )


def _walk(table: Mapping[str, object], where: str) -> Walk:
    repeat_s = _num(table, "repeat_s", where)
    if repeat_s <= 0.0:
        raise FloorError(f"{where}.repeat_s: expected a positive number")
    raw = table.get("points")
    if not isinstance(raw, Sequence) or isinstance(raw, str | bytes) or len(raw) < 2:
        raise FloorError(f"{where}.points: expected at least two [t_s, x, y] points")
    points: list[tuple[float, float, float]] = []
    for index, item in enumerate(raw):
        t, x, y = _nums(item, 3, f"{where}.points[{index}]")
        if points and t < points[-1][0]:
            raise FloorError(f"{where}.points[{index}]: times must not decrease")
        points.append((t, x, y))
    if points[-1][0] > repeat_s:
        raise FloorError(f"{where}.repeat_s: shorter than the walk's last point")
    return Walk(id=_str(table, "id", where), repeat_s=repeat_s, points=tuple(points))


def _unique(ids: list[str], key: str) -> None:
    seen: set[str] = set()
    for index, item in enumerate(ids):
        if item in seen:
            raise FloorError(f"{key}[{index}].id: duplicate id {item!r}")
        seen.add(item)


def floor_from_dict(data: Mapping[str, object]) -> Floor:
    """Validate a parsed ``store.toml`` mapping and build the :class:`Floor`.

    Raises :class:`FloorError` whose message starts with the faulty key, e.g.
    ``"scanners[2].position: expected an array of 2 numbers"``.
    """
    store = _section(data, "store")
    floor = _section(data, "floor")
    width = _num(floor, "width_m", "floor")
    depth = _num(floor, "depth_m", "floor")
    if width <= 0.0 or depth <= 0.0:
        raise FloorError("floor.width_m: width and depth must be positive")
    door_min = _num(floor, "door_x_min", "floor")
    door_max = _num(floor, "door_x_max", "floor")
    if not 0.0 <= door_min < door_max <= width:
        raise FloorError("floor.door_x_min: expected 0 <= door_x_min < door_x_max <= width_m")
    pave_min = _num(floor, "pavement_y_min", "floor")
    pave_max = _num(floor, "pavement_y_max", "floor")
    if not pave_min < pave_max < 0.0:
        raise FloorError("floor.pavement_y_min: expected pavement_y_min < pavement_y_max < 0")
    attenuation = _num(floor, "front_attenuation_db", "floor")
    if attenuation < 0.0:
        raise FloorError("floor.front_attenuation_db: expected a number >= 0")

    wall_db = _num(
        {"wall_attenuation_db": floor.get("wall_attenuation_db", DEFAULT_WALL_ATTENUATION_DB)},
        "wall_attenuation_db",
        "floor",
    )
    if wall_db < 0.0:
        raise FloorError("floor.wall_attenuation_db: expected a number >= 0")
    outline: tuple[Point, ...] = ((0.0, 0.0), (width, 0.0), (width, depth), (0.0, depth))
    if "outline" in floor:
        outline = _polygon(floor.get("outline"), "floor.outline")
        for i, (x, y) in enumerate(outline):
            if not (0.0 <= x <= width and 0.0 <= y <= depth):
                raise FloorError(
                    f"floor.outline[{i}]: outside the width_m x depth_m rectangle from (0, 0)"
                )
    edges = polygon_edges(outline)

    def on_outline(segment: Segment, where: str) -> Segment:
        for edge in edges:
            if on_segment(segment[0], edge) and on_segment(segment[1], edge):
                return segment
        raise FloorError(f"{where}: expected a part of one edge of the outline")

    def inside(point: Point, where: str) -> Point:
        if not point_in_polygon(point, outline):
            raise FloorError(f"{where}: outside the floor's outline")
        return point

    walls = tuple(
        _segment(v, f"floor.walls[{i}]") for i, v in enumerate(_list(floor, "walls", "floor"))
    )
    for i, wall in enumerate(walls):
        inside(wall[0], f"floor.walls[{i}][0]")
        inside(wall[1], f"floor.walls[{i}][1]")
    walkable = tuple(
        _polygon(v, f"floor.walkable[{i}]") for i, v in enumerate(_list(floor, "walkable", "floor"))
    )
    for i, area in enumerate(walkable):
        for j, point in enumerate(area):
            inside(point, f"floor.walkable[{i}][{j}]")
    doors = tuple(
        on_outline(_segment(v, f"floor.doors[{i}]"), f"floor.doors[{i}]")
        for i, v in enumerate(_list(floor, "doors", "floor"))
    )
    if not doors:
        doors = (on_outline(((door_min, 0.0), (door_max, 0.0)), "floor.door_x_min"),)
    fronts = tuple(
        on_outline(_segment(v, f"floor.window_front[{i}]"), f"floor.window_front[{i}]")
        for i, v in enumerate(_list(floor, "window_front", "floor"))
    )

    zone_tables = _tables(data, "zones")
    zones = tuple(_zone(t, f"zones[{i}]") for i, t in enumerate(zone_tables))
    if not zones:
        raise FloorError("zones: expected at least one zone")
    _unique([z.id for z in zones], "zones")
    for i, (zone, table) in enumerate(zip(zones, zone_tables, strict=True)):
        key = "polygon" if "polygon" in table else "rect"
        for j, point in enumerate(zone.polygon):
            inside(point, f"zones[{i}].{key}" + (f"[{j}]" if key == "polygon" else ""))
    zone_ids = {z.id for z in zones}
    scanners = tuple(
        _scanner(t, f"scanners[{i}]", zone_ids) for i, t in enumerate(_tables(data, "scanners"))
    )
    _unique([s.id for s in scanners], "scanners")
    for i, spec in enumerate(scanners):
        inside(spec.position, f"scanners[{i}].position")
    walks: tuple[Walk, ...] = ()
    if "walks" in data:
        walks = tuple(_walk(t, f"walks[{i}]") for i, t in enumerate(_tables(data, "walks")))
        _unique([w.id for w in walks], "walks")
    return Floor(
        store_id=_str(store, "id", "store"),
        name=_str(store, "name", "store"),
        width_m=width,
        depth_m=depth,
        door_x_min=door_min,
        door_x_max=door_max,
        pavement_y_min=pave_min,
        pavement_y_max=pave_max,
        front_attenuation_db=attenuation,
        zones=zones,
        scanners=scanners,
        walks=walks,
        outline=outline,
        walls=walls,
        walkable=walkable or (outline,),
        doors=doors,
        window_front=fronts or (((0.0, 0.0), (width, 0.0)),),
        wall_attenuation_db=wall_db,
        _rectangular="outline" not in floor,
    )
