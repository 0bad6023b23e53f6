"""SVG plots of a lab walk: the floor, the true path coloured by the shown zone, a timeline of
true vs shown zone, and the belief that the phone is inside (pure: returns text)."""

from __future__ import annotations

from collections.abc import Sequence

from lab.run import TracePoint
from store_server.floor import Floor

__all__ = ["walk_svg"]

_ZONE_COLOURS = ("#e8f1fb", "#fdf0e0", "#e9f7ec", "#f6e8f6", "#f3f3d9", "#e0f4f4")
_SCALE = 40.0  # pixels per metre


def walk_svg(floor: Floor, trace: Sequence[TracePoint]) -> str:
    """The walk as SVG text (green: shown zone right, red: wrong, grey: not present)."""
    margin = 3.0

    def px(x: float, y: float) -> tuple[float, float]:
        return (x + margin) * _SCALE, (floor.depth_m - y + 1.0) * _SCALE

    width = (floor.width_m + 2 * margin) * _SCALE
    plan_h = (floor.depth_m + 1.0 - floor.pavement_y_min + 1.0) * _SCALE
    zones = [z.id for z in floor.zones]
    rows = [*zones, "(none)"]
    row_h = 14.0
    strip = len(rows) * row_h + 12.0
    belief_h = 60.0
    height = plan_h + 2 * strip + belief_h + 50.0
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" '
        'font-family="sans-serif" font-size="11">',
        f'<rect width="{width:.0f}" height="{height:.0f}" fill="white"/>',
    ]
    for i, zone in enumerate(floor.zones):
        points = " ".join("{:.1f},{:.1f}".format(*px(x, y)) for x, y in zone.polygon)
        colour = _ZONE_COLOURS[i % len(_ZONE_COLOURS)]
        out.append(f'<polygon points="{points}" fill="{colour}" stroke="#999"/>')
        lx, ly = px(*zone.centroid())
        out.append(f'<text x="{lx:.1f}" y="{ly:.1f}" text-anchor="middle">{zone.id}</text>')
    outline = " ".join("{:.1f},{:.1f}".format(*px(x, y)) for x, y in floor.outline)
    out.append(f'<polygon points="{outline}" fill="none" stroke="#222" stroke-width="3"/>')
    for a, b in floor.walls:
        (x0, y0), (x1, y1) = px(*a), px(*b)
        out.append(
            f'<line x1="{x0:.1f}" y1="{y0:.1f}" x2="{x1:.1f}" y2="{y1:.1f}" '
            'stroke="#222" stroke-width="3"/>'
        )
    for a, b in floor.doors:
        (x0, y0), (x1, y1) = px(*a), px(*b)
        out.append(
            f'<line x1="{x0:.1f}" y1="{y0:.1f}" x2="{x1:.1f}" y2="{y1:.1f}" '
            'stroke="white" stroke-width="5"/>'
        )
    for spec in floor.scanners:
        sx, sy = px(*spec.position)
        out.append(f'<circle cx="{sx:.1f}" cy="{sy:.1f}" r="5" fill="#1f4e9c"/>')
        out.append(f'<text x="{sx + 7:.1f}" y="{sy + 4:.1f}">{spec.id}</text>')
    if trace:
        for p in trace:
            cx, cy = px(p.x, p.y)
            colour = (
                "#bbbbbb"
                if p.shown_zone is None
                else "#2a9d3a"
                if p.shown_zone == p.true_zone
                else "#d62828"
            )
            out.append(f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="2" fill="{colour}"/>')
        t0, t1 = trace[0].t, trace[-1].t
        span = max(t1 - t0, 1.0)
        left = 110.0

        def tx(t: float) -> float:
            return left + (t - t0) / span * (width - left - 10.0)

        for k, label in enumerate(("true", "shown")):
            top = plan_h + k * strip
            for j, zone_id in enumerate(rows):
                out.append(f'<text x="4" y="{top + j * row_h + 10:.1f}">{label} {zone_id}</text>')
            for p in trace:
                value = p.true_zone if label == "true" else p.shown_zone
                j = rows.index(value) if value in rows else len(rows) - 1
                out.append(
                    f'<rect x="{tx(p.t):.1f}" y="{top + j * row_h:.1f}" width="2" '
                    f'height="{row_h - 3:.0f}" fill="#333"/>'
                )
        top = plan_h + 2 * strip
        out.append(f'<text x="4" y="{top + 12:.1f}">P(inside)</text>')
        line = " ".join(f"{tx(p.t):.1f},{top + belief_h * (1.0 - p.p_inside):.1f}" for p in trace)
        out.append(f'<polyline points="{line}" fill="none" stroke="#1f4e9c" stroke-width="1.5"/>')
        out.append(
            f'<text x="4" y="{top + belief_h + 30:.1f}">time {t0:.0f} s to {t1:.0f} s</text>'
        )
    out.append("</svg>")
    return "\n".join(out) + "\n"
