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

from typing import Any


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


def _code(err: Exception) -> str:
    """tritonclient's status of a failure (``StatusCode.DEADLINE_EXCEEDED``, ``503``)."""
    status = getattr(err, "status", None)
    return str(status() if callable(status) else status)


def status_of(err: Exception) -> str:
    """The status, or the exception's type where it has none (a refused connection)."""
    code = _code(err)
    return code if code not in ("None", "") else type(err).__name__


def describe_failure(server: Any, err: Exception) -> str:
    """One attempt as the job's error shows it: server, address, status and message."""
    message = getattr(err, "message", None)
    text = message() if callable(message) else str(err)
    return f"{server.name} ({server.url}): {status_of(err)}: {text}"


def timed_out(err: Exception) -> bool:
    """True for a call that ran out of time rather than being answered: on a lossy network one
    dropped packet costs a TCP retransmission (a second or more), which a short control-call
    deadline does not cover, so the same call is worth asking again."""
    return isinstance(err, TimeoutError) or _code(err) == "StatusCode.DEADLINE_EXCEEDED"


def retryable(err: Exception) -> bool:
    """True for failures another attempt (or another server) may not have."""
    transport = isinstance(err, ConnectionError | OSError | TimeoutError)
    return transport or _code(err) in RETRYABLE_STATUS
