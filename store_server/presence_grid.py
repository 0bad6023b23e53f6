"""The floor as the presence filter's state space: square cells, moves and radio geometry (pure).

Built once from a :class:`~store_server.floor.Floor`: the cells a phone can be in (walkable cells
inside the shop, and the pavement in front of the window), the moves a walker can make in one
step (to a neighbouring cell, never through a wall, the window or a non-walkable area, and between
the pavement and the shop only through a door), each cell's share of each zone, and for each box
the 3-D distance and the walls between it and each cell. numpy only, no I/O.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from store_server.floor import Floor
from store_server.geometry import Segment, point_in_polygon

__all__ = ["HEADINGS", "FloorGrid", "build_grid", "near_doors"]

# Moves of one step: stay, the four sides, the four corners (dx, dy in cells).
MOVES = ((0, 0), (1, 0), (-1, 0), (0, 1), (0, -1), (1, 1), (1, -1), (-1, 1), (-1, -1))
# Relative chance of each move for a walker: a straight step is likelier than a diagonal one
# (a diagonal covers 1.4 cells), and a walker mostly keeps going rather than stalling.
MOVE_WEIGHTS = (0.2, 0.15, 0.15, 0.15, 0.15, 0.05, 0.05, 0.05, 0.05)
# A walker's headings, in order around the compass (indices into MOVES): E, NE, N, NW, W, SW,
# S, SE; neighbours in this tuple are 45 degrees apart.
HEADINGS = (1, 5, 3, 7, 2, 8, 4, 6)
# Zone shares of a cell are measured on a 4 x 4 lattice of points inside it.
ZONE_SAMPLES = 4
# A wall this close to the box end of a ray (a share of its length) is the one it hangs on.
ON_WALL_T = 0.999
# The far-field model means nothing closer than 10 cm.
MIN_DISTANCE_M = 0.1


@dataclass(frozen=True, slots=True)
class FloorGrid:
    """Cells and their tables; ``C`` cells, ``Z`` zones, ``B`` boxes (in the floor's order)."""

    cell_m: float
    x: npt.NDArray[np.float64]  # (C,) cell centres
    y: npt.NDArray[np.float64]
    inside: npt.NDArray[np.bool_]  # (C,) a shop cell (else pavement)
    zone_ids: tuple[str, ...]
    zone_share: npt.NDArray[np.float32]  # (C, Z) share of the cell in each zone
    move_from: npt.NDArray[np.intp]  # (C, 9) source cell of each move into the cell (C: none)
    move_p: npt.NDArray[np.float32]  # (C, 9) probability of that move for a walker
    step_from: npt.NDArray[np.intp]  # (8, C) source cell of a step in each heading (C: none)
    step_ok: npt.NDArray[np.float32]  # (8, C) share of a step from the cell that is allowed
    behind: npt.NDArray[np.float32]  # (B, 8, C) the box is behind a person facing the heading
    log_distance: npt.NDArray[np.float64]  # (B, C) log10 of the 3-D distance box-cell
    attenuation_db: npt.NDArray[np.float64]  # (B, C) walls and window between box and cell

    @property
    def size(self) -> int:
        return int(self.x.shape[0])


def _crossings(
    px: npt.NDArray[np.float64],
    py: npt.NDArray[np.float64],
    qx: npt.NDArray[np.float64] | float,
    qy: npt.NDArray[np.float64] | float,
    segment: Segment,
    t_max: float = 1.0,
) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.float64]]:
    """Whether each segment P-Q crosses ``segment``, and where along ``segment`` (0 to 1).

    Only crossings up to ``t_max`` of the way from P to Q count (a box mounted on a wall is not
    behind that wall).
    """
    (ax, ay), (bx, by) = segment
    rx, ry = qx - px, qy - py
    sx, sy = bx - ax, by - ay
    denominator = rx * sy - ry * sx
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        t = ((ax - px) * sy - (ay - py) * sx) / denominator
        u = ((ax - px) * ry - (ay - py) * rx) / denominator
    hit = (denominator != 0.0) & (t >= 0.0) & (t <= t_max) & (u >= 0.0) & (u <= 1.0)
    return hit, np.nan_to_num(u)


