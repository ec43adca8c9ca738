"""Transport-free errors of the SONIC server and tools.

Every error the data plane raises carries one :class:`Status`, the same
classes Triton's core uses (``TRITONSERVER_ERROR_*``).  The gRPC and HTTP front
ends map a status to their own codes with one table each, so that no module
below the front ends imports a transport library.

Exception tree::

    SonicError                 (status)
    ├── InvalidArgument        INVALID_ARG   -> gRPC INVALID_ARGUMENT, HTTP 400
    ├── NotFound               NOT_FOUND     -> gRPC NOT_FOUND, HTTP 404
    │   └── ModelNotFound      names the closest known models
    ├── Unavailable            UNAVAILABLE   -> gRPC UNAVAILABLE, HTTP 503
    ├── Unsupported            UNSUPPORTED   -> gRPC UNIMPLEMENTED, HTTP 501
    ├── AlreadyExists          ALREADY_EXISTS-> gRPC ALREADY_EXISTS, HTTP 409
    ├── Internal               INTERNAL      -> gRPC INTERNAL, HTTP 500
    ├── Unauthenticated        UNAUTHENTICATED -> gRPC UNAUTHENTICATED, HTTP 401
    ├── PermissionDenied       PERMISSION_DENIED -> gRPC PERMISSION_DENIED, HTTP 403
    └── ModelConfigError       INVALID_ARG, names the model and the config field
"""

from __future__ import annotations

import difflib
import enum
from collections.abc import Iterable


class Status(enum.Enum):
    """Error classes, as Triton's core reports them."""

    INVALID_ARG = "INVALID_ARG"
    NOT_FOUND = "NOT_FOUND"
    UNAVAILABLE = "UNAVAILABLE"
    UNSUPPORTED = "UNSUPPORTED"
    ALREADY_EXISTS = "ALREADY_EXISTS"
    INTERNAL = "INTERNAL"
    CANCELLED = "CANCELLED"
    # Not core statuses in Triton (its front ends answer these themselves); ours come from
    # sonic.server.frontends.auth and map to the transports' own codes.
    UNAUTHENTICATED = "UNAUTHENTICATED"
    PERMISSION_DENIED = "PERMISSION_DENIED"


class SonicError(Exception):
    """Base of every error that carries a protocol status."""

    status: Status = Status.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class InvalidArgument(SonicError):
    status = Status.INVALID_ARG


class NotFound(SonicError):
    status = Status.NOT_FOUND


class Unavailable(SonicError):
    status = Status.UNAVAILABLE


class Unsupported(SonicError):
    status = Status.UNSUPPORTED


class AlreadyExists(SonicError):
    status = Status.ALREADY_EXISTS


class Internal(SonicError):
    status = Status.INTERNAL


class Unauthenticated(SonicError):
    """No credentials, or credentials that do not verify."""

    status = Status.UNAUTHENTICATED


class PermissionDenied(SonicError):
    """Valid credentials whose role does not allow the call."""

    status = Status.PERMISSION_DENIED


#: Names longer than this get no "did you mean" (difflib's work grows with the product of the
#: lengths, and a 16 MiB name stalled the server for seconds); real names are far shorter
#: (a model name is a directory name, at most 255 bytes).
SUGGEST_MAX_CHARS = 256
#: How much of a caller's name an error message repeats.
SHOWN_CHARS = 200


def shown(name: str, limit: int = SHOWN_CHARS) -> str:
    """``name`` as a message repeats it: cut to ``limit`` characters, saying how long it was."""
    if len(name) <= limit:
        return name
    return f"{name[:limit]}...({len(name)} characters)"


def closest(name: str, candidates: Iterable[str], limit: int = 3) -> list[str]:
    """Return up to ``limit`` candidates that look like ``name`` (typo help; none for a name
    longer than any real one)."""
    if len(name) > SUGGEST_MAX_CHARS:
        return []
    return difflib.get_close_matches(name, list(candidates), n=limit, cutoff=0.5)


def _did_you_mean(name: str, candidates: Iterable[str]) -> str:
    near = closest(name, candidates)
    return f"; did you mean {', '.join(repr(c) for c in near)}?" if near else ""


class ModelNotFound(NotFound):
    """An unknown model or version; the message lists the nearest known names."""

    def __init__(
        self, model: str, version: str | int | None = None, known: Iterable[str] = ()
    ) -> None:
        self.model = model
        self.version = str(version) if version not in (None, "", -1) else ""
        known = list(known)
        if self.version:
            text = (f"Request for unknown model: '{shown(model)}' version "
                    f"{shown(self.version)} is not found")  # fmt: skip
        else:
            text = f"Request for unknown model: '{shown(model)}' is not found"
        super().__init__(text + _did_you_mean(model, known))


class UnknownTensor(InvalidArgument):
    """An input or output name the model does not have."""

    def __init__(self, kind: str, name: str, model: str, known: Iterable[str]) -> None:
        self.name = name
        known = list(known)
        super().__init__(
            f"unexpected inference {kind} '{shown(name)}' for model '{model}'"
            f" (the model has {', '.join(repr(k) for k in known) or 'none'})"
            + _did_you_mean(name, known)
        )


class ModelConfigError(InvalidArgument):
    """A config.pbtxt that contradicts itself or the model file; names the field."""

    def __init__(self, model: str, field: str, message: str) -> None:
        self.model = model
        self.field = field
        super().__init__(f"model '{model}': {field}: {message}")
