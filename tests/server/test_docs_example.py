"""The runnable example of docs/presence.md runs and prints what the page says."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_presence_api_example(monkeypatch: pytest.MonkeyPatch) -> None:
    page = (ROOT / "docs" / "presence.md").read_text("utf-8")
    block = re.search(r"```python\n(.*?)```", page, re.DOTALL)
    assert block is not None
    monkeypatch.chdir(ROOT)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(block.group(1), "docs/presence.md", "exec"), {})
    kinds = [line.split()[:3] for line in out.getvalue().splitlines()]
    assert kinds[0] == ["arrived", "phone-1", "entrance"]
    assert ["zone_changed", "phone-1", "machines"] in kinds
    assert kinds[-1] == ["left", "phone-1", "machines"]
