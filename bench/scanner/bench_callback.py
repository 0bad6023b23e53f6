"""Cost of one advertisement through bleak's callback machinery and the daemon's hot path.

Measures, per advertisement: SimulatedBackend.deliver (bleak AdvertisementData, BLEDevice
bookkeeping, detection callbacks) -> scanner.ble.advert_from_bleak -> Daemon.on_advert (frame
parsing, allowlist match, aggregation), for foreign and allowlisted Eddystone-EID frames.

Run: .venv/bin/python bench/scanner/bench_callback.py [--n 200000]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
import tracemalloc
from pathlib import Path

from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData

from scanner.allowlist import AllowlistUpdate
from scanner.ble import SimulatedBackend, advert_from_bleak
from scanner.config import ScannerConfig
from scanner.daemon import Daemon
from scanner.frames import EDDYSTONE_SERVICE_UUID
from scanner.records import AdvertRecord

ALLOWED = bytes.fromhex("0123456789abcdef")


def record(i: int, allowed: bool) -> AdvertRecord:
    eid = ALLOWED if allowed else i.to_bytes(8, "big")
    return AdvertRecord(
        t=None,
        address=f"C0:FF:EE:{i >> 16 & 0xFF:02X}:{i >> 8 & 0xFF:02X}:{i & 0xFF:02X}",
        rssi=-60,
        service_data={EDDYSTONE_SERVICE_UUID: bytes([0x30, 0xEC]) + eid},
    )


async def measure(n: int, allowed: bool, devices: int) -> tuple[float, int]:
    with tempfile.TemporaryDirectory() as tmp:
        cfg = ScannerConfig(
            scanner_id="s-bench",
            store_id="demo-store",
            server_url="http://127.0.0.1:9",
            secret="x",
            backend="simulated",
            outbox_path=str(Path(tmp) / "outbox.sqlite"),
        )
        daemon = Daemon(cfg, "x", stdin=asyncio.StreamReader())
        now = time.time()
        daemon.allowlist.apply(
            AllowlistUpdate.from_wire(
                {
                    "version": 1,
                    "full": True,
                    "entries": [{"id_type": "eid", "id": ALLOWED.hex(), "not_after": now + 3600}],
                    "removed": [],
                }
            ),
            now,
        )

        def callback(device: BLEDevice, adv: AdvertisementData) -> None:
            daemon.on_advert(advert_from_bleak(device, adv))

        backend = SimulatedBackend(callback, None, stream=asyncio.StreamReader())
        recs = [record(i % devices, allowed) for i in range(n)]
        start = time.perf_counter()
        for rec in recs:
            backend.deliver(rec)
        elapsed = time.perf_counter() - start
        # Second pass under tracemalloc (slow) only for the memory figure.
        tracemalloc.start()
        for rec in recs:
            backend.deliver(rec)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        daemon.outbox.close()
        return elapsed / n * 1e6, peak


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=200_000)
    args = parser.parse_args()
    print("| case | adverts | distinct devices | us/advert | adverts/s | peak traced KiB |")
    print("|---|---|---|---|---|---|")
    for allowed, devices, label in (
        (False, 1000, "foreign EID (dropped)"),
        (True, 1, "allowlisted EID (aggregated)"),
    ):
        us, peak = asyncio.run(measure(args.n, allowed, devices))
        print(
            f"| {label} | {args.n} | {devices} | {us:.2f} | {1e6 / us:,.0f} | {peak / 1024:.0f} |"
        )


if __name__ == "__main__":
    main()
