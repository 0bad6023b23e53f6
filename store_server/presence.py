"""The presence engine: from per-scanner RSSI windows to arrived / zone_changed / left (pure).

No I/O and no clock: every call carries its time. The engine's notion of "now" is the latest
time it has been given (by :meth:`PresenceEngine.observe`, :meth:`PresenceEngine.check_in` or
:meth:`PresenceEngine.tick`).

Rules, each driven by a :class:`PresenceSettings` field:

* **Smoothing.** Per (subject, scanner) the engine keeps the last ``smoothing_windows`` window
  medians and uses their median, after adding the scanner's calibration offset. A single window
  hit by multipath fading cannot move a median of three.
* **Ageing, not weakening.** A reading not refreshed for ``reading_stale_s`` drops out of the
  comparison instead of counting as weak. When the scanner itself has gone silent (it has
  reported no window for anybody since this subject's last one), its last value is kept frozen
  for ``scanner_down_hold_s``: a dead scanner does not move its customers to another zone, and
  as long as another scanner hears them they do not leave.
* **Zone with hysteresis.** A zone's score is the best fresh smoothed RSSI among its scanners.
  A challenger zone replaces the current one only after beating it by ``hysteresis_margin_db``
  continuously for ``hysteresis_hold_s``.
* **Arrival.** A subject arrives only when really inside: the latest window of an interior
  scanner at ``interior_min_rssi_dbm`` or more for ``interior_confirm_s``, or the latest window of
  a non-interior (entrance) scanner at ``entrance_dwell_rssi_dbm`` or more for
  ``entrance_dwell_s``. A passer-by on the pavement reaches neither. A check-in arrives at once.
* **When.** Decisions are taken on :meth:`PresenceEngine.tick`, once per window round; the
  arrival of a subject not yet present can also be decided as soon as its windows are given,
  with :meth:`PresenceEngine.decide_arrivals` (the server does, so a greeting does not wait for
  the next tick).
* **Leaving.** ``left`` after ``left_timeout_s`` without any observation from any scanner
  (``check_in_present_s`` after a check-in).
* **Order.** A window not newer than the last one from the same scanner for the same subject
  (duplicate or out of order) is ignored, and so is any window older than
  ``max_observation_age_s`` behind the engine's clock (a late batch from an outbox says nothing
  about now). Windows from unknown scanners are ignored.

Memory per subject is bounded by the number of scanners times ``smoothing_windows``; a subject's
state is dropped when it leaves (or times out without ever arriving) and on :meth:`forget`.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

from store_server.floor import Floor, FloorError, ScannerSpec

__all__ = [
    "Evidence",
    "Observation",
    "PresenceEngine",
    "PresenceEvent",
    "PresenceSettings",
]

logger = logging.getLogger(__name__)

# Score of a zone with no usable reading: loses against any real reading.
NO_SIGNAL = -math.inf
# Gauss-Newton iterations of the position fit: from the previous position it converges in two
# or three; eight bounds the cost of a bad start.
FIT_ITERATIONS = 8
# A fit step below 2 cm changes no zone decision: stop iterating.
FIT_TOLERANCE_M = 0.02
# A single step moves at most 2 m: the log-distance model is steep near a scanner and an
# undamped step could jump across the shop.
FIT_MAX_STEP_M = 2.0
# Levenberg-Marquardt damping relative to the curvature: keeps the 2x2 system well conditioned
# when the scanners are nearly aligned with the phone.
FIT_DAMPING = 0.01
# The fit may place a phone this far beyond the side walls: passers-by walk along the whole
# pavement, and clamping them to the floor would pull them in front of the window.
FIT_OUTSIDE_M = 5.0
# Squared distance below which the model is not used (10 cm, as in the radio model).
MIN_FIT_D2 = 0.01


@dataclass(frozen=True, slots=True)
class Observation:
    """One scanner's aggregate of one subject over a ~1 s window (RSSI as reported, in dBm)."""

    subject: str
    scanner_id: str
    t: float
    rssi_median: float
    rssi_max: float
    count: int


