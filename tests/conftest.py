"""Suite-wide hooks: the component markers (bluez, browser, postgres, esphome).

A test marked with one of them is skipped when its component is missing on this machine, and
fails when CI=true, where every component must be installed (`bash .ci/run` installs them).
"""

from __future__ import annotations

import pytest

from tests.support import COMPONENTS, require_component


def pytest_runtest_setup(item: pytest.Item) -> None:
    for marker in COMPONENTS:
        if item.get_closest_marker(marker) is not None:
            require_component(marker)
