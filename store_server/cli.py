"""`store-server` command line: run the server, the demo, the lab, and admin commands."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import logging
import os
import secrets
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO, TypeVar

import sqlite_utils

from store_server.config import ServerConfig, load_config
from store_server.errors import StoreServerError

logger = logging.getLogger(__name__)
T = TypeVar("T")


def _load(args: argparse.Namespace) -> ServerConfig:
    text = Path(args.config).read_text("utf-8") if args.config else ""
    return load_config(text, os.environ)


def _with_db(config: ServerConfig, fn: Callable[[sqlite_utils.Database], T]) -> T:
    """Run one database function for an admin command, then close the database."""
    from store_server.db import Database

    db = Database(Path(config.db_path))
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

    config = _load(args)
    logging.basicConfig(
        level=config.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    web.run_app(
        create_app(config),
        host=config.host,
        port=config.port,
        shutdown_timeout=5.0,
        access_log_class=AccessLogger,
        print=lambda line: _echo(out, line),
    )
    return 0


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
    password = args.password_stdin and sys.stdin.readline().rstrip("\n")
    if not password:
        password = getpass.getpass("Password (12 characters or more): ")
    user = _with_db(
        config, lambda d: staff.add_user(d, args.username, password, args.role, time.time())
    )
    out.write(f"created {user.role} account {user.username}\n")
    return 0


def cmd_scanner_add(args: argparse.Namespace, out: TextIO) -> int:
    from store_server import repo
    from store_server.app import load_floor
    from store_server.keywrap import parse_master_key, wrap_key
    from store_server.service import scanner_aad

    config = _load(args)
    master = parse_master_key(config.master_key)
    store_id = args.store or load_floor(Path(config.store_file)).store_id
    secret = secrets.token_urlsafe(32)
    wrapped = wrap_key(master, secret.encode(), scanner_aad(args.scanner_id))
    _with_db(config, lambda d: repo.add_scanner(d, args.scanner_id, store_id, wrapped, time.time()))
    out.write(f"scanner {args.scanner_id} registered for store {store_id}\n")
    out.write(f"secret (shown once, put it in the scanner's config): {secret}\n")
    return 0


def cmd_scanner_revoke(args: argparse.Namespace, out: TextIO) -> int:
    from store_server import repo

    config = _load(args)
    _with_db(config, lambda d: repo.revoke_scanner(d, args.scanner_id, time.time()))
    out.write(f"scanner {args.scanner_id} revoked\n")
    return 0


def cmd_eid(args: argparse.Namespace, out: TextIO) -> int:
    from store_server.eid import compute_eid

    try:
        key = bytes.fromhex(args.key)
    except ValueError:
        raise StoreServerError(
            "--key: expected 32 hex characters (a 128-bit identity key)"
        ) from None
    out.write(compute_eid(key, args.k, args.time).hex() + "\n")
    return 0


def cmd_consent_verify(args: argparse.Namespace, out: TextIO) -> int:
    from store_server import repo
    from store_server.consent import verify_chain

    config = _load(args)
    count = verify_chain(_with_db(config, repo.consent_log_rows))
    out.write(f"consent log OK: {count} entries, hash chain intact\n")
    return 0


def cmd_stock_import(args: argparse.Namespace, out: TextIO) -> int:
    from store_server import repo
    from store_server.app import load_floor
    from store_server.stock import parse_stock_csv

    config = _load(args)
    store_id = load_floor(Path(config.store_file)).store_id
    items = parse_stock_csv(Path(args.csv).read_text("utf-8"))
    count = _with_db(config, lambda d: repo.upsert_stock(d, store_id, items))
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
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser(
        "demo",
        help="run the demo store (server + simulated scanners and phones)",
        description="Run the demo store: the server on an embedded SQLite file, simulated "
        "scanner daemons and simulated phones walking the floor. Ctrl-C stops it.",
    )
    p.add_argument(
        "--dir", default="var/demo", help="working directory for the demo's files (reset at start)"
    )
    p.add_argument(
        "--port", type=int, default=8080, help="HTTP port on 127.0.0.1 (0: any free port)"
    )
    p.add_argument("--seed", type=int, default=7, help="seed of the simulation's randomness")
    p.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
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
    q.add_argument("--role", choices=("staff", "manager"), default="staff")
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
    p.add_argument("--k", type=int, default=9, help="rotation exponent (0-15; default 9 = 512 s)")
    p.add_argument("--time", type=int, required=True, help="the beacon's 32-bit seconds counter")
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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args, sys.stdout))
    except StoreServerError as exc:
        sys.stderr.write(f"store-server: error: {exc.message}\n")
        return 2
    except KeyboardInterrupt:
        return 130
