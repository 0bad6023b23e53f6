"""aiohttp client for the scanner API of docs/api.md: signed requests, backoff, clear errors."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import random
import secrets
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


class UploadError(ScannerError):
    """A request to the store server failed."""


class BadCredentialsError(UploadError):
    """The server refused the scanner id or secret (401/403)."""


class ServerUnreachableError(UploadError):
    """No HTTP answer from the server (connection refused, DNS, timeout)."""


class ServerRejectedError(UploadError):
    """The server answered with an error status other than 401/403."""

    def __init__(
        self,
        message: str,
        status: int,
        field: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.field = field
        self.retry_after = retry_after


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


def backoff_delay(
    attempt: int, rng: random.Random | None = None, retry_after: float | None = None
) -> float:
    """Full-jitter exponential backoff for the ``attempt``-th consecutive failure (1-based);
    a server's ``Retry-After`` lowers the ceiling (a 503 during a short database outage)."""
    ceiling = min(BACKOFF_CAP_S, BACKOFF_BASE_S * (2 ** max(attempt - 1, 0)))
    if retry_after is not None:
        ceiling = min(ceiling, retry_after)
    return (rng or random).uniform(0.0, ceiling)


def retry_after_of(exc: BaseException) -> float | None:
    """The server's ``Retry-After`` carried by a refusal, if any."""
    return exc.retry_after if isinstance(exc, ServerRejectedError) else None


def _retry_after(value: str | None) -> float | None:
    """``Retry-After`` in seconds (the delay form; a date or garbage is ignored), capped."""
    if value is None or not value.strip().isdigit():
        return None
    return min(float(value.strip()), BACKOFF_CAP_S)


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
                retry_after = _retry_after(resp.headers.get("Retry-After"))
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
                retry_after,
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
        """POST one batch (a JSON list of window objects, docs/api.md); returns the server's
        answer once it has committed it."""
        body = {
            "batch_id": batch.batch_id,
            "store_id": self._store_id,
            "scanner_id": self._scanner_id,
            "windows": batch.windows,
        }
        return await self._request("POST", f"{API_PREFIX}/batches", body, REQUEST_TIMEOUT_S)

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
