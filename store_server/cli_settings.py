"""What every `store-server` command shares: the settings file, the master key, the store
file and the database, each turned into a one-line error naming the setting and its fix."""

from __future__ import annotations

import argparse
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from store_server.config import ServerConfig, load_config, resolve_paths
from store_server.errors import ConfigError
from store_server.floor import Floor

if TYPE_CHECKING:
    from store_server.storage.database import Handle

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
            or (isinstance(default, (list, tuple)) and not default)
            or not (action.option_strings or action.nargs in ("?", "*"))
        ):
            return text
        return f"{text} (default: %(default)s)"


def load_settings(args: argparse.Namespace) -> ServerConfig:
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
    config = resolve_paths(load_config(text, os.environ), base)
    if config.master_key_file:
        config = config.with_overrides(master_key=read_master_key_file(config.master_key_file))
    if config.store_beacon_key_file:
        config = config.with_overrides(
            store_beacon_key=read_store_beacon_key_file(config.store_beacon_key_file)
        )
    if config.database_password_file:
        config = config.with_overrides(
            database_password=read_password_file(config.database_password_file)
        )
    return config


def read_store_beacon_key_file(name: str) -> str:
    """The store beacon key held in ``store_beacon_key_file`` (the same file as on the boxes;
    the errors never quote its content)."""
    try:
        return Path(name).read_text("utf-8").strip()
    except FileNotFoundError:
        raise ConfigError(
            f"store_beacon_key_file: {name} does not exist: write the store's beacon key"
            " there (mode 0600, the same key as the boxes' advertise key file); make one with"
            " store-server beacon-key",
            key="store_beacon_key_file",
        ) from None
    except OSError as exc:
        raise ConfigError(
            f"store_beacon_key_file: cannot read {name} ({exc.strerror}): run as the server's"
            " user or through its systemd unit (LoadCredential)",
            key="store_beacon_key_file",
        ) from None


def read_password_file(name: str) -> str:
    """The database password held in ``database_password_file`` (its first line)."""
    try:
        lines = Path(name).read_text("utf-8").splitlines()
    except FileNotFoundError:
        raise ConfigError(
            f"database_password_file: {name} does not exist: write the database password"
            " there (mode 0600, readable by the server's user only)",
            key="database_password_file",
        ) from None
    except OSError as exc:
        raise ConfigError(
            f"database_password_file: cannot read {name} ({exc.strerror}): run as the"
            " server's user or through its systemd unit (LoadCredential)",
            key="database_password_file",
        ) from None
    return lines[0] if lines else ""


def read_master_key_file(name: str) -> str:
    """The master key held in ``master_key_file`` (systemd's LoadCredential copy, or a file
    readable by the server's user only)."""
    try:
        return Path(name).read_text("utf-8").strip()
    except FileNotFoundError:
        raise ConfigError(
            f"master_key_file: {name} does not exist: write the master key there"
            f" (mode 0600); {MASTER_KEY_HOWTO}",
            key="master_key_file",
        ) from None
    except OSError as exc:
        raise ConfigError(
            f"master_key_file: cannot read {name} ({exc.strerror}): run as the server's user"
            " or through its systemd unit (LoadCredential)",
            key="master_key_file",
        ) from None


def master_key(config: ServerConfig) -> bytes:
    """The master key, or a one-line error naming the setting (or variable) and the fix."""
    from store_server.keywrap import KeyWrapError, parse_master_key

    try:
        return parse_master_key(config.master_key)
    except KeyWrapError as exc:
        if config.master_key_file:
            where = f"master_key_file {config.master_key_file}"
        elif "BULLE_MASTER_KEY" in os.environ:
            where = "BULLE_MASTER_KEY"
        else:
            where = "master_key"
        problem = "is empty" if not config.master_key.strip() else f"is malformed ({exc})"
        raise ConfigError(
            f"{where} {problem}: set master_key in the settings file (or BULLE_MASTER_KEY) to"
            f" 64 hex characters; {MASTER_KEY_HOWTO}",
            key="master_key",
        ) from None


def floor(config: ServerConfig) -> Floor:
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


def with_db(config: ServerConfig, fn: Callable[[Handle], T]) -> T:
    """Run one database function for an admin command, then close the database."""
    from store_server.storage.database import Database

    if config.database_url:
        return _with_pg(config, fn)
    path = Path(config.db_path)
    owner = path.stat().st_uid if path.exists() else None
    if os.geteuid() == 0 and owner not in (None, 0):
        # Files root would create beside it (the write-ahead log) would lock the server out.
        raise ConfigError(
            f"db_path: {path} belongs to another user: run the command as that user"
            " (e.g. sudo -u bulle store-server ...)",
            key="db_path",
        )
    try:
        db = Database(path)
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


def check_database(config: ServerConfig) -> None:
    """Before serving on PostgreSQL: the database answers and its schema is this release's
    (migrated now if this role may), or a one-line error naming ``database_url``."""
    if config.database_url:
        _with_pg(config, lambda db: None)


def _with_pg(config: ServerConfig, fn: Callable[[Handle], T]) -> T:
    import psycopg

    from store_server.storage.database import Database, target_of

    try:
        db = Database(target_of(config, Path(config.db_path)))
    except psycopg.Error as exc:
        raise ConfigError(
            f"database_url: cannot open the database ({_first_line(exc)}): check the URL, the"
            " password (database_password_file or BULLE_DATABASE_PASSWORD) and that"
            " PostgreSQL runs",
            key="database_url",
        ) from None
    try:
        return db.run_sync(fn)
    finally:
        db.close()


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def add_config_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="TOML settings file (docs/operations.md); BULLE_* variables override it",
    )
