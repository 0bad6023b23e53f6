"""`store-server` administration commands: staff accounts, scanners, stock, consent proof,
backup and restore (docs/operations.md, "Server commands")."""

from __future__ import annotations

import argparse
import datetime
import getpass
import secrets
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from store_server.cli_settings import add_config_arg, floor, load_settings, master_key, with_db
from store_server.config import ServerConfig
from store_server.errors import ConfigError, StoreServerError, ValidationError


def _when(at: float | None) -> str:
    if at is None:
        return "never"
    return datetime.datetime.fromtimestamp(at).astimezone().strftime("%Y-%m-%d %H:%M:%S %z")


def _table(out: TextIO, header: tuple[str, ...], lines: Sequence[tuple[str, ...]]) -> None:
    widths = [max(len(row[i]) for row in [header, *lines]) for i in range(len(header))]
    for row in [header, *lines]:
        out.write("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
        out.write("\n")


# -- staff ------------------------------------------------------------------------------------


def _read_password(args: argparse.Namespace) -> str:
    password = args.password_stdin and sys.stdin.readline().rstrip("\n")
    if not password:
        password = getpass.getpass("Password (12 characters or more): ")
    return str(password)


def cmd_user_add(args: argparse.Namespace, out: TextIO) -> int:
    from store_server import staff

    config = load_settings(args)
    password = _read_password(args)
    user = with_db(
        config,
        lambda d: staff.add_user(d, args.username, password, args.role, time.time(), args.store),
    )
    where = f" of store {args.store}" if args.store else " of every store"
    out.write(f"created {user.role} account {user.username}{where}\n")
    return 0


def cmd_user_list(args: argparse.Namespace, out: TextIO) -> int:
    from store_server.storage import staff as store

    users = with_db(load_settings(args), store.staff_rows)
    lines = [
        (
            u["username"],
            u["role"],
            "disabled" if u["disabled"] else "active",
            _when(u["created_at"]),
        )
        for u in users
    ]
    _table(out, ("USER", "ROLE", "STATE", "CREATED"), lines)
    return 0


def cmd_user_disable(args: argparse.Namespace, out: TextIO) -> int:
    from store_server.storage import staff as store

    enable = args.user_command == "enable"
    with_db(load_settings(args), lambda d: store.set_staff_disabled(d, args.username, not enable))
    state = "enabled" if enable else "disabled and signed out everywhere"
    out.write(f"account {args.username} {state}\n")
    return 0


def cmd_user_reset_password(args: argparse.Namespace, out: TextIO) -> int:
    from store_server import staff

    config = load_settings(args)
    password = _read_password(args)
    with_db(config, lambda d: staff.reset_password(d, args.username, password))
    out.write(f"new password set for {args.username}; its sessions are signed out\n")
    return 0


# -- scanners ---------------------------------------------------------------------------------


def _new_secret(config: Any, scanner_id: str) -> tuple[str, bytes]:
    from store_server.keywrap import scanner_aad, wrap_key

    secret = secrets.token_urlsafe(32)
    return secret, wrap_key(master_key(config), secret.encode(), scanner_aad(scanner_id))


def _print_secret(out: TextIO, secret: str) -> None:
    out.write(f"secret (shown once, put it in the scanner's config): {secret}\n")


def cmd_scanner_add(args: argparse.Namespace, out: TextIO) -> int:
    from store_server.errors import ConflictError
    from store_server.storage import scanners

    config = load_settings(args)
    store_id = args.store or floor(config).store_id
    secret, wrapped = _new_secret(config, args.scanner_id)
    try:
        with_db(
            config,
            lambda d: scanners.add_scanner(
                d, args.scanner_id, store_id, wrapped, time.time(), replace=args.replace
            ),
        )
    except ConflictError:
        raise StoreServerError(
            f"scanner {args.scanner_id} is already registered: to give it a new secret use"
            f" `store-server scanner rotate-secret {args.scanner_id}` (or add --replace)"
        ) from None
    out.write(f"scanner {args.scanner_id} registered for store {store_id}\n")
    _print_secret(out, secret)
    return 0


def cmd_scanner_rotate(args: argparse.Namespace, out: TextIO) -> int:
    from store_server.storage import scanners

    config = load_settings(args)
    secret, wrapped = _new_secret(config, args.scanner_id)
    with_db(config, lambda d: scanners.set_scanner_secret(d, args.scanner_id, wrapped))
    out.write(f"scanner {args.scanner_id}: new secret, the old one no longer works\n")
    _print_secret(out, secret)
    return 0


def cmd_scanner_revoke(args: argparse.Namespace, out: TextIO) -> int:
    from store_server.storage import scanners

    config = load_settings(args)
    with_db(config, lambda d: scanners.revoke_scanner(d, args.scanner_id, time.time()))
    out.write(f"scanner {args.scanner_id} revoked\n")
    return 0


def cmd_scanner_list(args: argparse.Namespace, out: TextIO) -> int:
    from store_server.storage import scanners

    rows = with_db(load_settings(args), scanners.scanner_rows)
    lines = []
    for row in rows:
        heartbeat = row.get("heartbeat") or {}
        lines.append(
            (
                row["id"],
                row["store_id"],
                "revoked" if row["revoked_at"] is not None else "active",
                _when(row["last_seen_at"]),
                str(heartbeat.get("outbox_depth", "-")),
                str(heartbeat.get("version", "-")),
            )
        )
    _table(out, ("SCANNER", "STORE", "STATE", "LAST SEEN", "OUTBOX", "VERSION"), lines)
    return 0


# -- stock, consent proof ---------------------------------------------------------------------


def cmd_consent_verify(args: argparse.Namespace, out: TextIO) -> int:
    """The hash chain, then the signed checkpoints (with the master key): ConsentLogError,
    a one-line error, if an entry was changed, deleted, or its hashes recomputed."""
    from store_server.consent import checkpoint_key, verify_chain, verify_checkpoints
    from store_server.storage import consents

    config = load_settings(args)
    key = checkpoint_key(master_key(config))
    entries, points = with_db(
        config, lambda db: (consents.consent_log_rows(db), consents.checkpoints(db))
    )
    count = verify_chain(entries)
    anchoring = verify_checkpoints(entries, points, key)
    out.write(
        f"consent log OK: {count} entries, hash chain intact, {anchoring.checkpoints}"
        f" signed checkpoints up to entry {anchoring.anchored_seq}"
    )
    if anchoring.unanchored:
        # The server signs the head within a second of each change and at stop: entries not
        # covered yet mean it was stopped abruptly right after them, or checkpoints are gone.
        out.write(
            f"; {anchoring.unanchored} newer entries not covered by a checkpoint yet"
            " (the server signs them within a second; start it once if it stopped abruptly)"
        )
    if points:
        out.write(f"; last head {points[-1].entry_hash[:16]}")
    out.write("\n")
    return 0


def cmd_stock_import(args: argparse.Namespace, out: TextIO) -> int:
    from store_server.stock import parse_stock_csv
    from store_server.storage import catalog

    config = load_settings(args)
    store_id = floor(config).store_id
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
    count = with_db(config, lambda d: catalog.upsert_stock(d, store_id, items))
    out.write(f"imported {count} stock lines for store {store_id}\n")
    return 0


# -- backup and restore -----------------------------------------------------------------------


def _refuse_on_pg(config: ServerConfig, command: str) -> None:
    """backup and restore work on the SQLite file; a PostgreSQL database has its own tools."""
    if config.database_url:
        raise ConfigError(
            f"{command}: the database is PostgreSQL (database_url): use pg_dump / pg_restore"
            " or base backups (docs/operations.md, Running on PostgreSQL); store-server"
            f" {command} is for the SQLite file",
            key="database_url",
        )


def cmd_backup(args: argparse.Namespace, out: TextIO) -> int:
    from store_server.storage import backup

    config = load_settings(args)
    _refuse_on_pg(config, "backup")
    snapshot = backup.backup(Path(config.db_path), Path(args.dest), time.time())
    out.write(
        f"backup written: {snapshot.path} ({snapshot.size_bytes} bytes, integrity ok,"
        f" schema {snapshot.schema[-1]})\n"
    )
    return 0


def cmd_restore(args: argparse.Namespace, out: TextIO) -> int:
    from store_server.keywrap import pseudonym_key
    from store_server.services.restore import reapply_refusals
    from store_server.storage import backup

    config = load_settings(args)
    _refuse_on_pg(config, "restore")
    key = pseudonym_key(master_key(config))
    store_id = floor(config).store_id
    now = time.time()
    snapshot, kept = backup.restore(Path(config.db_path), Path(args.backup), now)
    if kept is not None:
        out.write(f"the database it replaces is kept as {kept}\n")
        done = with_db(config, lambda d: reapply_refusals(d, kept, key, store_id, time.time()))
        out.write(
            f"applied again the refusals recorded after the backup: {done.erased} erasures,"
            f" {done.withdrawn} withdrawals\n"
        )
    out.write(
        f"restored {snapshot.path} into {config.db_path} (integrity ok, schema"
        f" {snapshot.schema[-1]}); start the server again\n"
    )
    return 0


# -- the parser -------------------------------------------------------------------------------


def _password_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--password-stdin", action="store_true", help="read the password from standard input"
    )


