"""aiohttp client for the scanner API of docs/api.md: signed requests, backoff, clear errors."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import math
import random
import re
import secrets
import struct
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar
from urllib.parse import urlencode

import aiohttp

from scanner.errors import ScannerError
from scanner.outbox import PendingBatch

logger = logging.getLogger(__name__)

T = TypeVar("T")

# First retry waits up to this long (full jitter: uniform in [0, delay]).
BACKOFF_BASE_S = 0.5
# Upper bound of a retry delay, so that a returning server is noticed within half a minute.
BACKOFF_CAP_S = 30.0
# Version tag, first line of the signing string (docs/api.md).
SIGNING_VERSION = "bulle-v1"
# Ordinary requests must not hang forever on a dead TCP peer.
REQUEST_TIMEOUT_S = 15.0
# A long poll is held up to `wait` seconds by the server; allow this much more on top.
LONG_POLL_SLACK_S = 10.0
# Path prefix of the scanner API.
API_PREFIX = "/api/scanner/v1"
# The fields of a window (docs/api.md), in the order of the columnar batch body.
WINDOW_FIELDS = ("id_type", "id", "start", "end", "count", "rssi_max", "rssi_median", "tx_power")
# How each column is packed (docs/api.md): struct formats, little-endian.
PACKED_FORMATS = {"start": "d", "end": "d", "count": "I", "rssi_max": "b", "rssi_median": "d"}
# Codes of the id types in a packed `id_type` column.
ID_TYPE_CODES = {"eid": 0, "ibeacon": 1}
# EIDs joined: lower-case hex only, as the server requires of an `eid` id.
_LOWER_HEX = re.compile(r"[0-9a-f]*")
# A packed `tx_power` of -128 (below any real power) stands for null.
TX_POWER_NULL = -128
# HTTP status of a body the server could not validate (its error names the field).
UNPROCESSABLE = 422
# After a server refused the columnar body, rows for an hour, then columns again: an upgraded
# server is picked up without restarting the scanner, at one refused batch an hour.
COLUMNS_RETRY_S = 3600.0


class UploadError(ScannerError):
    """A request to the store server failed."""


class BadCredentialsError(UploadError):
    """The server refused the scanner id or secret (401/403)."""


class ServerUnreachableError(UploadError):
    """No HTTP answer from the server (connection refused, DNS, timeout)."""


class ServerRejectedError(UploadError):
    """The server answered with an error status other than 401/403."""

    def __init__(self, message: str, status: int, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.field = field


def content_digest(body: bytes) -> str:
    """RFC 9530 Content-Digest value for ``body``."""
    return "sha-256=:" + base64.b64encode(hashlib.sha256(body).digest()).decode() + ":"


def signing_string(
    method: str, path_qs: str, scanner_id: str, timestamp: str, nonce: str, digest: str
) -> str:
    """The seven-line string that is HMAC'd (docs/api.md)."""
    return "\n".join(
        (SIGNING_VERSION, method.upper(), path_qs, scanner_id, timestamp, nonce, digest)
    )


def sign_request(
    secret: str,
    method: str,
    path_qs: str,
    scanner_id: str,
    body: bytes,
    *,
    timestamp: int,
    nonce: str,
) -> dict[str, str]:
    """Headers that authenticate one request."""
    digest = content_digest(body)
    text = signing_string(method, path_qs, scanner_id, str(timestamp), nonce, digest)
    mac = hmac.new(secret.encode("utf-8"), text.encode("utf-8"), hashlib.sha256).digest()
    return {
        "X-Bulle-Scanner": scanner_id,
        "X-Bulle-Timestamp": str(timestamp),
        "X-Bulle-Nonce": nonce,
        "Content-Digest": digest,
        "X-Bulle-Signature": base64.b64encode(mac).decode(),
    }


def backoff_delay(attempt: int, rng: random.Random | None = None) -> float:
    """Full-jitter exponential backoff for the ``attempt``-th consecutive failure (1-based)."""
    ceiling = min(BACKOFF_CAP_S, BACKOFF_BASE_S * (2 ** max(attempt - 1, 0)))
    return (rng or random).uniform(0.0, ceiling)


