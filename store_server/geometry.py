"""Plane geometry for the floor model: polygons and segments in metres (pure, no I/O)."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "Point",
    "Segment",
    "on_segment",
    "point_in_polygon",
    "polygon_area",
    "polygon_edges",
    "segments_cross",
]

Point = tuple[float, float]
Segment = tuple[Point, Point]

# Two points closer than 1 mm are the same point: the floor is drawn in centimetres at best.
EPSILON_M = 1e-3


def polygon_edges(polygon: Sequence[Point]) -> list[Segment]:
    """The closed polygon's edges, last vertex back to the first."""
    return [(polygon[i], polygon[(i + 1) % len(polygon)]) for i in range(len(polygon))]


def polygon_area(polygon: Sequence[Point]) -> float:
    """Signed area (shoelace formula): positive when the vertices turn anticlockwise."""
    total = 0.0
    for (x0, y0), (x1, y1) in polygon_edges(polygon):
        total += x0 * y1 - x1 * y0
    return total / 2.0


def on_segment(point: Point, segment: Segment, tolerance: float = EPSILON_M) -> bool:
    """Whether ``point`` lies on ``segment`` (within ``tolerance`` metres)."""
    (x0, y0), (x1, y1) = segment
    px, py = point
    dx, dy = x1 - x0, y1 - y0
    length2 = dx * dx + dy * dy
    if length2 == 0.0:
        return (px - x0) ** 2 + (py - y0) ** 2 <= tolerance**2
    share = max(0.0, min(1.0, ((px - x0) * dx + (py - y0) * dy) / length2))
    cx, cy = x0 + share * dx, y0 + share * dy
    return (px - cx) ** 2 + (py - cy) ** 2 <= tolerance**2


def point_in_polygon(point: Point, polygon: Sequence[Point], boundary: bool = True) -> bool:
    """Whether ``point`` is inside ``polygon`` (even-odd rule); on an edge: ``boundary``."""
    for edge in polygon_edges(polygon):
        if on_segment(point, edge):
            return boundary
    px, py = point
    inside = False
    for (x0, y0), (x1, y1) in polygon_edges(polygon):
        if (y0 > py) != (y1 > py):
            x_cross = x0 + (py - y0) * (x1 - x0) / (y1 - y0)
            if px < x_cross:
                inside = not inside
    return inside


def _orientation(a: Point, b: Point, c: Point) -> float:
    return (b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0])


def segments_cross(first: Segment, second: Segment) -> Point | None:
    """Where two segments cross (touching counts), ``None`` if they do not; parallel: ``None``."""
    a, b = first
    c, d = second
    denominator = (b[0] - a[0]) * (d[1] - c[1]) - (b[1] - a[1]) * (d[0] - c[0])
    if denominator == 0.0:
        return None
    o1, o2 = _orientation(c, d, a), _orientation(c, d, b)
    o3, o4 = _orientation(a, b, c), _orientation(a, b, d)
    if (o1 > 0.0 and o2 > 0.0) or (o1 < 0.0 and o2 < 0.0):
        return None
    if (o3 > 0.0 and o4 > 0.0) or (o3 < 0.0 and o4 < 0.0):
        return None
    share = ((c[0] - a[0]) * (d[1] - c[1]) - (c[1] - a[1]) * (d[0] - c[0])) / denominator
    return (a[0] + share * (b[0] - a[0]), a[1] + share * (b[1] - a[1]))
