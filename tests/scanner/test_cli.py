"""beacon-scanner command line: --help for every subcommand, check, decode, replay."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from scanner.cli import build_parser, main
from scanner.frames import EDDYSTONE_SERVICE_UUID
from scanner.records import AdvertRecord, record_to_json

from .conftest import SCANNER_ID, SECRET, STORE_ID, Api, wait_until

SUBCOMMANDS = ("run", "check", "decode", "replay")


def write_config(tmp_path: Path, server_url: str, **extra: str) -> Path:
    lines = [
        f'scanner_id = "{SCANNER_ID}"',
        f'store_id = "{STORE_ID}"',
        f'server_url = "{server_url}"',
        f'secret = "{SECRET}"',
        f'outbox_path = "{tmp_path / "outbox.sqlite"}"',
        *(f"{k} = {v}" for k, v in extra.items()),
    ]
    path = tmp_path / "scanner.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_help_for_every_subcommand(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert f"beacon-scanner {command}" in out
    assert "usage:" in out


def test_top_level_help_lists_subcommands() -> None:
    text = build_parser().format_help()
    for command in SUBCOMMANDS:
        assert command in text


def test_module_entry_point_help() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "scanner", "--help"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0
    assert "beacon-scanner" in result.stdout


def test_check_without_system_bus(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, "http://127.0.0.1:9")
    env = {**os.environ, "DBUS_SYSTEM_BUS_ADDRESS": f"unix:path={tmp_path / 'no_socket'}"}
    result = subprocess.run(
        [sys.executable, "-m", "scanner", "check", "--config", str(cfg)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=60,
    )
    lines = result.stdout.splitlines()
    assert result.returncode == 1
    assert lines[0].startswith("OK   config:")
    assert lines[1].startswith("FAIL D-Bus system bus: no D-Bus system bus")
    assert lines[2].startswith("SKIP BlueZ")
    assert any(
        line.startswith("FAIL server reachable: server unreachable at http://127.0.0.1:9")
        for line in lines
    )


def test_check_bad_config_names_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = write_config(tmp_path, "http://127.0.0.1:9", window_s="-1")
    assert main(["check", "--config", str(cfg)]) == 1
    out = capsys.readouterr().out
    assert out.startswith("FAIL config: window_s:")


async def test_check_simulated_against_server(api: Api, tmp_path: Path) -> None:
    cfg = write_config(tmp_path, api.url, backend='"simulated"')
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "scanner",
        "check",
        "--config",
        str(cfg),
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=60)
    text = out.decode()
    assert proc.returncode == 0, text
    assert "OK   server reachable" in text
    assert "OK   credentials accepted" in text

    wrong = write_config(tmp_path, api.url, backend='"simulated"')
    wrong.write_text(wrong.read_text().replace(SECRET, "nope"))
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "scanner",
        "check",
        "--config",
        str(wrong),
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode == 1
    assert "FAIL credentials accepted: bad credentials" in out.decode()


def test_decode_subcommand() -> None:
    rec = AdvertRecord(
        t=0.0,
        address="C0:FF:EE:00:00:01",
        rssi=-60,
        service_data={EDDYSTONE_SERVICE_UUID: bytes.fromhex("30ec0123456789abcdef")},
    )
    result = subprocess.run(
        [sys.executable, "-m", "scanner", "decode"],
        input=record_to_json(rec) + "\nnot json\n",
        capture_output=True,
        text=True,
        check=False,
    )
    out = result.stdout.splitlines()
    assert result.returncode == 1
    assert '"eid":"0123456789abcdef"' in out[0]
    assert out[1] == "null"
    assert result.stderr.startswith("line 2:")


async def test_replay_subcommand_uploads(api: Api, tmp_path: Path) -> None:
    api.state.allowlist_entries = [{"id_type": "eid", "id": "0123456789abcdef", "not_after": 4e9}]
    recs = [
        AdvertRecord(
            t=i * 0.01,
            address="C0:FF:EE:00:00:01",
            rssi=-60,
            service_data={EDDYSTONE_SERVICE_UUID: bytes.fromhex("30ec0123456789abcdef")},
        )
        for i in range(5)
    ]
    capture = tmp_path / "capture.jsonl"
    capture.write_text("".join(record_to_json(r) + "\n" for r in recs))
    cfg = write_config(tmp_path, api.url, window_s="0.2", allowlist_wait_s="0.2")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "scanner",
        "replay",
        str(capture),
        "--config",
        str(cfg),
        "--speed",
        "0",
    )
    assert await asyncio.wait_for(proc.wait(), timeout=60) == 0
    windows = api.state.windows()
    assert {w["id"] for w in windows} == {"0123456789abcdef"}
    assert sum(w["count"] for w in windows) == 5


async def test_run_stops_gracefully_on_sigterm(api: Api, tmp_path: Path) -> None:
    api.state.allowlist_entries = [{"id_type": "eid", "id": "0123456789abcdef", "not_after": 4e9}]
    # Windows are aligned to the wall clock (multiples of window_s): a 30 s window closed on its
    # own when the adverts came in its last second or so (seen in a fresh-clone CI run). A
    # day-long window stays open unless the test runs across midnight UTC.
    cfg = write_config(
        tmp_path, api.url, backend='"simulated"', window_s="86400", heartbeat_interval_s="0.2"
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "scanner",
        "run",
        "--config",
        str(cfg),
        stdin=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdin is not None
    assert proc.stderr is not None
    line = AdvertRecord(
        t=None,
        address="C0:FF:EE:00:00:01",
        rssi=-60,
        service_data={EDDYSTONE_SERVICE_UUID: bytes.fromhex("30ec0123456789abcdef")},
    )
    # Wait until scanning has started (after the first allowlist), then send two adverts.
    async with asyncio.timeout(30):
        while b"scanning started" not in await proc.stderr.readline():
            pass
    proc.stdin.write((record_to_json(line) + "\n").encode() * 2)
    await proc.stdin.drain()
    # A heartbeat showing passed frames proves both lines were read (one chunk, one pass).
    await wait_until(
        lambda: any(h["frames_passed_per_s"] > 0 for h in api.state.heartbeats), limit_s=30
    )
    assert api.state.windows() == []  # the day's window is still open
    proc.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(proc.wait(), timeout=10) == 0
    assert sum(w["count"] for w in api.state.windows()) == 2


def test_log_format_is_checked(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = write_config(tmp_path, "http://127.0.0.1:9", log_format='"xml"')
    assert main(["run", "--config", str(cfg)]) == 2
    assert "log_format" in capsys.readouterr().err
