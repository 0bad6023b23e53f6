"""The accuracy lab's report: its figures, the goals checked, and its table (pure).

:mod:`lab.accuracy` runs the lab and fills a :class:`LabReport`; this module only holds the
records and turns them into the Markdown table the command prints.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass

from lab.iphones import IphoneFigures
from lab.run import FULL, PARTS, Reality, TracePoint
from store_server.presence import PresenceSettings

__all__ = [
    "PARTS",
    "Figures",
    "GoalCheck",
    "LabReport",
    "changed_settings",
    "conditions",
    "format_report",
]


@dataclass(frozen=True, slots=True)
class Figures:
    diagonal_misid: float | None
    diagonal_misid_tolerant: float | None
    boundary_misid: float | None
    boundary_misid_tolerant: float | None
    street: int
    street_arrived: int
    street_arrived_per_10000: float  # passers-by and window shoppers together
    shoppers: int
    shoppers_arrived: int
    arrival_p50_s: float | None
    arrival_p95_s: float | None
    missed_arrivals: int
    short_visits: int
    short_visits_detected: float | None
    false_left: int
    flaps_per_hour_mid: float | None
    flaps_per_hour_edge: float | None
    left_p50_s: float | None
    left_p95_s: float | None


@dataclass(frozen=True, slots=True)
class GoalCheck:
    figure: str
    limit: str
    value: float | None
    ok: bool


@dataclass(frozen=True, slots=True)
class LabReport:
    floor: str
    tier: str
    seed: int
    reduced: bool
    calibrated: bool
    figures: Figures
    goals: tuple[GoalCheck, ...]
    trace: tuple[TracePoint, ...]
    iphones: IphoneFigures | None = None
    reality: Reality = FULL
    changed: tuple[tuple[str, object], ...] = ()  # settings other than the defaults
    store: str | None = None  # another store file of the floor than the shipped one

    @property
    def ok(self) -> bool:
        return all(g.ok for g in self.goals)


def changed_settings(settings: PresenceSettings) -> tuple[tuple[str, object], ...]:
    default = PresenceSettings()
    return tuple(
        (item.name, getattr(settings, item.name))
        for item in dataclasses.fields(PresenceSettings)
        if getattr(settings, item.name) != getattr(default, item.name)
    )


def conditions(report: LabReport) -> str:
    """What differs from the full lab with the default settings ("" when nothing does)."""
    parts = []
    if report.store is not None:
        parts.append(f"store file {report.store}")
    if report.reality.off:
        parts.append("without " + ", ".join(report.reality.off))
    if report.reality.tick_s != FULL.tick_s:
        parts.append(f"tick every {report.reality.tick_s:g} s")
    if report.reality.window_s != FULL.window_s:
        parts.append(f"box windows of {report.reality.window_s:g} s")
    if report.reality.tolerance_s != FULL.tolerance_s:
        parts.append(f"a lag of {report.reality.tolerance_s:g} s forgiven")
    if report.changed:
        parts.append("settings " + ", ".join(f"{k}={v}" for k, v in report.changed))
    return "; ".join(parts)


def format_report(report: LabReport) -> str:
    f = report.figures
    diagnosis = conditions(report)
    lines = [
        f"Accuracy lab: floor {report.floor}, tier {report.tier}, seed {report.seed}, "
        f"{'reduced' if report.reduced else 'full'} run"
        + (", after the calibration walk" if report.calibrated else ""),
        *([f"Diagnosis only ({diagnosis})"] if diagnosis else []),
        "",
        "| figure | value |",
        "|---|---|",
    ]
    for name, value in asdict(f).items():
        if value is None:
            text = "-"
        elif "misid" in name or name == "short_visits_detected":
            text = f"{value * 100:.2f} %"
        else:
            text = f"{value:g}" if float(value).is_integer() else f"{value:.2f}"
        lines.append(f"| {name} | {text} |")
    if report.iphones is not None:
        lines += [
            "",
            "iPhones (no beacon of their own: region entry -> proof check-in -> arrived)",
            "",
            "| figure | value |",
            "|---|---|",
        ]
        for name, value in asdict(report.iphones).items():
            if value is None:
                text = "-"
            elif name == "arrived_share":
                text = f"{value * 100:.1f} %"
            else:
                text = f"{value:g}" if float(value).is_integer() else f"{value:.2f}"
            lines.append(f"| iphone_{name} | {text} |")
    lines += ["", "| goal | limit | value | ok |", "|---|---|---|---|"]
    for g in report.goals:
        value = "-" if g.value is None else f"{g.value:.4g}"
        lines.append(f"| {g.figure} | {g.limit} | {value} | {'yes' if g.ok else 'NO'} |")
    return "\n".join(lines) + "\n"
