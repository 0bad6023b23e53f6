"""`store-server` command line: run the server, the demo, the lab, and admin commands."""

from __future__ import annotations

import argparse
import asyncio
import errno
import getpass
import logging
import os
import secrets
import socket
import sqlite3
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO, TypeVar

import sqlite_utils

from store_server.config import ServerConfig, load_config, resolve_paths
from store_server.errors import ConfigError, StoreServerError, ValidationError
from store_server.floor import Floor

logger = logging.getLogger(__name__)
T = TypeVar("T")

MASTER_KEY_HOWTO = "make one with: python3 -c 'import secrets; print(secrets.token_hex(32))'"
"""The fix named by every master key error."""


class HelpFormatter(argparse.HelpFormatter):
    """argparse's help with each option's default shown, when it has a meaningful one."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if (
            "%(default)" in text
            or default in (None, False, argparse.SUPPRESS)
            or not (action.option_strings or action.nargs in ("?", "*"))
        ):
            return text
        return f"{text} (default: %(default)s)"


def _load(args: argparse.Namespace) -> ServerConfig:
    """The settings of ``--config`` (or none) with ``BULLE_*`` overrides and relative paths
    resolved against the settings file's folder (the working directory without a file)."""
    if args.config:
        path = Path(args.config)
        try:
            text = path.read_text("utf-8")
        except FileNotFoundError:
            raise ConfigError(
                f"--config {path}: no such file: give the path of the server's settings file"
                " (e.g. /etc/bulle/server.toml, docs/operations.md)"
            ) from None
        except OSError as exc:
            raise ConfigError(
                f"--config {path}: cannot read it ({exc.strerror}): run the command as the"
                " server's user (e.g. sudo -u bulle) or fix the file's permissions"
            ) from None
        base = path.resolve().parent
    else:
        text, base = "", Path.cwd()
    return resolve_paths(load_config(text, os.environ), base)


def _master_key(config: ServerConfig) -> bytes:
    """The master key, or a one-line error naming the setting (or variable) and the fix."""
    from store_server.keywrap import KeyWrapError, parse_master_key

    try:
        return parse_master_key(config.master_key)
    except KeyWrapError as exc:
        where = "BULLE_MASTER_KEY" if "BULLE_MASTER_KEY" in os.environ else "master_key"
        problem = "is empty" if not config.master_key.strip() else f"is malformed ({exc})"
        raise ConfigError(
            f"{where} {problem}: set master_key in the settings file (or BULLE_MASTER_KEY) to"
            f" 64 hex characters; {MASTER_KEY_HOWTO}",
            key="master_key",
        ) from None


def _floor(config: ServerConfig) -> Floor:
    """The store file's floor, or a one-line error naming ``store_file``."""
    import tomllib

    from store_server.app import load_floor
    from store_server.floor import FloorError

    path = Path(config.store_file)
    try:
        return load_floor(path)
    except FileNotFoundError:
        raise ConfigError(
            f"store_file: {path} does not exist: set store_file to the store's floor file"
            " (format of seeds/store.toml; a relative path is read from the settings file's"
            " folder)",
            key="store_file",
        ) from None
    except OSError as exc:
        raise ConfigError(
            f"store_file: cannot read {path} ({exc.strerror})", key="store_file"
        ) from None
    except (tomllib.TOMLDecodeError, FloorError) as exc:
        raise ConfigError(
            f"store_file: {path}: {exc} (format of seeds/store.toml)", key="store_file"
        ) from None


def _with_db(config: ServerConfig, fn: Callable[[sqlite_utils.Database], T]) -> T:
    """Run one database function for an admin command, then close the database."""
    from store_server.storage.database import Database

    try:
        db = Database(Path(config.db_path))
    except (OSError, sqlite3.Error) as exc:
        raise ConfigError(
            f"db_path: cannot open {config.db_path} ({exc}): check that the folder exists and"
            " that this user may write it (run as the server's user, e.g. sudo -u bulle)",
            key="db_path",
        ) from None
    try:
        return db.run_sync(fn)
    finally:
        db.close()


def _add_config_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="TOML settings file (docs/operations.md); BULLE_* variables override it",
    )


def cmd_serve(args: argparse.Namespace, out: TextIO) -> int:
    from aiohttp import web

    from store_server.app import AccessLogger, create_app
    from store_server.logs import setup_logging

    config = _load(args)
    if args.host is not None:
        config = config.with_overrides(host=args.host)
    if args.port is not None:
        config = config.with_overrides(port=args.port)
    _master_key(config)
    _floor(config)
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


def cmd_user_add(args: argparse.Namespace, out: TextIO) -> int:
    from store_server import staff

    config = _load(args)
    password = _read_password(args)
    user = _with_db(
        config, lambda d: staff.add_user(d, args.username, password, args.role, time.time())
    )
    out.write(f"created {user.role} account {user.username}\n")
    return 0


def _read_password(args: argparse.Namespace) -> str:
    password = args.password_stdin and sys.stdin.readline().rstrip("\n")
    if not password:
        password = getpass.getpass("Password (12 characters or more): ")
    return str(password)


