"""decode_lines on literal input lines."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from scanner.decode import decode_lines

CAPTURES = Path(__file__).resolve().parents[2] / "seeds" / "captures"


def test_decode_literal_lines() -> None:
    lines = [
        '{"manufacturer_data": {"76": "0215e2c56db5dffb48d2b060d0f5a71096e000010002c5"}}\n',
        "\n",
        '{"service_data": {"0000feaa-0000-1000-8000-00805f9b34fb": "30ec0123456789abcdef"}}\n',
        '{"manufacturer_data": {"76": "1005011c1a2b3c"}}\n',
        "   \n",
        '{"manufacturer_data": {"76": "zz"}}\n',
        "not json\n",
        '{"service_data": {"0000feaa-0000-1000-8000-00805f9b34fb": "10eb0367656f0b"}}',
    ]
    assert list(decode_lines(lines)) == [
        (
            '{"type":"ibeacon","uuid":"e2c56db5-dffb-48d2-b060-d0f5a71096e0",'
            '"major":1,"minor":2,"power":-59}',
            None,
        ),
        ('{"type":"eddystone_eid","tx_power":-20,"eid":"0123456789abcdef"}', None),
        ("null", None),
        ("null", "line 6: manufacturer_data['76'] is not hex"),
        ("null", "line 7: invalid JSON: Expecting value: line 1 column 1 (char 0)"),
        ('{"type":"eddystone_url","tx_power":-21,"url":"https://geo.info"}', None),
    ]


def test_decode_empty_input() -> None:
    assert list(decode_lines([])) == []
    assert list(decode_lines(["", "  "])) == []


def test_mixed_capture_type_counts() -> None:
    lines = (CAPTURES / "mixed.jsonl").read_text(encoding="utf-8").splitlines()
    results = list(decode_lines(lines))
    assert [error for _, error in results if error is not None] == []
    assert len(results) == len([line for line in lines if line.strip()])
    counts = Counter("none" if out == "null" else json.loads(out)["type"] for out, _ in results)
    assert counts == {
        "ibeacon": 6,
        "altbeacon": 4,
        "eddystone_uid": 4,
        "eddystone_url": 4,
        "eddystone_tlm": 4,
        "eddystone_eid": 10,
        "none": 10,
    }
