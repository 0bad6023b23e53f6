"""The wheel installs and runs outside the repository: the scanner alone, and the store server.

Builds the wheel with `uv build` into a temporary folder, installs it into two clean virtual
environments outside the checkout (the locked versions of the dependencies, `uv export`):
the scanner's (`bulle`, the required dependencies only) and the store server's
(`bulle[server]`), then runs the programs from there. A scanner's environment must not hold
the server's heavy dependencies.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
# Building, two environments and their installs from uv's cache: 10-30 s on a loaded machine.
STEP_TIMEOUT_S = 300
# The server's start-up in the clean environment, loaded machine included.
SERVE_TIMEOUT_S = 60.0
# Fresh ports to try when another program takes the chosen one before the server binds it.
PORT_ATTEMPTS = 3
# The server's dependencies a scanner (a Raspberry Pi) must not install.
SERVER_ONLY = (
    "numpy",
    "jinja2",
    "argon2",
    "aiohttp_jinja2",
    "msgspec",
    "cryptography",
    "prometheus_client",
)
# Files the programs read at run time, by path inside the wheel.
RUNTIME_DATA = (
    "store_server/consent_texts.toml",
    "store_server/templates/base.html",
    "store_server/templates/board.html",
    "store_server/static/bulle.css",
    "store_server/static/board.js",
)
EID_RECORD = (
    '{"t":0.0,"address":"C0:FF:EE:00:00:01","rssi":-60,"local_name":null,"tx_power":null,'
    '"manufacturer_data":{},"service_data":{"0000feaa-0000-1000-8000-00805f9b34fb":'
    '"30ec0123456789abcdef"},"service_uuids":[]}'
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(4 * STEP_TIMEOUT_S)]


def uv() -> str:
    found = os.environ.get("UV") or shutil.which("uv")
    assert found, "uv not found (the README's commands install it: python3 -m pip install uv)"
    return found


def run(args: list[str], cwd: Path, **kwargs: object) -> subprocess.CompletedProcess[str]:
    """Run a command outside the repository, without the checkout on the import path."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["UV_PYTHON_DOWNLOADS"] = "never"
    return subprocess.run(
        args,
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=STEP_TIMEOUT_S,
        check=False,
        **kwargs,  # type: ignore[arg-type]
    )


def ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, f"{done.args}: exit {done.returncode}\n{done.stderr[-3000:]}"
    return done.stdout


