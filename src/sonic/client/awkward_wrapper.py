"""An awkward-array wrapper with the shape of coffea's ``ml_tools.triton_wrapper``.

Subclass :class:`TritonWrapper`, override :meth:`~TritonWrapper.prepare_awkward`
(awkward arrays -> ``{input name: array}``) and optionally
:meth:`~TritonWrapper.postprocess_awkward`; then call the wrapper on numpy,
eager awkward or dask-awkward arrays.  Unlike coffea's wrapper it is pipelined:
a batch is split at ``max_batch_size`` and the parts are in flight together,
asynchronously, with no padding to ``max_batch_size``; failed calls are
retried with exponential backoff (in seconds, never a recursive blocking
sleep).  The client is created lazily and dropped when pickled, so a wrapper
can be shipped to dask workers, each of which builds its own.
Needs the ``awkward`` extra (awkward, dask-awkward).
"""

from __future__ import annotations

import asyncio
import random
import urllib.parse
from typing import Any

import numpy as np

from sonic.client.client import Client
from sonic.client.errors import ClientError, InputError


def parse_model_url(url: str) -> tuple[str, str, str, str]:
    """``triton+grpc://host:port/model/version`` -> (protocol, address, model, version)."""
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.split("+")
    if len(scheme) != 2 or scheme[0] != "triton" or scheme[1] not in ("grpc", "http"):
        raise ValueError(
            f"model URL {url!r} must start with triton+grpc:// or triton+http://, e.g. "
            "'triton+grpc://localhost:8001/deepmet/1'"
        )
    path = [p for p in parts.path.split("/") if p]
    if not parts.netloc or not 1 <= len(path) <= 2:
        raise ValueError(
            f"model URL {url!r} must look like 'triton+grpc://host:port/model[/version]'"
        )
    return scheme[1], parts.netloc, path[0], path[1] if len(path) == 2 else ""


class TritonWrapper:
    """Base class: override ``prepare_awkward`` (and ``postprocess_awkward``)."""

    def __init__(
        self,
        model_url: str,
        *,
        retries: int = 3,
        backoff_s: float = 0.5,
        client_options: dict[str, Any] | None = None,
    ) -> None:
        self.protocol, self.address, self.model, self.version = parse_model_url(model_url)
        self.model_url = model_url
        self.retries = retries
        self.backoff_s = backoff_s
        self.client_options = dict(client_options or {})
        self._client: Client | None = None

    # -- the parts a user overrides ------------------------------------------------
    def prepare_awkward(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """Awkward inputs -> ``{model input: regular array}`` (numpy or awkward)."""
        raise NotImplementedError("override prepare_awkward to build the model inputs")

    def postprocess_awkward(self, outputs: dict[str, np.ndarray], *args: Any, **kwargs: Any) -> Any:
        """Model outputs -> the awkward result; by default the outputs as a record array."""
        import awkward as ak

        if len(outputs) == 1:
            return ak.from_numpy(next(iter(outputs.values())))
        return ak.zip({k: ak.from_numpy(v) for k, v in outputs.items()}, depth_limit=1)

    # -- client, created lazily and never pickled ------------------------------------
    @property
    def client(self) -> Client:
        if self._client is None:
            self._client = Client(self.model, [self.address], protocol=self.protocol,
                                  version=self.version, **self.client_options)  # fmt: skip
        return self._client

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_client"] = None
        return state

    # -- calling -----------------------------------------------------------------------
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if any(_is_dask(a) for a in (*args, *kwargs.values())):
            return self._dask_call(*args, **kwargs)
        return self._eager(*args, **kwargs)

    def _eager(self, *args: Any, **kwargs: Any) -> Any:
        import awkward as ak

        traced = [a for a in args if isinstance(a, ak.Array) and ak.backend(a) == "typetracer"]
        if traced:
            # dask-awkward traces the graph with typetracers: mark every input as needed
            # (so column projection keeps it), and answer with the output's type only.
            for a in traced:
                ak.typetracer.touch_data(a)
            zeros = [ak.typetracer.length_zero_if_typetracer(a) for a in args]
            out = ak.Array(self._eager(*zeros, **kwargs))
            return ak.Array(out.layout.to_typetracer(forget_length=True))
        prepared = self.prepare_awkward(*args, **kwargs)
        inputs: dict[str, np.ndarray] = {}
        for name, value in prepared.items():
            try:
                inputs[name] = value if isinstance(value, np.ndarray) else ak.to_numpy(value)
            except ValueError as err:
                raise InputError(
                    f"input '{name}' is not regular after prepare_awkward: {err}; pad or "
                    "flatten it to the model's shape there"
                ) from None
        rows = len(next(iter(inputs.values()))) if inputs else 0
        if rows == 0:
            outputs = self._empty_outputs()
        else:
            outputs = asyncio.run(self._infer_with_backoff(inputs))
        return self.postprocess_awkward(outputs, *args, **kwargs)

    def _empty_outputs(self) -> dict[str, np.ndarray]:
        info = self.client.info()
        names = self.client.requested_outputs or info.outputs
        config = self.client.model_config()
        shapes = {o["name"]: [int(d) for d in o.get("dims", [])] for o in config["output"]}
        return {n: np.zeros((0, *shapes.get(n, [])), dtype=np.float32) for n in names}

    async def _infer_with_backoff(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        delay = self.backoff_s
        try:
            for attempt in range(self.retries + 1):
                try:
                    return await self.client.infer_async(inputs)
                except InputError:
                    raise
                except ClientError:
                    if attempt == self.retries:
                        raise
                    await asyncio.sleep(delay * (1 + random.random()))
                    delay *= 2
            raise AssertionError("unreachable")  # pragma: no cover
        finally:
            await self.client.close_async()  # this call's event loop ends with asyncio.run

    def _dask_call(self, *args: Any, **kwargs: Any) -> Any:
        import awkward as ak
        import dask_awkward as dak

        metas = [a._meta if _is_dask(a) else a for a in args]
        zeros = [ak.typetracer.length_zero_if_typetracer(m) for m in metas]
        meta = ak.Array(self._eager(*zeros, **kwargs)).layout.to_typetracer(forget_length=True)
        return dak.map_partitions(self._eager, *args, meta=ak.Array(meta), **kwargs)


def _is_dask(obj: Any) -> bool:
    return type(obj).__module__.startswith("dask_awkward")
