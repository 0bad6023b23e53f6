"""Benchmark of the EID resolver: build time and memory, resolve cost, advance cost.

Usage: .venv/bin/python bench/identity/bench_identity.py [--json] [--sizes 100000,1000000]
       [--workers 1,2] [--records] [--no-propagation]

The withdrawal-to-scanner propagation latency (bench_propagation.py, a real server on
loopback) runs last, in its own process; ``--json`` prints every figure of both.

Each size runs in a fresh child process so that memory figures do not leak between sizes.
Memory is the resident-set growth read from /proc/self/statm (Linux), split into the inputs
(subject ids, which the server holds anyway, and the raw keys, exponents and offsets) and the
resolver itself, which copies what it needs out of the columns it is given (the server's
start-up load hands it columns too). ``--records`` adds a build through the per-record API,
one ``IdentityRecord`` made on the fly and validated per subject.
"""

from __future__ import annotations

import argparse
import gc
import json
import multiprocessing
import os
import random
import subprocess
import sys
import time
from array import array
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from store_server import aes
from store_server.identity import (
    DEFAULT_ROTATION_EXPONENT,
    EidResolver,
    IdentityColumns,
    IdentityRecord,
    WindowEids,
    eid_at,
)
from store_server.services.coordinator import release_startup_garbage

NOW = 1_763_800_000.0
"""Fixed server time so runs are comparable."""

SEED = 20_261_122
"""Fixed seed: the same keys and clock offsets on every run."""

LOOKUPS = 200_000
"""Resolve calls timed per size (half hits, half random misses): enough for a stable mean."""

ADVANCE_SECONDS = 60
"""Advance in one-second steps for a minute: about 60/512 of the subjects change window."""

AES_CONTEXT_SAMPLES = 20_000
"""Keys used to time one AES context creation: enough for a stable mean."""

DEFAULT_SIZES = "100000,1000000"
"""The sizes of the written baseline."""

PAGE = os.sysconf("SC_PAGE_SIZE")
"""Page size to convert /proc/self/statm figures into bytes."""


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * PAGE


_COLUMNS = IdentityColumns([], b"", array("B"), array("d"))
"""The identities, set before the worker pool forks: workers read their chunk from memory
instead of receiving pickled identity keys."""

CHUNKS_PER_WORKER = 4
"""Smaller chunks than workers keep both processes busy until the end."""


def _window_eids_chunk(args: tuple[int, int, float, int]) -> WindowEids:
    start, stop, now, skew = args
    return _COLUMNS.slice(start, stop).window_eids(now, skew)