def add_admin_commands(sub: Any) -> None:
    """Add the admin commands to the `store-server` subcommand parser ``sub``."""
    p = sub.add_parser("user", help="staff accounts", description="Manage staff accounts.")
    user_sub = p.add_subparsers(dest="user_command", required=True, metavar="ACTION")
    q = user_sub.add_parser(
        "add",
        help="create a staff or manager account",
        description="Create a staff or manager account (no default accounts exist).",
    )
    add_config_arg(q)
    q.add_argument("username")
    q.add_argument(
        "--role",
        choices=("staff", "manager"),
        default="staff",
        help="staff: the board; manager: also the manager pages",
    )
    q.add_argument(
        "--store",
        help="the store id whose servers the account signs in on (a chain's database);"
        " default: every store of the database",
    )
    _password_arg(q)
    q.set_defaults(func=cmd_user_add)
    q = user_sub.add_parser(
        "list", help="list the accounts", description="List staff and manager accounts."
    )
    add_config_arg(q)
    q.set_defaults(func=cmd_user_list)
    for action, text in (
        ("disable", "disable an account and sign it out everywhere"),
        ("enable", "enable a disabled account again"),
    ):
        q = user_sub.add_parser(action, help=text, description=text[0].upper() + text[1:] + ".")
        add_config_arg(q)
        q.add_argument("username")
        q.set_defaults(func=cmd_user_disable)
    q = user_sub.add_parser(
        "reset-password",
        help="set a new password (signs the account out)",
        description="Set a new password for an account and end its sessions.",
    )
    add_config_arg(q)
    q.add_argument("username")
    _password_arg(q)
    q.set_defaults(func=cmd_user_reset_password)

    p = sub.add_parser(
        "scanner", help="scanner registrations", description="Register, list or revoke scanners."
    )
    scanner_sub = p.add_subparsers(dest="scanner_command", required=True, metavar="ACTION")
    q = scanner_sub.add_parser(
        "add",
        help="register a scanner and print its secret once",
        description="Register a scanner and print its secret once. An active scanner's id is"
        " refused unless --replace is given.",
    )
    add_config_arg(q)
    q.add_argument("scanner_id")
    q.add_argument("--store", help="store id (default: the store of store_file)")
    q.add_argument(
        "--replace",
        action="store_true",
        help="register again an active scanner id (its old secret stops working)",
    )
    q.set_defaults(func=cmd_scanner_add)
    q = scanner_sub.add_parser(
        "list",
        help="list the scanners",
        description="List registered scanners: state, last contact, outbox depth, version.",
    )
    add_config_arg(q)
    q.set_defaults(func=cmd_scanner_list)
    q = scanner_sub.add_parser(
        "rotate-secret",
        help="give a scanner a new secret and print it once",
        description="Give an active scanner a new secret (printed once); the old one stops"
        " working at once.",
    )
    add_config_arg(q)
    q.add_argument("scanner_id")
    q.set_defaults(func=cmd_scanner_rotate)
    q = scanner_sub.add_parser(
        "revoke",
        help="revoke a scanner",
        description="Revoke a scanner: its next request gets 401.",
    )
    add_config_arg(q)
    q.add_argument("scanner_id")
    q.set_defaults(func=cmd_scanner_revoke)

    p = sub.add_parser("consent-log", help="consent proof", description="Consent proof log tools.")
    log_sub = p.add_subparsers(dest="log_command", required=True, metavar="ACTION")
    q = log_sub.add_parser(
        "verify",
        help="verify the hash chain of the consent log",
        description="Verify every link of the consent log's hash chain.",
    )
    add_config_arg(q)
    q.set_defaults(func=cmd_consent_verify)

    p = sub.add_parser("stock", help="catalog and stock", description="Catalog and stock tools.")
    stock_sub = p.add_subparsers(dest="stock_command", required=True, metavar="ACTION")
    q = stock_sub.add_parser(
        "import",
        help="import stock from CSV (sku,name_fr,name_en,count,aisle)",
        description="Import or update catalog items and stock from a CSV file.",
    )
    add_config_arg(q)
    q.add_argument("csv", help="CSV file with header sku,name_fr,name_en,count,aisle")
    q.set_defaults(func=cmd_stock_import)

    p = sub.add_parser(
        "backup",
        help="copy the live database to a backup file",
        description="Copy the database while the server runs (SQLite's online backup API),"
        " check the copy and give it its final name only then.",
    )
    add_config_arg(p)
    p.add_argument(
        "dest", help="backup file to create, or a folder (the file is named store-DATE.sqlite)"
    )
    p.set_defaults(func=cmd_backup)

    p = sub.add_parser(
        "restore",
        help="replace the (stopped) database with a backup",
        description="Replace the database with a backup: the server must be stopped; the"
        " current database is kept beside it; an older backup is upgraded.",
    )
    add_config_arg(p)
    p.add_argument("backup", help="a file written by store-server backup")
    p.set_defaults(func=cmd_restore)
