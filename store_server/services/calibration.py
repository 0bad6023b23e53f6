"""Online calibration, wired: samples stored, fits applied to the presence engine, the walk.

The pure learner (:class:`~store_server.calibration_online.OnlineCalibration`) lives on the
coordinator, where the batch ingest and the check-ins reach it without I/O; this service runs
once a tick: it stores the new samples and the fits in one transaction and gives the engine
every fit good enough to be used. At start-up it reads them back, so a restart goes on
learning from where it was.

What the engine uses for a box, in order: the store file's ``rssi_offset_db`` and the default
exponent; a manager's offset typed on the zones page; a learned fit once it is usable (it then
replaces both). A reset forgets the learned values and goes back to the first two.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass

from store_server.calibration_online import WALK_CODE_DIGITS, LearnedFit, WalkStatus
from store_server.errors import NotFoundError
from store_server.services.coordinator import Coordinator
from store_server.storage import calibration, scanners

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class BoxRadio:
    """One box's values as the manager pages show them."""

    box_id: str
    zone: str
    rssi_offset_db: float  # in force
    path_loss_exponent: float  # in force
    learned: LearnedFit | None
    # Samples by source ("walk", "check_in", "box"), most first: where the learned values
    # come from.
    sources: tuple[tuple[str, int], ...] = ()


class CalibrationService:
    """Stores what the learner collects, applies its fits, runs the guided walk."""

    def __init__(self, coordinator: Coordinator) -> None:
        self._c = coordinator
        self.db = coordinator.db
        self.clock = coordinator.clock
        self.learner = coordinator.calibration
        self.engine = coordinator.engine
        self._fits: dict[str, LearnedFit] = {}

    async def prepare(self) -> None:
        """Apply the manager's offsets, then read back the samples and apply the stored fits."""
        for box_id, offset in (await self.db.read(scanners.calibration_overrides)).items():
            if box_id in self.engine.calibration():
                self.engine.set_calibration(box_id, offset)
        boxes = [spec.id for spec in self._c.floor.scanners]
        stored = await self.db.read(lambda db: calibration.samples(db, boxes))
        self._fits = await self.db.read(lambda db: calibration.fits(db, boxes))
        known = set(boxes)
        self.learner.load(stored)
        self.learner.take_new()  # already stored
        for fit in self._fits.values():
            if fit.usable and fit.box_id in known:
                self._apply(fit)

    def _apply(self, fit: LearnedFit) -> None:
        self.engine.set_calibration(fit.box_id, fit.rssi_offset_db, fit.path_loss_exponent)

    async def tick(self, now: float) -> None:
        """Store new samples and fits; give the engine the usable fits."""
        self.learner.expire(now)
        new = self.learner.take_new()
        fits = self.learner.fits(now)
        if not new and not fits:
            return
        await self.db.write(lambda db: calibration.record(db, new, fits))
        for fit in fits:
            self._fits[fit.box_id] = fit
            if fit.usable:
                self._apply(fit)
                logger.info(
                    "calibration of %s learned: %+.1f dB, exponent %.2f (%d samples)",
                    fit.box_id,
                    fit.rssi_offset_db,
                    fit.path_loss_exponent,
                    fit.samples,
                )

    def boxes(self) -> list[BoxRadio]:
        offsets, exponents = self.engine.calibration(), self.engine.exponents()
        return [
            BoxRadio(
                spec.id,
                spec.zone,
                offsets[spec.id],
                exponents[spec.id],
                self._fits.get(spec.id),
                tuple(
                    sorted(self.learner.sources(spec.id).items(), key=lambda kv: (-kv[1], kv[0]))
                ),
            )
            for spec in self._c.floor.scanners
        ]

    async def reset(self, box_id: str | None = None) -> None:
        """Forget the learned values of one box (or all); the engine goes back to the store
        file's offset (or the manager's) and the default exponent."""
        specs = {spec.id: spec for spec in self._c.floor.scanners}
        if box_id is not None and box_id not in specs:
            raise NotFoundError(f"no scanner {box_id!r} on this store's floor")
        boxes = list(specs) if box_id is None else [box_id]
        await self.db.write(lambda db: calibration.reset(db, boxes))
        manual = await self.db.read(scanners.calibration_overrides)
        self.learner.reset(box_id)
        default = self.engine.settings.path_loss_exponent
        for spec in specs.values() if box_id is None else [specs[box_id]]:
            self._fits.pop(spec.id, None)
            offset = manual.get(spec.id, spec.rssi_offset_db)
            self.engine.set_calibration(spec.id, offset, default)

    # -- the guided walk -------------------------------------------------------------------

    def start_walk(self, username: str) -> WalkStatus:
        code = "".join(secrets.choice("0123456789") for _ in range(WALK_CODE_DIGITS))
        return self.learner.start_walk(username, code, self.clock())

    def walk(self) -> WalkStatus | None:
        return self.learner.walk_status(self.clock())

    def join_walk(self, code: str, customer_id: str) -> bool:
        """The calibration phone joins (a consenting app: its windows reach the server)."""
        if customer_id not in self._c.resolver:
            return False
        return self.learner.join_walk(code, customer_id, self.clock())

    def here(self, zone: str) -> bool:
        return self.learner.here(zone, self.clock())

    def end_walk(self) -> None:
        self.learner.end_walk()
