"""Presence filter cost with 1,000 phones present and 20 boxes: CPU and the longest single call.

Every box sends one batch a second (box clocks spread over the second) holding a window of
every phone (the worst case: every box hears every phone); the server's calls are made as it
makes them: ``observe_many`` + ``decide_arrivals`` per batch, ``tick`` once a second, split into
calls of at most ``--limit`` phones (the server yields to its event loop between them). Reports
the engine's CPU per second of store time (share of one core) and the longest call, in CPU
time and wall time: the longest the event loop would be held (wall time includes waiting for a
core on a busy machine).

Run: python bench/presence/bench_presence.py [--phones 1000] [--limit 25] [--seconds 30] [--json]
[--ticks N] [--set NAME=VALUE ...]

``--set NAME=VALUE`` (repeatable): an engine setting other than its default, as the accuracy
lab's ``--set`` (what an option costs, e.g. ``--set common_offset_sigma_db=2.5``).

``--ticks N``: N ticks a second instead of one, each after its share of the boxes' batches (what
a faster tick would cost the server; the server ticks once a second).

Before / after in one run: ``--against DIR`` (another checkout of the repository, e.g. made with
``git worktree add DIR <commit>``) runs the same bench there and here, alternating, ``--rounds``
times each (each in its own process, with the checkout's own code), and prints the ratio of the
CPU shares: on a shared machine the load changes the figures, less their ratio.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from lab.accuracy import add_set_option
from lab.report import changed_settings
from store_server.floor import Floor, ScannerSpec, Zone
from store_server.presence import PresenceEngine
from store_server.presence_types import PresenceSettings

# A big shop: 25 x 20 m, five zones, twenty boxes on a 5 x 4 grid on shelves.
WIDTH_M, DEPTH_M = 25.0, 20.0
BOXES = 20
# Store seconds before measuring: the phones walk in and arrive.
WARM_UP_S = 10


def bench_floor() -> Floor:
    zones = tuple(
        Zone(f"z{i}", f"Zone {i}", f"Zone {i}", (i * 5.0, 0.0, i * 5.0 + 5.0, DEPTH_M))
        for i in range(5)
    )
    scanners = tuple(
        ScannerSpec(
            f"s{i}", f"z{i % 5}", ((i % 5) * 5.0 + 2.5, (i // 5) * 5.0 + 2.5), True, 0.0, 1.2
        )
        for i in range(BOXES)
    )
    return Floor(
        "bench", "Bench", WIDTH_M, DEPTH_M, 10.0, 12.0, -3.0, -0.5, 4.0, zones, scanners, ()
    )


def run(
    phones: int,
    limit: int,
    seconds: int,
    ticks: int = 1,
    settings: PresenceSettings | None = None,
) -> dict[str, float | int | str]:
    floor = bench_floor()
    engine = PresenceEngine(floor, settings)
    rng = np.random.default_rng(1)
    names = [f"p{i}" for i in range(phones)]
    x = rng.uniform(0.5, WIDTH_M - 0.5, phones)
    y = rng.uniform(0.5, DEPTH_M - 0.5, phones)
    for name, px, py in zip(names, x, y, strict=True):
        zone = floor.zone_at(float(px), float(py)) or "z0"
        engine.check_in(name, 0.0, zone)  # present from the start, in their zone
    means = []
    for spec in floor.scanners:
        d = np.sqrt((x - spec.position[0]) ** 2 + (y - spec.position[1]) ** 2 + 0.04)
        means.append(-59.0 - 27.0 * np.log10(np.maximum(d, 0.1)))
    calls: list[float] = []
    cpu_calls: list[float] = []
    cpu = 0.0
    every = max(1, BOXES // ticks)  # boxes' batches between two ticks
    for second in range(1, WARM_UP_S + seconds + 1):
        measuring = second > WARM_UP_S
        for b, spec in enumerate(floor.scanners):
            t = second - 1 + b / BOXES
            if b and b % every == 0:
                cpu += tick_round(engine, t, limit, measuring, calls, cpu_calls)
            medians = (means[b] + rng.normal(0.0, 2.5, phones)).tolist()
            counts = [3] * phones
            c0, w0 = time.process_time(), time.perf_counter()
            taken = engine.observe_many(spec.id, names, [t] * phones, medians, counts)
            engine.decide_arrivals(taken, t)
            wall, used = time.perf_counter() - w0, time.process_time() - c0
            if measuring:
                calls.append(wall)
                cpu_calls.append(used)
                cpu += used
        cpu += tick_round(engine, float(second), limit, measuring, calls, cpu_calls)
    ordered = sorted(calls)
    return {
        "phones": phones,
        "boxes": BOXES,
        "cells": engine.grid.size,
        "limit": limit,
        "seconds": seconds,
        "cpu_share_of_one_core": round(cpu / seconds, 4),
        "longest_call_cpu_ms": round(max(cpu_calls) * 1000.0, 1),
        "longest_call_wall_ms": round(ordered[-1] * 1000.0, 1),
        "p99_call_wall_ms": round(ordered[math.ceil(0.99 * len(ordered)) - 1] * 1000.0, 1),
        "present": len(engine.present()),
        "ticks_per_second": ticks,
        "settings_changed": ",".join(
            f"{name}={value}" for name, value in changed_settings(engine.settings)
        ),
    }


def tick_round(
    engine: PresenceEngine,
    now: float,
    limit: int,
    measuring: bool,
    calls: list[float],
    cpu_calls: list[float],
) -> float:
    """One tick round as the server runs it (calls of ``limit`` phones until none is pending);
    when ``measuring``, notes each call's wall and CPU time in ``calls`` and ``cpu_calls`` and
    returns the CPU time used (else 0)."""
    used_total = 0.0
    while True:
        c0, w0 = time.process_time(), time.perf_counter()
        engine.tick(now, limit=limit)
        wall, used = time.perf_counter() - w0, time.process_time() - c0
        if measuring:
            calls.append(wall)
            cpu_calls.append(used)
            used_total += used
        if engine.pending() == 0:
            return used_total


def run_in(checkout: Path, args: argparse.Namespace) -> dict[str, float | int | str]:
    """The bench in its own process, on the code of ``checkout``."""
    command = [sys.executable, str(checkout / "bench" / "presence" / "bench_presence.py")]
    command += ["--phones", str(args.phones), "--limit", str(args.limit)]
    command += ["--seconds", str(args.seconds), "--json"]
    if args.ticks != 1:  # older checkouts have no --ticks: only asked for when used
        command += ["--ticks", str(args.ticks)]
    for name, value in args.set:  # likewise --set
        command += ["--set", f"{name}={value}"]
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    done = subprocess.run(command, cwd=checkout, env=env, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"bench in {checkout} failed: {done.stderr.strip()}")
    result: dict[str, float | int | str] = json.loads(done.stdout.splitlines()[-1])
    return result


def compare(args: argparse.Namespace) -> dict[str, object]:
    """This checkout and ``args.against``, alternating; figures per round and the CPU ratio."""
    here = Path(__file__).resolve().parents[2]
    rounds: dict[str, list[dict[str, float | int | str]]] = {"this": [], "against": []}
    for _ in range(args.rounds):
        rounds["against"].append(run_in(args.against.resolve(), args))
        rounds["this"].append(run_in(here, args))
    share = {
        name: statistics.median(float(r["cpu_share_of_one_core"]) for r in results)
        for name, results in rounds.items()
    }
    return {
        "against": str(args.against),
        "rounds": rounds,
        "cpu_share_this": share["this"],
        "cpu_share_against": share["against"],
        "cpu_ratio_this_to_against": round(share["this"] / share["against"], 3),
        "load_average": round(os.getloadavg()[0], 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--phones", type=int, default=1000)
    parser.add_argument("--limit", type=int, default=25, help="phones per tick call (0: all)")
    parser.add_argument("--seconds", type=int, default=30)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--against", type=Path, help="another checkout to compare with")
    parser.add_argument("--rounds", type=int, default=2, help="runs of each with --against")
    parser.add_argument("--ticks", type=int, default=1, help="ticks a second (the server: 1)")
    add_set_option(parser)
    args = parser.parse_args()
    try:
        settings = PresenceSettings(**dict(args.set))
    except ValueError as error:
        parser.error(f"--set: {error}")
    if args.against is not None:
        print(json.dumps(compare(args), indent=None if args.json else 2))
        return
    result = run(args.phones, args.limit or args.phones, args.seconds, max(1, args.ticks), settings)
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key}: {value}")


if __name__ == "__main__":
    main()
