"""How close the guided calibration walk brings each box's radio model to the truth.

For each seed, a `field`-tier channel (lab/channel.py: each box's exponent 2.0-3.5 and an
offset up to +-4 dB the engine does not know) and a manager walking the floor: in each zone,
standing within 0.7 m of its middle, phone in the hand, one window per box and second (a
median of 5 advertisements), fed to the server's own learner
(`store_server.calibration_online.OnlineCalibration`: the same rules as the server: the first
window after a tap skipped, 15 windows per step, windows under 1 m from a box not samples).
Reported per box: the RMS difference, over the shop's cells, between what the engine then
expects the box to report and what it reports on average (phone at 1 m), with the default
values and with the learned ones (if used); and the learned offset's and exponent's errors.

``--source boxes`` learns from the boxes hearing each other's store beacon instead
(lab/box_radio.py: the listener's exponent and offset, the walls as the channel draws them, each
box's transmitter up to +-2 dB off what it advertises, and a fading fixed per pair of boxes):
one window of each pair every 10 s (the learner keeps one a minute per pair, so the windows in
between would change nothing) for ``--minutes`` minutes, fed to the learner's ``box_heard``
(the latest 20 of each pair kept). ``--source both``: the walk, then the boxes. ``--pairs``: which
pairs of boxes: ``los`` (line of sight only), ``los-first`` (the server's: line of sight, and
through walls for a box with fewer than two such pairs), ``all``.

Run: python bench/calibration/bench_walk.py [--floor demo|corner] [--seeds 20]
     [--source walk|boxes|both] [--pairs los|los-first|all] [--minutes 30] [--json]
"""

from __future__ import annotations

import argparse
import json
import math

import numpy as np

from lab.accuracy import SEEDS_DIR, load_floor
from lab.box_radio import ADVERTISED_POWER_DBM, BoxRadio
from lab.channel import TIERS, Channel
from lab.floors import FLOORS
from store_server.calibration_online import (
    BoxPairs,
    OnlineCalibration,
    box_places,
    zone_places,
)
from store_server.floor import Floor
from store_server.presence import PresenceEngine

# Windows per zone: the step's 15 and the one skipped after the tap, and one spare.
WINDOWS_PER_ZONE = 17
ADVERTS_PER_WINDOW = 5
HAND_M = 1.2
# How far from a zone's middle the manager really stands (m, each way).
STANDING_SPREAD_M = 0.7
# Advertisements of a box's store beacon a listener decodes in a window (BlueZ broadcasts
# every 100 ms or so; some are lost).
BOX_ADVERTS_PER_WINDOW = 5
# Two fixed boxes see the same multipath for minutes: a fading drawn once per pair (dB, sigma),
# the channel's reading spread.
PAIR_FADING_DB = 2.5
# --pairs: which pairs of boxes are samples (store_server.calibration_online.box_places).
PAIRS: dict[str, BoxPairs] = {
    "los": "line_of_sight",
    "los-first": "line_of_sight_first",
    "all": "all",
}
# Seconds between the windows of a pair simulated: below the learner's minute per pair.
BOX_STEP_S = 10.0


def _rms(
    model: np.ndarray, log_d: np.ndarray, reported: np.ndarray, offset: float, exponent: float
) -> float:
    """RMS difference (dB) between what the engine expects a box to report and the truth."""
    expected = model - 10.0 * exponent * log_d - offset
    return float(np.sqrt(np.mean((expected - reported) ** 2)))


def _walk(
    learner: OnlineCalibration, floor: Floor, channel: Channel, rng: np.random.Generator
) -> float:
    """The guided walk through every zone; the time it ends."""
    learner.start_walk("bench", "000000", 0.0)
    learner.join_walk("000000", "phone", 0.0)
    t = 1.0
    for zone in floor.zones:
        learner.here(zone.id, t)
        cx, cy = zone.centroid()
        px = cx + rng.uniform(-STANDING_SPREAD_M, STANDING_SPREAD_M)
        py = cy + rng.uniform(-STANDING_SPREAD_M, STANDING_SPREAD_M)
        for _ in range(WINDOWS_PER_ZONE):
            t += 1.0
            for b, spec in enumerate(floor.scanners):
                mean = channel.mean_rssi(b, np.array([px]), np.array([py]), np.array([HAND_M]))
                zeros = np.zeros(ADVERTS_PER_WINDOW)
                readings = channel.readings(
                    np.repeat(mean, ADVERTS_PER_WINDOW), zeros, zeros, b, rng
                )
                readings = readings[~np.isnan(readings)]
                if readings.size:
                    median = float(np.median(readings))
                    learner.observe(spec.id, ["phone"], t, [median], [ADVERTS_PER_WINDOW])
    learner.end_walk()
    return t


