"""Suite-wide hooks.

- The component markers (bluez, browser, postgres, esphome): a test marked with one of them is
  skipped when its component is missing on this machine, and fails when CI=true, where every
  component must be installed (`bash .ci/run` installs them).
- No request, however hostile, leaves a traceback in the server's log. Every server the tests
  start in this process logs through `store_server.app` (requests that ended in a 500) and
  `aiohttp.server` / `aiohttp.web_protocol` (exceptions that escaped the middleware). Any
  ERROR or traceback there during the whole run fails the session, listed at the end. Tests
  that break the server on purpose (not through client input) run it in a subprocess.
  The README's command runs the tests in pytest-xdist workers (addopts in pyproject.toml):
  each worker hands its lines to the controller, which lists them and fails the run.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from store_server.storage.database import Handle, Target, close_handle, connect_target
from store_server.storage.pg import PgTarget
from store_server.storage.pg_cluster import Cluster, throwaway_cluster
from tests import pg
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


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The PostgreSQL variant of a test marked ``own_pg_step`` (a test, a class or a module)
    gets the ``pg_step`` marker: the default run leaves it out (the suite's time budget) and
    CI runs it in its own step, ``pytest -m pg_step``; its SQLite variant stays in the default
    run. Before the ``-m`` selection (tryfirst)."""
    for item in items:
        if item.get_closest_marker("own_pg_step") and item.get_closest_marker("postgres"):
            item.add_marker(pytest.mark.pg_step)


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


# The key of an xdist worker's output that carries its request failures to the controller.
_WORKER_OUTPUT_KEY = "bulle_request_failures"


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: object) -> None:
    """On the xdist controller: keep the request failures of a worker that finished (a worker
    that crashed has no output; its tests are reported as crashed)."""
    output = getattr(node, "workeroutput", None) or {}
    _FAILURES.lines.extend(output.get(_WORKER_OUTPUT_KEY, []))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    worker_output = getattr(session.config, "workeroutput", None)
    if worker_output is not None:  # an xdist worker: its exit status is not the run's
        worker_output[_WORKER_OUTPUT_KEY] = list(_FAILURES.lines)
        return
    if not _FAILURES.lines:
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.ensure_newline()
        reporter.section("server log: errors or tracebacks caused by requests", sep="=")
        for line in _FAILURES.lines:
            reporter.line(line)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Cluster]:
    """A throwaway PostgreSQL cluster for the session (tests/pg.py)."""
    require_component("postgres")
    with throwaway_cluster(tcp_port=pg.free_port()) as cluster:
        pg.prepare_template(cluster)
        yield cluster


@pytest.fixture
def pg_url(pg_cluster: Cluster) -> Iterator[str]:
    """The URL of a fresh database on the session's cluster, dropped after the test."""
    name, url = pg.new_database(pg_cluster)
    yield url
    pg_cluster.drop_database(name)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def engine(request: pytest.FixtureRequest) -> str:
    """The storage engine a test runs on: each test using it runs on both."""
    return str(request.param)


def every_value_on_sqlite(argname: str, values: list[Any]) -> pytest.MarkDecorator:
    """Parametrise ``engine`` and ``argname`` together: every value on SQLite, the first on
    PostgreSQL too. For inputs that validation refuses before the storage: what the engine
    could change is the way to the refusal (a server error), not which values are refused,
    and each case costs a server and a password hash."""
    cases = [pytest.param("sqlite", value) for value in values]
    cases.append(pytest.param("postgres", values[0], marks=pytest.mark.postgres))
    return pytest.mark.parametrize(("engine", argname), cases)


@pytest.fixture
def db_target(engine: str, tmp_path: Path, request: pytest.FixtureRequest) -> Target:
    """A fresh database of the test's engine: a SQLite file, or a PostgreSQL database."""
    if engine == "sqlite":
        return tmp_path / "store.sqlite"
    return PgTarget(request.getfixturevalue("pg_url"))


@pytest.fixture
def handle(db_target: Target) -> Iterator[Handle]:
    """A read-write connection to ``db_target``, migrated; closed after the test."""
    db = connect_target(db_target)
    yield db
    close_handle(db)
