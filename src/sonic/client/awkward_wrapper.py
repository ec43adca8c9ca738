"""An awkward-array wrapper with the shape of coffea's ``ml_tools.triton_wrapper``.

Subclass :class:`TritonWrapper`, override :meth:`~TritonWrapper.prepare_awkward`
and optionally :meth:`~TritonWrapper.postprocess_awkward`; then call the wrapper
on eager awkward or dask-awkward arrays.  ``prepare_awkward`` may return
``{input name: array}``, or, as in coffea, ``(args, kwargs)`` for a
``numpy_call(output_list, input_dict)``: a coffea subclass runs here unchanged
(its ``wrapper(output_list, *arrays)`` call, its ``client_args`` and
``batch_size``), and gets coffea's answer, a dict of awkward arrays.

Unlike coffea's wrapper it is pipelined: a batch is split at ``max_batch_size``
(or ``batch_size``) and the parts are in flight together, asynchronously, with
no padding; failed calls are retried with exponential backoff (in seconds,
never a recursive blocking sleep); a selection of no rows makes no call.  It
works inside a running event loop (a Jupyter cell).  The client is created
lazily and dropped when pickled, so a wrapper can be shipped to dask workers,
each of which builds its own.  Needs the ``awkward`` extra (awkward, dask-awkward).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import random
import urllib.parse
from collections.abc import Coroutine
from typing import Any

import numpy as np

from sonic.client.client import Client
from sonic.client.errors import ClientError, InputError
from sonic.client.servers import Server

#: tritonclient constructor arguments (coffea's ``client_args``) this client takes over.
_TLS_ARGS = ("root_certificates", "private_key", "certificate_chain")


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
        client_args: dict[str, Any] | None = None,
        batch_size: int = -1,
        *,
        retries: int = 3,
        backoff_s: float = 0.5,
        client_options: dict[str, Any] | None = None,
    ) -> None:
        """``client_args`` and ``batch_size`` as coffea's: tritonclient's TLS arguments
        (``ssl``, ``root_certificates``, ...), and the rows per request (-1: the model's
        ``max_batch_size``); ``client_options`` go to :class:`~sonic.client.Client`."""
        self.protocol, self.address, self.model, self.version = parse_model_url(model_url)
        self.model_url = model_url
        self.client_args = dict(client_args or {})
        self.batch_size = batch_size
        self.retries = retries
        self.backoff_s = backoff_s
        self.client_options = dict(client_options or {})
        self._client: Client | None = None

    # -- the parts a user overrides ------------------------------------------------
    def prepare_awkward(self, *args: Any, **kwargs: Any) -> Any:
        """Awkward inputs -> ``{model input: regular array}`` (numpy or awkward), or coffea's
        ``(args, kwargs)`` of ``numpy_call(output_list, input_dict)``."""
        raise NotImplementedError("override prepare_awkward to build the model inputs")

    def postprocess_awkward(self, outputs: Any, *args: Any, **kwargs: Any) -> Any:
        """Model outputs -> the awkward result: the outputs as a record array (one output: that
        array); for a coffea-style ``prepare_awkward``, coffea's dict of awkward arrays."""
        import awkward as ak

        if not isinstance(outputs, dict) or self._coffea_style:
            return outputs
        if len(outputs) == 1:
            return ak.from_numpy(next(iter(outputs.values())))
        return ak.zip({k: ak.from_numpy(v) for k, v in outputs.items()}, depth_limit=1)

    _coffea_style = False

    def get_awkward_lib(self, *args: Any, **kwargs: Any) -> Any:
        """The array library of the inputs, as coffea's wrappers offer it to prepare_awkward
        (here always awkward: dask-awkward inputs reach it one partition at a time)."""
        import awkward as ak

        if any(_is_dask(a) for a in (*args, *kwargs.values())):
            import dask_awkward as dak

            return dak
        return ak

    # -- client, created lazily and never pickled ------------------------------------
    @property
    def client(self) -> Client:
        if self._client is None:
            tls = {k: self.client_args[k] for k in _TLS_ARGS if self.client_args.get(k)}
            server = Server(self.address, self.address, ssl=bool(self.client_args.get("ssl")),
                            **tls)  # fmt: skip
            self._client = Client(self.model, [server], protocol=self.protocol,
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
            out = _packed(self._eager(*zeros, **kwargs))
            return ak.Array(out.layout.to_typetracer(forget_length=True))
        prepared = self.prepare_awkward(*args, **kwargs)
        wanted: list[str] | None = None
        if isinstance(prepared, tuple):  # coffea: (args, kwargs) of numpy_call
            self._coffea_style = True
            np_args, np_kwargs = prepared
            call = dict(zip(("output_list", "input_dict"), np_args, strict=False), **np_kwargs)
            wanted, prepared = list(call["output_list"]), call["input_dict"]
        inputs: dict[str, np.ndarray] = {}
        for name, value in prepared.items():
            try:
                inputs[name] = value if isinstance(value, np.ndarray) else ak.to_numpy(value)
            except ValueError as err:
                raise InputError(
                    f"input '{name}' is not regular after prepare_awkward: {err}; pad or "
                    "flatten it to the model's shape there"
                ) from None
        outputs = _run(self._infer_with_backoff(inputs))
        if wanted is not None:
            outputs = {k: ak.from_numpy(outputs[k]) for k in wanted}
        return self.postprocess_awkward(outputs, *args, **kwargs)

    def _parts(self, inputs: dict[str, np.ndarray]) -> list[dict[str, np.ndarray]]:
        rows = len(next(iter(inputs.values()))) if inputs else 0
        if self.batch_size <= 0 or rows <= self.batch_size:
            return [inputs]
        return [{k: v[i : i + self.batch_size] for k, v in inputs.items()}
                for i in range(0, rows, self.batch_size)]  # fmt: skip

    async def _infer_with_backoff(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            parts = await asyncio.gather(*(self._part(p) for p in self._parts(inputs)))
        finally:
            await self.client.close_async()  # this call's event loop ends with it
        if len(parts) == 1:
            return parts[0]
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    async def _part(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        delay = self.backoff_s
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

    def _dask_call(self, *args: Any, **kwargs: Any) -> Any:
        import awkward as ak
        import dask_awkward as dak

        metas = [a._meta if _is_dask(a) else a for a in args]
        zeros = [ak.typetracer.length_zero_if_typetracer(m) for m in metas]
        sample = self._eager(*zeros, **kwargs)
        meta = _packed(sample).layout.to_typetracer(forget_length=True)
        result = dak.map_partitions(self._eager_packed, *args, meta=ak.Array(meta), **kwargs)
        # A coffea-style answer is a dict of arrays: one dask-awkward array per output.
        return {k: result[k] for k in sample} if isinstance(sample, dict) else result

    def _eager_packed(self, *args: Any, **kwargs: Any) -> Any:
        """One partition's answer as one awkward array, which dask-awkward needs."""
        return _packed(self._eager(*args, **kwargs))


def _packed(answer: Any) -> Any:
    """An answer as one awkward array: a dict of arrays (coffea's form) as a record array."""
    import awkward as ak

    return ak.zip(answer, depth_limit=1) if isinstance(answer, dict) else ak.Array(answer)


def _run(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run ``coro`` to the end: here, or, inside a running event loop (a Jupyter cell, where
    ``asyncio.run`` refuses), on a thread of its own."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


def _is_dask(obj: Any) -> bool:
    return type(obj).__module__.startswith("dask_awkward")
