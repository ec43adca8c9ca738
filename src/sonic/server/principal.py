"""Who is making the current call, for state that belongs to one caller.

The front ends check credentials (:mod:`sonic.server.frontends.auth`) before the data
plane runs; the verified caller's name is kept in a context variable for the
rest of that call (each gRPC call and HTTP request runs in its own task, so it
never leaks into another).  Shared-memory regions use it as their owner: with
authentication on, a region belongs to whoever registered it, and other
callers see NOT_FOUND, as if it did not exist.  With authentication off every
call is anonymous and regions are global, as in Triton.
"""

from __future__ import annotations

from contextvars import ContextVar

#: The verified caller of the current call ("" when authentication is off).
PRINCIPAL: ContextVar[str] = ContextVar("sonic_principal", default="")


def owned(name: str) -> tuple[str, str]:
    """The key of ``name`` in a per-caller namespace: (caller, name)."""
    return PRINCIPAL.get(), name