@dataclass(frozen=True, slots=True)
class Evidence:
    """A scanner's smoothed, calibrated RSSI for the subject when an event was decided."""

    scanner_id: str
    smoothed_rssi: float


EventKind = Literal["arrived", "zone_changed", "left"]
Via = Literal["beacon", "check_in"]


@dataclass(frozen=True, slots=True)
class PresenceEvent:
    """A presence decision about one subject."""

    kind: EventKind
    subject: str
    zone: str | None
    t: float
    evidence: tuple[Evidence, ...]
    via: Via = "beacon"


@dataclass(frozen=True, slots=True)
class PresenceSettings:
    """Every threshold of the engine; the defaults are tuned and measured by the accuracy lab."""

    # Median of the last 3 one-second windows: one multipath-hit window cannot move it, and it
    # lags a walking customer by only about one window.
    smoothing_windows: int = 3
    # A reading not refreshed for 5 s (five missed windows) no longer describes where the
    # phone is; it drops out rather than counting as weak.
    reading_stale_s: float = 5.0
    # A challenger zone must be 2.5 dB stronger: above the ~1 dB noise of a median of three
    # windows, below the gap a customer really standing in another zone produces.
    hysteresis_margin_db: float = 2.5
    # ...for 1 s on end (two windows): the median already absorbs single bad windows; a longer
    # hold makes walkers lag behind their zone (measured by the lab: 0 flaps/h while dwelling).
    hysteresis_hold_s: float = 1.0
    # An interior scanner at -72 dBm or more (about 3 m) is out of reach of the pavement:
    # through the glass a passer-by stays 7 dB or more below this at every interior scanner.
    interior_min_rssi_dbm: float = -72.0
    # One window: its value is already the median of the window's advertisements, and -72 dBm
    # at an interior scanner is out of reach from the pavement (lab: 0 of 10,000 passers-by);
    # waiting for a second window cost a second of arrival (lab: crowd p95 3.7 s, not 2.7 s).
    interior_confirm_s: float = 0.0
    # An entrance (non-interior) scanner at -62 dBm or more (about 1.3 m) means standing in the
    # entrance; passers-by on the pavement, 1.7 m away behind the glass, stay 7 dB below.
    entrance_dwell_rssi_dbm: float = -62.0
    # ...for 1 s (two consecutive windows): one noisy window is not enough, and a customer
    # walking in stays that long near the door scanner (arrival p95 < 3 s in the lab).
    entrance_dwell_s: float = 1.0
    # 30 s without any window: phones throttled in a pocket miss a few windows, a customer who
    # walked out is gone within half a minute.
    left_timeout_s: float = 30.0
    # A down scanner's last readings stay frozen for 5 min, the time to restart a box; after
    # that the engine works with the scanners that remain.
    scanner_down_hold_s: float = 300.0
    # A check-in is the customer saying "I'm here": present for 15 min even without a beacon
    # (iOS cannot advertise in the background), unless beacons keep them present longer.
    check_in_present_s: float = 900.0
    # Windows arriving more than 10 s behind the engine's clock (a scanner draining its outbox
    # after an outage) describe the past, not presence now.
    max_observation_age_s: float = 10.0
    # The phone's RSSI at 1 m from a scanner, after calibration: measured once at installation
    # (a phone held 1 m from each scanner); the position fit compares readings with it.
    model_reference_rssi_dbm: float = -59.0
    # Path-loss exponent of the shop (2.0 free space; 2.7 open plan with shelving and people),
    # measured at installation with the same phone at a few distances.
    model_path_loss_exponent: float = 2.7
    # Three live scanners fix a position in the plane; with fewer, the zone is that of the
    # strongest scanner (with the signal margin above).
    min_fit_scanners: int = 3
    # Hysteresis in space: leave the current zone only when the estimated position is 0.2 m
    # outside it (lab: 0.3 m delays every crossing by a further 0.1 s of walking and raised
    # the boundary mis-identification; 0 lets a customer standing near an edge flap).
    zone_margin_m: float = 0.2
    # Hysteresis in time for the position estimate: none. The margin in space already stops
    # flaps (lab: 0 per hour while dwelling) and every second of hold is a second in the wrong
    # zone at each crossing (lab, 1 s: boundary mis-identification 18 % instead of 9 %).
    zone_hold_s: float = 0.0

    def __post_init__(self) -> None:
        if self.smoothing_windows < 1:
            raise ValueError("smoothing_windows must be at least 1")
        if self.min_fit_scanners < 3:
            raise ValueError("min_fit_scanners must be at least 3")
        if self.model_path_loss_exponent <= 0.0:
            raise ValueError("model_path_loss_exponent must be positive")
        for name in (
            "reading_stale_s",
            "hysteresis_margin_db",
            "hysteresis_hold_s",
            "interior_confirm_s",
            "entrance_dwell_s",
            "left_timeout_s",
            "scanner_down_hold_s",
            "check_in_present_s",
            "max_observation_age_s",
            "zone_margin_m",
            "zone_hold_s",
        ):
            if getattr(self, name) < 0.0:
                raise ValueError(f"{name} must not be negative")


