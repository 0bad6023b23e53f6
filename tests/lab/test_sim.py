"""The phone-walk simulation: determinism, ground truth, addresses, what scanners hear."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from lab.radio import RadioModel
from lab.sim import SimPhone, StoreSimulation
from store_server.floor import Floor, floor_from_dict

STORE = Path(__file__).resolve().parents[2] / "seeds" / "store.toml"


@pytest.fixture
def floor() -> Floor:
    with STORE.open("rb") as handle:
        return floor_from_dict(tomllib.load(handle))


def frame(handle: str) -> SimPhone:
    def advert(t: float) -> bytes:
        return bytes([0x30, 0xEB]) + int(t // 512).to_bytes(8, "big")

    return SimPhone(handle, "browse-machines" if handle == "sylvie" else "pavement", 0.0, advert)


def make(floor: Floor, seed: int) -> StoreSimulation:
    return StoreSimulation(
        floor, RadioModel.for_floor(floor), [frame("sylvie"), frame("bob")], seed
    )


def test_same_seed_same_adverts(floor: Floor) -> None:
    a, b = make(floor, 7), make(floor, 7)
    for t in range(0, 20):
        assert a.step(float(t)) == b.step(float(t))
    other = make(floor, 8)
    assert [other.step(float(t)) for t in range(20)] != [
        make(floor, 7).step(float(t)) for t in range(20)
    ]


def test_truth_follows_the_walk(floor: Floor) -> None:
    sim = make(floor, 1)
    assert sim.truth("sylvie", 1.0)[1] is None  # still on the street
    position, zone = sim.truth("sylvie", 60.0)
    assert zone == "machines"
    assert position == pytest.approx((3.0 + 0.2 * 50 / 140, 5.0 + 0.4 * 50 / 140))
    assert sim.truth("sylvie", 200.0) == (None, None)  # out of range until the walk repeats


def test_step_reports_each_phone_once_per_scanner(floor: Floor) -> None:
    sim = make(floor, 3)
    heard = sim.step(60.0)
    assert set(heard) == {s.id for s in floor.scanners}
    for adverts in heard.values():
        handles = [a.handle for a in adverts]
        assert len(handles) == len(set(handles))
    sylvie = [a for a in heard["s-machines"] if a.handle == "sylvie"]
    assert len(sylvie) == 1
    assert sylvie[0].service_data_hex == "30eb" + (0).to_bytes(8, "big").hex()
    assert -95 <= sylvie[0].rssi <= -40
    # Nobody is heard when nobody is in range.
    assert all(a.handle != "sylvie" for adverts in sim.step(250.0).values() for a in adverts)


def test_addresses_are_random_static_and_rotate(floor: Floor) -> None:
    sim = make(floor, 1)
    first = sim.address("sylvie", 10.0)
    assert first == sim.address("sylvie", 500.0)
    assert first != sim.address("sylvie", 520.0)
    assert first != sim.address("bob", 10.0)
    assert int(first.split(":")[0], 16) & 0xC0 == 0xC0


def test_mean_rssi_falls_with_distance_and_glass(floor: Floor) -> None:
    radio = RadioModel.for_floor(floor)
    entrance = floor.scanner("s-entrance")
    inside = radio.mean_rssi(entrance, (6.0, 2.2))  # 1 m into the shop
    outside = radio.mean_rssi(entrance, (6.0, 0.2 - 0.0 - 0.2 - 0.8))  # 2 m, on the street
    assert inside == pytest.approx(-59.0)
    assert outside == pytest.approx(-59.0 - 27.0 * 0.30103 - floor.front_attenuation_db, abs=0.01)
