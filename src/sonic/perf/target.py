"""The server under test: connection options, model metadata, statistics, shared memory.

Control calls (metadata, config, statistics, shared-memory registration) use
the stock ``tritonclient``; the load itself goes through
:mod:`sonic.perf.engine`, which sends pre-encoded requests.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sonic.perf.inputs import ModelSpec, TensorSpec
from sonic.protocol import grpc_codec, http_codec
from sonic.protocol.params import shm_parameters
from sonic.protocol.tensors import InferRequest, RequestedOutput, Tensor


@dataclass(frozen=True, slots=True)
class Target:
    """Where to send load and how (perf_analyzer's -u, -i, -m, -x, -H and --ssl-* flags)."""

    url: str
    protocol: str = "grpc"
    model: str = ""
    version: str = ""
    headers: tuple[tuple[str, str], ...] = ()
    ssl: bool = False
    ssl_options: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.protocol not in ("grpc", "http"):
            raise ValueError(f"-i must be grpc or http, not {self.protocol!r}")

    def client(self) -> Any:
        """A sync tritonclient for control calls."""
        if self.protocol == "grpc":
            import tritonclient.grpc as g

            o = self.ssl_options
            return g.InferenceServerClient(
                self.url, ssl=self.ssl, root_certificates=o.get("root_certifications_file"),
                private_key=o.get("private_key_file"),
                certificate_chain=o.get("certificate_chain_file"),
            )  # fmt: skip
        import tritonclient.http as h

        return h.InferenceServerClient(self.url, ssl=self.ssl)

    def kwargs(self, as_json: bool = True) -> dict[str, Any]:
        """Keyword arguments for tritonclient calls: headers, and JSON answers over gRPC."""
        kw: dict[str, Any] = {"headers": dict(self.headers)} if self.headers else {}
        if self.protocol == "grpc" and as_json:
            kw["as_json"] = True
        return kw


def parse_header(value: str) -> tuple[str, str]:
    """perf_analyzer's ``-H 'name:value'``."""
    name, sep, val = value.partition(":")
    if not sep or not name.strip():
        raise ValueError(f"-H must look like 'name:value', not {value!r}")
    return name.strip(), val.strip()


def model_spec(target: Target) -> ModelSpec:
    """Inputs, outputs and max_batch_size from the model's metadata and config."""
    c = target.client()
    try:
        meta = c.get_model_metadata(target.model, target.version, **target.kwargs())
        cfg = c.get_model_config(target.model, target.version, **target.kwargs())
    finally:
        c.close()
    cfg = cfg.get("config", cfg)
    mbs = int(cfg.get("max_batch_size", 0))

    def specs(items: list[dict[str, Any]]) -> tuple[TensorSpec, ...]:
        out = []
        for t in items:
            shape = tuple(int(d) for d in t["shape"])
            out.append(TensorSpec(t["name"], t["datatype"], shape[1:] if mbs else shape))
        return tuple(out)

    return ModelSpec(target.model, target.version, mbs, specs(meta["inputs"]),
                     specs(meta["outputs"]))  # fmt: skip


def statistics(target: Target) -> dict[str, int]:
    """Cumulative counts and ns of the model (and an ensemble's steps), summed."""
    c = target.client()
    try:
        s = c.get_inference_statistics(target.model, target.version, **target.kwargs())
    finally:
        c.close()
    totals = dict.fromkeys(("count", "queue", "compute_input", "compute_infer",
                            "compute_output", "request"), 0)  # fmt: skip
    for m in s.get("model_stats", []):
        if m.get("name") != target.model:
            continue
        st = m.get("inference_stats", {})
        totals["count"] += int(st.get("success", {}).get("count", 0))
        totals["request"] += int(st.get("success", {}).get("ns", 0))
        for k in ("queue", "compute_input", "compute_infer", "compute_output"):
            totals[k] += int(st.get(k, {}).get("ns", 0))
    return totals


def byte_size(spec: TensorSpec, batch: int, max_batch_size: int) -> int:
    if spec.datatype == "BYTES" or any(d < 0 for d in spec.shape):
        return 0  # unknown ahead of time
    n = int(np.prod(spec.shape, dtype=np.int64)) * (batch if max_batch_size else 1)
    return n * np.dtype(_np_type(spec.datatype)).itemsize


def _np_type(datatype: str) -> Any:
    from sonic.protocol.datatypes import to_numpy_dtype

    return to_numpy_dtype(datatype)


#: Tensor name -> (shared-memory region, byte size, offset).
ShmMap = dict[str, tuple[str, int, int]]


def _request(model: ModelSpec, arrays: dict[str, np.ndarray], shm: ShmMap | None) -> InferRequest:
    """The protocol's request: inputs and outputs named in ``shm`` placed in their regions."""
    shm = shm or {}

    def params(name: str, with_offset: bool) -> dict[str, Any]:
        if name not in shm:
            return {}
        region, size, offset = shm[name]
        return shm_parameters(region, size, offset if with_offset else 0)

    inputs = [Tensor(s.name, s.datatype, tuple(arrays[s.name].shape), arrays[s.name],
                     params(s.name, True)) for s in model.inputs]  # fmt: skip
    outputs = [RequestedOutput(s.name, params(s.name, False)) for s in model.outputs]
    return InferRequest(model.name, model.version, inputs=inputs, outputs=outputs)


def grpc_request(
    model: ModelSpec, arrays: dict[str, np.ndarray], shm: ShmMap | None = None
) -> bytes:
    """A serialized ``ModelInferRequest``; with ``shm``, inputs/outputs named there use regions."""
    return grpc_codec.encode_request(_request(model, arrays, shm)).SerializeToString()


def http_request(
    model: ModelSpec, arrays: dict[str, np.ndarray], shm: ShmMap | None = None
) -> tuple[bytes, int]:
    """A binary-extension body and its JSON header length."""
    return http_codec.encode_request(_request(model, arrays, shm))
