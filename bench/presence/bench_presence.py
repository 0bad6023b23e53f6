"""Presence engine throughput: observations per second with 500 present phones, 20 scanners.

Run: .venv/bin/python bench/presence/bench_presence.py [--json]
"""

from __future__ import annotations

import argparse
import json
import random
import time

from store_server.floor import Floor, ScannerSpec, Zone
from store_server.presence import Observation, PresenceEngine

# The load: a busy store.
PHONES = 500
SCANNERS = 20
# Simulated seconds: every phone is heard by every scanner once per second.
SECONDS = 30
# Best of several runs: the machine is shared.
RUNS = 3


def bench_floor() -> Floor:
    zones = tuple(
        Zone(f"z{i}", f"Zone {i}", f"Zone {i}", (i * 5.0, 0.0, i * 5.0 + 5.0, 20.0))
        for i in range(5)
    )
    scanners = tuple(
        ScannerSpec(f"s{i}", f"z{i % 5}", ((i % 5) * 5.0 + 2.5, (i // 5) * 5.0 + 2.5), True, 0.0)
        for i in range(SCANNERS)
    )
    return Floor("bench", "Bench", 25.0, 20.0, 10.0, 12.0, -3.0, -0.5, 4.0, zones, scanners, ())


def workload() -> list[Observation]:
    rng = random.Random(1)
    observations = []
    home = [rng.randrange(SCANNERS) for _ in range(PHONES)]
    for t in range(1, SECONDS + 1):
        for s in range(SCANNERS):
            for p in range(PHONES):
                base = -55.0 if home[p] == s else -75.0
                rssi = base + rng.gauss(0.0, 2.5)
                observations.append(Observation(f"p{p}", f"s{s}", float(t), rssi, rssi + 2.0, 3))
    return observations


def run_once(floor: Floor, observations: list[Observation]) -> tuple[float, int]:
    engine = PresenceEngine(floor)
    start = time.perf_counter()
    last_t = 0.0
    for obs in observations:
        if obs.t != last_t:
            engine.tick(obs.t)
            last_t = obs.t
        engine.observe(obs)
    elapsed = time.perf_counter() - start
    return elapsed, len(engine.present())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    floor = bench_floor()
    observations = workload()
    best = min(run_once(floor, observations) for _ in range(RUNS))
    rate = len(observations) / best[0]
    result = {
        "phones": PHONES,
        "scanners": SCANNERS,
        "observations": len(observations),
        "seconds": round(best[0], 3),
        "observations_per_s": round(rate),
        "present": best[1],
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"{result['observations']} observations, {PHONES} phones, {SCANNERS} scanners: "
            f"{result['seconds']} s, {result['observations_per_s']} observations/s, "
            f"{result['present']} present"
        )


if __name__ == "__main__":
    main()
