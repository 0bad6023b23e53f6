"""Every documented mistake with the command line: one line naming the setting and the fix,
exit code 2, no traceback (docs/operations.md, "Troubleshooting the server")."""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from store_server.cli import build_parser, main

REPO_ROOT = Path(__file__).resolve().parents[2]
MASTER_KEY = "ab" * 32


def _one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert lines[0].startswith("store-server: error: ")
    return lines[0]


@pytest.fixture
def shop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A settings file with relative paths, next to its store file, in its own folder."""
    folder = tmp_path / "etc"
    folder.mkdir()
    shutil.copy(REPO_ROOT / "seeds" / "store.toml", folder / "store.toml")
    (folder / "server.toml").write_text(
        f'db_path = "data/store.sqlite"\nstore_file = "store.toml"\nmaster_key = "{MASTER_KEY}"\n',
        "utf-8",
    )
    monkeypatch.delenv("BULLE_MASTER_KEY", raising=False)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    return folder / "server.toml"


def test_missing_config_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--config", str(tmp_path / "nope.toml")]) == 2
    line = _one_error_line(capsys)
    assert "--config" in line
    assert "no such file" in line


@pytest.mark.parametrize(
    ("env_value", "expected"),
    [("", "BULLE_MASTER_KEY is empty"), ("abcd", "BULLE_MASTER_KEY is malformed")],
)
def test_empty_or_short_master_key_from_the_environment(
    shop: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    env_value: str,
    expected: str,
) -> None:
    monkeypatch.setenv("BULLE_MASTER_KEY", env_value)
    assert main(["serve", "--config", str(shop)]) == 2
    line = _one_error_line(capsys)
    assert expected in line
    assert "secrets.token_hex(32)" in line


def test_empty_master_key_in_the_file(shop: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shop.write_text(shop.read_text().replace(MASTER_KEY, ""))
    assert main(["scanner", "add", "s-x", "--config", str(shop)]) == 2
    assert "master_key is empty: set master_key" in _one_error_line(capsys)


def test_relative_paths_are_read_from_the_settings_folder(
    shop: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Run from another working directory: store_file and db_path follow the config file."""
    assert main(["scanner", "add", "s-entrance", "--config", str(shop)]) == 0
    assert "registered for store demo-store" in capsys.readouterr().out
    assert (shop.parent / "data" / "store.sqlite").is_file()
    assert not (Path.cwd() / "data").exists()


def test_missing_store_file(shop: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (shop.parent / "store.toml").unlink()
    assert main(["serve", "--config", str(shop)]) == 2
    line = _one_error_line(capsys)
    assert line.startswith("store-server: error: store_file: ")
    assert str(shop.parent / "store.toml") in line


def test_missing_csv(shop: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["stock", "import", "nope.csv", "--config", str(shop)]) == 2
    assert "nope.csv: no such file" in _one_error_line(capsys)


def test_stock_errors_keep_line_and_column(
    shop: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    csv = tmp_path / "stock.csv"
    csv.write_text("sku,name_fr,name_en,count,aisle\na,b,c,3,4\nd,e,f,-2,7\n", "utf-8")
    assert main(["stock", "import", str(csv), "--config", str(shop)]) == 2
    line = _one_error_line(capsys)
    assert line.endswith("stock.csv line 3, count: must not be negative")


def test_eid_rotation_exponent_out_of_range(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["eid", "--key", "00" * 16, "--k", "20", "--time", "5"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "argument --k: '20' is not a rotation exponent: use 0 to 15" in err


def test_eid_bad_key(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eid", "--key", "0011", "--time", "5"]) == 2
    assert "--key: expected 32 hex characters" in _one_error_line(capsys)


def test_help_shows_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    for command, expected in ((["eid"], "(default: 9)"), (["user", "add"], "(default: staff)")):
        with pytest.raises(SystemExit):
            build_parser().parse_args([*command, "--help"])
        assert expected in " ".join(capsys.readouterr().out.split())


def test_help_gives_each_default_once_and_no_empty_one(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["lab", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--tolerance-s S a wrong zone shown within S seconds" in text
    assert text.count("(default: 2.0)") == 1
    assert "(default: ())" not in text  # --without
    assert "(default: [])" not in text  # --set


def _run_cli(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "store_server", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        check=False,
        timeout=60,
    )


def test_port_in_use(shop: Path) -> None:
    """A real second listener on the port: the server says so in one line, exit 2."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        env = {**os.environ, "BULLE_COOKIE_SECURE": "false"}
        serve = ("serve", "--config", str(shop), "--port", str(port))
        result = _run_cli(*serve, env=env, cwd=shop.parent)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert f"port: 127.0.0.1:{port} is already in use" in result.stderr.splitlines()[-1]


def test_missing_config_from_a_real_process(tmp_path: Path) -> None:
    missing = tmp_path / "server.toml"
    result = _run_cli(
        "user", "add", "alice", "--config", str(missing), env={**os.environ}, cwd=tmp_path
    )
    assert result.returncode == 2
    assert result.stderr == (
        f"store-server: error: --config {missing}: no such file: give the path of the server's"
        " settings file (e.g. /etc/bulle/server.toml, docs/operations.md)\n"
    )


def test_scanner_replay_of_a_missing_file_fails_at_once(tmp_path: Path) -> None:
    config = tmp_path / "scanner.toml"
    config.write_text(
        'scanner_id = "s-1"\nstore_id = "demo-store"\nserver_url = "http://127.0.0.1:9"\n'
        f'secret = "{secrets.token_urlsafe(16)}"\n',
        "utf-8",
    )
    capture = str(tmp_path / "nope.jsonl")
    result = subprocess.run(
        [sys.executable, "-m", "scanner", "replay", capture, "--config", str(config)],
        capture_output=True,
        text=True,
        check=False,
        # "At once": it exits instead of waiting for a file that never comes. The bound only
        # catches a wait; a Python start-up alone took over 10 s at load 16.
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("beacon-scanner: error: ")
    assert "nope.jsonl: no such file" in result.stderr


def test_master_key_file(shop: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = shop.read_text().replace(f'master_key = "{MASTER_KEY}"', 'master_key_file = "key"')
    shop.write_text(text)
    assert main(["scanner", "add", "s-x", "--config", str(shop)]) == 2
    line = _one_error_line(capsys)
    assert f"master_key_file: {shop.parent / 'key'} does not exist" in line
    (shop.parent / "key").write_text(MASTER_KEY + "\n")
    assert main(["scanner", "add", "s-x", "--config", str(shop)]) == 0


def test_master_key_and_master_key_file_are_exclusive(
    shop: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shop.write_text(shop.read_text() + 'master_key_file = "key"\n')
    assert main(["user", "add", "bob", "--config", str(shop)]) == 2
    assert "set master_key or master_key_file, not both" in _one_error_line(capsys)
