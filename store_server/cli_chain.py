"""The chain's key commands: ``store-server chain-keys init`` (a new key authority key pair)
and ``chain-keys run`` (one run of the key authority: docs/privacy.md, "Chain mode")."""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any, TextIO

from store_server.cli_settings import add_config_arg, load_settings, master_key
from store_server.errors import ConfigError

# The private key: owner read/write only; the public key may be read by every server's user.
PRIVATE_KEY_MODE = 0o600
PUBLIC_KEY_MODE = 0o644
PRIVATE_KEY_NAME = "authority.pem"
PUBLIC_KEY_NAME = "authority.pub.pem"


def cmd_chain_keys_init(args: argparse.Namespace, out: TextIO) -> int:
    from store_server.keyseal import generate_authority_key

    folder = Path(args.out)
    private_path, public_path = folder / PRIVATE_KEY_NAME, folder / PUBLIC_KEY_NAME
    for path in (private_path, public_path):
        if path.exists():
            raise ConfigError(f"{path} exists: an authority key is never overwritten")
    folder.mkdir(parents=True, exist_ok=True)
    private, public = generate_authority_key()
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_KEY_MODE)
    with os.fdopen(fd, "wb") as file:
        file.write(private)
    fd = os.open(public_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PUBLIC_KEY_MODE)
    with os.fdopen(fd, "wb") as file:
        file.write(public)
    out.write(
        f"key authority: private key {private_path} (authority_key_file, the authority only),"
        f" public key {public_path} (authority_public_key_file, every store server)\n"
    )
    return 0


def cmd_chain_keys_run(args: argparse.Namespace, out: TextIO) -> int:
    from store_server.app import load_chain_keys
    from store_server.cli_settings import with_db
    from store_server.services.authority import plan_run
    from store_server.storage import keys

    config = load_settings(args)
    if not config.authority_key_file:
        raise ConfigError(
            "authority_key_file: chain-keys run needs the key authority's private key",
            key="authority_key_file",
        )
    config = config.with_overrides(chain_mode=True, key_authority=True)
    secret = master_key(config)
    chain = load_chain_keys(config, secret, Path.cwd())
    if chain is None or chain.private_key is None:  # pragma: no cover - chain_mode is set
        raise ConfigError("authority_key_file: no private key", key="authority_key_file")
    private_key = chain.private_key
    now = time.time()

    def run(db: Any) -> tuple[int, int, int, int]:
        identities = keys.identities_for_authority(db, now)
        plan = plan_run(
            identities,
            private_key=private_key,
            master_key=secret,
            tk_key=chain.tk_key,
            now=now,
            skew=config.skew_windows,
        )
        adopted, written = keys.record_authority_run(db, plan.adopted, plan.temporary_keys, now)
        return len(identities), adopted, written, plan.unreadable

    consenting, adopted, written, unreadable = with_db(config, run)
    out.write(
        f"key authority: {consenting} consenting customers, {written} temporary keys written,"
        f" {adopted} identities adopted, {unreadable} unreadable\n"
    )
    return 1 if unreadable else 0


def add_chain_commands(sub: Any) -> None:
    """Add ``chain-keys`` to the `store-server` subcommand parser ``sub``."""
    p = sub.add_parser(
        "chain-keys",
        help="the chain's key authority",
        description="The key authority of a chain (docs/privacy.md, chain mode).",
    )
    chain_sub = p.add_subparsers(dest="chain_command", required=True, metavar="ACTION")
    q = chain_sub.add_parser(
        "init",
        help="make the key authority's key pair",
        description="Write a new key authority key pair (RSA-3072, PEM) into a folder: the"
        " private key for the authority only, the public key for every store server.",
    )
    q.add_argument("--out", required=True, help="folder to write the two key files into")
    q.set_defaults(func=cmd_chain_keys_init)
    q = chain_sub.add_parser(
        "run",
        help="one run of the key authority",
        description="Adopt the identity keys sealed by store servers and store the temporary"
        " keys of every consenting customer for now and the next period (what a server with"
        " key_authority = true does every chain_keys_interval_s). Exit 1 if some identity"
        " key could not be opened.",
    )
    add_config_arg(q)
    q.set_defaults(func=cmd_chain_keys_run)
