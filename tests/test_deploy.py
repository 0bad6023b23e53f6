"""The systemd units in deploy/: valid for systemd, hardened, and wired as the guide says."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
UNITS = ("bulle-store-server.service", "beacon-scanner.service")
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
# systemd-analyze security's scale: 0 is fully locked down, 10 fully exposed; "OK" ends at
# about 2. Both daemons need the network (and the scanner D-Bus), so 0 is out of reach.
MAX_EXPOSURE = 2.0


def _directives(unit: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in (DEPLOY / unit).read_text("utf-8").splitlines():
        if "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            found.setdefault(key.strip(), []).append(value.strip())
    return found


def _checkable_copy(unit: str, tmp_path: Path) -> Path:
    """The unit with its ExecStart program replaced by one that exists on this machine."""
    text = (DEPLOY / unit).read_text("utf-8")
    text = re.sub(r"^ExecStart=\S+", "ExecStart=/bin/true", text, flags=re.MULTILINE)
    copy = tmp_path / unit
    copy.write_text(text, "utf-8")
    return copy


@pytest.mark.systemd
@pytest.mark.parametrize("unit", UNITS)
def test_unit_is_valid_and_hardened(unit: str, tmp_path: Path) -> None:
    assert SYSTEMD_ANALYZE is not None
    copy = _checkable_copy(unit, tmp_path)
    verify = subprocess.run(
        [SYSTEMD_ANALYZE, "verify", str(copy)], capture_output=True, text=True, check=False
    )
    assert verify.returncode == 0, verify.stderr
    assert verify.stderr.strip() == "", verify.stderr
    security = subprocess.run(
        [SYSTEMD_ANALYZE, "security", "--offline=true", "--no-pager", str(copy)],
        capture_output=True,
        text=True,
        check=False,
    )
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", security.stdout)
    assert match is not None, security.stdout + security.stderr
    assert float(match.group(1)) <= MAX_EXPOSURE, security.stdout


def test_server_unit_runs_as_its_own_user_with_its_state_directory() -> None:
    unit = _directives("bulle-store-server.service")
    assert unit["User"] == ["bulle"]
    assert unit["StateDirectory"] == ["bulle"]
    assert unit["ExecStart"] == [
        "/opt/bulle/bin/store-server serve --config /etc/bulle/server.toml"
    ]
    assert "DynamicUser" not in unit  # admin commands run as the same user (sudo -u bulle)


def test_scanner_unit_hands_its_dynamic_user_the_secret() -> None:
    """A DynamicUser cannot read a root-owned secret: systemd copies it for the service
    (LoadCredential) and the scanner reads that copy (BULLE_SCANNER_SECRET_FILE, %d is the
    credentials directory)."""
    unit = _directives("beacon-scanner.service")
    assert unit["DynamicUser"] == ["yes"]
    assert unit["LoadCredential"] == ["secret:/etc/beacon-scanner/secret"]
    assert "BULLE_SCANNER_SECRET_FILE=%d/secret" in unit["Environment"]


STORE_BEACON_DROP_IN = DEPLOY / "beacon-scanner.service.d" / "store-beacon.conf"


def test_store_beacon_drop_in_hands_the_key_like_the_secret() -> None:
    """The drop-in copies the store beacon key for the dynamic user and points the scanner's
    [advertise] key_file at the copy, through a variable the scanner's config accepts."""
    from scanner.config import load_config

    lines = [
        line.split("=", 1)
        for line in STORE_BEACON_DROP_IN.read_text("utf-8").splitlines()
        if "=" in line and not line.startswith("#")
    ]
    found = {key: value for key, value in lines}
    assert found["LoadCredential"] == "store-beacon-key:/etc/beacon-scanner/store-beacon-key"
    name, value = found["Environment"].split("=", 1)
    assert value == "%d/store-beacon-key"
    config = load_config(
        'scanner_id = "s-1"\nstore_id = "st"\nserver_url = "http://x"\nsecret = "s"\n'
        '[advertise]\nenabled = true\nuuid = "b0110000-0000-4000-8000-00000000c4a1"\nmajor = 1\n',
        {name: "/run/credentials/beacon-scanner.service/store-beacon-key"},
    )
    assert config.advertise.key_file == "/run/credentials/beacon-scanner.service/store-beacon-key"


@pytest.mark.systemd
def test_scanner_unit_with_the_store_beacon_drop_in_is_valid(tmp_path: Path) -> None:
    assert SYSTEMD_ANALYZE is not None
    copy = _checkable_copy("beacon-scanner.service", tmp_path)
    drop_ins = tmp_path / "beacon-scanner.service.d"
    drop_ins.mkdir()
    (drop_ins / "store-beacon.conf").write_text(STORE_BEACON_DROP_IN.read_text("utf-8"))
    verify = subprocess.run(
        [SYSTEMD_ANALYZE, "verify", str(copy)], capture_output=True, text=True, check=False
    )
    assert verify.returncode == 0, verify.stderr
    assert verify.stderr.strip() == "", verify.stderr
