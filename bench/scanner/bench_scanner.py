"""Scanner hot path benchmark: frame parsing + edge allowlist filtering throughput.

Run: ``.venv/bin/python bench/scanner/bench_scanner.py [--json] [--n N] [--bluez-n M]``
``[--repeats R]``

The corpus is deterministic (fixed seed): 90 % foreign advertisements (static iBeacons, other Apple
frames, random manufacturer data, foreign Eddystone-EIDs) and 10 % allowlisted Eddystone-EIDs,
against an allowlist of 600 EIDs (200 consenting customers x the current window and its two
neighbours). In the same run, the corpus's iBeacon advertisements go through our parser and through
the ``ibeacon-ble`` package's parser (the one Home Assistant uses), whose ``BluetoothServiceInfo``
inputs are built outside the timed loop. Also in the same run (``bluez_path.py``), the first M
advertisements of the corpus go through bleak's real BlueZ backend as marshalled
``PropertiesChanged`` D-Bus signals (dbus-fast decoding, ``BlueZManager``,
``BleakScannerBlueZDBus``), and our own detection callback (``advert_from_bleak`` +
``Daemon.on_advert``) is timed on the pairs bleak produced: our per-advertisement overhead as a
share of bleak's own cost. Each figure is the best and the median of R repeats, measured with
``time.perf_counter``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import time
from collections.abc import Callable

from bluez_path import measure_bluez_path
from home_assistant_bluetooth import BluetoothServiceInfo
from ibeacon_ble import iBeaconParser

from scanner.allowlist import Allowlist, AllowlistUpdate
from scanner.frames import (
    APPLE_COMPANY_ID,
    EDDYSTONE_SERVICE_UUID,
    EddystoneEIDFrame,
    IBeaconFrame,
    encode_eddystone,
    encode_ibeacon,
    parse_advertisement,
)

# Fixed seed so every run measures the same corpus.
SEED = 7
# Consenting customers present in the allowlist; x3 EIDs each (window and neighbours).
CUSTOMERS = 200
# Share of advertisements that are allowlisted EIDs (the rest is foreign traffic).
ALLOWED_SHARE = 0.10
# Time used for the allowlist (entries valid one window after it).
NOW = 1_763_800_000.0

Advert = tuple[dict[int, bytes], dict[str, bytes]]


def build_corpus(n: int) -> tuple[list[Advert], list[str], Allowlist]:
    """(advertisements, their addresses, allowlist) for a corpus of ``n`` advertisements."""
    rng = random.Random(SEED)
    allowed = [rng.randbytes(8) for _ in range(CUSTOMERS * 3)]
    allow = Allowlist()
    allow.apply(
        AllowlistUpdate.from_wire(
            {
                "version": 1,
                "full": True,
                "entries": [
                    {"id_type": "eid", "id": e.hex(), "not_after": NOW + 512} for e in allowed
                ],
                "removed": [],
            }
        ),
        NOW,
    )
    apple_others = [
        bytes.fromhex("1005011c1a2b3c"),
        bytes.fromhex("1219" + "ab" * 25),
        bytes.fromhex("0c0e00a1b2c3d4e5f6a7b8c9d0e1"),
    ]
    corpus: list[Advert] = []
    for _ in range(n):
        draw = rng.random()
        if draw < ALLOWED_SHARE:
            frame = EddystoneEIDFrame(-20, rng.choice(allowed))
            corpus.append(({}, {EDDYSTONE_SERVICE_UUID: encode_eddystone(frame)}))
        elif draw < 0.40:
            ib = IBeaconFrame(
                str(
                    rng.choice(
                        [
                            "e2c56db5-dffb-48d2-b060-d0f5a71096e0",
                            "f7826da6-4fa2-4e98-8024-bc5b71e0893e",
                        ]
                    )
                ),
                rng.randrange(65536),
                rng.randrange(65536),
                -59,
            )
            corpus.append(({APPLE_COMPANY_ID: encode_ibeacon(ib)}, {}))
        elif draw < 0.65:
            corpus.append(({APPLE_COMPANY_ID: rng.choice(apple_others)}, {}))
        elif draw < 0.85:
            company = rng.randrange(65536)
            corpus.append(({company: rng.randbytes(rng.randrange(3, 27))}, {}))
        else:
            frame = EddystoneEIDFrame(-20, rng.randbytes(8))
            corpus.append(({}, {EDDYSTONE_SERVICE_UUID: encode_eddystone(frame)}))
    addresses = [":".join(f"{b:02X}" for b in rng.randbytes(6)) for _ in range(n)]
    return corpus, addresses, allow


def measure(run: Callable[[], int], count: int, repeats: int) -> dict[str, float]:
    """Best and median throughput (items/s) of ``run`` over ``repeats`` repeats."""
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        elapsed = time.perf_counter() - start
        rates.append(count / elapsed)
    return {"best": max(rates), "median": statistics.median(rates)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000, help="advertisements in the corpus")
    parser.add_argument(
        "--bluez-n", type=int, default=20_000, help="advertisements through the BlueZ path"
    )
    parser.add_argument("--repeats", type=int, default=7, help="timed repeats per figure")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)

    corpus, addresses, allow = build_corpus(args.n)

    def parse_and_filter() -> int:
        match, parse, now = allow.match, parse_advertisement, NOW
        passed = 0
        for md, sd in corpus:
            if match(parse(md, sd), now) is not None:
                passed += 1
        return passed

    expected_passed = parse_and_filter()

    ibeacons = [
        (md, addr)
        for (md, _), addr in zip(corpus, addresses, strict=True)
        if (v := md.get(APPLE_COMPANY_ID)) is not None and v[:2] == b"\x02\x15"
    ]
    empty: dict[str, bytes] = {}
    ib_inputs = [md for md, _ in ibeacons]
    infos = [BluetoothServiceInfo("", addr, -70, md, {}, [], "local") for md, addr in ibeacons]
    theirs_parser = iBeaconParser()
    asyncio.run(theirs_parser.async_setup())

    def ours_ibeacon() -> int:
        parse = parse_advertisement
        return sum(1 for md in ib_inputs if parse(md, empty) is not None)

    def theirs_ibeacon() -> int:
        parse = theirs_parser.parse
        return sum(1 for info in infos if parse(info) is not None)

    assert ours_ibeacon() == theirs_ibeacon() == len(ibeacons)

    mixed = measure(parse_and_filter, len(corpus), args.repeats)
    ours = measure(ours_ibeacon, len(ibeacons), args.repeats)
    theirs = measure(theirs_ibeacon, len(ibeacons), args.repeats)
    bluez = measure_bluez_path(
        corpus[: args.bluez_n], addresses[: args.bluez_n], allow, NOW, args.repeats
    )
    figures = {
        "n": len(corpus),
        "ibeacons": len(ibeacons),
        "allowlist_size": len(allow),
        "passed": expected_passed,
        "parse_filter_per_s": mixed,
        "ours_ibeacon_per_s": ours,
        "ibeacon_ble_per_s": theirs,
        "ratio_ours_over_ibeacon_ble": {
            "best": ours["best"] / theirs["best"],
            "median": ours["median"] / theirs["median"],
        },
        "bluez_callback_path": bluez,
        "python": sys.version.split()[0],
        "repeats": args.repeats,
    }
    if args.json:
        print(json.dumps(figures, indent=2))
        return 0
    print(
        f"corpus: {len(corpus)} adverts, {len(ibeacons)} iBeacons, allowlist {len(allow)} EIDs, "
        f"{expected_passed} passed; {args.repeats} repeats; Python {figures['python']}"
    )
    print()
    print("| figure | best | median |")
    print("|---|---:|---:|")
    rows = [
        ("parse + allowlist filter, mixed corpus (adverts/s)", mixed),
        ("our parser, iBeacons (frames/s)", ours),
        ("ibeacon-ble parser, same iBeacons (frames/s)", theirs),
    ]
    for label, figure in rows:
        print(f"| {label} | {figure['best']:,.0f} | {figure['median']:,.0f} |")
    ratio = figures["ratio_ours_over_ibeacon_ble"]
    assert isinstance(ratio, dict)
    print(f"| ratio ours / ibeacon-ble | {ratio['best']:.1f}x | {ratio['median']:.1f}x |")
    print()
    print(
        f"BlueZ callback path: {bluez['adverts']} PropertiesChanged signals from "
        f"{bluez['devices']} devices, {bluez['passed']} passed"
    )
    print()
    print("| per advertisement | best (us) | median (us) |")
    print("|---|---:|---:|")
    for label, key in (
        ("dbus-fast decoding of the signal alone", "dbus_decode_us"),
        ("bleak's BlueZ path: decoding + BlueZManager + BleakScannerBlueZDBus", "bleak_bluez_us"),
        ("ours: advert_from_bleak + Daemon.on_advert", "ours_us"),
    ):
        print(f"| {label} | {bluez[key]['best']:.2f} | {bluez[key]['median']:.2f} |")
    share = bluez["ours_share_of_bleak"]
    print(f"| ours as a share of bleak's cost | {share['best']:.0%} | {share['median']:.0%} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
