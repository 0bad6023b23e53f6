"""One daemon fronting several ESPHome nodes: each node is a box of its own for the server.

With ``backend = "esphome"`` the daemon runs, in one process, one pipeline per ``[[nodes]]``
entry: the node's advertisements (``scanner.esphome``) go through the same frame parser,
allowlist, aggregation, outbox, uploader and heartbeat as a BlueZ box's, under the node's own
scanner id and secret, so the server places each sighting at that node's position (its
``[[scanners]]`` entry in store.toml). Each node has its own outbox file beside ``outbox_path``
(``outbox.sqlite`` -> ``outbox.<scanner_id>.sqlite``), so a node's queue survives a restart as
a BlueZ box's does. Stopping one stops all.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import time
from collections.abc import Callable
from pathlib import Path

from scanner.config import NodeConfig, ScannerConfig
from scanner.daemon import Daemon, resolve_secret
from scanner.errors import ConfigError, ScannerError


def node_outbox_path(outbox_path: str, scanner_id: str) -> str:
    """``/var/lib/x/outbox.sqlite`` -> ``/var/lib/x/outbox.<scanner_id>.sqlite``."""
    path = Path(outbox_path)
    return str(path.with_name(f"{path.stem}.{scanner_id}{path.suffix}"))


def node_config(config: ScannerConfig, node: NodeConfig) -> ScannerConfig:
    """The configuration of one node's pipeline: the shared settings, the node's identity."""
    return dataclasses.replace(
        config,
        scanner_id=node.scanner_id,
        secret=node.secret,
        secret_file=node.secret_file,
        outbox_path=node_outbox_path(config.outbox_path, node.scanner_id),
        nodes=(node,),
    )


def node_key(node: NodeConfig, index: int) -> str | None:
    """The node's API encryption key, or None for a plaintext node."""
    from scanner.esphome import read_encryption_key

    if node.encryption_key_file is None:
        return None
    return read_encryption_key(node.encryption_key_file, f"nodes[{index}].encryption_key_file")


def require_library() -> None:
    """Raise a ScannerError naming the fix when aioesphomeapi is not installed."""
    try:
        import aioesphomeapi  # noqa: F401
    except ImportError:
        raise ScannerError(
            "backend esphome needs aioesphomeapi: pip install 'bulle[esphome]'"
        ) from None


def build_daemons(config: ScannerConfig, *, clock: Callable[[], float] = time.time) -> list[Daemon]:
    """One Daemon per node, each with its node as its advertisement source."""
    require_library()
    from scanner.esphome import NodeSource

    daemons = []
    for index, node in enumerate(config.nodes):
        cfg = node_config(config, node)
        try:
            secret = resolve_secret(cfg)
        except ConfigError as exc:
            raise ConfigError(exc.message, key=f"nodes[{index}].{exc.key}") from exc
        psk = node_key(node, index)
        daemons.append(
            Daemon(
                cfg,
                secret,
                clock=clock,
                source_factory=functools.partial(NodeSource, node, psk=psk),
            )
        )
    return daemons


async def run_nodes(config: ScannerConfig, stop: asyncio.Event) -> None:
    """Run every node's pipeline until ``stop`` is set (or one of them fails)."""
    daemons = build_daemons(config)
    tasks = [asyncio.create_task(d.run(stop)) for d in daemons]
    try:
        await asyncio.gather(*tasks)
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
