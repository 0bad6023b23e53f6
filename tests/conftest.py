"""Suite-wide hooks.

- The component markers (bluez, browser, postgres, esphome): a test marked with one of them is
  skipped when its component is missing on this machine, and fails when CI=true, where every
  component must be installed (`bash .ci/run` installs them).
- No request, however hostile, leaves a traceback in the server's log. Every server the tests
  start in this process logs through `store_server.app` (requests that ended in a 500) and
  `aiohttp.server` / `aiohttp.web_protocol` (exceptions that escaped the middleware). Any
  ERROR or traceback there during the whole run fails the session, listed at the end. Tests
  that break the server on purpose (not through client input) run it in a subprocess.
"""

from __future__ import annotations

import logging

import pytest

from tests.support import COMPONENTS, require_component

# The loggers through which a request's failure reaches the server's log.
REQUEST_LOGGERS = ("store_server.app", "aiohttp.server", "aiohttp.web_protocol")


class _RequestFailures(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.name}: {record.getMessage()}")

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR or record.exc_info is not None


_FAILURES = _RequestFailures()


def pytest_configure(config: pytest.Config) -> None:
    for name in REQUEST_LOGGERS:
        logging.getLogger(name).addHandler(_FAILURES)


def pytest_runtest_setup(item: pytest.Item) -> None:
    for marker in COMPONENTS:
        if item.get_closest_marker(marker) is not None:
            require_component(marker)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> object:
    before = len(_FAILURES.lines)
    try:
        return (yield)
    finally:
        for index in range(before, len(_FAILURES.lines)):
            _FAILURES.lines[index] = f"{item.nodeid}: {_FAILURES.lines[index]}"


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if not _FAILURES.lines:
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.section("server log: errors or tracebacks caused by requests", sep="=")
        for line in _FAILURES.lines:
            reporter.line(line)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED
