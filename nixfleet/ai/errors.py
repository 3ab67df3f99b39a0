"""How a provider request fails: one kind per way, and whether trying again can help."""

from __future__ import annotations

from enum import Enum


class FailureKind(Enum):
    CONNECT = "connection failed"
    TIMEOUT = "timed out"
    SERVER = "server error"
    RATE_LIMITED = "rate limited"
    AUTH = "authentication failed"
    REQUEST = "request rejected"
    MALFORMED = "malformed response"
    UNAVAILABLE = "not available"

    @property
    def retryable(self) -> bool:
        """Transient failures: the same request may succeed later. An authentication or
        request error (401, 403, 400, 404) or a malformed answer would fail the same way."""
        return self in (FailureKind.CONNECT, FailureKind.TIMEOUT, FailureKind.SERVER,
                        FailureKind.RATE_LIMITED)


class ProviderError(Exception):
    """A failed request to a provider: its kind, the HTTP status when there was an answer,
    and the seconds the provider asked to wait (Retry-After)."""

    def __init__(self, kind: FailureKind, message: str, *, status: int | None = None,
                 retry_after: float | None = None):
        super().__init__(message)
        self.kind = kind
        self.status = status
        self.retry_after = retry_after

    @property
    def message(self) -> str:
        return str(self)
