"""The storage engines side by side: the same storage functions through `Database` on a SQLite
file and on a PostgreSQL database (a throwaway cluster with fsync on, like SQLite's
``synchronous=FULL``), one process, no HTTP.

Usage: .venv/bin/python bench/storage/bench_engines.py [--customers 10000] [--ops 300] [--json]

Measured per engine:
- enroll: `customers.create_customer` (two inserts, one commit), one at a time;
- grant: `consents.grant_consent` (upsert, hash-chained log append, one commit);
- batch group: `scanners.record_batches` with 20 new batch ids (the group commit of 20
  scanners' batches), one group at a time;
- withdraw: `consents.withdraw_consent` (delete, log append, card retraction, one commit);
- start-up read: `consents.consenting_customer_ids` over every customer (a reader thread).
For each: latency p50 / p99 (ms, wall clock) and CPU per operation (ms): this process (the
server's side: driver, storage code) and, on PostgreSQL, its server processes (from /proc).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from store_server.consent import ConsentText
from store_server.storage import consents, customers, scanners
from store_server.storage.database import Database, Handle, Target
from store_server.storage.pg import PgTarget
from store_server.storage.pg_cluster import Cluster, throwaway_cluster

TEXT = ConsentText("greeting", 1, "Bonjour", "Hello")
GROUP = 20
"""Batch ids per group commit: 20 scanners posting once a second."""
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _process_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def _cluster_cpu_s(cluster: Cluster | None) -> float:
    """CPU time of the cluster's postmaster and all its children (backends, WAL writer...)."""
    if cluster is None:
        return 0.0
    pid_file = cluster.plan.data_dir / "postmaster.pid"
    postmaster = int(pid_file.read_text().split()[0])
    total = 0.0
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            stat = (proc / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if int(proc.name) == postmaster or ppid == postmaster:
                total += _process_cpu_s(int(proc.name))
        except (OSError, ValueError, IndexError):
            continue
    return total


def _measure(
    name: str, ops: list[Callable[[], Any]], cluster: Cluster | None
) -> dict[str, float | str]:
    latencies: list[float] = []
    cpu0, server0 = time.process_time(), _cluster_cpu_s(cluster)
    for op in ops:
        started = time.perf_counter()
        op()
        latencies.append((time.perf_counter() - started) * 1000)
    cpu = (time.process_time() - cpu0) * 1000 / len(ops)
    server = (_cluster_cpu_s(cluster) - server0) * 1000 / len(ops)
    latencies.sort()
    return {
        "what": name,
        "p50_ms": round(statistics.median(latencies), 2),
        "p99_ms": round(latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))], 2),
        "client_cpu_ms": round(cpu, 3),
        "server_cpu_ms": round(server, 3),
    }


def run_engine(target: Target, cluster: Cluster | None, n_customers: int, n_ops: int) -> list[Any]:
    db = Database(target)
    results: list[Any] = []
    try:
        db.write_sync(lambda h: consents.ensure_consent_texts(h, [TEXT]))
        db.write_sync(lambda h: scanners.add_scanner(h, "s-bench", "store", b"x" * 44, 1.0))
        now = time.time()

        def enroll(h: Handle) -> str:
            return customers.create_customer(
                h,
                key_wrapped_for=lambda _: b"k" * 44,
                k=9,
                clock_offset_s=0.0,
                language="fr",
                now=now,
            ).customer_id

        ids: list[str] = []
        results.append(
            _measure(
                "enroll",
                [lambda: ids.append(db.write_sync(enroll)) for _ in range(n_ops)],
                cluster,
            )
        )
        # The rest of the store's customers, enrolled without timing.
        while len(ids) < n_customers:
            ids.append(db.write_sync(enroll))

        def grant(customer_id: str) -> Callable[[], Any]:
            return lambda: db.write_sync(
                lambda h: consents.grant_consent(
                    h,
                    customer_id=customer_id,
                    subject_ref=f"r-{customer_id}",
                    purpose="greeting",
                    text_hash=TEXT.hash,
                    scope="store",
                    channel="app",
                    app_version=None,
                    now=now,
                    duration_s=3600,
                )
            )

        results.append(_measure("grant", [grant(c) for c in ids[:n_ops]], cluster))
        for customer_id in ids[n_ops:]:
            grant(customer_id)()
        counter = iter(range(10**9))

        def group() -> Any:
            items = [("s-bench", f"b{next(counter)}", 500, now, None) for _ in range(GROUP)]
            return db.write_sync(lambda h: scanners.record_batches(h, items))

        results.append(_measure(f"batch group ({GROUP} ids)", [group] * n_ops, cluster))
        results.append(
            _measure(
                f"start-up read ({n_customers} consenting)",
                [lambda: db.read_sync(lambda h: consents.consenting_customer_ids(h, now, "store"))]
                * 5,
                cluster,
            )
        )

        def withdraw(customer_id: str) -> Callable[[], Any]:
            return lambda: db.write_sync(
                lambda h: consents.withdraw_consent(
                    h,
                    customer_id=customer_id,
                    subject_ref=f"r-{customer_id}",
                    purposes=["greeting"],
                    channel="app",
                    app_version=None,
                    now=now + 1,
                )
            )

        results.append(_measure("withdraw", [withdraw(c) for c in ids[:n_ops]], cluster))
    finally:
        db.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=10_000)
    parser.add_argument("--ops", type=int, default=300)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    report: dict[str, Any] = {"load_average": os.getloadavg()[0]}
    with tempfile.TemporaryDirectory(prefix="bulle-bench-") as folder:
        report["sqlite"] = run_engine(Path(folder) / "store.sqlite", None, args.customers, args.ops)
    with throwaway_cluster(ephemeral=False) as cluster:
        url = cluster.create_database("bench")
        report["postgres"] = run_engine(PgTarget(url), cluster, args.customers, args.ops)
    report["load_average_end"] = os.getloadavg()[0]
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"load average {report['load_average']:.1f} -> {report['load_average_end']:.1f}")
    print(
        "| engine | operation | p50 ms | p99 ms | this process CPU ms/op | PostgreSQL CPU ms/op |"
    )
    print("|---|---|---:|---:|---:|---:|")
    for engine in ("sqlite", "postgres"):
        for row in report[engine]:
            server = row["server_cpu_ms"] if engine == "postgres" else "-"
            print(
                f"| {engine} | {row['what']} | {row['p50_ms']} | {row['p99_ms']} |"
                f" {row['client_cpu_ms']} | {server} |"
            )


if __name__ == "__main__":
    main()