def _intervals(edge: Segment, openings: tuple[Segment, ...]) -> list[tuple[float, float]]:
    """The parts of ``edge`` (as 0-1 parameters) covered by ``openings`` lying on it."""
    (ax, ay), (bx, by) = edge
    length2 = (bx - ax) ** 2 + (by - ay) ** 2
    spans = []
    for p0, p1 in openings:
        u0 = ((p0[0] - ax) * (bx - ax) + (p0[1] - ay) * (by - ay)) / length2
        u1 = ((p1[0] - ax) * (bx - ax) + (p1[1] - ay) * (by - ay)) / length2
        lo, hi = min(u0, u1), max(u0, u1)
        # Only openings lying along this edge: both ends on its line.
        on_line = all(
            abs((bx - ax) * (p[1] - ay) - (by - ay) * (p[0] - ax)) <= 1e-6 * math.sqrt(length2)
            for p in (p0, p1)
        )
        if on_line and hi >= 0.0 and lo <= 1.0:
            spans.append((lo, hi))
    return spans


def _within(u: npt.NDArray[np.float64], spans: list[tuple[float, float]]) -> npt.NDArray[np.bool_]:
    found = np.zeros(u.shape, dtype=bool)
    for lo, hi in spans:
        found |= (u >= lo) & (u <= hi)
    return found


