"""The floor model against the demo store and hand-made mistakes."""

from __future__ import annotations

import copy
import tomllib
from pathlib import Path
from typing import Any

import pytest

from store_server.floor import FloorError, floor_from_dict

STORE = Path(__file__).resolve().parents[2] / "seeds" / "store.toml"


@pytest.fixture
def data() -> dict[str, Any]:
    with STORE.open("rb") as handle:
        return tomllib.load(handle)


def test_demo_floor_loads(data: dict[str, Any]) -> None:
    floor = floor_from_dict(data)
    assert floor.store_id == "demo-store"
    assert [z.id for z in floor.zones] == ["entrance", "machines", "parts", "checkout"]
    assert floor.scanner("s-parts").position == (9.0, 4.0)
    assert floor.scanner("s-entrance").interior is False
    assert floor.door_zone() == "entrance"
    assert {w.id for w in floor.walks} >= {"browse-machines", "pavement"}


@pytest.mark.parametrize(
    ("x", "y", "zone"),
    [
        (6.0, 1.0, "entrance"),
        (1.0, 7.0, "machines"),
        (9.0, 4.0, "parts"),
        (10.0, 7.5, "checkout"),
        (6.0, 2.5, "entrance"),  # shared edge: first listed zone wins
        (6.0, -0.1, None),  # pavement
        (12.5, 4.0, None),  # beyond the side wall
    ],
)
def test_zone_at(data: dict[str, Any], x: float, y: float, zone: str | None) -> None:
    assert floor_from_dict(data).zone_at(x, y) == zone


def test_is_inside_window_line(data: dict[str, Any]) -> None:
    floor = floor_from_dict(data)
    assert floor.is_inside(6.0, 0.0)
    assert not floor.is_inside(6.0, -0.01)


def test_position_at_interpolates_and_repeats(data: dict[str, Any]) -> None:
    floor = floor_from_dict(data)
    walk = floor.walk("browse-machines")
    assert floor.position_at(walk, 0.0) == (6.0, -2.5)
    x, y = floor.position_at(walk, 1.5) or (0.0, 0.0)
    assert (x, y) == pytest.approx((6.0, -1.25))
    assert floor.position_at(walk, 300.0 + 1.5) == pytest.approx((6.0, -1.25))
    assert floor.position_at(walk, 200.0) is None  # after the last point, before the repeat
    late = floor.walk("browse-machines-late")
    assert floor.position_at(late, 2.0) is None  # before the first point


@pytest.mark.parametrize(
    ("mutate", "key"),
    [
        (lambda d: d.pop("floor"), "floor"),
        (lambda d: d["floor"].update(width_m="wide"), "floor.width_m"),
        (lambda d: d["zones"][1].update(rect=[0, 0, 1]), "zones[1].rect"),
        (lambda d: d["zones"][2].update(rect=[5, 5, 1, 1]), "zones[2].rect"),
        (lambda d: d["scanners"][2].update(zone="attic"), "scanners[2].zone"),
        (lambda d: d["scanners"][0].update(interior="yes"), "scanners[0].interior"),
        (lambda d: d["scanners"][3].update(id="s-entrance"), "scanners[3].id"),
        (lambda d: d["walks"][0]["points"].reverse(), "walks[0].points[1]"),
        (lambda d: d["floor"].update(pavement_y_max=1.0), "floor.pavement_y_min"),
    ],
)
def test_invalid_floor_names_the_key(data: dict[str, Any], mutate: Any, key: str) -> None:
    broken = copy.deepcopy(data)
    mutate(broken)
    with pytest.raises(FloorError) as caught:
        floor_from_dict(broken)
    assert str(caught.value).startswith(key)


def test_unknown_lookups_raise(data: dict[str, Any]) -> None:
    floor = floor_from_dict(data)
    with pytest.raises(FloorError, match="unknown scanner"):
        floor.scanner("nope")
    with pytest.raises(FloorError, match="unknown walk"):
        floor.walk("nope")
