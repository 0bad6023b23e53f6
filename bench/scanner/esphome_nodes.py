"""One scanner daemon fronting twelve ESP32 nodes: what it sustains, and its CPU at a busy shop.

Everything is real but the ESP32s: the store server (`store-server serve`, twelve boxes in a
copy of seeds/store.toml, consenting customers enrolled through the customer API), one
`beacon-scanner run` with `backend = "esphome"` and twelve `[[nodes]]`, and twelve fake nodes
(lab/esphome_node.py: ESPHome's native API with noise encryption, built from aioesphomeapi's own
messages) in this process, each forwarding raw advertisements in 16-advert messages as firmware
does, and dropping what it cannot send when the daemon's connection is backed up.

What the nodes hear: the shop's recorded frames (seeds/captures/mixed.jsonl), random foreign
Eddystone-EIDs and iBeacons, and one consenting customer's current EID in 1 of 20 adverts, so the
allowlist, the aggregation, the outbox and the uploads all work as in a shop.

For each offered rate (adverts/s per node), after a warm-up: adverts offered by the nodes,
adverts the daemon received (the sum of the nodes' `frames_seen_per_s` in their heartbeats at
the server), adverts dropped by the nodes (backed-up connection), and the daemon process's CPU
(user + system, from /proc, as a share of one core) over the measured seconds.

    .venv/bin/python bench/scanner/esphome_nodes.py                       # table
    .venv/bin/python bench/scanner/esphome_nodes.py --rates 300 --json    # one rate, JSON
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import random
import secrets
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "faults"))

from harness import (
    REPO_ROOT,
    STORE_FILE,
    STORE_ID,
    CampaignError,
    Customer,
    ServerProcess,
    emit,
)

sys.path.insert(0, str(REPO_ROOT))

from lab.esphome_node import FakeNode, RawAdvert, raw_advert
from scanner.ad_structures import encode_ad_structures
from scanner.records import parse_record

EDDYSTONE = "0000feaa-0000-1000-8000-00805f9b34fb"
# Messages per second each node sends: ESPHome flushes its advertisement batch about every
# 100 ms; 20 a second keeps the generator's own timing error small at every rate.
TICKS_PER_S = 20
# One advert in this many is a consenting customer's EID (a busy shop: most of what a node
# hears is other people's phones, tags and beacons).
CONSENTING_ONE_IN = 20
# The daemon's heartbeat period here: each figure of received adverts averages over it.
HEARTBEAT_S = 2.0
CAPTURES = REPO_ROOT / "seeds" / "captures" / "mixed.jsonl"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def store_file(workdir: Path, n: int) -> Path:
    """seeds/store.toml with `n` boxes: the shipped four plus more spread over the floor."""
    text = STORE_FILE.read_text("utf-8")
    extra = []
    for i in range(4, n):
        x, y = 1.0 + (i * 2.3) % 10.0, 1.0 + (i * 1.7) % 6.5
        zone = "entrance" if y < 2.5 else ("machines" if x < 6.0 else "parts")
        extra.append(
            f'\n[[scanners]]\nid = "s-node-{i}"\nzone = "{zone}"\nposition = [{x:.1f}, {y:.1f}]\n'
            "interior = true\nrssi_offset_db = 0.0\n"
        )
    head, walks = text.split("[[walks]]", 1)
    path = workdir / "store.toml"
    path.write_text(head + "".join(extra) + "\n[[walks]]" + walks, "utf-8")
    return path


def scanner_ids(n: int) -> tuple[str, ...]:
    shipped = ("s-entrance", "s-machines", "s-parts", "s-checkout")
    return shipped[:n] + tuple(f"s-node-{i}" for i in range(4, n))


def foreign_adverts(rng: random.Random, count: int) -> list[RawAdvert]:
    """Recorded frames plus random foreign EIDs and iBeacons."""
    found = [raw_advert(parse_record(line)) for line in CAPTURES.read_text("utf-8").splitlines()]
    while len(found) < count:
        if rng.random() < 0.5:
            data = encode_ad_structures({}, {EDDYSTONE: b"\x30\xec" + rng.randbytes(8)})
        else:
            body = b"\x02\x15" + rng.randbytes(20) + b"\xc5"
            data = encode_ad_structures({0x004C: body}, {})
        found.append(RawAdvert(rng.getrandbits(48), rng.randint(-95, -45), b"\x02\x01\x06" + data))
    return found


def customer_advert(customer: Customer, rssi: int, address: int) -> RawAdvert:
    frame = bytes.fromhex(customer.frame_hex(time.time()))
    return RawAdvert(address, rssi, b"\x02\x01\x06" + encode_ad_structures({}, {EDDYSTONE: frame}))


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def received_per_s(db_path: Path, ids: tuple[str, ...], since: float) -> tuple[float, float] | None:
    """Sum over the nodes of (frames_seen_per_s, frames_passed_per_s) in their last heartbeat;
    None unless every node's last heartbeat was sent after ``since`` (a starved daemon's beats
    come late, and a stale one would describe another rate)."""
    conn = sqlite3.connect(db_path, timeout=10)
    try:
        seen = passed = 0.0
        beats = [
            json.loads(raw)
            for (raw,) in conn.execute(
                f"SELECT last_heartbeat FROM scanners WHERE id IN ({','.join('?' * len(ids))})",
                ids,
            )
            if raw
        ]
        if len(beats) < len(ids) or any(b["sent_at"] < since for b in beats):
            return None
        for beat in beats:
            seen += beat["frames_seen_per_s"]
            passed += beat["frames_passed_per_s"]
        return seen, passed
    finally:
        conn.close()


async def feed(
    nodes: list[FakeNode], customers: list[Customer], rate: int, stop: asyncio.Event
) -> None:
    rng = random.Random(19)
    pool = foreign_adverts(rng, 2000)
    per_tick = max(1, rate // TICKS_PER_S)
    loop = asyncio.get_running_loop()
    next_at = loop.time()
    turn = 0
    while not stop.is_set():
        for index, node in enumerate(nodes):
            adverts = []
            for j in range(per_tick):
                if (turn + j) % CONSENTING_ONE_IN == 0:
                    who = customers[(turn + j + index) % len(customers)]
                    adverts.append(customer_advert(who, -60 - index % 20, 0x5A0000000000 + j))
                else:
                    adverts.append(pool[(turn * 7 + j + index * 31) % len(pool)])
            node.send_adverts(adverts)
        turn += per_tick
        next_at += 1 / TICKS_PER_S
        await asyncio.sleep(max(0.0, next_at - loop.time()))


async def measure(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    ids = scanner_ids(args.nodes)
    server = ServerProcess(workdir / "server")
    server.prepare(ids, store_file=store_file(workdir, args.nodes), via_cli=False)
    await server.start()
    customers = await server.enroll_consenting(args.customers)
    nodes = [FakeNode(f"bulle-node-{i}", psk=base64.b64encode(secrets.token_bytes(32)).decode())
             for i in range(args.nodes)]  # fmt: skip
    for node in nodes:
        await node.start()
    scanners = workdir / "scanner"
    scanners.mkdir()
    lines = [
        f'store_id = "{STORE_ID}"',
        f'server_url = "{server.base_url}"',
        'backend = "esphome"',
        f'outbox_path = "{scanners / "outbox.sqlite"}"',
        f"heartbeat_interval_s = {HEARTBEAT_S}",
        'log_level = "WARNING"',
    ]
    for scanner_id, node in zip(ids, nodes, strict=True):
        (scanners / f"{scanner_id}.key").write_text(str(node.psk))
        lines += [
            "[[nodes]]",
            f'scanner_id = "{scanner_id}"',
            'host = "127.0.0.1"',
            f"port = {node.port}",
            f'secret = "{server.secrets[scanner_id]}"',
            f'encryption_key_file = "{scanners / (scanner_id + ".key")}"',
        ]
    config = scanners / "scanner.toml"
    config.write_text("\n".join(lines) + "\n")
    log = (scanners / "scanner.log").open("ab")
    daemon = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "scanner", "run", "--config", str(config),
        stdout=log, stderr=log, cwd=REPO_ROOT,
    )  # fmt: skip
    # The generator yields to the programs it measures on a shared machine.
    os.nice(args.generator_nice)
    rows = []
    try:
        deadline = time.monotonic() + 60
        while sum(n.subscribers for n in nodes) < len(nodes):
            if time.monotonic() > deadline or daemon.returncode is not None:
                raise CampaignError("the daemon did not subscribe to every node")
            await asyncio.sleep(0.1)
        for rate in args.rates:
            stop = asyncio.Event()
            feeder = asyncio.create_task(feed(nodes, customers, rate, stop))
            await asyncio.sleep(args.warmup)
            sent0 = sum(n.adverts_sent for n in nodes)
            dropped0 = sum(n.adverts_dropped for n in nodes)
            cpu0, wall0, unix0 = cpu_seconds(daemon.pid), time.monotonic(), time.time()
            samples = []
            while time.monotonic() - wall0 < args.seconds:
                await asyncio.sleep(HEARTBEAT_S)
                sample = received_per_s(server.db_path, ids, unix0 + HEARTBEAT_S)
                if sample is not None:
                    samples.append(sample)
            cpu1, wall1 = cpu_seconds(daemon.pid), time.monotonic()
            sent = sum(n.adverts_sent for n in nodes) - sent0
            dropped = sum(n.adverts_dropped for n in nodes) - dropped0
            stop.set()
            await feeder
            elapsed = wall1 - wall0
            seen = sorted(s for s, _ in samples)
            passed = sorted(p for _, p in samples)
            received = seen[len(seen) // 2] if seen else None
            cpu = cpu1 - cpu0
            rows.append(
                {
                    "per_node_offered": rate,
                    "offered_per_s": round((sent + dropped) / elapsed),
                    # None: no fresh heartbeat from every node, the daemon fell behind.
                    "received_per_s": None if received is None else round(received),
                    "dropped_by_nodes_per_s": round(dropped / elapsed),
                    "passed_per_s": round(passed[len(passed) // 2], 1) if passed else None,
                    "daemon_cpu_pct_of_one_core": round(100 * cpu / elapsed, 1),
                    "daemon_cpu_us_per_advert": (
                        round(1e6 * cpu / (received * elapsed), 1) if received else None
                    ),
                }
            )
            await asyncio.sleep(HEARTBEAT_S)
    finally:
        daemon.terminate()
        await asyncio.wait_for(daemon.wait(), 30)
        log.close()
        problems = [
            line
            for line in (scanners / "scanner.log").read_text("utf-8").splitlines()
            if " WARNING " in line or " ERROR " in line
        ]
        for line in problems[-10:]:
            print(f"daemon: {line}", file=sys.stderr)
        for node in nodes:
            await node.stop()
        await server.terminate()
    return {
        "nodes": args.nodes,
        "python": sys.version.split()[0],
        "load_average_1m_at_end": round(os.getloadavg()[0], 2),
        "rates": rows,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=12)
    parser.add_argument(
        "--rates",
        type=lambda text: [int(r) for r in text.split(",")],
        default=[300, 1000, 2000, 4000],
        help="adverts/s per node, comma-separated (default 300,1000,2000,4000)",
    )
    parser.add_argument("--seconds", type=float, default=20.0, help="measured seconds per rate")
    parser.add_argument("--warmup", type=float, default=6.0, help="seconds before measuring")
    parser.add_argument("--customers", type=int, default=20)
    parser.add_argument(
        "--generator-nice", type=int, default=10, help="niceness of the fake nodes (default 10)"
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bulle-esphome-") as tmp:
        try:
            figures = asyncio.run(measure(args, Path(tmp)))
        except CampaignError as exc:
            emit({"ok": False, "error": str(exc)}, args.json, "FAILED")
            return 1
    if args.json:
        print(json.dumps(figures))
        return 0
    print(
        f"{figures['nodes']} nodes, Python {figures['python']}, "
        f"load average at the end {figures['load_average_1m_at_end']}"
    )
    print(
        "| per node offered | offered (adverts/s) | received | dropped by nodes | passed "
        "| daemon CPU (% of one core) | daemon CPU per advert (us) |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for row in figures["rates"]:
        received = row["received_per_s"]
        print(
            f"| {row['per_node_offered']} | {row['offered_per_s']:,} "
            f"| {'behind' if received is None else f'{received:,}'} "
            f"| {row['dropped_by_nodes_per_s']:,} | {row['passed_per_s']} "
            f"| {row['daemon_cpu_pct_of_one_core']} | {row['daemon_cpu_us_per_advert']} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
