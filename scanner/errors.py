"""The scanner package's error hierarchy: every error it raises on purpose is a ScannerError."""

from __future__ import annotations


class ScannerError(Exception):
    """Base of every error the scanner package raises on purpose."""


class RecordError(ScannerError):
    """A JSON-lines advertisement record is malformed; the message names the key at fault."""


class ConfigError(ScannerError):
    """The scanner configuration is invalid; ``key`` names the setting at fault, if one is."""

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key
        self.message = message

    def __str__(self) -> str:
        if self.key is None:
            return self.message
        return f"{self.key}: {self.message}"


class AllowlistError(ScannerError):
    """An allowlist answer from the server does not match the wire contract."""
