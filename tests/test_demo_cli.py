"""`store-server demo` answers a busy port with one clear line, not a traceback."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from store_server.cli import main


def test_demo_on_a_busy_port_says_what_to_do(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code = main(["demo", "--port", str(port), "--dir", str(tmp_path / "demo")])
    err = capsys.readouterr().err
    assert code == 2
    assert f"port {port} on 127.0.0.1 is already in use" in err
    assert "--port" in err
