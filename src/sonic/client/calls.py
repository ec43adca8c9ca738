"""What one call of the client is made of: the model's interface, a request's parts, the walk
through the retry policy, and the timing it records."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from sonic.client.errors import InferenceError, describe_failure, retryable
from sonic.client.shm import Region

if TYPE_CHECKING:
    from sonic.client.client import Client
    from sonic.client.endpoint import Endpoint

@dataclass(slots=True)
class CallTiming:
    """Where the time of one request went, in seconds (server times with ``verbose``)."""

    server: str
    serialize_s: float
    wait_s: float
    deserialize_s: float
    rows: int
    server_queue_s: float | None = None
    server_compute_s: float | None = None
    #: What went through shared memory: "", "inputs" or "inputs+outputs".
    shared_memory: str = ""


@dataclass(slots=True)
class TensorInfo:
    name: str
    datatype: str
    dims: tuple[int, ...]  # without the batch dim


@dataclass(slots=True)
class ModelInfo:
    name: str
    max_batch_size: int
    inputs: dict[str, TensorInfo]
    outputs: list[str]
    output_specs: dict[str, TensorInfo] = field(default_factory=dict)


@dataclass(slots=True)
class Prepared:
    """One request's tensors, and what of it goes through a shared-memory region."""

    tensors: list[Any]
    outputs: list[Any]
    region: Region | None
    #: Outputs the server writes into the region: name -> (offset, dtype, shape).
    placed: dict[str, tuple[int, np.dtype, tuple[int, ...]]] = field(default_factory=dict)

    @property
    def shared_memory(self) -> str:
        if self.region is None:
            return ""
        return "inputs+outputs" if self.placed else "inputs"


class Retry:
    """One call's walk through the retry policy, shared by the sync and async paths."""

    def __init__(self, client: Client, first: Endpoint) -> None:
        self.client = client
        self.ep = first
        self.tried: set[str] = set()
        self.attempts: list[str] = []

    def steps(self) -> list[tuple[str, Endpoint | None]]:
        """The first server, then one step per retry the policy allows."""
        plan: list[tuple[str, Endpoint | None]] = [("first", self.ep)]
        for kind, n in self.client.retries:
            plan += [(kind, None)] * (1 if kind == "fallback" else n)
        return plan

    def use(self, ep: Endpoint) -> Endpoint:
        self.ep = ep
        self.tried.add(ep.server.name)
        return ep

    def succeeded(self, ep: Endpoint, result: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.client.router.current = ep
        return result

    def failed(self, ep: Endpoint, err: Exception) -> bool:
        """Record a failure; True if the policy should go on."""
        ep.failures += 1
        self.client.router.current = None
        self.attempts.append(describe_failure(ep.server, err))
        return retryable(err)

    def error(self) -> InferenceError:
        return InferenceError(
            f"inference of model '{self.client.model}' failed",
            self.client.router.with_log(self.attempts),
        )


def concat(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    if len(parts) == 1:
        return parts[0]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