class Uploader:
    """Talks to one store server on behalf of one scanner."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        server_url: str,
        store_id: str,
        scanner_id: str,
        secret: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._session = session
        self._base = server_url.rstrip("/")
        self._store_id = store_id
        self._scanner_id = scanner_id
        self._secret = secret
        self._clock = clock
        self._unreachable = False
        # Rows instead of columns until this monotonic time (after a server refused columns).
        self._rows_until = -math.inf

    @property
    def server_url(self) -> str:
        return self._base

    async def _request(
        self, method: str, path_qs: str, payload: Mapping[str, Any] | None, limit_s: float
    ) -> dict[str, Any]:
        body = b"" if payload is None else json.dumps(payload, separators=(",", ":")).encode()
        headers = sign_request(
            self._secret,
            method,
            path_qs,
            self._scanner_id,
            body,
            timestamp=int(self._clock()),
            nonce=secrets.token_hex(16),
        )
        if payload is not None:
            headers["Content-Type"] = "application/json"
        try:
            async with self._session.request(
                method,
                self._base + path_qs,
                data=body if payload is not None else None,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=limit_s),
            ) as resp:
                text = await resp.text()
                status = resp.status
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            if not self._unreachable:
                self._unreachable = True
                logger.warning(
                    "server unreachable at %s (%s); retrying", self._base, type(exc).__name__
                )
            raise ServerUnreachableError(f"server unreachable at {self._base}") from exc
        if self._unreachable:
            self._unreachable = False
            logger.info("server at %s reachable again", self._base)
        if status in (401, 403):
            code = _error_code(text)
            raise BadCredentialsError(
                f"bad credentials: the server refused scanner {self._scanner_id} "
                f"({status} {code}); "
                "check scanner_id, secret and store_id, and the scanner's clock"
            )
        if status >= 400:
            raise ServerRejectedError(
                f"server answered {status} ({_error_code(text)}) to {method} {path_qs}",
                status,
                _error_field(text),
            )
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise ServerRejectedError(
                f"server sent non-JSON to {method} {path_qs}", status
            ) from exc
        if not isinstance(data, dict):
            raise ServerRejectedError(f"server sent a non-object to {method} {path_qs}", status)
        return data

    async def post_batch(self, batch: PendingBatch) -> dict[str, Any]:
        """POST one batch; returns the server's answer once it has committed it.

        The windows go column-wise and packed (``columns``, docs/api.md), which the server
        ingests without one object per window. A server that predates the columnar body
        refuses it (422 naming ``columns``): the batch is sent again row-wise, and so are the
        later ones for COLUMNS_RETRY_S, after which columns are tried again (the server may
        have been upgraded meanwhile).
        """
        head = {
            "batch_id": batch.batch_id,
            "store_id": self._store_id,
            "scanner_id": self._scanner_id,
        }
        path = f"{API_PREFIX}/batches"
        if time.monotonic() >= self._rows_until:
            try:
                return await self._request(
                    "POST",
                    path,
                    {**head, "columns": batch_columns(batch.windows)},
                    REQUEST_TIMEOUT_S,
                )
            except ServerRejectedError as exc:
                if exc.status != UNPROCESSABLE or exc.field != "columns":
                    raise
                logger.warning(
                    "the server does not take columnar batches; sending rows for %.0f s",
                    COLUMNS_RETRY_S,
                )
                self._rows_until = time.monotonic() + COLUMNS_RETRY_S
        return await self._request(
            "POST", path, {**head, "windows": batch.windows}, REQUEST_TIMEOUT_S
        )

    async def fetch_allowlist(self, since: int | None, wait: float) -> dict[str, Any]:
        """GET the allowlist; with ``since`` and ``wait`` > 0 this is a long poll."""
        params: dict[str, str] = {}
        if since is not None:
            params["since"] = str(since)
            if wait > 0:
                params["wait"] = f"{wait:g}"
        path = f"{API_PREFIX}/allowlist" + ("?" + urlencode(params) if params else "")
        return await self._request("GET", path, None, wait + LONG_POLL_SLACK_S)

    async def post_heartbeat(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """POST a heartbeat body built by scanner.health."""
        return await self._request("POST", f"{API_PREFIX}/heartbeat", body, REQUEST_TIMEOUT_S)


def batch_columns(windows: list[dict[str, Any]]) -> dict[str, list[Any] | str]:
    """The ``columns`` of a batch body, packed (docs/api.md): one base64 string per field.

    Each column is its values packed little-endian with the field's fixed type, which the
    server turns into an array without one object per value. A column whose values do not
    all fit that type (an iBeacon id, a value out of range) goes as a plain JSON array: the
    server takes either form, column by column, and names an out-of-range value itself.
    """
    columns: dict[str, list[Any] | str] = {}
    for name in WINDOW_FIELDS:
        values = [window.get(name) for window in windows]
        columns[name] = _packed(name, values)
    return columns


def _packed(name: str, values: list[Any]) -> list[Any] | str:
    try:
        if name == "id_type":
            raw = bytes(ID_TYPE_CODES[value] for value in values)
        elif name == "id":
            joined = "".join(values)
            if len(joined) != 16 * len(values) or not _LOWER_HEX.fullmatch(joined):
                return values  # as an array: the server names a malformed id
            raw = bytes.fromhex(joined)
        elif name == "tx_power":
            raw = struct.pack(
                f"<{len(values)}b", *(TX_POWER_NULL if v is None else v for v in values)
            )
        else:
            raw = struct.pack(f"<{len(values)}{PACKED_FORMATS[name]}", *values)
    except (KeyError, ValueError, TypeError, OverflowError, struct.error):
        return values
    return base64.b64encode(raw).decode("ascii")


def _error_field(text: str) -> str | None:
    try:
        field = json.loads(text)["error"].get("field")
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    return field if isinstance(field, str) else None


def _error_code(text: str) -> str:
    try:
        data = json.loads(text)
        return str(data["error"]["code"])
    except (ValueError, KeyError, TypeError):
        return "no error code"


async def with_retries(
    op: Callable[[], Awaitable[T]],
    *,
    stop: asyncio.Event,
    rng: random.Random | None = None,
    retry_on: tuple[type[UploadError], ...] = (ServerUnreachableError, ServerRejectedError),
) -> T | None:
    """Run ``op`` until it succeeds or ``stop`` is set, backing off between failures.

    Returns None when stopped. BadCredentialsError is retried too but logged at ERROR once.
    """
    attempt = 0
    warned_credentials = False
    while not stop.is_set():
        try:
            return await op()
        except BadCredentialsError as exc:
            if not warned_credentials:
                logger.error("%s", exc)
                warned_credentials = True
        except retry_on:
            pass
        attempt += 1
        delay = backoff_delay(attempt, rng)
        try:
            await asyncio.wait_for(stop.wait(), timeout=delay)
        except TimeoutError:
            continue
    return None