def parallel_window_eids(
    columns: IdentityColumns, now: float, skew: int, workers: int
) -> WindowEids:
    """Window EIDs over fork()ed worker processes (Linux), chunk results joined in order."""
    global _COLUMNS
    _COLUMNS = columns
    chunks = workers * CHUNKS_PER_WORKER
    step = -(-len(columns) // chunks)
    ranges = [(i, min(i + step, len(columns)), now, skew) for i in range(0, len(columns), step)]
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        parts = pool.map(_window_eids_chunk, ranges)
    return WindowEids.concat(parts)


def make_inputs(n: int) -> tuple[list[str], bytes, array[float]]:
    """Subject ids, identity keys (16 bytes each, joined) and clock offsets of ``n`` subjects:
    the same on every run."""
    rng = random.Random(SEED)
    keys = bytearray()
    offsets = array("d")
    for _ in range(n):
        keys += rng.randbytes(16)
        offsets.append(float(rng.randrange(0, 2**32)) - NOW)
    return [f"cust-{i:08d}" for i in range(n)], bytes(keys), offsets


def make_records(
    subjects: list[str], keys: bytes, offsets: array[float]
) -> Iterator[IdentityRecord]:
    """The records of the inputs, made one at a time (as the server unwraps them row by row)."""
    for i, subject in enumerate(subjects):
        yield IdentityRecord(
            subject, keys[i * 16 : i * 16 + 16], DEFAULT_ROTATION_EXPONENT, offsets[i]
        )


def run_size(n: int, workers: int = 1, from_records: bool = False) -> dict[str, float]:
    rng = random.Random(SEED + 1)
    gc.collect()
    rss0 = rss_bytes()
    # Inputs: the ids (the server holds them anyway) and the raw keys and offsets (~24 bytes a
    # subject). Records are made from them on the fly and not kept: what the resolver holds
    # (its copy of keys, exponents and offsets, EIDs, tables) is all in "resolver MB".
    subjects, keys, offsets = make_inputs(n)
    gc.collect()
    rss1 = rss_bytes()

    resolver = EidResolver()
    computed = None
    columns = IdentityColumns(subjects, keys, array("B", [DEFAULT_ROTATION_EXPONENT]) * n, offsets)
    gc.disable()  # the build allocates millions of objects; keep GC pauses out of the figure
    t0 = time.perf_counter()
    c0 = time.process_time()
    if from_records:  # the per-record API: an IdentityRecord made and validated per subject
        resolver.upsert_many(make_records(subjects, keys, offsets), NOW)
    else:  # the server's start-up path: columns
        if workers > 1:
            computed = parallel_window_eids(columns, NOW, resolver.skew_windows, workers)
        resolver.upsert_columns(columns, NOW, computed=computed)
    del computed, columns
    build_cpu_s = time.process_time() - c0
    build_s = time.perf_counter() - t0
    gc.enable()
    # What the server does after its start-up load: collect, freeze the survivors and hand
    # the allocator's free heap back to the OS (what the build's temporaries left).
    release_startup_garbage()
    rss2 = rss_bytes()

    wanted = set(rng.sample(range(n), min(n, LOOKUPS // 2)))
    sample: list[IdentityRecord] = []
    aes_keys: list[bytes] = []
    for i, record in enumerate(make_records(subjects, keys, offsets)):
        if i in wanted:
            sample.append(record)
        if i < AES_CONTEXT_SAMPLES:
            aes_keys.append(record.identity_key)
    hits = [eid_at(r, NOW) for r in sample]
    misses = [rng.randbytes(8) for _ in range(len(hits))]
    queries = hits + misses
    rng.shuffle(queries)
    resolve = resolver.resolve
    t0 = time.perf_counter_ns()
    found = 0
    for eid in queries:
        if resolve(eid, NOW) is not None:
            found += 1
    resolve_ns = (time.perf_counter_ns() - t0) / len(queries)
    assert found == len(hits), (found, len(hits))
    computed0 = resolver.eid_computations
    worst_step_s = 0.0
    t_all = time.perf_counter()
    for second in range(1, ADVANCE_SECONDS + 1):
        t0 = time.perf_counter()
        resolver.advance(NOW + second)
        worst_step_s = max(worst_step_s, time.perf_counter() - t0)
    advance_total_s = time.perf_counter() - t_all
    recomputed = resolver.eid_computations - computed0
    del sample, hits, misses, wanted
    gc.collect()
    rss3 = rss_bytes()

    # Reference: one bare dict.get over a dict of as many int EIDs as the resolver holds, same
    # queries (made after the memory figures: it is not part of the resolver).
    table = dict.fromkeys(resolver._eids)
    int_keys = [int.from_bytes(eid, "big") for eid in queries]
    t0 = time.perf_counter_ns()
    for key in int_keys:
        table.get(key)
    dict_get_ns = (time.perf_counter_ns() - t0) / len(queries)
    del table, int_keys, queries

    # Floor of the build: creating one AES-128-ECB context per key through cryptography's
    # public API (a subject needs two at a cold build: identity key, then temporary key).
    keys = aes_keys
    block = bytes(16)
    t0 = time.perf_counter_ns()
    for key in keys:
        Cipher(algorithms.AES128(key), modes.ECB()).encryptor().update(block)
    aes_context_us = (time.perf_counter_ns() - t0) / len(keys) / 1e3

    return {
        "subjects": n,
        "workers": workers,
        "input": "records" if from_records else "columns",
        "aes_context_us": aes_context_us,
        "aes_backend": aes.BACKEND,
        "build_s": build_s,
        "build_cpu_s": build_cpu_s,
        "build_us_per_subject": build_s / n * 1e6,
        "inputs_mb": (rss1 - rss0) / 1e6,
        "resolver_mb": (rss2 - rss1) / 1e6,
        "total_mb": (rss2 - rss0) / 1e6,
        "resolver_mb_after_advance": (rss3 - rss1) / 1e6,
        "resolve_ns": resolve_ns,
        "dict_get_ns": dict_get_ns,
        "advance_steps": ADVANCE_SECONDS,
        "advance_recomputed_subjects": recomputed,
        "advance_us_per_subject": advance_total_s / max(recomputed, 1) * 1e6,
        "advance_worst_step_ms": worst_step_s * 1e3,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print figures as JSON")
    parser.add_argument("--sizes", default=DEFAULT_SIZES, help="comma-separated subject counts")
    parser.add_argument(
        "--no-propagation", action="store_true", help="skip the propagation latency benchmark"
    )
    parser.add_argument(
        "--workers",
        default="1,2",
        help="comma-separated worker process counts for the build's AES part (1 = in-process)",
    )
    parser.add_argument(
        "--records",
        action="store_true",
        help="also build from one IdentityRecord per subject (upsert_many), in-process",
    )
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--child-workers", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--child-records", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        result = run_size(args.child, args.child_workers, args.child_records)
        print(json.dumps(result))
        return
    runs = [
        (int(size), int(workers), False)
        for size in args.sizes.split(",")
        for workers in args.workers.split(",")
    ]
    if args.records:
        runs += [(int(size), 1, True) for size in args.sizes.split(",")]
    results = []
    for size, workers, from_records in runs:
        command = [sys.executable, __file__, "--child", str(size), "--child-workers", str(workers)]
        out = subprocess.run(
            command + (["--child-records"] if from_records else []),
            check=True,
            capture_output=True,
            text=True,
        )
        results.append(json.loads(out.stdout))
    propagation = None
    if not args.no_propagation:
        out = subprocess.run(
            [sys.executable, str(Path(__file__).with_name("bench_propagation.py")), "--json"],
            check=True,
            capture_output=True,
            text=True,
        )
        propagation = json.loads(out.stdout)
    if args.json:
        print(json.dumps({"resolver": results, "propagation": propagation}, indent=2))
        return
    print(
        "| subjects | input | workers | build (s) | build CPU (s) | build µs/subject | resolver MB "
        "| resolver MB after 60 s | inputs MB | resolve ns | bare dict.get ns "
        "| AES context µs (cryptography) | advance µs/recomputed subject "
        "| worst 1 s advance step (ms) |"
    )
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        print(
            f"| {r['subjects']:,} | {r['input']} | {r['workers']} | {r['build_s']:.2f} "
            f"| {r['build_cpu_s']:.2f} "
            f"| {r['build_us_per_subject']:.2f} | {r['resolver_mb']:.0f} "
            f"| {r['resolver_mb_after_advance']:.0f} | {r['inputs_mb']:.0f} "
            f"| {r['resolve_ns']:.0f} | {r['dict_get_ns']:.0f} | {r['aes_context_us']:.2f} "
            f"| {r['advance_us_per_subject']:.2f} | {r['advance_worst_step_ms']:.1f} |"
        )
    if propagation is not None:
        print()
        print("| withdrawals × scanners | p50 (ms) | p99 (ms) | max (ms) | mean (ms) |")
        print("|---|---:|---:|---:|---:|")
        print(
            f"| {propagation['withdrawals']} × {propagation['scanners']} "
            f"| {propagation['p50_ms']:.1f} | {propagation['p99_ms']:.1f} "
            f"| {propagation['max_ms']:.1f} | {propagation['mean_ms']:.1f} |"
        )


if __name__ == "__main__":
    main()
