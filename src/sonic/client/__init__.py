"""The SONIC client for Python event-processing jobs (see :mod:`sonic.client.client`).

It depends on :mod:`sonic.protocol` and the stock ``tritonclient`` transports,
never on server internals, so it works against ``sonic serve`` and NVIDIA Triton.
"""

from sonic.client.calls import CallTiming, ModelInfo
from sonic.client.client import Client
from sonic.client.errors import (
    ClientError,
    InferenceError,
    InputError,
    ModelVersionError,
    NoServerError,
)
from sonic.client.servers import Server, load_servers

__all__ = [
    "CallTiming",
    "Client",
    "ClientError",
    "InferenceError",
    "InputError",
    "ModelInfo",
    "ModelVersionError",
    "NoServerError",
    "Server",
    "load_servers",
]
