"""Typed errors. Each carries what went wrong and, where we know it, what the operator should do."""

from __future__ import annotations


class O365IngestError(Exception):
    """Base class; ``remedy`` is one sentence an operator can act on."""

    def __init__(self, message: str, remedy: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.remedy = remedy

    def __str__(self) -> str:
        return f"{self.message} Remedy: {self.remedy}" if self.remedy else self.message


class CredentialError(O365IngestError):
    """The app's credential (certificate or secret) could not be loaded."""


class AuthError(O365IngestError):
    """Entra ID refused to issue a token."""

    def __init__(self, message: str, remedy: str | None = None, code: str | None = None) -> None:
        super().__init__(message, remedy)
        self.code = code


class ApiError(O365IngestError):
    """A Microsoft API answered with an error.

    ``retryable`` tells the caller whether backing off and retrying can help (throttling, 5xx,
    AF50000); ``fatal`` means the stream cannot make progress until configuration changes.
    """

    def __init__(self, message: str, *, status: int | None, code: str | None = None,
                 remedy: str | None = None, retryable: bool = False, fatal: bool = False,
                 retry_after: float | None = None) -> None:
        super().__init__(message, remedy)
        self.status = status
        self.code = code
        self.retryable = retryable
        self.fatal = fatal
        self.retry_after = retry_after


class UnsafeUrlError(O365IngestError):
    """A URL from the network points away from the configured API host; it is never requested."""


class BadContentError(O365IngestError):
    """A response body was not what the API promises (HTML page, truncated JSON, not an array...)."""


class SinkError(O365IngestError):
    """The sink did not acknowledge a write."""


class CheckpointConflict(O365IngestError):
    """Another run changed the checkpoint since we read it (ETag mismatch)."""


class StreamBusy(O365IngestError):
    """Another run holds the stream's lock."""
