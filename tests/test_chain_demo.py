"""`store-server chain-demo`: two stores on one throwaway PostgreSQL play the chain story
(consent in A greets in B, withdrawal in B retracts the card in A), and without PostgreSQL's
binaries it says so in one line."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

import lab.chain_demo
from store_server.cli import main

REPO_ROOT = Path(__file__).resolve().parents[1]
# The story takes 10-30 s on a loaded 2-core machine (cluster start, two servers, eight
# scanner processes, the greetings); four minutes means it is stuck.
DEMO_TIMEOUT_S = 240


@pytest.mark.postgres
@pytest.mark.own_pg_step  # a demo: in CI's own PostgreSQL step (pytest -m pg_step)
@pytest.mark.timeout(DEMO_TIMEOUT_S + 30)
def test_the_chain_story_plays_on_a_throwaway_postgres(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "store_server",
            "chain-demo",
            "--dir",
            str(tmp_path),
            "--duration",
            "0",
        ],
        capture_output=True,
        text=True,
        timeout=DEMO_TIMEOUT_S,
        cwd=REPO_ROOT,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert "B's board greets her" in out
    assert "A's board greets her too" in out
    found = re.search(r"Store A's board retracts her card (\d+) ms", out)
    assert found is not None, out
    assert "Chain demo stopped" in out


def test_without_postgres_binaries_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setattr(lab.chain_demo, "find_bin_dir", lambda: None)
    code = main(["chain-demo", "--dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1
    assert "PostgreSQL server binaries" in err