def cmd_scanner_add(args: argparse.Namespace, out: TextIO) -> int:
    from store_server.keywrap import wrap_key
    from store_server.service import scanner_aad
    from store_server.storage import scanners

    config = _load(args)
    master = _master_key(config)
    store_id = args.store or _floor(config).store_id
    secret = secrets.token_urlsafe(32)
    wrapped = wrap_key(master, secret.encode(), scanner_aad(args.scanner_id))
    _with_db(
        config, lambda d: scanners.add_scanner(d, args.scanner_id, store_id, wrapped, time.time())
    )
    out.write(f"scanner {args.scanner_id} registered for store {store_id}\n")
    out.write(f"secret (shown once, put it in the scanner's config): {secret}\n")
    return 0


def cmd_scanner_revoke(args: argparse.Namespace, out: TextIO) -> int:
    from store_server.storage import scanners

    config = _load(args)
    _with_db(config, lambda d: scanners.revoke_scanner(d, args.scanner_id, time.time()))
    out.write(f"scanner {args.scanner_id} revoked\n")
    return 0


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
    from store_server.identity import compute_eid

    try:
        key = bytes.fromhex(args.key)
    except ValueError:
        key = b""
    if len(key) != 16:
        raise StoreServerError("--key: expected 32 hex characters (a 128-bit identity key)")
    out.write(compute_eid(key, args.k, args.time).hex() + "\n")
    return 0


def cmd_consent_verify(args: argparse.Namespace, out: TextIO) -> int:
    from store_server.consent import verify_chain
    from store_server.storage import consents

    config = _load(args)
    count = verify_chain(_with_db(config, consents.consent_log_rows))
    out.write(f"consent log OK: {count} entries, hash chain intact\n")
    return 0


def cmd_stock_import(args: argparse.Namespace, out: TextIO) -> int:
    from store_server.stock import parse_stock_csv
    from store_server.storage import catalog

    config = _load(args)
    store_id = _floor(config).store_id
    path = Path(args.csv)
    try:
        text = path.read_text("utf-8")
    except FileNotFoundError:
        raise StoreServerError(f"{path}: no such file: give the path of the stock CSV") from None
    except OSError as exc:
        raise StoreServerError(f"{path}: cannot read it ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise StoreServerError(f"{path}: not UTF-8 text: save the CSV as UTF-8") from None
    try:
        items = parse_stock_csv(text)
    except ValidationError as exc:
        raise StoreServerError(f"{path} {exc.field}: {exc.message}") from None
    count = _with_db(config, lambda d: catalog.upsert_stock(d, store_id, items))
    out.write(f"imported {count} stock lines for store {store_id}\n")
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
    _add_config_arg(p)
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

    p = sub.add_parser("user", help="staff accounts", description="Manage staff accounts.")
    user_sub = p.add_subparsers(dest="user_command", required=True, metavar="ACTION")
    q = user_sub.add_parser(
        "add",
        help="create a staff or manager account",
        description="Create a staff or manager account (no default accounts exist).",
    )
    _add_config_arg(q)
    q.add_argument("username")
    q.add_argument(
        "--role",
        choices=("staff", "manager"),
        default="staff",
        help="staff: the board; manager: also the manager pages",
    )
    q.add_argument(
        "--password-stdin", action="store_true", help="read the password from standard input"
    )
    q.set_defaults(func=cmd_user_add)

    p = sub.add_parser(
        "scanner", help="scanner registrations", description="Register or revoke scanners."
    )
    scanner_sub = p.add_subparsers(dest="scanner_command", required=True, metavar="ACTION")
    q = scanner_sub.add_parser(
        "add",
        help="register a scanner and print its secret once",
        description="Register a scanner (or give it a new secret) and print the secret once.",
    )
    _add_config_arg(q)
    q.add_argument("scanner_id")
    q.add_argument("--store", help="store id (default: the store of store_file)")
    q.set_defaults(func=cmd_scanner_add)
    q = scanner_sub.add_parser(
        "revoke",
        help="revoke a scanner",
        description="Revoke a scanner: its next request gets 401.",
    )
    _add_config_arg(q)
    q.add_argument("scanner_id")
    q.set_defaults(func=cmd_scanner_revoke)

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

    p = sub.add_parser("consent-log", help="consent proof", description="Consent proof log tools.")
    log_sub = p.add_subparsers(dest="log_command", required=True, metavar="ACTION")
    q = log_sub.add_parser(
        "verify",
        help="verify the hash chain of the consent log",
        description="Verify every link of the consent log's hash chain.",
    )
    _add_config_arg(q)
    q.set_defaults(func=cmd_consent_verify)

    p = sub.add_parser("stock", help="catalog and stock", description="Catalog and stock tools.")
    stock_sub = p.add_subparsers(dest="stock_command", required=True, metavar="ACTION")
    q = stock_sub.add_parser(
        "import",
        help="import stock from CSV (sku,name_fr,name_en,count,aisle)",
        description="Import or update catalog items and stock from a CSV file.",
    )
    _add_config_arg(q)
    q.add_argument("csv", help="CSV file with header sku,name_fr,name_en,count,aisle")
    q.set_defaults(func=cmd_stock_import)

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
