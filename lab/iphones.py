"""The accuracy lab's iPhones: phones that broadcast nothing and arrive only by proof (pure).

Each box broadcasts the store beacon (``store_beacon.advertised_now`` with a lab key); what an
iPhone hears of each box comes from the lab's channel (the same path loss, walls, glass, body
and noise as phone to box: the radio path is reciprocal). Its OS (:class:`RegionMonitor`)
wakes the app on region entry after a delay, the reference app (:class:`BeaconCheckInApp`)
ranges and posts its proof when a box is near; the "server" checks it exactly as the store
server does (:func:`store_server.checkin_proof.check_proof`) after a network delay and checks
the phone in through :meth:`PresenceEngine.check_in` (``via="beacon_proof"``). Nothing else
reaches the engine: no EID windows.

Figures: of the phones that walked in, how many arrived and how long after crossing the door
(split into region entry, proof posted, arrived); of the phones outside (passers-by and window
shoppers, all with the app and consenting), how many arrived.
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass, field

import numpy as np

from lab.beacon_app import BeaconCheckInApp, PostProof, Region, RegionMonitor
from lab.channel import Channel
from lab.run import STEP_S, LabPhone
from store_beacon import advertised_now
from store_server.checkin_proof import (
    BeaconSettings,
    ProofAccepted,
    Sighting,
    check_proof,
    proof_events,
)
from store_server.floor import Floor
from store_server.presence import PresenceEngine

__all__ = ["IphoneFigures", "IphoneTally", "simulate_iphones"]

LAB_CHAIN = uuid.UUID("6f1e2d3c-1b2a-4c5d-8e9f-00000000b011")
LAB_MAJOR = 1
# What iOS takes to wake an app on a beacon region entry: about a second usually (the issue's
# figure), up to 10 s when the phone is deep asleep (this share of the entries).
ENTRY_DELAY_S = (0.5, 2.0)
SLOW_ENTRY_SHARE = 0.1
SLOW_ENTRY_S = (4.0, 10.0)
# The proof's trip to the server and back on a shop's Wi-Fi or 4G.
NETWORK_S = (0.1, 0.8)
# The phone in a hand (1.2 m) or a pocket (0.8 m), and iPhone models' receive offsets (dB).
HEIGHTS_M = (0.8, 1.2)
PHONE_MODEL_DB = 2.0


@dataclass(slots=True)
class IphoneTally:
    walked_in: int = 0
    arrived: int = 0
    outside: int = 0
    outside_arrived: int = 0
    outside_posted: int = 0
    refused: int = 0
    latencies: list[float] = field(default_factory=list)
    """Door crossed -> arrived."""
    wake_latencies: list[float] = field(default_factory=list)
    """Region entry (the app woken) -> arrived."""
    post_latencies: list[float] = field(default_factory=list)
    """Proof posted -> arrived."""


@dataclass(frozen=True, slots=True)
class IphoneFigures:
    walked_in: int
    arrived_share: float | None
    arrival_p50_s: float | None
    arrival_p95_s: float | None
    wake_to_arrived_p50_s: float | None
    post_to_arrived_p50_s: float | None
    outside: int
    outside_arrived: int
    refused: int


def _pct(values: list[float], share: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(share * len(ordered)) - 1))]


def figures(tally: IphoneTally) -> IphoneFigures:
    return IphoneFigures(
        walked_in=tally.walked_in,
        arrived_share=tally.arrived / tally.walked_in if tally.walked_in else None,
        arrival_p50_s=_pct(tally.latencies, 0.5),
        arrival_p95_s=_pct(tally.latencies, 0.95),
        wake_to_arrived_p50_s=_pct(tally.wake_latencies, 0.5),
        post_to_arrived_p50_s=_pct(tally.post_latencies, 0.5),
        outside=tally.outside,
        outside_arrived=tally.outside_arrived,
        refused=tally.refused,
    )


@dataclass(slots=True)
class _Iphone:
    phone: LabPhone
    app: BeaconCheckInApp
    os: RegionMonitor
    height: float
    model_db: float
    woken_t: float | None = None
    posted_t: float | None = None
    # (server time, sightings) of a proof on its way to the server.
    in_flight: tuple[float, list[Sighting]] | None = None
    answer: tuple[float, int, dict[str, object]] | None = None


def simulate_iphones(
    floor: Floor,
    channel: Channel,
    engine: PresenceEngine,
    phones: list[LabPhone],
    duration_s: float,
    rng: np.random.Generator,
) -> IphoneTally:
    """Run ``phones`` as iPhones for ``duration_s``; tally arrivals against the truth."""
    key = rng.bytes(32)
    settings = BeaconSettings(key, LAB_CHAIN, LAB_MAJOR)
    zones = {box.id: box.zone for box in floor.scanners}
    region = Region(LAB_CHAIN, LAB_MAJOR)
    iphones: list[_Iphone] = []
    for phone in phones:
        slow = rng.random() < SLOW_ENTRY_SHARE
        delay = float(rng.uniform(*(SLOW_ENTRY_S if slow else ENTRY_DELAY_S)))
        iphones.append(
            _Iphone(
                phone,
                BeaconCheckInApp(region),
                RegionMonitor(region, entry_delay_s=delay),
                float(rng.choice(HEIGHTS_M)),
                float(rng.uniform(-PHONE_MODEL_DB, PHONE_MODEL_DB)),
            )
        )
    by_subject = {i.phone.subject: i for i in iphones}
    boxes = floor.scanners
    # Lab time starts at a real-looking clock so that slots and minors behave as in a shop.
    epoch = 1_800_000_000.0
    tally = IphoneTally()
    for step in range(round(duration_s / STEP_S)):
        t = (step + 1) * STEP_S
        events = []
        where = [ip.phone.position(t) for ip in iphones]
        live = [i for i, here in enumerate(where) if here is not None]
        readings = np.full((len(boxes), len(live)), math.nan)
        if live:
            xs = np.array([where[i][0] for i in live])  # type: ignore[index]
            ys = np.array([where[i][1] for i in live])  # type: ignore[index]
            heights = np.array([iphones[i].height for i in live])
            models = np.array([iphones[i].model_db for i in live])
            for b in range(len(boxes)):
                mean = channel.mean_rssi(b, xs, ys, heights)
                readings[b] = channel.readings(mean, np.zeros(len(live)), models, b, rng)
        beacons = [advertised_now(key, LAB_CHAIN, LAB_MAJOR, box.id, epoch + t) for box in boxes]
        column = {i: k for k, i in enumerate(live)}
        for n, ip in enumerate(iphones):
            here = where[n]
            inside = here is not None and floor.is_inside(*here)
            if inside and ip.phone.entered_t is None:
                ip.phone.entered_t = t
            heard: dict[str, tuple[uuid.UUID, int, int, int]] = {}
            if n in column:
                for b, box in enumerate(boxes):
                    reading = readings[b, column[n]]
                    if not math.isnan(reading):
                        beacon = beacons[b]
                        heard[box.id] = (beacon.uuid, beacon.major, beacon.minor, int(reading))
            for kind, ranged in ip.os.heard(t, heard):
                if kind == "enter":
                    ip.woken_t = t if ip.woken_t is None else ip.woken_t
                    actions = ip.app.region_entered(epoch + t)
                elif kind == "exit":
                    actions = ip.app.region_exited(epoch + t)
                else:
                    actions = ip.app.ranged(ranged or [], epoch + t)
                ip.os.perform(actions)
                for action in actions:
                    if isinstance(action, PostProof):
                        ip.posted_t = t if ip.posted_t is None else ip.posted_t
                        sightings = [_sighting(b) for b in action.body["beacons"]]
                        trip = float(rng.uniform(*NETWORK_S))
                        ip.in_flight = (t + trip / 2.0, sightings)
            if ip.in_flight is not None and ip.in_flight[0] <= t:
                arrived_at, sightings = ip.in_flight
                ip.in_flight = None
                result = check_proof(settings, zones, sightings, epoch + arrived_at)
                if isinstance(result, ProofAccepted):
                    decided = proof_events(engine, ip.phone.subject, result, arrived_at)
                    events += decided
                    zone = engine.zone_of(ip.phone.subject)
                    body: dict[str, object] = (
                        {"checked_in": True, "zone": zone}
                        if zone is not None
                        else {"checked_in": False, "reason": "not_inside"}
                    )
                    ip.answer = (arrived_at + 0.2, 200, body)
                else:
                    tally.refused += 1
                    ip.answer = (arrived_at + 0.2, 403, {"error": {"code": result.code}})
            if ip.answer is not None and ip.answer[0] <= t:
                _, status, body = ip.answer
                ip.answer = None
                ip.os.perform(ip.app.answered(status, body, epoch + t))
        if math.isclose(t % 1.0, 0.0, abs_tol=1e-6) or math.isclose(t % 1.0, 1.0, abs_tol=1e-6):
            events += engine.tick(t)
        for event in events:
            ip = by_subject[event.subject]
            if event.kind == "arrived" and ip.phone.arrived_t is None:
                ip.phone.arrived_t = t
    for ip in iphones:
        phone = ip.phone
        if phone.kind in ("passer", "shopper"):
            tally.outside += 1
            tally.outside_arrived += phone.arrived_t is not None
            tally.outside_posted += ip.posted_t is not None
        elif phone.entered_t is not None:
            tally.walked_in += 1
            if phone.arrived_t is not None:
                tally.arrived += 1
                tally.latencies.append(phone.arrived_t - phone.entered_t)
                if ip.woken_t is not None:
                    tally.wake_latencies.append(phone.arrived_t - ip.woken_t)
                if ip.posted_t is not None:
                    tally.post_latencies.append(phone.arrived_t - ip.posted_t)
    return tally


def _sighting(body: dict[str, object]) -> Sighting:
    return Sighting(
        uuid.UUID(str(body["uuid"])),
        int(str(body["major"])),
        int(str(body["minor"])),
        int(str(body["rssi"])),
        float(str(body["seen_at"])),
    )
