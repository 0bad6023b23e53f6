"""The one module that talks to ESPHome nodes (``aioesphomeapi``): raw advertisements in.

An ESP32 running ESPHome's ``bluetooth_proxy`` forwards the raw advertisements it hears over the
shop's network. ``NodeSource`` keeps one node connected with the library's own client and
``ReconnectLogic`` (backoff up to a minute, the longest after a key error), subscribes to raw
advertisements on every connection and hands each one to the daemon as an ``AdvertRecord``,
parsed by ``scanner.ad_structures``. Nothing here decides whether an advertisement is kept, and
nothing of one is logged: the library's own logger, which dumps every message at DEBUG and
payload bytes on a protocol error, is silenced by ``silence_library_logs``.

``aioesphomeapi`` is an optional dependency (``pip install 'bulle[esphome]'``): only the
``esphome`` backend imports this module.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from aioesphomeapi.client import APIClient
from aioesphomeapi.core import (
    APIConnectionError,
    BadNameAPIError,
    EncryptionHelloAPIError,
    EncryptionPlaintextAPIError,
    InvalidEncryptionKeyAPIError,
    RequiresEncryptionAPIError,
    ResolveAPIError,
)
from aioesphomeapi.model import BluetoothProxyFeature
from aioesphomeapi.reconnect_logic import ReconnectLogic

from scanner.ad_structures import format_address, parse_ad_structures
from scanner.config import NodeConfig
from scanner.errors import ConfigError, ScannerError
from scanner.records import AdvertRecord

logger = logging.getLogger(__name__)

AdvertCallback = Callable[[AdvertRecord], None]

# What the scanner says it is in the API hello (shown in the node's own logs).
CLIENT_INFO: Final = "bulle beacon-scanner"
# Raw API encryption keys are 32 bytes, written base64 in the node's YAML.
KEY_BYTES: Final = 32
# `beacon-scanner check` gives a node this long to connect, hand over its device info and go.
PROBE_TIMEOUT_S: Final = 10.0
# The library's loggers never go below this level: at DEBUG it prints every message it
# receives, the raw advertisements of every phone in range included.
LIBRARY_LOG_LEVEL: Final = logging.ERROR
# The node's last error is shown on the manager's page: one line, bounded.
ERROR_TEXT_MAX: Final = 200


class _NoPayloadFilter(logging.Filter):
    """Keeps the library's records but never their arguments (they may hold advert bytes)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = f"aioesphomeapi {record.levelname.lower()} in {record.name}"
        record.args = None
        record.exc_info = None
        record.exc_text = None
        return True


_FILTER: Final = _NoPayloadFilter()


def silence_library_logs() -> None:
    """Cap the library's loggers at LIBRARY_LOG_LEVEL and strip what they would print."""
    library = logging.getLogger("aioesphomeapi")
    library.setLevel(LIBRARY_LOG_LEVEL)
    if _FILTER not in library.filters:
        library.addFilter(_FILTER)
    # Records of child loggers do not pass the parent's filters: filter at the handlers' door
    # of every child the library has created so far and will create (same name prefix).
    for name in list(logging.Logger.manager.loggerDict):
        if name.startswith("aioesphomeapi."):
            child = logging.getLogger(name)
            child.setLevel(LIBRARY_LOG_LEVEL)
            if _FILTER not in child.filters:
                child.addFilter(_FILTER)


def read_encryption_key(path: str, where: str) -> str:
    """The node's API encryption key (base64 of 32 bytes) from ``path``; ConfigError if bad."""
    try:
        text = Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}", key=where) from exc
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != KEY_BYTES:
        raise ConfigError(
            f"{path} does not hold an API encryption key (base64 of {KEY_BYTES} bytes, the "
            "'api: encryption: key' of the node's YAML)",
            key=where,
        )
    return text


# Error codes in the heartbeat's ``node.error`` (docs/api.md): the manager's page names them in
# its own language; ``last_error`` carries the scanner's English line for the logs and the API.
ERROR_CODES: Final = (
    "unreachable",
    "wrong_key",
    "needs_key",
    "not_encrypted",
    "wrong_device",
    "no_proxy",
    "lost",
    "other",
)


