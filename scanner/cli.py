"""``beacon-scanner``: run, check, decode and replay."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from scanner.ble import (
    AdapterMissingError,
    AdapterOffError,
    BleError,
    BluezNotRunningError,
    NoSystemBusError,
    probe_bluez,
)
from scanner.config import ScannerConfig, load_config
from scanner.decode import decode_lines
from scanner.errors import ScannerError
from scanner.logs import setup_logging
from scanner.uploader import BadCredentialsError, ServerUnreachableError, Uploader, UploadError

logger = logging.getLogger(__name__)

# Exit status when the configuration or environment prevents the scanner from working.
EXIT_FAILURE = 1
# Exit status for command-line usage errors (argparse's own convention).
EXIT_USAGE = 2


def read_config(path: str) -> ScannerConfig:
    """Load the TOML file at ``path`` with environment overrides."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ScannerError(f"cannot read config file {path}: {exc.strerror}") from exc
    return load_config(text, os.environ)


def _setup_logging(config: ScannerConfig) -> None:
    setup_logging(config.log_level, config.log_format)


def _cmd_run(args: argparse.Namespace) -> int:
    from scanner.daemon import run_daemon

    config = read_config(args.config)
    _setup_logging(config)
    asyncio.run(run_daemon(config))
    return 0


def _cmd_replay(args: argparse.Namespace) -> int:
    from scanner.daemon import run_daemon

    if not Path(args.file).is_file():
        raise ScannerError(f"{args.file}: no such file: give the path of a recorded capture")
    base = read_config(args.config)
    speed = base.replay_speed if args.speed is None else args.speed
    if speed < 0:
        raise ScannerError("--speed must be 0 (as fast as possible) or more")
    config = dataclasses.replace(base, backend="replay", replay_file=args.file, replay_speed=speed)
    _setup_logging(config)
    asyncio.run(run_daemon(config))
    return 0


def _cmd_decode(args: argparse.Namespace, stdin: TextIO, stdout: TextIO, stderr: TextIO) -> int:
    status = 0
    for out, err in decode_lines(stdin):
        stdout.write(out + "\n")
        if err is not None:
            stderr.write(err + "\n")
            status = EXIT_FAILURE
    return status


class _Report:
    def __init__(self, out: TextIO) -> None:
        self._out = out
        self.failed = False

    def ok(self, name: str, detail: str) -> None:
        self._out.write(f"OK   {name}: {detail}\n")

    def fail(self, name: str, detail: str) -> None:
        self.failed = True
        self._out.write(f"FAIL {name}: {detail}\n")

    def skip(self, name: str, reason: str) -> None:
        self._out.write(f"SKIP {name}: {reason}\n")


async def _check_bluetooth(config: ScannerConfig, report: _Report) -> bool:
    """The Bluetooth lines; True when the adapter works."""
    names = ("D-Bus system bus", "BlueZ", "adapter present", "adapter powered")
    if config.backend != "bluez":
        for name in names:
            report.skip(name, f"backend is {config.backend}")
        return False
    error = await probe_bluez(config.adapter)
    order: dict[type[BleError], int] = {
        NoSystemBusError: 0,
        BluezNotRunningError: 1,
        AdapterMissingError: 2,
        AdapterOffError: 3,
    }
    failed_at = len(names) if error is None else order.get(type(error), len(names) - 1)
    for index, name in enumerate(names):
        if index < failed_at:
            report.ok(name, config.adapter if index >= 2 else "reachable")
        elif index == failed_at:
            report.fail(name, str(error))
        else:
            report.skip(name, "needs the check above")
    return error is None


async def _check_store_beacon(config: ScannerConfig, report: _Report, bluetooth: bool) -> None:
    """One line for the store beacon ([advertise] enabled): its key, then the adapter."""
    from scanner.bluez_advertising import AdvertisingError, beacon_settings, probe_advertising

    name = "store beacon"
    try:
        settings = beacon_settings(config)
    except ScannerError as exc:
        report.fail(name, str(exc))
        return
    if not bluetooth:
        report.skip(name, "needs the Bluetooth checks above")
        return
    try:
        detail = await probe_advertising(config.adapter)
    except AdvertisingError as exc:
        report.fail(name, str(exc))
        return
    report.ok(name, f"store {settings.major}, {detail}")


async def _check_server(
    config: ScannerConfig, credentials: list[tuple[str, str]], report: _Report
) -> None:
    """Reach the server once, then check each box's credentials (one box, or each node)."""
    import aiohttp

    reached = False
    async with aiohttp.ClientSession() as session:
        for scanner_id, secret in credentials:
            uploader = Uploader(
                session,
                server_url=config.server_url,
                store_id=config.store_id,
                scanner_id=scanner_id,
                secret=secret,
            )
            try:
                await uploader.fetch_allowlist(None, 0)
            except ServerUnreachableError as exc:
                report.fail("server reachable", f"{exc}: check server_url and the network")
                report.skip("credentials accepted", "needs the check above")
                return
            except UploadError as exc:
                if not reached:
                    report.ok("server reachable", config.server_url)
                reached = True
                if isinstance(exc, BadCredentialsError):
                    report.fail("credentials accepted", str(exc))
                else:
                    report.fail(
                        "credentials accepted", f"{exc}: is server_url a Bulle store server?"
                    )
                continue
            if not reached:
                report.ok("server reachable", config.server_url)
            reached = True
            report.ok("credentials accepted", f"scanner {scanner_id}")