@dataclass(frozen=True, slots=True)
class Install:
    """A clean environment with the wheel installed."""

    venv: Path
    outside: Path
    """A working folder outside the repository."""

    def bin(self, name: str) -> str:
        return str(self.venv / "bin" / name)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    assert not out.is_relative_to(REPO_ROOT)
    ok(run([uv(), "build", "--wheel", "--out-dir", str(out), str(REPO_ROOT)], cwd=out))
    wheels = list(out.glob("bulle-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def install(tmp: Path, wheel: Path, extra: str | None) -> Install:
    requirements = tmp / "requirements.txt"
    export = [uv(), "export", "--locked", "--no-dev", "--no-emit-project", "--no-hashes"]
    export += ["--format", "requirements-txt", "--output-file", str(requirements)]
    if extra:
        export += ["--extra", extra]
    ok(run(export, cwd=REPO_ROOT))
    venv = tmp / "venv"
    ok(run([uv(), "venv", "--python", sys.executable, str(venv)], cwd=tmp))
    target = f"bulle[{extra}] @ {wheel.as_uri()}" if extra else str(wheel)
    python = str(venv / "bin" / "python")
    ok(run([uv(), "pip", "install", "--python", python, "-r", str(requirements), target], cwd=tmp))
    outside = tmp / "work"
    outside.mkdir()
    return Install(venv, outside)


@pytest.fixture(scope="module")
def scanner_only(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Install:
    return install(tmp_path_factory.mktemp("scanner"), wheel, None)


@pytest.fixture(scope="module")
def server(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Install:
    return install(tmp_path_factory.mktemp("server"), wheel, "server")


def test_wheel_holds_the_runtime_files_and_not_the_lab(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = [path for path in RUNTIME_DATA if path not in names]
    assert not missing, f"missing from the wheel: {missing}"
    assert any(n.startswith("store_server/templates/app/") for n in names)
    assert any(n.startswith("store_server/static/app/") for n in names)
    assert not [n for n in names if n.startswith(("lab/", "tests/", "bench/"))]


def test_scanner_alone_runs_without_the_server_dependencies(scanner_only: Install) -> None:
    probe = (
        "import importlib.util, pkgutil, scanner, store_beacon.proof\n"
        f"print([m for m in {SERVER_ONLY!r} if importlib.util.find_spec(m)])\n"
        "for m in pkgutil.walk_packages(scanner.__path__, 'scanner.'):\n"
        "    if m.name not in ('scanner.__main__', 'scanner.esphome'):\n"
        "        importlib.import_module(m.name)\n"
        "from scanner.nodes import require_library\n"
        "try:\n"
        "    require_library()\n"
        "except Exception as exc:\n"
        "    print(exc)\n"
        "print(scanner.__file__)\n"
    )
    present, esphome, origin = ok(
        run([scanner_only.bin("python"), "-c", probe], cwd=scanner_only.outside)
    ).splitlines()
    assert present == "[]", f"server dependencies in a scanner's environment: {present}"
    # ESP32 nodes need the esphome extra; without it the backend says so in one line.
    assert esphome == "backend esphome needs aioesphomeapi: pip install 'bulle[esphome]'"
    assert Path(origin).is_relative_to(scanner_only.venv)  # the installed copy, not the checkout

    assert "run the scanner daemon" in ok(
        run([scanner_only.bin("beacon-scanner"), "--help"], cwd=scanner_only.outside)
    )
    decoded = ok(
        run(
            [scanner_only.bin("beacon-scanner"), "decode"],
            cwd=scanner_only.outside,
            input=EID_RECORD + "\n",
        )
    )
    assert '"eid":"0123456789abcdef"' in decoded

    # The store server's command says what is missing, in one line, without a traceback.
    done = run([scanner_only.bin("store-server"), "--help"], cwd=scanner_only.outside)
    assert done.returncode == 2
    assert "bulle[server]" in done.stderr
    assert "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return int(resp.status), resp.read().decode("utf-8")


def write_config(work: Path, port: int) -> Path:
    store_file = work / "store.toml"
    store_file.write_bytes((REPO_ROOT / "seeds" / "store.toml").read_bytes())
    config = work / "server.toml"
    config.write_text(
        "\n".join(
            [
                f'db_path = "{work / "store.sqlite"}"',
                f'store_file = "{store_file}"',
                f'master_key = "{os.urandom(32).hex()}"',
                f"port = {port}",
                "cookie_secure = false",
                "",
            ]
        ),
        encoding="utf-8",
    )
    config.chmod(0o600)
    return config


def start_serving(server: Install, port: int) -> tuple[subprocess.Popen[bytes], bool]:
    """`store-server serve` on ``port``; (the process, True) once it listens and answers, or
    (the exited process, False) when another program took the port first."""
    work = server.outside
    config = write_config(work, port)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONUNBUFFERED"] = "1"
    log_path = work / f"serve-{port}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [server.bin("store-server"), "serve", "--config", str(config)],
            cwd=work,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    # Its own "Running on" line first: another program holding the port would answer too.
    listening = f"Running on http://127.0.0.1:{port} "
    deadline = time.monotonic() + SERVE_TIMEOUT_S
    while True:  # a condition (this process listens and answers), bounded by a timeout
        log_text = log_path.read_text(encoding="utf-8", errors="replace")
        if process.poll() is not None:
            if "already in use" in log_text:
                return process, False
            pytest.fail(f"store-server serve exited {process.returncode}: {log_text[-3000:]}")
        if listening in log_text:
            try:
                if get(f"http://127.0.0.1:{port}/login")[0] == 200:
                    return process, True
            except OSError:
                pass
        assert time.monotonic() < deadline, f"store-server serve did not answer: {log_text}"
        time.sleep(0.1)


@pytest.fixture
def serving(server: Install) -> Iterator[str]:
    """`store-server serve` from the clean environment, on 127.0.0.1; yields its address."""
    for _attempt in range(PORT_ATTEMPTS):
        port = free_port()
        process, up = start_serving(server, port)
        if up:
            break
    else:
        pytest.fail(f"{PORT_ATTEMPTS} ports taken by other programs before the server's bind")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_server_commands_run_from_the_wheel(server: Install) -> None:
    assert "run the store server" in ok(
        run([server.bin("store-server"), "--help"], cwd=server.outside)
    )
    eid = ok(
        run(
            [server.bin("store-server"), "eid", "--key", "00" * 16, "--time", "0"],
            cwd=server.outside,
        )
    ).strip()
    assert len(eid) == 16
    int(eid, 16)
    assert "run the scanner daemon" in ok(
        run([server.bin("beacon-scanner"), "--help"], cwd=server.outside)
    )


def test_server_serves_pages_from_the_wheel(serving: str) -> None:
    status, page = get(serving + "/login")
    assert status == 200
    assert "<form" in page
    status, css = get(serving + "/static/bulle.css")
    assert status == 200
    assert css.strip()
    status, texts = get(serving + "/api/v1/consent-texts")
    assert status == 200
    assert "greeting" in texts