class NodeError(ScannerError):
    """An ESPHome node cannot be used; the message says what to fix, in one line."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code


def classify(exc: BaseException, node: NodeConfig) -> NodeError:
    """The one-line error naming what is wrong with ``node`` and how to fix it."""
    where = f"{node.host}:{node.port}"
    if isinstance(exc, NodeError):
        return exc
    if isinstance(exc, InvalidEncryptionKeyAPIError):
        return NodeError(
            f"wrong API encryption key for the node at {where}: put its 'api: encryption: key' "
            f"in {node.encryption_key_file or 'encryption_key_file'}",
            "wrong_key",
        )
    if isinstance(exc, RequiresEncryptionAPIError):
        return NodeError(
            f"the node at {where} requires encryption: set encryption_key_file to a file "
            "holding its 'api: encryption: key'",
            "needs_key",
        )
    if isinstance(exc, EncryptionPlaintextAPIError | EncryptionHelloAPIError):
        return NodeError(
            f"the node at {where} does not use encryption: add 'api: encryption: key' to its "
            "YAML (deploy/esphome-node.yaml) and flash it, or drop encryption_key_file",
            "not_encrypted",
        )
    if isinstance(exc, BadNameAPIError):
        return NodeError(
            f"another device answers at {where} (it calls itself {exc.received_name!r}, "
            f"expected {node.name!r}): fix host or name",
            "wrong_device",
        )
    if isinstance(exc, ResolveAPIError):
        return NodeError(
            f"cannot resolve {node.host}: check host (an IP address avoids mDNS)", "unreachable"
        )
    if isinstance(exc, APIConnectionError | OSError | TimeoutError):
        return NodeError(
            f"node unreachable at {where} ({type(exc).__name__}): check that it is powered, "
            "on the network and that host and port are right",
            "unreachable",
        )
    return NodeError(f"node at {where} failed: {type(exc).__name__}", "other")


def no_proxy_error(node: NodeConfig) -> NodeError:
    return NodeError(
        f"the node at {node.host}:{node.port} has no bluetooth_proxy with raw advertisements: "
        "add 'bluetooth_proxy:' to its YAML (deploy/esphome-node.yaml) and flash it",
        "no_proxy",
    )


def _has_raw_adverts(client: APIClient, info: Any) -> bool:
    version = client.api_version
    flags = (
        info.bluetooth_proxy_feature_flags_compat(version)
        if version is not None
        else info.bluetooth_proxy_feature_flags
    )
    return bool(flags & BluetoothProxyFeature.RAW_ADVERTISEMENTS)


@dataclass(slots=True)
class NodeHealth:
    """What the heartbeat tells the server about a node (docs/api.md, ``node``)."""

    connected: bool = False
    proxy: bool = True
    connects: int = 0
    error: str | None = None
    last_error: str | None = None


class NodeSource:
    """One ESPHome node, kept connected; calls ``on_advert`` for every raw advertisement."""

    def __init__(self, node: NodeConfig, on_advert: AdvertCallback, *, psk: str | None) -> None:
        self.node = node
        self.health = NodeHealth()
        self._on_advert = on_advert
        self._psk = psk
        self._client: APIClient | None = None
        self._logic: ReconnectLogic | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self._stopping = False

    # -- what the daemon reads --------------------------------------------------------------
    @property
    def adapter_state(self) -> str:
        """Heartbeat ``adapter``: the node's radio as the server sees a box's adapter."""
        if not self.health.connected:
            return "off"
        return "powered" if self.health.proxy else "missing"

    @property
    def finished(self) -> asyncio.Event | None:
        return None

    def heartbeat_node(self) -> dict[str, object]:
        """The heartbeat's ``node`` object."""
        return {
            "kind": "esphome",
            "host": f"{self.node.host}:{self.node.port}",
            "connected": self.health.connected and self.health.proxy,
            "connects": self.health.connects,
            "error": self.health.error,
            "last_error": self.health.last_error,
        }

    # -- hot path ----------------------------------------------------------------------------
    def _on_raw(self, message: Any) -> None:
        on_advert = self._on_advert
        for adv in message.advertisements:
            on_advert(
                parse_ad_structures(adv.data, address=format_address(adv.address), rssi=adv.rssi)
            )

    # -- connection ----------------------------------------------------------------------------
    def _fail(self, error: NodeError) -> None:
        text = str(error)[:ERROR_TEXT_MAX]
        if text != self.health.last_error:
            logger.error("node %s: %s", self.node.scanner_id, text)
        self.health.last_error = text
        self.health.error = error.code

    async def _on_connect(self) -> None:
        client = self._client
        assert client is not None
        try:
            info = await client.device_info()
        except APIConnectionError as exc:
            self._fail(classify(exc, self.node))
            # Connected but unusable: hang up so that the reconnect logic tries again.
            await client.disconnect(force=True)
            return
        self.health.connected = True
        self.health.connects += 1
        if not _has_raw_adverts(client, info):
            # Stay connected (no reconnect churn) and say so until the node is reflashed.
            self.health.proxy = False
            self._fail(no_proxy_error(self.node))
            return
        self.health.proxy = True
        self._unsubscribe = client.subscribe_bluetooth_le_raw_advertisements(self._on_raw)
        self.health.last_error = None
        self.health.error = None
        logger.info(
            "node %s connected at %s:%d, receiving advertisements",
            self.node.scanner_id,
            self.node.host,
            self.node.port,
        )

    async def _on_disconnect(self, expected: bool) -> None:
        self._unsubscribe = None
        was_connected = self.health.connected
        self.health.connected = False
        if was_connected and not self._stopping:
            where = f"{self.node.host}:{self.node.port}"
            self._fail(NodeError(f"connection to the node at {where} lost", "lost"))
            logger.warning("node %s: reconnecting with backoff", self.node.scanner_id)

    async def _on_connect_error(self, exc: Exception) -> None:
        self._fail(classify(exc, self.node))

    async def start(self) -> None:
        """Start connecting (in the background, with backoff); never raises for the network."""
        silence_library_logs()
        self._stopping = False
        self._client = APIClient(
            self.node.host,
            self.node.port,
            None,
            client_info=CLIENT_INFO,
            noise_psk=self._psk,
            expected_name=self.node.name,
        )
        self._logic = ReconnectLogic(
            client=self._client,
            on_connect=self._on_connect,
            on_disconnect=self._on_disconnect,
            on_connect_error=self._on_connect_error,
            name=self.node.name,
            zeroconf_wake=False,
        )
        await self._logic.start()

    async def stop(self) -> None:
        """Stop reconnecting and close the connection."""
        self._stopping = True
        logic, self._logic = self._logic, None
        client, self._client = self._client, None
        if logic is not None:
            await logic.stop()
        if client is not None:
            with contextlib.suppress(APIConnectionError, OSError):
                await client.disconnect(force=True)
        self.health.connected = False

    async def restart(self) -> None:
        await self.stop()
        await self.start()


async def probe_node(node: NodeConfig, psk: str | None) -> str:
    """Connect once and check the node is a raw-advertisement proxy; a description of it.

    Raises NodeError with ``classify``'s line when it is not usable.
    """
    silence_library_logs()
    client = APIClient(
        node.host, node.port, None, client_info=CLIENT_INFO, noise_psk=psk, expected_name=node.name
    )
    try:
        async with asyncio.timeout(PROBE_TIMEOUT_S):
            await client.connect(login=True, log_errors=False)
            info = await client.device_info()
            proxy = _has_raw_adverts(client, info)
    except Exception as exc:  # every library and socket failure becomes one line
        raise classify(exc, node) from exc
    finally:
        with contextlib.suppress(Exception):
            await client.disconnect(force=True)
    if not proxy:
        raise no_proxy_error(node)
    encrypted = "encrypted" if psk is not None else "plaintext"
    return f"{node.host}:{node.port} ({info.name}, {encrypted}), bluetooth_proxy ready"
