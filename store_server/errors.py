"""The store server's error hierarchy, translated into HTTP answers at the edge (views)."""

from __future__ import annotations


class StoreServerError(Exception):
    """Base of every error the store server raises on purpose."""

    status = 500
    code = "internal_error"

    def __init__(
        self, message: str, *, field: str | None = None, reason: str | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        # What was wrong, as a stable key the pages translate (i18n_names.REASONS); the
        # message is an English sentence for developers and logs.
        self.reason = reason


class ConfigError(StoreServerError):
    """Invalid configuration; the message names the key."""

    code = "invalid_config"

    def __init__(self, message: str, *, key: str | None = None) -> None:
        super().__init__(message, field=key)
        self.key = key


class ValidationError(StoreServerError):
    """A request body or parameter failed validation; `field` names it."""

    status = 422
    code = "invalid_request"


class AuthenticationError(StoreServerError):
    """Missing or invalid credentials (HTTP 401)."""

    status = 401
    code = "unauthenticated"

    def __init__(self, message: str, *, code: str = "unauthenticated") -> None:
        super().__init__(message)
        self.code = code


class ForbiddenError(StoreServerError):
    """Authenticated but not allowed (HTTP 403)."""

    status = 403
    code = "forbidden"

    def __init__(self, message: str, *, code: str = "forbidden") -> None:
        super().__init__(message)
        self.code = code


class ProofRefusedError(ForbiddenError):
    """A proof-of-presence check-in whose store beacon proves nothing (HTTP 403, the code
    names why: docs/api.md, "Proof-of-presence check-in")."""


class NotFoundError(StoreServerError):
    status = 404
    code = "not_found"


class ConflictError(StoreServerError):
    status = 409
    code = "conflict"


class RateLimitedError(StoreServerError):
    status = 429
    code = "rate_limited"


class ConsentLogError(StoreServerError):
    """The consent log's hash chain does not verify."""

    code = "consent_log_broken"


class UnavailableError(StoreServerError):
    """The server cannot do this safely right now (HTTP 503): its database is out of reach
    (``database_unavailable``), or its view of consents is older than the bound
    (``consent_view_stale``, chain mode). Scanners retry later and keep their batches."""

    status = 503
    code = "unavailable"

    def __init__(self, message: str, *, code: str = "unavailable") -> None:
        super().__init__(message)
        self.code = code
