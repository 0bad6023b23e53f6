"""Write seeds/captures/mixed.jsonl: a deterministic, recorded-style set of shop advertisements.

No live capture is possible on the build machines, so this script writes what a scanner near the
entrance of a small shop hears in about 10 s: customers' Eddystone-EID phones, the shop's own
beacons (iBeacon, AltBeacon, Eddystone UID/URL/TLM), passers-by's Apple devices (Nearby Info,
Find My), a Windows laptop (Microsoft CDP) and assorted manufacturer data.

Run: ``.venv/bin/python bench/scanner/make_captures.py`` (rewrites the file; output is stable).
"""

from __future__ import annotations

import random
from pathlib import Path

from scanner.frames import (
    APPLE_COMPANY_ID,
    EDDYSTONE_SERVICE_UUID,
    AltBeaconFrame,
    EddystoneEIDFrame,
    EddystoneTLMFrame,
    EddystoneUIDFrame,
    EddystoneURLFrame,
    IBeaconFrame,
    encode_altbeacon,
    encode_eddystone,
    encode_ibeacon,
)
from scanner.records import AdvertRecord, record_to_json

OUTPUT = Path(__file__).resolve().parents[2] / "seeds" / "captures" / "mixed.jsonl"
# Fixed seed: the capture must be byte-for-byte reproducible.
SEED = 20251122
# Radius Networks, the AltBeacon specification's example company.
RADIUS_NETWORKS = 0x0118
# Microsoft, whose Connected Devices Platform beacons Windows laptops send.
MICROSOFT = 0x0006
# Samsung Electronics, seen on Galaxy phones and buds.
SAMSUNG = 0x0075
# Garmin, seen on sports watches.
GARMIN = 0x0087
# Shop's own iBeacon UUID and namespace (static, the shop's property, not a customer's).
SHOP_UUID = "f7826da6-4fa2-4e98-8024-bc5b71e0893e"
SHOP_NAMESPACE = bytes.fromhex("edd1ebeac04e5defa017")

EID_PHONES = [
    bytes.fromhex(h) for h in ("0123456789abcdef", "8f1c2ad4e07b3915", "c0ffee00badc0de5")
]


def _build() -> list[tuple[str, dict[int, bytes], dict[str, bytes], int | None, str | None]]:
    """(address, manufacturer_data, service_data, tx_power, local_name) per advertisement."""
    fe = EDDYSTONE_SERVICE_UUID
    adverts: list[tuple[str, dict[int, bytes], dict[str, bytes], int | None, str | None]] = []
    for i in range(10):
        eid = EID_PHONES[i % len(EID_PHONES)]
        adverts.append(
            (
                f"5A:3C:11:0{i % 3}:7E:{i:02X}",
                {},
                {fe: encode_eddystone(EddystoneEIDFrame(-20, eid))},
                None,
                None,
            )
        )
    for i in range(6):
        ib = IBeaconFrame(SHOP_UUID, 100, i % 3 + 1, -59)
        adverts.append(
            (f"D3:4B:10:00:00:0{i % 3}", {APPLE_COMPANY_ID: encode_ibeacon(ib)}, {}, None, None)
        )
    for i in range(4):
        alt = AltBeaconFrame(RADIUS_NETWORKS, bytes(range(i, i + 20)), -60, 0)
        adverts.append(
            (f"E1:02:03:04:05:0{i % 2}", {RADIUS_NETWORKS: encode_altbeacon(alt)}, {}, None, None)
        )
    for i in range(4):
        uid = EddystoneUIDFrame(-18, SHOP_NAMESPACE, bytes.fromhex(f"00000000000{i % 2 + 1}"))
        adverts.append(
            (f"C7:AA:00:00:00:0{i % 2}", {}, {fe: encode_eddystone(uid)}, None, "Kontakt")
        )
    urls = [
        "https://cafe-pieces.ca/",
        "https://www.bulle.com/fr",
        "http://goo.gl/x1",
        "https://a.info",
    ]
    for i, url in enumerate(urls):
        adverts.append(
            (
                f"C7:AA:00:00:01:0{i}",
                {},
                {fe: encode_eddystone(EddystoneURLFrame(-18, url))},
                None,
                None,
            )
        )
    temps = [21.5, 22.25, None, -3.5]
    for i, temp in enumerate(temps):
        tlm = EddystoneTLMFrame(0, 2950 - i * 10, temp, 120_000 + i * 37, 86_400.0 + i * 0.1)
        adverts.append((f"C7:AA:00:00:00:0{i % 2}", {}, {fe: encode_eddystone(tlm)}, None, None))
    foreign = [
        {APPLE_COMPANY_ID: bytes.fromhex("1005011c1a2b3c")},  # Apple Nearby Info
        {APPLE_COMPANY_ID: bytes.fromhex("100703182c1f9b3d28")},  # Apple Nearby Info
        {
            APPLE_COMPANY_ID: bytes.fromhex(
                "1219" + "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f6" + "0100"
            )
        },  # Find My
        {APPLE_COMPANY_ID: bytes.fromhex("0c0e00a1b2c3d4e5f6a7b8c9d0e1")},  # Apple Handoff
        {MICROSOFT: bytes.fromhex("0109200247b1b6c1d3a9e7f20a1b2c3d4e5f6071829300")},  # Windows CDP
        {SAMSUNG: bytes.fromhex("420401806633a1b2c3d4e5f6")},  # Samsung
        {GARMIN: bytes.fromhex("0a1f00")},  # Garmin watch
        {APPLE_COMPANY_ID: bytes.fromhex("0215" + "00" * 10)},  # truncated iBeacon
    ]
    for i, md in enumerate(foreign):
        adverts.append((f"6E:F0:{i:02X}:9A:12:34", md, {}, None, None))
    adverts.append(
        ("4C:11:22:33:44:55", {}, {"0000fe9f-0000-1000-8000-00805f9b34fb": bytes(20)}, None, None)
    )
    adverts.append(
        ("4C:11:22:33:44:56", {}, {fe: bytes.fromhex("30ec0123")}, None, None)
    )  # truncated EID
    return adverts


def build_lines() -> list[str]:
    """The capture's JSON lines, shuffled and timed deterministically."""
    rng = random.Random(SEED)
    adverts = _build()
    rng.shuffle(adverts)
    lines = []
    t = 0.0
    for address, md, sd, tx_power, name in adverts:
        t = round(t + rng.uniform(0.05, 0.45), 3)
        record = AdvertRecord(
            t=t,
            address=address,
            rssi=rng.randint(-95, -45),
            local_name=name,
            tx_power=tx_power,
            manufacturer_data=md,
            service_data=sd,
            service_uuids=tuple(sd),
        )
        lines.append(record_to_json(record))
    return lines


def main() -> None:
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    OUTPUT.write_text("\n".join(build_lines()) + "\n", encoding="utf-8")
    print(f"wrote {OUTPUT}")


if __name__ == "__main__":
    main()