def _hear_boxes(
    learner: OnlineCalibration,
    floor: Floor,
    channel: Channel,
    rng: np.random.Generator,
    start: float,
    minutes: float,
) -> tuple[float, int]:
    """Every box hears every other one each second for ``minutes``; the end time and the
    samples taken."""
    radio = BoxRadio.draw(channel, rng)
    boxes = len(floor.scanners)
    fading = rng.normal(0.0, PAIR_FADING_DB, (boxes, boxes))
    fading = np.triu(fading) + np.triu(fading, 1).T  # the same path both ways
    t, taken = start, 0
    for _ in range(int(minutes * 60 / BOX_STEP_S)):
        t += BOX_STEP_S
        for listener, heard in enumerate(floor.scanners):
            for speaker, spoke in enumerate(floor.scanners):
                if speaker == listener:
                    continue
                window = radio.window(listener, speaker, BOX_ADVERTS_PER_WINDOW, rng)
                if window is None:
                    continue
                median = window[0] - float(fading[listener, speaker])
                taken += learner.box_heard(heard.id, spoke.id, t, median, ADVERTISED_POWER_DBM)
    return t, taken


def run(
    floor_name: str,
    seeds: int,
    source: str = "walk",
    pairs: str = "los-first",
    minutes: float = 30.0,
) -> dict[str, object]:
    floor = load_floor(SEEDS_DIR / FLOORS[floor_name].store_file)
    engine = PresenceEngine(floor)
    grid, settings = engine.grid, engine.settings
    inside = grid.inside
    xs, ys = grid.x[inside], grid.y[inside]
    default_err: list[float] = []
    learned_err: list[float] = []
    offset_err: list[float] = []
    exponent_err: list[float] = []
    unused = 0
    box_samples = 0
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        channel = Channel(floor, TIERS["field"], rng)
        learner = OnlineCalibration(
            zone_places(floor, grid),
            box_places(floor, grid, pairs=PAIRS[pairs]),
            settings.reference_rssi_dbm,
            settings.path_loss_exponent,
        )
        t = 0.0
        if source in ("walk", "both"):
            t = _walk(learner, floor, channel, rng)
        if source in ("boxes", "both"):
            t, taken = _hear_boxes(learner, floor, channel, rng, t, minutes)
            box_samples += taken
        fits = {fit.box_id: fit for fit in learner.fits(t)}
        for b, spec in enumerate(floor.scanners):
            height = np.full(xs.shape, settings.phone_height_m)
            reported = channel.mean_rssi(b, xs, ys, height) - channel.offset_db[b]
            model = settings.reference_rssi_dbm - grid.attenuation_db[b][inside]
            log_d = grid.log_distance[b][inside]
            before = _rms(model, log_d, reported, spec.rssi_offset_db, settings.path_loss_exponent)
            default_err.append(before)
            fit = fits.get(spec.id)
            if fit is None or not fit.usable:
                unused += 1
                learned_err.append(before)
                continue
            learned_err.append(
                _rms(model, log_d, reported, fit.rssi_offset_db, fit.path_loss_exponent)
            )
            offset_err.append(abs(fit.rssi_offset_db - float(channel.offset_db[b])))
            exponent_err.append(abs(fit.path_loss_exponent - float(channel.exponent[b])))

    def summary(values: list[float]) -> dict[str, float]:
        if not values:
            return {"mean": math.nan, "p90": math.nan, "max": math.nan}
        arr = np.array(values)
        return {
            "mean": round(float(arr.mean()), 2),
            "p90": round(float(np.percentile(arr, 90)), 2),
            "max": round(float(arr.max()), 2),
        }

    return {
        "floor": floor_name,
        "seeds": seeds,
        "source": source,
        "pairs": pairs,
        "box_samples_per_seed": round(box_samples / seeds, 1),
        "boxes": len(default_err),
        "fits_not_used": unused,
        "rms_error_db_default": summary(default_err),
        "rms_error_db_learned": summary(learned_err),
        "offset_error_db": summary(offset_err),
        "exponent_error": summary(exponent_err),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--floor", choices=sorted(FLOORS), default="demo")
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--source", choices=("walk", "boxes", "both"), default="walk")
    parser.add_argument("--pairs", choices=sorted(PAIRS), default="los-first")
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = run(args.floor, args.seeds, args.source, args.pairs, args.minutes)
    if args.json:
        print(json.dumps(result))
        return
    for key, value in result.items():
        print(f"{key}: {value}")


if __name__ == "__main__":
    main()
