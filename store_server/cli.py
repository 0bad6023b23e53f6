"""`store-server` command line: run the server, the demo, the lab, and admin commands."""

from __future__ import annotations

import argparse
import asyncio
import errno
import logging
import socket
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO, TypeVar

from store_server.checkin_proof import beacon_settings
from store_server.cli_admin import add_admin_commands
from store_server.cli_chain import add_chain_commands
from store_server.cli_db import add_db_commands
from store_server.cli_settings import (
    HelpFormatter,
    add_config_arg,
    check_database,
    floor,
    load_settings,
    master_key,
)
from store_server.errors import ConfigError, StoreServerError

logger = logging.getLogger(__name__)
T = TypeVar("T")


def cmd_serve(args: argparse.Namespace, out: TextIO) -> int:
    from aiohttp import web

    from store_server.app import AccessLogger, create_app
    from store_server.logs import setup_logging

    config = load_settings(args)
    if args.host is not None:
        config = config.with_overrides(host=args.host)
    if args.port is not None:
        config = config.with_overrides(port=args.port)
    master_key(config)
    floor(config)
    beacon_settings(config)
    check_database(config)
    setup_logging(config.log_level, config.log_format)
    try:
        web.run_app(
            create_app(config),
            host=config.host,
            port=config.port,
            shutdown_timeout=5.0,
            access_log_class=AccessLogger,
            print=lambda line: _echo(out, line),
        )
    except OSError as exc:
        raise _listen_error(exc, config.host, config.port) from None
    return 0


def _listen_error(exc: OSError, host: str, port: int) -> StoreServerError:
    """A one-line error for a listening socket that could not be opened."""
    where = f"{host}:{port}"
    if exc.errno == errno.EADDRINUSE:
        return ConfigError(
            f"port: {where} is already in use: stop the program using it"
            f" (ss -ltnp 'sport = :{port}') or choose another port (--port, or port in the"
            " settings file)",
            key="port",
        )
    if exc.errno == errno.EACCES:
        return ConfigError(
            f"port: not allowed to listen on {where}: use a port above 1023 behind the"
            " reverse proxy",
            key="port",
        )
    if exc.errno in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT) or isinstance(exc, socket.gaierror):
        return ConfigError(
            f"host: cannot listen on {where} ({exc.strerror or exc}): use an address of this"
            " machine (127.0.0.1 behind the reverse proxy)",
            key="host",
        )
    return ConfigError(f"host/port: cannot listen on {where}: {exc.strerror or exc}")


def _echo(out: TextIO, line: object) -> None:
    out.write(f"{line}\n")


LAB_MISSING = (
    "the demo and the accuracy lab run from a source checkout of Bulle "
    "(the lab/ folder is not part of the store server's wheel)"
)


def _lab_import(module: str) -> Any:
    """Import a module of the checkout's lab package, or say where it is to be found."""
    import importlib

    try:
        return importlib.import_module(f"lab.{module}")
    except ModuleNotFoundError as exc:
        if exc.name not in ("lab", f"lab.{module}"):
            raise
        raise StoreServerError(LAB_MISSING) from None


def cmd_demo(args: argparse.Namespace, out: TextIO) -> int:
    run_demo = _lab_import("demo").run_demo
    return int(
        asyncio.run(
            run_demo(
                Path(args.dir), port=args.port, seed=args.seed, out=out, duration_s=args.duration
            )
        )
    )


# 32 random bytes: twice the store beacon's minimum, as for the master key.
BEACON_KEY_BYTES = 32


def cmd_beacon_key(args: argparse.Namespace, out: TextIO) -> int:
    import os
    import secrets

    path = Path(args.file)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise ConfigError(
            f"{path} exists: the store's boxes may already use that key; remove it first to"
            " replace the key (then copy the new one to every box)"
        ) from None
    except OSError as exc:
        raise ConfigError(f"cannot write {path} ({exc.strerror})") from None
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(secrets.token_hex(BEACON_KEY_BYTES) + "\n")
    out.write(f"store beacon key written to {path} (mode 0600)\n")
    return 0


def cmd_chain_demo(args: argparse.Namespace, out: TextIO) -> int:
    run_chain_demo = _lab_import("chain_demo").run_chain_demo
    workdir = Path(args.dir) if args.dir else None
    return int(
        asyncio.run(run_chain_demo(workdir, seed=args.seed, out=out, duration_s=args.duration))
    )


def _rotation_exponent(text: str) -> int:
    """argparse type of ``--k``: an Eddystone-EID rotation exponent, 0 to 15."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 15:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a rotation exponent: use 0 to 15 (9 = a new EID every 512 s)"
        )
    return value


def _beacon_time(text: str) -> int:
    """argparse type of ``--time``: the beacon's 32-bit seconds counter."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value < 2**32:
        raise argparse.ArgumentTypeError(f"{text!r} is not a 32-bit counter: use 0 to 4294967295")
    return value