async def _check_nodes(config: ScannerConfig, report: _Report) -> None:
    """One line per ESPHome node: connected and a raw-advertisement proxy, or what is wrong."""
    from scanner.nodes import node_key, require_library

    try:
        require_library()
    except ScannerError as exc:
        report.fail("ESPHome nodes", str(exc))
        return
    from scanner.esphome import probe_node

    async def probe(index: int) -> tuple[bool, str]:
        node = config.nodes[index]
        try:
            return True, await probe_node(node, node_key(node, index))
        except ScannerError as exc:
            return False, str(exc)

    results = await asyncio.gather(*(probe(i) for i in range(len(config.nodes))))
    for node, (ok, detail) in zip(config.nodes, results, strict=True):
        if ok:
            report.ok(f"node {node.scanner_id}", detail)
        else:
            report.fail(f"node {node.scanner_id}", detail)


def _credentials(config: ScannerConfig, report: _Report) -> list[tuple[str, str]]:
    """(scanner id, secret) of the box, or of each node; a node's unreadable secret is named."""
    from scanner.daemon import resolve_secret

    if config.backend != "esphome":
        return [(config.scanner_id, resolve_secret(config))]
    from scanner.nodes import node_config

    found = []
    for node in config.nodes:
        try:
            found.append((node.scanner_id, resolve_secret(node_config(config, node))))
        except ScannerError as exc:
            report.fail("credentials accepted", f"scanner {node.scanner_id}: {exc}")
    return found


def _cmd_check(args: argparse.Namespace, stdout: TextIO) -> int:
    from scanner.daemon import resolve_secret

    report = _Report(stdout)
    try:
        config = read_config(args.config)
        if config.backend != "esphome":
            resolve_secret(config)
    except ScannerError as exc:
        report.fail("config", f"{exc}: fix {args.config} (see docs/operations.md)")
        return EXIT_FAILURE
    report.ok("config", args.config)

    async def checks() -> None:
        if config.backend == "esphome":
            await _check_nodes(config, report)
        else:
            bluetooth = await _check_bluetooth(config, report)
            if config.advertise.enabled:
                await _check_store_beacon(config, report, bluetooth)
        credentials = _credentials(config, report)
        if credentials:
            await _check_server(config, credentials, report)

    asyncio.run(checks())
    return EXIT_FAILURE if report.failed else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="beacon-scanner",
        description="Bulle scanner daemon: reports consented beacons to the store server.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = sub.add_parser("run", help="run the scanner daemon", description="Run the daemon.")
    run.add_argument("--config", required=True, help="scanner TOML config file")
    check = sub.add_parser(
        "check",
        help="diagnose config, Bluetooth and server access",
        description="Check config, D-Bus, BlueZ and adapter (or each ESPHome node), the store "
        "beacon when [advertise] is enabled, server and credentials; "
        "exit non-zero if the scanner cannot work.",
    )
    check.add_argument("--config", required=True, help="scanner TOML config file")
    sub.add_parser(
        "decode",
        help="decode JSON-lines advertisement records (stdin) into frames (stdout)",
        description="Read advertisement records as JSON lines on stdin; write one decoded "
        "frame (or null) per line on stdout.",
    )
    replay = sub.add_parser(
        "replay",
        help="run the daemon on a recorded JSON-lines file",
        description="Run the daemon with the replay backend on FILE, then stop.",
    )
    replay.add_argument("file", metavar="FILE", help="recorded advertisements (JSON lines)")
    replay.add_argument("--config", required=True, help="scanner TOML config file")
    replay.add_argument(
        "--speed",
        type=float,
        default=None,
        help="time scale, 0 = as fast as possible (default: replay_speed of the config, 1.0)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``beacon-scanner`` console script."""
    args = build_parser().parse_args(argv)
    try:
        if args.command == "run":
            return _cmd_run(args)
        if args.command == "replay":
            return _cmd_replay(args)
        if args.command == "decode":
            return _cmd_decode(args, sys.stdin, sys.stdout, sys.stderr)
        return _cmd_check(args, sys.stdout)
    except ScannerError as exc:
        # run and replay stop before starting on a mistake of the command or its config:
        # a usage error (2); check and decode report failures they found (1).
        sys.stderr.write(f"beacon-scanner: error: {exc}\n")
        return EXIT_USAGE if args.command in ("run", "replay") else EXIT_FAILURE
    except KeyboardInterrupt:
        return EXIT_FAILURE
