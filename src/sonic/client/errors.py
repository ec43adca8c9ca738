"""Errors of the SONIC client.

::

    ClientError
    ├── InputError          the inputs do not fit the model (nothing was sent)
    ├── NoServerError       no server hosts the model and no fallback is configured
    ├── ModelVersionError   the server's config checksums differ from the job's config
    └── InferenceError      every retry failed; ``attempts`` lists what each one got

Transport failures (connection refused, UNAVAILABLE, deadline exceeded) are
retried according to the client's retry policy; client mistakes (INVALID_ARGUMENT,
NOT_FOUND) are not, because another server would answer the same.
"""

from __future__ import annotations


class ClientError(Exception):
    pass


class InputError(ClientError, ValueError):
    """An input that does not match the model, found before anything is sent."""


class NoServerError(ClientError):
    pass


class ModelVersionError(ClientError):
    """CMSSW's ModelVersioning error: server and job disagree on the model files."""


class InferenceError(ClientError):
    def __init__(self, message: str, attempts: list[str]) -> None:
        super().__init__(
            message + "".join(f"\n  attempt {i + 1}: {a}" for i, a in enumerate(attempts))
        )
        self.attempts = attempts


RETRYABLE_STATUS = {
    "StatusCode.UNAVAILABLE", "StatusCode.DEADLINE_EXCEEDED", "StatusCode.INTERNAL",
    "StatusCode.RESOURCE_EXHAUSTED", "StatusCode.CANCELLED", "StatusCode.UNKNOWN",
    "500", "502", "503", "504", "None", "",
}  # fmt: skip


def retryable(err: Exception) -> bool:
    """True for failures another attempt (or another server) may not have."""
    status = getattr(err, "status", None)
    code = str(status() if callable(status) else status)
    return code in RETRYABLE_STATUS or isinstance(err, ConnectionError | OSError | TimeoutError)