def build_grid(
    floor: Floor,
    cell_m: float,
    street_margin_m: float,
    phone_height_m: float,
    door_entry_weight: float,
) -> FloorGrid:
    """Cut ``floor`` into cells of ``cell_m``; see the module docstring."""
    x_min = min(p[0] for p in floor.outline) - street_margin_m
    x_max = max(p[0] for p in floor.outline) + street_margin_m
    y_min = floor.pavement_y_min
    y_max = max(p[1] for p in floor.outline)
    nx = max(1, math.ceil((x_max - x_min) / cell_m))
    ny = max(1, math.ceil((y_max - y_min) / cell_m))
    index = np.full((ny, nx), -1, dtype=np.intp)
    xs: list[float] = []
    ys: list[float] = []
    inside: list[bool] = []
    for j in range(ny):
        cy = y_min + (j + 0.5) * cell_m
        for i in range(nx):
            cx = x_min + (i + 0.5) * cell_m
            if floor.is_walkable(cx, cy):
                kind = True
            elif cy < 0.0 and not floor.is_inside(cx, cy):
                kind = False  # the pavement in front of the shop
            else:
                continue
            index[j, i] = len(xs)
            xs.append(cx)
            ys.append(cy)
            inside.append(kind)
    x = np.array(xs)
    y = np.array(ys)
    is_inside = np.array(inside, dtype=bool)
    size = len(xs)
    cells_j = ((y - y_min) / cell_m).astype(np.intp)
    cells_i = ((x - x_min) / cell_m).astype(np.intp)

    barriers = floor.barriers()
    outline_edges = len(floor.outline)
    door_spans = [_intervals(edge, floor.doors) for edge in barriers[:outline_edges]]
    front_spans = [_intervals(edge, floor.window_front) for edge in barriers[:outline_edges]]

    # Moves: from each cell to each neighbour, unless a barrier (not a door) is in the way.
    move_ok = np.zeros((size, len(MOVES)), dtype=bool)
    move_to = np.full((size, len(MOVES)), size, dtype=np.intp)
    for k, (di, dj) in enumerate(MOVES):
        ti, tj = cells_i + di, cells_j + dj
        valid = (ti >= 0) & (ti < nx) & (tj >= 0) & (tj < ny)
        target = np.full(size, -1, dtype=np.intp)
        target[valid] = index[tj[valid], ti[valid]]
        ok = target >= 0
        if k > 0:
            qx, qy = x + di * cell_m, y + dj * cell_m
            for e, barrier in enumerate(barriers):
                hit, u = _crossings(x, y, qx, qy, barrier)
                if e < outline_edges:
                    hit &= ~_within(u, door_spans[e])
                ok &= ~hit
        move_ok[:, k] = ok
        move_to[ok, k] = target[ok]
    weights = np.where(move_ok, np.array(MOVE_WEIGHTS)[None, :], 0.0)
    # Stepping from the pavement into the shop is a choice few passers-by make.
    entering = move_ok & ~is_inside[:, None] & is_inside[np.where(move_ok, move_to, 0)]
    weights[entering] *= door_entry_weight
    # What a blocked or unlikely move does not take stays in the cell.
    weights[:, 0] += 1.0 - weights.sum(axis=1)
    move_from = np.full((size, len(MOVES)), size, dtype=np.intp)
    move_p = np.zeros((size, len(MOVES)), dtype=np.float32)
    for k in range(len(MOVES)):
        sources = np.flatnonzero(move_ok[:, k])
        move_from[move_to[sources, k], k] = sources
        move_p[move_to[sources, k], k] = weights[sources, k]

    # Steps by heading: where a step into each cell comes from, and whether a step from each
    # cell may be taken (0: a wall; door_entry_weight: from the pavement into the shop).
    step_from = np.ascontiguousarray(move_from[:, list(HEADINGS)].T)
    allowed = np.where(move_ok, 1.0, 0.0)
    allowed[entering] *= door_entry_weight
    step_ok = np.ascontiguousarray(allowed[:, list(HEADINGS)].T.astype(np.float32))

    # Zones: the share of each cell's sample points in each zone.
    zone_share = np.zeros((size, len(floor.zones)), dtype=np.float32)
    offsets = [(s + 0.5) / ZONE_SAMPLES - 0.5 for s in range(ZONE_SAMPLES)]
    for c in np.flatnonzero(is_inside):
        for z, zone in enumerate(floor.zones):
            hits = sum(
                zone.contains(x[c] + ox * cell_m, y[c] + oy * cell_m)
                and point_in_polygon((x[c] + ox * cell_m, y[c] + oy * cell_m), floor.outline)
                for ox in offsets
                for oy in offsets
            )
            zone_share[c, z] = hits / ZONE_SAMPLES**2
    # A point on a shared edge counts in both zones: share it out.
    totals = zone_share.sum(axis=1, keepdims=True)
    np.divide(zone_share, np.maximum(totals, 1.0), out=zone_share)

    # Radio geometry: 3-D distance and what lies between each box and each cell.
    log_distance = np.zeros((len(floor.scanners), size))
    attenuation = np.zeros((len(floor.scanners), size))
    for b, spec in enumerate(floor.scanners):
        bx, by = spec.position
        dz = spec.height_m - phone_height_m
        distance = np.sqrt((x - bx) ** 2 + (y - by) ** 2 + dz * dz)
        log_distance[b] = np.log10(np.maximum(distance, MIN_DISTANCE_M))
        for e, barrier in enumerate(barriers):
            hit, u = _crossings(x, y, bx, by, barrier, t_max=ON_WALL_T)
            if e < outline_edges:
                hit &= ~_within(u, door_spans[e])
                front = hit & _within(u, front_spans[e])
                attenuation[b] += np.where(front, floor.front_attenuation_db, 0.0)
                hit &= ~front
            attenuation[b] += np.where(hit, floor.wall_attenuation_db, 0.0)
    behind = np.zeros((len(floor.scanners), len(HEADINGS), size), dtype=np.float32)
    for b, spec in enumerate(floor.scanners):
        for h, k in enumerate(HEADINGS):
            dx, dy = MOVES[k]
            behind[b, h] = (spec.position[0] - x) * dx + (spec.position[1] - y) * dy < 0.0
    return FloorGrid(
        cell_m=cell_m,
        x=x,
        y=y,
        inside=is_inside,
        zone_ids=tuple(z.id for z in floor.zones),
        zone_share=zone_share,
        move_from=move_from,
        move_p=move_p,
        step_from=step_from,
        step_ok=step_ok,
        behind=behind,
        log_distance=log_distance,
        attenuation_db=attenuation,
    )


def near_doors(floor: Floor, grid: FloorGrid, metres: float) -> npt.NDArray[np.bool_]:
    """(C,) the cells within ``metres`` of a door (straight line), and every pavement cell: the
    only places a phone can leave the shop from in the next few seconds."""
    near = ~grid.inside
    for (ax, ay), (bx, by) in floor.doors:
        dx, dy = bx - ax, by - ay
        length2 = dx * dx + dy * dy
        if length2 > 0.0:
            u = np.clip(((grid.x - ax) * dx + (grid.y - ay) * dy) / length2, 0.0, 1.0)
        else:
            u = np.zeros_like(grid.x)
        distance = np.hypot(grid.x - (ax + u * dx), grid.y - (ay + u * dy))
        near = near | (distance <= metres)
    result: npt.NDArray[np.bool_] = near
    return result