@dataclass(slots=True)
class _Track:
    """Recent windows of one subject at one scanner."""

    windows: deque[tuple[float, float]]
    last_t: float = NO_SIGNAL
    smoothed: float = NO_SIGNAL


@dataclass(slots=True)
class _Subject:
    tracks: dict[str, _Track] = field(default_factory=dict)
    last_seen: float = NO_SIGNAL
    check_in_t: float = NO_SIGNAL
    arrived: bool = False
    zone: str | None = None
    challenger: str | None = None
    challenger_since: float = 0.0
    interior_since: float | None = None
    dwell_since: float | None = None
    position: tuple[float, float] | None = None
    dirty: bool = False


class PresenceEngine:
    """Presence state of every subject seen recently. Not thread-safe; one owner calls it."""

    def __init__(self, floor: Floor, settings: PresenceSettings | None = None) -> None:
        self._floor = floor
        self._settings = settings if settings is not None else PresenceSettings()
        self._scanners: dict[str, ScannerSpec] = {s.id: s for s in floor.scanners}
        self._zone_ids = {z.id for z in floor.zones}
        self._zone_rects = {z.id: z.rect for z in floor.zones}
        self._subjects: dict[str, _Subject] = {}
        self._scanner_last: dict[str, float] = {}
        self._now = NO_SIGNAL

    def set_calibration(self, scanner_id: str, rssi_offset_db: float) -> None:
        """Use a new calibration offset for one scanner from now on (FloorError if unknown)."""
        spec = self._scanners.get(scanner_id)
        if spec is None:
            raise FloorError(f"unknown scanner {scanner_id!r}")
        self._scanners[scanner_id] = replace(spec, rssi_offset_db=rssi_offset_db)

    def calibration(self) -> dict[str, float]:
        """The calibration offset in force for each scanner of the floor."""
        return {sid: spec.rssi_offset_db for sid, spec in self._scanners.items()}

    @property
    def settings(self) -> PresenceSettings:
        return self._settings

    def __len__(self) -> int:
        """Number of subjects the engine holds state for (arrived or not yet)."""
        return len(self._subjects)

    # --- queries ---------------------------------------------------------------------------

    def zone_of(self, subject: str) -> str | None:
        """The zone of an arrived subject, ``None`` if the subject is not present."""
        state = self._subjects.get(subject)
        if state is None or not state.arrived:
            return None
        return state.zone

    def present(self) -> dict[str, str]:
        """Every arrived subject with its zone."""
        return {
            subject: state.zone
            for subject, state in self._subjects.items()
            if state.arrived and state.zone is not None
        }

    # --- inputs ----------------------------------------------------------------------------

    def observe(self, obs: Observation) -> list[PresenceEvent]:
        """Take one scanner window into account; returns the events it causes."""
        spec = self._scanners.get(obs.scanner_id)
        if spec is None:
            logger.debug("window from unknown scanner %s ignored", obs.scanner_id)
            return []
        if obs.t < self._now - self._settings.max_observation_age_s:
            logger.debug("window from %s too old, ignored", obs.scanner_id)
            return []
        if not math.isfinite(obs.rssi_median) or obs.count < 1:
            return []
        state = self._subjects.get(obs.subject)
        if state is None:
            state = _Subject()
            self._subjects[obs.subject] = state
        track = state.tracks.get(obs.scanner_id)
        if track is None:
            track = _Track(windows=deque(maxlen=self._settings.smoothing_windows))
            state.tracks[obs.scanner_id] = track
        elif obs.t <= track.last_t:
            logger.debug("out-of-order window from %s ignored", obs.scanner_id)
            return []
        track.windows.append((obs.t, obs.rssi_median + spec.rssi_offset_db))
        track.last_t = obs.t
        track.smoothed = NO_SIGNAL
        self._now = max(self._now, obs.t)
        self._scanner_last[obs.scanner_id] = max(
            self._scanner_last.get(obs.scanner_id, NO_SIGNAL), obs.t
        )
        state.last_seen = max(state.last_seen, obs.t)
        state.dirty = True
        return []

    def observe_many(
        self,
        scanner_id: str,
        subjects: Sequence[str],
        t: Sequence[float],
        rssi_median: Sequence[float],
        count: Sequence[int],
    ) -> list[str]:
        """:meth:`observe` of many windows of one scanner, in the order given.

        Exactly the same state as one :meth:`observe` per window (no event is emitted by
        observing), without an :class:`Observation` per window. Returns the subjects whose
        window was taken into account (not ignored as old, out of order or unusable), in
        order: only they can have become due for :meth:`decide_arrivals`.
        """
        spec = self._scanners.get(scanner_id)
        if spec is None:
            logger.debug("windows from unknown scanner %s ignored", scanner_id)
            return []
        offset = spec.rssi_offset_db
        max_age = self._settings.max_observation_age_s
        smoothing = self._settings.smoothing_windows
        states = self._subjects
        now = self._now
        scanner_last = self._scanner_last.get(scanner_id, NO_SIGNAL)
        isfinite = math.isfinite
        taken: list[str] = []
        for subject, at, median, n in zip(subjects, t, rssi_median, count, strict=True):
            if at < now - max_age or not isfinite(median) or n < 1:
                continue
            state = states.get(subject)
            if state is None:
                state = states[subject] = _Subject()
            track = state.tracks.get(scanner_id)
            if track is None:
                track = state.tracks[scanner_id] = _Track(windows=deque(maxlen=smoothing))
            elif at <= track.last_t:
                continue
            track.windows.append((at, median + offset))
            track.last_t = at
            track.smoothed = NO_SIGNAL
            if at > now:
                now = at
            if at > scanner_last:
                scanner_last = at
            if at > state.last_seen:
                state.last_seen = at
            state.dirty = True
            taken.append(subject)
        self._now = now
        if taken:
            self._scanner_last[scanner_id] = scanner_last
        return taken

    def check_in(self, subject: str, t: float, zone: str | None = None) -> list[PresenceEvent]:
        """An explicit "I'm here" from the app: arrives at once (in ``zone`` if given)."""
        if zone is not None and zone not in self._zone_ids:
            raise FloorError(f"unknown zone {zone!r}")
        self._now = max(self._now, t)
        state = self._subjects.get(subject)
        if state is None:
            state = _Subject()
            self._subjects[subject] = state
        state.check_in_t = max(state.check_in_t, t)
        evidence = self._evidence(state, t)
        if not state.arrived:
            state.arrived = True
            if zone is not None:
                state.zone = zone
            elif state.zone is None:
                state.zone = self._floor.door_zone() or self._floor.zones[0].id
            state.challenger = None
            return [PresenceEvent("arrived", subject, state.zone, t, evidence, "check_in")]
        if zone is not None and zone != state.zone:
            state.zone = zone
            state.challenger = None
            return [PresenceEvent("zone_changed", subject, zone, t, evidence, "check_in")]
        return []

    def tick(self, now: float) -> list[PresenceEvent]:
        """Advance the clock: left timeouts and decisions that were waiting for time to pass."""
        self._now = max(self._now, now)
        now = self._now
        events: list[PresenceEvent] = []
        gone: list[str] = []
        for subject, state in self._subjects.items():
            if now >= self._left_deadline(state):
                gone.append(subject)
                if state.arrived:
                    events.append(
                        PresenceEvent("left", subject, state.zone, now, self._evidence(state, now))
                    )
                continue
            if state.dirty or state.challenger is not None:
                events.extend(self._evaluate(subject, state, now))
        for subject in gone:
            del self._subjects[subject]
        return events

    def decide_arrivals(self, subjects: Iterable[str], now: float) -> list[PresenceEvent]:
        """Decide at once whether ``subjects`` with new windows have arrived, as of ``now``.

        ``now`` is the time of the windows just given to :meth:`observe` (so a dwell counts
        window times, exactly as when :meth:`tick` runs at that time). Only subjects that are
        not present yet and have a new window are evaluated: the cost is proportional to them,
        and the only event is ``arrived``. Zone changes of present subjects, pending
        hysteresis and left timeouts stay with :meth:`tick`, once per window round.
        """
        self._now = max(self._now, now)
        events: list[PresenceEvent] = []
        states = self._subjects
        # Most subjects with new windows are present already: leave them out before sorting.
        due = [s for s in subjects if (state := states.get(s)) is not None and not state.arrived]
        for subject in sorted(due):  # events in a reproducible order, whatever the input
            state = states.get(subject)
            if state is None or state.arrived or not state.dirty:
                continue
            if now >= self._left_deadline(state):
                continue  # gone already: tick drops it
            events.extend(self._evaluate(subject, state, now))
        return events

    def forget(self, subject: str) -> None:
        """Drop everything about ``subject`` (withdrawal or erasure); emits nothing."""
        self._subjects.pop(subject, None)

    # --- internals -------------------------------------------------------------------------

    def _left_deadline(self, state: _Subject) -> float:
        settings = self._settings
        return max(
            state.last_seen + settings.left_timeout_s,
            state.check_in_t + settings.check_in_present_s,
        )

    def _value(self, scanner_id: str, track: _Track, now: float) -> float:
        """The smoothed calibrated reading usable at ``now``, or ``NO_SIGNAL``."""
        settings = self._settings
        age = now - track.last_t
        if age > settings.reading_stale_s:
            # Stale. If the scanner has reported nobody since, it is silent rather than the
            # subject gone from its range: keep its last value for a while.
            silent = self._scanner_last.get(scanner_id, NO_SIGNAL) <= track.last_t
            if not silent or age > settings.scanner_down_hold_s:
                return NO_SIGNAL
        if track.smoothed == NO_SIGNAL:
            values = sorted(v for _, v in track.windows)
            middle = len(values) // 2
            if len(values) % 2:
                track.smoothed = values[middle]
            else:
                track.smoothed = (values[middle - 1] + values[middle]) / 2.0
        return track.smoothed

    def _evidence(self, state: _Subject, now: float) -> tuple[Evidence, ...]:
        readings = [
            Evidence(scanner_id, value)
            for scanner_id, track in state.tracks.items()
            if (value := self._value(scanner_id, track, now)) != NO_SIGNAL
        ]
        readings.sort(key=lambda e: (-e.smoothed_rssi, e.scanner_id))
        return tuple(readings)

    def _evaluate(self, subject: str, state: _Subject, now: float) -> list[PresenceEvent]:
        settings = self._settings
        state.dirty = False
        # (scanner, smoothed value, value for the position fit)
        fresh: list[tuple[ScannerSpec, float, float]] = []
        frozen: list[tuple[ScannerSpec, float, float]] = []
        dwell = False
        interior_best = NO_SIGNAL
        for scanner_id, track in state.tracks.items():
            value = self._value(scanner_id, track, now)
            if value == NO_SIGNAL:
                continue
            spec = self._scanners[scanner_id]
            if now - track.last_t <= settings.reading_stale_s:
                # Arrival and the position fit look at the latest windows themselves: the
                # smoothed value lags a walker by a window or two.
                latest = track.windows[-1][1]
                fresh.append((spec, value, latest))
                if spec.interior:
                    interior_best = max(interior_best, latest)
                elif latest >= settings.entrance_dwell_rssi_dbm:
                    dwell = True
            else:
                frozen.append((spec, value, value))
        if not fresh and not frozen:
            # Nothing usable: keep every decision as it is.
            return []
        # A silent scanner's frozen value only counts while too few live ones remain.
        usable = fresh if len(fresh) >= settings.min_fit_scanners else fresh + frozen
        best_scanner = max(usable, key=lambda r: (r[1], r[0].id))[0]

        position: tuple[float, float] | None = None
        if len(usable) >= settings.min_fit_scanners:
            position = self._fit([(spec, fit) for spec, _, fit in usable], state.position)
            state.position = position

        changed = self._update_zone(state, usable, position, now)

        if state.arrived:
            if changed:
                return [
                    PresenceEvent(
                        "zone_changed", subject, state.zone, now, self._evidence(state, now)
                    )
                ]
            return []

        # Arrival: interior confirmation or a dwell at the entrance.
        if interior_best >= settings.interior_min_rssi_dbm:
            if state.interior_since is None:
                state.interior_since = now
        else:
            state.interior_since = None
        state.dwell_since = (
            (state.dwell_since if state.dwell_since is not None else now) if dwell else None
        )
        confirmed = (
            state.interior_since is not None
            and now - state.interior_since >= settings.interior_confirm_s
        ) or (
            state.dwell_since is not None and now - state.dwell_since >= settings.entrance_dwell_s
        )
        if not confirmed:
            return []
        state.arrived = True
        if position is not None:
            state.zone = self._zone_near(position)
        elif best_scanner.interior:
            # Confirmed by an interior scanner: start in its zone rather than wait for the
            # hysteresis that was tracking the subject from outside.
            state.zone = best_scanner.zone
        state.challenger = None
        return [PresenceEvent("arrived", subject, state.zone, now, self._evidence(state, now))]

    def _update_zone(
        self,
        state: _Subject,
        usable: list[tuple[ScannerSpec, float, float]],
        position: tuple[float, float] | None,
        now: float,
    ) -> bool:
        """Zone with hysteresis in space (or signal) and time; True when the zone changed."""
        settings = self._settings
        if position is not None:
            leader = self._zone_near(position)
            # Hysteresis in space: leave the current zone only when clearly outside it.
            beaten = state.zone is None or (
                self._distance_to_zone(state.zone, position) >= settings.zone_margin_m
            )
        else:
            # Too few scanners for a position: the zone of the strongest scanner, whose
            # challenger must win by a margin.
            scores: dict[str, float] = {}
            for spec, value, _ in usable:
                scores[spec.zone] = max(scores.get(spec.zone, NO_SIGNAL), value)
            leader = max(scores, key=lambda z: (scores[z], z))
            incumbent = NO_SIGNAL if state.zone is None else scores.get(state.zone, NO_SIGNAL)
            beaten = scores[leader] >= incumbent + settings.hysteresis_margin_db
        if state.zone is None:
            state.zone = leader
            return False
        if leader == state.zone or not beaten:
            state.challenger = None
            return False
        if state.challenger != leader:
            state.challenger, state.challenger_since = leader, now
        hold = settings.zone_hold_s if position is not None else settings.hysteresis_hold_s
        if now - state.challenger_since >= hold:
            state.zone, state.challenger = leader, None
            return True
        return False

    def _zone_near(self, position: tuple[float, float]) -> str:
        """The zone holding ``position``, else the nearest zone (an estimate off the floor)."""
        x, y = position
        zone = self._floor.zone_at(x, y)
        if zone is not None:
            return zone
        return min(self._floor.zones, key=lambda z: (_rect_distance(z.rect, x, y), z.id)).id

    def _distance_to_zone(self, zone_id: str, position: tuple[float, float]) -> float:
        rect = self._zone_rects.get(zone_id)
        if rect is None:
            return math.inf
        return _rect_distance(rect, position[0], position[1])

    def _fit(
        self, readings: list[tuple[ScannerSpec, float]], previous: tuple[float, float] | None
    ) -> tuple[float, float]:
        """Least-squares position on the log-distance model (Gauss-Newton, two starts)."""
        ranked = sorted(readings, key=lambda sv: -sv[1])
        top = ranked[:3]
        weights = [10.0 ** (v / 20.0) for _, v in top]
        total = sum(weights)
        centroid = (
            sum(w * s.position[0] for (s, _), w in zip(top, weights, strict=True)) / total,
            sum(w * s.position[1] for (s, _), w in zip(top, weights, strict=True)) / total,
        )
        # The cost has local minima: start also just off the strongest scanner.
        strongest = ranked[0][0].position
        starts = [centroid, (strongest[0] + 0.5, strongest[1] + 0.5)]
        if previous is not None:
            starts.append(previous)
        best: tuple[float, float] = centroid
        best_cost = math.inf
        for start in starts:
            point, cost = self._gauss_newton(readings, start)
            if cost < best_cost:
                best, best_cost = point, cost
        return best

    def _gauss_newton(
        self, readings: list[tuple[ScannerSpec, float]], start: tuple[float, float]
    ) -> tuple[tuple[float, float], float]:
        settings = self._settings
        floor = self._floor
        ref = settings.model_reference_rssi_dbm
        half_n = 5.0 * settings.model_path_loss_exponent  # 10 n log10(d) = 5 n log10(d^2)
        slope = 10.0 * settings.model_path_loss_exponent / math.log(10.0)
        x, y = start
        cost = math.inf
        for _ in range(FIT_ITERATIONS):
            a11 = a12 = a22 = b1 = b2 = 0.0
            cost = 0.0
            for spec, value in readings:
                sx, sy = spec.position
                dx, dy = x - sx, y - sy
                d2 = max(dx * dx + dy * dy, MIN_FIT_D2)
                predicted = ref - half_n * math.log10(d2)
                if y < 0.0 <= sy:
                    predicted -= floor.front_attenuation_db
                error = value - predicted
                cost += error * error
                jx, jy = -slope * dx / d2, -slope * dy / d2
                a11 += jx * jx
                a12 += jx * jy
                a22 += jy * jy
                b1 += jx * error
                b2 += jy * error
            damping = FIT_DAMPING * (a11 + a22) + 1e-9
            a11 += damping
            a22 += damping
            det = a11 * a22 - a12 * a12
            step_x = (a22 * b1 - a12 * b2) / det
            step_y = (a11 * b2 - a12 * b1) / det
            length = math.hypot(step_x, step_y)
            if length > FIT_MAX_STEP_M:
                step_x *= FIT_MAX_STEP_M / length
                step_y *= FIT_MAX_STEP_M / length
            x = min(max(x + step_x, -FIT_OUTSIDE_M), floor.width_m + FIT_OUTSIDE_M)
            y = min(max(y + step_y, floor.pavement_y_min), floor.depth_m)
            if length < FIT_TOLERANCE_M:
                break
        return (x, y), cost


def _rect_distance(rect: tuple[float, float, float, float], x: float, y: float) -> float:
    """Distance from a point to an axis-aligned rectangle (0 inside)."""
    x_min, y_min, x_max, y_max = rect
    dx = max(x_min - x, 0.0, x - x_max)
    dy = max(y_min - y, 0.0, y - y_max)
    return math.hypot(dx, dy)