def cmd_eid(args: argparse.Namespace, out: TextIO) -> int:
    from store_server.eid import compute_eid

    try:
        key = bytes.fromhex(args.key)
    except ValueError:
        key = b""
    if len(key) != 16:
        raise StoreServerError("--key: expected 32 hex characters (a 128-bit identity key)")
    out.write(compute_eid(key, args.k, args.time).hex() + "\n")
    return 0


def cmd_lab(args: argparse.Namespace, out: TextIO) -> int:
    return int(_lab_import("accuracy").run_lab_command(args, out))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="store-server",
        description="Bulle store server: consent-first presence, greetings and stock checks.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("serve", help="run the store server", description="Run the store server.")
    add_config_arg(p)
    p.add_argument("--host", help="listen address (overrides the host setting, 127.0.0.1)")
    p.add_argument(
        "--port", type=int, help="listen port (overrides the port setting, 8080)", default=None
    )
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser(
        "demo",
        help="run the demo store (server + simulated scanners and phones)",
        description="Run the demo store: the server on an embedded SQLite file, simulated "
        "scanner daemons and simulated phones walking the floor. Ctrl-C stops it.",
    )
    p.add_argument(
        "--dir",
        default="var/demo",
        help="working directory for the demo's files (emptied at start; a folder used by a"
        " running demo or holding other files is refused)",
    )
    p.add_argument(
        "--port", type=int, default=8080, help="HTTP port on 127.0.0.1 (0: any free port)"
    )
    p.add_argument("--seed", type=int, default=7, help="seed of the simulation's randomness")
    p.add_argument(
        "--duration",
        type=float,
        default=None,
        help="stop after this many seconds (default: run until Ctrl-C)",
    )
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser(
        "chain-demo",
        help="run two stores on one throwaway PostgreSQL (chain mode)",
        description="Run two demo stores on one PostgreSQL database started in a temporary "
        "directory (needs the PostgreSQL server binaries), with simulated scanners and "
        "phones: a consent given in store A greets the customer in store B, and a withdrawal "
        "made in store B retracts the card in store A. Prints each step's timing, then runs "
        "until Ctrl-C.",
    )
    p.add_argument(
        "--dir",
        default=None,
        help="folder for the scanners' files and logs (default: a temporary folder)",
    )
    p.add_argument("--seed", type=int, default=7, help="seed of the simulation's randomness")
    p.add_argument(
        "--duration",
        type=float,
        default=None,
        help="stop this many seconds after the story (default: run until Ctrl-C)",
    )
    p.set_defaults(func=cmd_chain_demo)

    add_admin_commands(sub)
    add_chain_commands(sub)
    add_db_commands(sub)

    p = sub.add_parser(
        "beacon-key",
        help="write a new store beacon key to a file (for the server and the store's boxes)",
        description="Write a new random store beacon key (64 hex characters) to FILE, readable"
        " by its owner only; an existing file is never overwritten. The server reads it through"
        " store_beacon_key_file, every box of the store through its advertise key file.",
    )
    p.add_argument("file", metavar="FILE", help="where to write the key (must not exist)")
    p.set_defaults(func=cmd_beacon_key)

    p = sub.add_parser(
        "eid",
        help="compute an Eddystone-EID (reference for the app team)",
        description="Print the Eddystone-EID (hex) of an identity key at a beacon time.",
    )
    p.add_argument("--key", required=True, help="identity key, 32 hex characters")
    p.add_argument(
        "--k", type=_rotation_exponent, default=9, help="rotation exponent (0-15; 9 = 512 s)"
    )
    p.add_argument(
        "--time", type=_beacon_time, required=True, help="the beacon's 32-bit seconds counter"
    )
    p.set_defaults(func=cmd_eid)

    p = sub.add_parser(
        "lab",
        help="run the presence accuracy lab (simulation)",
        description="Run the presence accuracy lab: a deterministic simulation of the "
        "store floor measured against ground truth.",
    )
    try:
        _lab_import("accuracy").add_lab_arguments(p)
    except StoreServerError:
        p.description = f"{p.description} Not available here: {LAB_MISSING}."
    p.set_defaults(func=cmd_lab)
    _use_formatter(parser)
    return parser


def _use_formatter(parser: argparse.ArgumentParser) -> None:
    """Show defaults in every command's --help."""
    parser.formatter_class = HelpFormatter
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                _use_formatter(sub)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args, sys.stdout))
    except StoreServerError as exc:
        message = exc.message
        if exc.field and not isinstance(exc, ConfigError):
            message = f"{exc.field}: {message}"
        sys.stderr.write(f"store-server: error: {message}\n")
        return 2
    except KeyboardInterrupt:
        return 130
