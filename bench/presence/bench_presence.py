"""Presence filter cost with 1,000 phones present and 20 boxes: CPU and the longest single call.

Every box sends one batch a second (box clocks spread over the second) holding a window of
every phone (the worst case: every box hears every phone); the server's calls are made as it
makes them: ``observe_many`` + ``decide_arrivals`` per batch, ``tick`` once a second, split into
calls of at most ``--limit`` phones (the server yields to its event loop between them). Reports
the engine's CPU per second of store time (share of one core) and the longest call, in CPU
time and wall time: the longest the event loop would be held (wall time includes waiting for a
core on a busy machine).

Run: python bench/presence/bench_presence.py [--phones 1000] [--limit 100] [--seconds 30] [--json]
"""

from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np

from store_server.floor import Floor, ScannerSpec, Zone
from store_server.presence import PresenceEngine

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


def run(phones: int, limit: int, seconds: int) -> dict[str, float | int]:
    floor = bench_floor()
    engine = PresenceEngine(floor)
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
    for second in range(1, WARM_UP_S + seconds + 1):
        measuring = second > WARM_UP_S
        for b, spec in enumerate(floor.scanners):
            t = second - 1 + b / BOXES
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
        while True:
            c0, w0 = time.process_time(), time.perf_counter()
            engine.tick(float(second), limit=limit)
            wall, used = time.perf_counter() - w0, time.process_time() - c0
            if measuring:
                calls.append(wall)
                cpu_calls.append(used)
                cpu += used
            if engine.pending() == 0:
                break
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
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--phones", type=int, default=1000)
    parser.add_argument("--limit", type=int, default=100, help="phones per tick call (0: all)")
    parser.add_argument("--seconds", type=int, default=30)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = run(args.phones, args.limit or args.phones, args.seconds)
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key}: {value}")


if __name__ == "__main__":
    main()
