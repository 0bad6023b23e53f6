"""Online calibration: which windows are samples of a box's radio, and when a fit is used (pure).

A box's RSSI offset and path-loss exponent are fitted (:mod:`store_server.calibration`) from
windows heard while the phone's place is known:

* **the guided walk**: a manager starts a walk, the calibration phone joins it with the walk's
  code, and at each zone the manager taps "I am here"; the phone's next windows (the first one
  of each box skipped: it began before the tap) are samples at the middle of that zone, until
  the box that hears it best has given ``WALK_WINDOWS_PER_ZONE`` windows;
* **check-ins at a zone** (an explicit check-in naming its zone, or a beacon-proof check-in,
  located at its box's zone): at most ``CHECK_IN_WINDOWS_PER_BOX`` windows per box in the
  ``CHECK_IN_WINDOW_S`` after it;
* **boxes hearing each other** (a box that advertises its store beacon, heard by another at the
  distance between the two on the floor): :meth:`OnlineCalibration.box_heard`, with the
  advertised power at 1 m; pairs in line of sight (no wall of the floor between them) where a
  box has enough of them (:func:`box_places`), at most one window per pair every
  ``BOX_SAMPLE_INTERVAL_S``, the latest ``BOX_SAMPLES_PER_PAIR`` of each pair kept and
  weighing ``BOX_PAIR_WEIGHT`` samples together (two fixed boxes would otherwise fill a box's
  samples within minutes and outweigh the walk with what is one measurement).

A box's fit is *used* (given to the engine) only once it is good enough: enough samples, from
enough distinct places, and residuals small enough that the samples agree with one another.
No clock and no I/O: every call carries its time; the service stores what :meth:`take_new`
returns and applies what :meth:`fits` says.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from store_server.calibration import MAX_SAMPLES, Calibrator
from store_server.floor import Floor
from store_server.presence_grid import FloorGrid

__all__ = [
    "LearnedFit",
    "OnlineCalibration",
    "Place",
    "Sample",
    "WalkStatus",
    "box_places",
    "zone_places",
]

Source = Literal["walk", "check_in", "box"]
BoxPairs = Literal["line_of_sight", "line_of_sight_first", "all"]

# A zone step of the walk ends when the box hearing the phone best gave this many windows
# (about 15 s standing at one window a second): enough for a median's noise to average out.
WALK_WINDOWS_PER_ZONE = 15
# A zone step also ends this long after the tap, whatever was heard: the manager walks on.
WALK_ZONE_MAX_S = 60.0
# The first window of each box after a tap began before it (the manager was still walking).
WALK_SKIP_WINDOWS = 1
# A walk nobody finishes is dropped after this long (its samples are kept).
WALK_TTL_S = 3600.0
# The calibration phone joins within this long of the walk's start, or the code lapses.
WALK_JOIN_S = 600.0
# Digits of the walk's code, typed into the calibration phone: one in a million to guess.
WALK_CODE_DIGITS = 6
# After this many wrong codes the walk takes no phone (someone is guessing): start another.
WALK_MAX_WRONG_CODES = 5
# A customer who checks in at a zone stands there for a few seconds, not more.
CHECK_IN_WINDOW_S = 10.0
# ...and is somewhere in the zone, not in its middle: a few windows each, never a whole fit.
CHECK_IN_WINDOWS_PER_BOX = 3
# A fit is used once it has this many samples...
MIN_SAMPLES_TO_USE = 12
# ...from this many places at distinct distances (one place cannot separate offset and exponent)...
MIN_PLACES_TO_USE = 2
# ...and its samples agree: a root-mean-square residual above this is wrong taps or a moved box
# (one reading's spread is about 2.5 dB, a window's median less; bodies add some).
MAX_RESIDUAL_DB = 6.0
# The phone is in the hand during a walk and when a customer taps a check-in.
HAND_HEIGHT_M = 1.2
# Closer than this to a box, the log-distance model does not hold (the antenna's near field,
# and a few tens of centimetres of where the phone is held change the distance several-fold):
# such windows are not samples.
MIN_DISTANCE_M = 1.0
# Distances closer than this (in 10 log10 d units, about 12 % apart) are the same place.
PLACE_RESOLUTION = 0.5
# A box's fit is recomputed at most this often from check-ins (walk samples: at every call).
REFIT_INTERVAL_S = 10.0
# Two boxes never move: their windows a second apart share the same multipath, so one window
# per pair a minute is as much as they tell (people walking between them change it slowly).
BOX_SAMPLE_INTERVAL_S = 60.0
# Samples kept per pair of boxes (the latest): 20 minutes of one pair; a moved box is
# forgotten in as long.
BOX_SAMPLES_PER_PAIR = 20
# What all the samples of one pair of boxes weigh in a fit, in independent samples: the pair's
# fading and the speaker's transmitter error are the same in every one of them, so twenty
# windows of a pair tell little more than a few (a walk's windows are spread over the zones).
BOX_PAIR_WEIGHT = 2.0
# A box that hears this many others in line of sight learns from those only; with fewer (one
# pair cannot separate offset and exponent), it learns through the walls too.
MIN_LINE_OF_SIGHT_PAIRS = 2


@dataclass(frozen=True, slots=True)
class Place:
    """Where a phone (or a box) stands as seen from one box: 3-D distance, walls in between."""

    distance_m: float
    walls_db: float


@dataclass(frozen=True, slots=True)
class Sample:
    """One window median heard by ``box_id`` from a known place (no customer identifier)."""

    box_id: str
    distance_m: float
    walls_db: float
    rssi_dbm: float
    at: float
    source: Source


@dataclass(frozen=True, slots=True)
class LearnedFit:
    """What was learned for one box, and whether it is good enough to be used."""

    box_id: str
    rssi_offset_db: float
    path_loss_exponent: float
    samples: int
    places: int
    residual_db: float
    usable: bool
    updated_at: float


@dataclass(frozen=True, slots=True)
class WalkStatus:
    """The guided walk as its page shows it."""

    code: str
    started_by: str
    started_at: float
    joined: bool
    zone: str | None  # the zone of the step in progress, None between steps
    progress: float  # 0-1 of the step in progress (or of the last one)
    done_zones: tuple[str, ...]


@dataclass(slots=True)
class _Anchor:
    zone: str
    source: Source
    since: float
    until: float
    per_box_limit: int
    taken: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)
    skip: int = 0


@dataclass(slots=True)
class _Walk:
    code: str
    started_by: str
    started_at: float
    subject: str | None = None
    wrong_codes: int = 0
    done_zones: list[str] = field(default_factory=list)
    last_progress: float = 0.0


def _nearest_cell(grid: FloorGrid, x: float, y: float) -> int:
    far = np.where(grid.inside, 0.0, 1e6)
    return int(np.argmin((grid.x - x) ** 2 + (grid.y - y) ** 2 + far))


def zone_places(
    floor: Floor, grid: FloorGrid, phone_height_m: float = HAND_HEIGHT_M
) -> dict[str, dict[str, Place]]:
    """Per zone, per box: the place of a phone held in the middle of the zone."""
    places: dict[str, dict[str, Place]] = {}
    for zone in floor.zones:
        cx, cy = zone.centroid()
        cell = _nearest_cell(grid, cx, cy)
        places[zone.id] = {
            spec.id: Place(
                math.dist((cx, cy, phone_height_m), (*spec.position, spec.height_m)),
                float(grid.attenuation_db[b, cell]),
            )
            for b, spec in enumerate(floor.scanners)
        }
    return places


def box_places(
    floor: Floor, grid: FloorGrid, *, pairs: BoxPairs = "line_of_sight_first"
) -> dict[str, dict[str, Place]]:
    """Per listening box, per advertising box: the 3-D distance between the two boxes (each at
    its own height) and the floor's walls between the listener and the advertiser's cell.

    Which pairs (docs/presence.md, "Calibration"): ``line_of_sight`` only those with no wall
    between them; ``line_of_sight_first`` (the server's) those, and all of a box's pairs when
    fewer than ``MIN_LINE_OF_SIGHT_PAIRS`` of its pairs are in line of sight (a box in a room
    of its own); ``all`` every pair. What a real wall absorbs differs from the floor's one
    figure by several dB either way, and that difference goes whole into the listener's
    offset: through walls only for a box that has nothing better.
    """
    places: dict[str, dict[str, Place]] = {}
    for b, listener in enumerate(floor.scanners):
        here: dict[str, Place] = {}
        for source in floor.scanners:
            if source.id == listener.id:
                continue
            cell = _nearest_cell(grid, *source.position)
            here[source.id] = Place(
                math.dist(
                    (*source.position, source.height_m), (*listener.position, listener.height_m)
                ),
                float(grid.attenuation_db[b, cell]),
            )
        clear = {box: place for box, place in here.items() if place.walls_db <= 0.0}
        if pairs == "line_of_sight" or (
            pairs == "line_of_sight_first" and len(clear) >= MIN_LINE_OF_SIGHT_PAIRS
        ):
            here = clear
        places[listener.id] = here
    return places


class OnlineCalibration:
    """The samples of every box, the walk in progress and the check-ins being listened to."""

    def __init__(
        self,
        zones: Mapping[str, Mapping[str, Place]],
        boxes: Mapping[str, Mapping[str, Place]],
        reference_rssi_dbm: float,
        default_exponent: float,
        *,
        from_check_ins: bool = True,
    ) -> None:
        self._zones = zones
        self._boxes = boxes
        self.reference_rssi_dbm = reference_rssi_dbm
        self.default_exponent = default_exponent
        self.from_check_ins = from_check_ins
        self._samples: dict[str, list[Sample]] = {}
        self._new: list[Sample] = []
        self._anchors: dict[str, _Anchor] = {}  # by subject
        self._walk: _Walk | None = None
        self._dirty: dict[str, float] = {}  # box -> when it last got a sample not fitted yet
        self._fitted_at: dict[str, float] = {}
        self._urgent: set[str] = set()
        self._pair_at: dict[tuple[str, str], float] = {}  # (listener, speaker) -> last sample

    # --- what is listened to ---------------------------------------------------------------

    @property
    def listening(self) -> bool:
        """Whether any subject's windows are wanted now (a cheap test for the ingest path)."""
        return bool(self._anchors)

    def check_in(self, subject: str, zone: str, now: float) -> bool:
        """A check-in located at ``zone``: listen to the subject's next windows."""
        if not self.from_check_ins or zone not in self._zones:
            return False
        if self._walk is not None and self._walk.subject == subject:
            return False  # the calibration phone's own check-ins are not the walk's taps
        self._anchors[subject] = _Anchor(
            zone, "check_in", now, now + CHECK_IN_WINDOW_S, CHECK_IN_WINDOWS_PER_BOX
        )
        return True

    def start_walk(self, started_by: str, code: str, now: float) -> WalkStatus:
        """Start a guided walk (replacing one in progress) that the phone joins with ``code``
        (the caller draws it: WALK_CODE_DIGITS random digits)."""
        self._end_walk_anchor()
        self._walk = _Walk(code, started_by, now)
        status = self.walk_status(now)
        assert status is not None
        return status

    def join_walk(self, code: str, subject: str, now: float) -> bool:
        """The calibration phone (a consenting app's subject) joins the walk with its code."""
        walk = self._current_walk(now)
        if walk is None or walk.subject is not None or now - walk.started_at > WALK_JOIN_S:
            return False
        if walk.wrong_codes >= WALK_MAX_WRONG_CODES:
            return False
        if not secrets.compare_digest(walk.code.encode(), code.strip().encode()):
            walk.wrong_codes += 1
            return False
        walk.subject = subject
        self._anchors.pop(subject, None)
        return True

    def here(self, zone: str, now: float) -> bool:
        """The manager taps "I am here" in ``zone``: the phone's next windows are that zone's."""
        walk = self._current_walk(now)
        if walk is None or walk.subject is None or zone not in self._zones:
            return False
        self._end_walk_anchor()
        walk.last_progress = 0.0
        self._anchors[walk.subject] = _Anchor(
            zone, "walk", now, now + WALK_ZONE_MAX_S, WALK_WINDOWS_PER_ZONE, skip=WALK_SKIP_WINDOWS
        )
        return True

    def end_walk(self) -> None:
        """Finish (or cancel) the walk; what it collected stays."""
        self._end_walk_anchor()
        self._walk = None

    def walk_status(self, now: float) -> WalkStatus | None:
        walk = self._current_walk(now)
        if walk is None:
            return None
        anchor = self._anchors.get(walk.subject) if walk.subject is not None else None
        if anchor is not None and anchor.source == "walk" and now > anchor.until:
            self._close(walk, anchor)
            anchor = None
        return WalkStatus(
            code=walk.code,
            started_by=walk.started_by,
            started_at=walk.started_at,
            joined=walk.subject is not None,
            zone=anchor.zone if anchor is not None else None,
            progress=_progress(anchor) if anchor is not None else walk.last_progress,
            done_zones=tuple(walk.done_zones),
        )

    def _current_walk(self, now: float) -> _Walk | None:
        walk = self._walk
        if walk is not None and now - walk.started_at > WALK_TTL_S:
            self.end_walk()
            return None
        return walk

    def _end_walk_anchor(self) -> None:
        walk = self._walk
        if walk is None or walk.subject is None:
            return
        anchor = self._anchors.get(walk.subject)
        if anchor is not None and anchor.source == "walk":
            self._close(walk, anchor)

    def _close(self, walk: _Walk, anchor: _Anchor) -> None:
        walk.last_progress = _progress(anchor)
        if anchor.taken and anchor.zone not in walk.done_zones:
            walk.done_zones.append(anchor.zone)
        if walk.subject is not None:
            self._anchors.pop(walk.subject, None)

    # --- windows ---------------------------------------------------------------------------

    def observe(
        self,
        box_id: str,
        subjects: Sequence[str],
        t: float,
        rssi_medians: Sequence[float],
        counts: Sequence[int],
    ) -> int:
        """One box's windows at ``t``; the samples taken from them."""
        taken = 0
        for subject, rssi, count in zip(subjects, rssi_medians, counts, strict=True):
            anchor = self._anchors.get(subject)
            if anchor is None or count < 1 or not math.isfinite(rssi):
                continue
            if t > anchor.until:
                self._expire(subject, anchor)
                continue
            if t < anchor.since:
                continue
            if anchor.skipped.get(box_id, 0) < anchor.skip:
                anchor.skipped[box_id] = anchor.skipped.get(box_id, 0) + 1
                continue
            if anchor.taken.get(box_id, 0) >= anchor.per_box_limit:
                continue
            place = self._zones[anchor.zone].get(box_id)
            if place is None or place.distance_m < MIN_DISTANCE_M:
                continue
            anchor.taken[box_id] = anchor.taken.get(box_id, 0) + 1
            self._add(Sample(box_id, place.distance_m, place.walls_db, rssi, t, anchor.source))
            taken += 1
            if anchor.source == "walk":
                self._urgent.add(box_id)  # the manager watches the values as they walk
                if _progress(anchor) >= 1.0 and self._walk is not None:
                    self._close(self._walk, anchor)
        return taken

    def box_heard(
        self, listener: str, source: str, t: float, rssi_median: float, power_at_1m_dbm: float
    ) -> bool:
        """A box heard another box's advertisement (its power at 1 m advertised): a sample of
        the listener's radio, with the difference between that power and the reference taken
        out. False when it is not one: an unknown pair, a pair through a wall, boxes closer
        than ``MIN_DISTANCE_M``, or another window of the pair within ``BOX_SAMPLE_INTERVAL_S``.
        """
        place = self._boxes.get(listener, {}).get(source)
        if place is None or not (math.isfinite(rssi_median) and math.isfinite(power_at_1m_dbm)):
            return False
        if place.distance_m < MIN_DISTANCE_M:
            return False
        last = self._pair_at.get((listener, source))
        if last is not None and abs(t - last) < BOX_SAMPLE_INTERVAL_S:
            return False
        self._pair_at[(listener, source)] = t
        rssi = rssi_median - (power_at_1m_dbm - self.reference_rssi_dbm)
        self._add(Sample(listener, place.distance_m, place.walls_db, rssi, t, "box"))
        _cap_pairs(self._samples[listener])
        return True

    def sources(self, box_id: str) -> dict[str, int]:
        """How many of a box's samples each source gave (for the manager's page)."""
        counts: dict[str, int] = {}
        for s in self._samples.get(box_id, ()):
            counts[s.source] = counts.get(s.source, 0) + 1
        return counts

    def expire(self, now: float) -> None:
        """Stop listening to check-ins whose time is over (the tick calls it)."""
        for subject, anchor in list(self._anchors.items()):
            if now > anchor.until:
                self._expire(subject, anchor)

    def _expire(self, subject: str, anchor: _Anchor) -> None:
        if anchor.source == "walk" and self._walk is not None:
            self._close(self._walk, anchor)
        self._anchors.pop(subject, None)

    def forget(self, subject: str) -> None:
        """A customer withdrew or was erased: stop listening to them (samples name nobody)."""
        self._anchors.pop(subject, None)
        if self._walk is not None and self._walk.subject == subject:
            self.end_walk()

    def _add(self, sample: Sample) -> None:
        rows = self._samples.setdefault(sample.box_id, [])
        rows.append(sample)
        if len(rows) > MAX_SAMPLES:
            del rows[: len(rows) - MAX_SAMPLES]
        self._new.append(sample)
        self._dirty.setdefault(sample.box_id, sample.at)

    # --- samples and fits ------------------------------------------------------------------

    def load(self, samples: Iterable[Sample]) -> None:
        """Samples read back from storage (oldest first); they are fitted at the next `fits`."""
        for sample in samples:
            rows = self._samples.setdefault(sample.box_id, [])
            rows.append(sample)
            if len(rows) > MAX_SAMPLES:
                del rows[: len(rows) - MAX_SAMPLES]
            self._dirty.setdefault(sample.box_id, sample.at)
            self._urgent.add(sample.box_id)
        for rows in self._samples.values():
            _cap_pairs(rows)

    def take_new(self) -> list[Sample]:
        """The samples added since the last call (to be stored)."""
        new, self._new = self._new, []
        return new

    def samples(self, box_id: str) -> list[Sample]:
        return list(self._samples.get(box_id, ()))

    def reset(self, box_id: str | None = None) -> None:
        """Forget the samples of one box, or of every box."""
        boxes = [box_id] if box_id is not None else list(self._samples)
        for box in boxes:
            self._samples.pop(box, None)
            self._dirty.pop(box, None)
            self._fitted_at.pop(box, None)
            self._urgent.discard(box)
        self._pair_at = {pair: t for pair, t in self._pair_at.items() if pair[0] not in boxes}
        self._new = [s for s in self._new if s.box_id not in boxes]

    def fits(self, now: float) -> list[LearnedFit]:
        """The boxes whose samples changed and are due for a fit, fitted."""
        due = [
            box
            for box in self._dirty
            if box in self._urgent or now - self._fitted_at.get(box, -math.inf) >= REFIT_INTERVAL_S
        ]
        fitted: list[LearnedFit] = []
        for box in due:
            del self._dirty[box]
            self._urgent.discard(box)
            self._fitted_at[box] = now
            fit = self.fit(box, now)
            if fit is not None:
                fitted.append(fit)
        return fitted

    def fit(self, box_id: str, now: float) -> LearnedFit | None:
        """The fit of one box's samples now, ``None`` without samples."""
        rows = self._samples.get(box_id)
        if not rows:
            return None
        calibrator = Calibrator(self.reference_rssi_dbm, self.default_exponent)
        pairs: dict[float, int] = {}
        for s in rows:
            if s.source == "box":
                pairs[s.distance_m] = pairs.get(s.distance_m, 0) + 1
        for s in rows:
            weight = BOX_PAIR_WEIGHT / pairs[s.distance_m] if s.source == "box" else 1.0
            calibrator.add(box_id, s.distance_m, s.walls_db, s.rssi_dbm, weight)
        result = calibrator.fit(box_id)
        if result is None:
            return None
        offset, exponent = result.rssi_offset_db, result.path_loss_exponent
        squares = 0.0
        for s in rows:
            predicted = (
                self.reference_rssi_dbm
                - 10.0 * exponent * math.log10(max(s.distance_m, 0.1))
                - s.walls_db
            )
            squares += (s.rssi_dbm + offset - predicted) ** 2
        residual = math.sqrt(squares / len(rows))
        places = _places(rows)
        usable = (
            len(rows) >= MIN_SAMPLES_TO_USE
            and places >= MIN_PLACES_TO_USE
            and residual <= MAX_RESIDUAL_DB
        )
        return LearnedFit(
            box_id, offset, exponent, len(rows), places, round(residual, 2), usable, now
        )


def _progress(anchor: _Anchor) -> float:
    best = max(anchor.taken.values(), default=0)
    return min(1.0, best / anchor.per_box_limit)


def _cap_pairs(rows: list[Sample]) -> None:
    """Keep the latest ``BOX_SAMPLES_PER_PAIR`` box samples of each pair, in place. A sample
    names no speaker: a pair is known by its distance, so two speakers at the same distance
    from a listener (to the millimetre: a symmetric floor) share one pair's samples."""
    kept: dict[float, int] = {}
    drop: set[int] = set()
    for i in range(len(rows) - 1, -1, -1):
        s = rows[i]
        if s.source == "box":
            kept[s.distance_m] = kept.get(s.distance_m, 0) + 1
            if kept[s.distance_m] > BOX_SAMPLES_PER_PAIR:
                drop.add(i)
    if drop:
        rows[:] = [s for i, s in enumerate(rows) if i not in drop]


def _places(rows: Sequence[Sample]) -> int:
    """Distinct places among the samples: distances apart by more than PLACE_RESOLUTION."""
    keys = sorted(10.0 * math.log10(max(s.distance_m, 0.1)) for s in rows)
    count, last = 0, -math.inf
    for key in keys:
        if key - last > PLACE_RESOLUTION:
            count += 1
            last = key
    return count
