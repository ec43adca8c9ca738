"""The inference server: Triton's protocol over gRPC and HTTP, in one asyncio process.

Request flow: front end (:mod:`grpc_frontend`, :mod:`http_frontend`) decodes
the wire format -> :class:`~sonic.server.dataplane.DataPlane` -> the model
version (:mod:`model`, validation) -> its scheduler (:mod:`scheduler`) -> a
backend instance on its own thread.  :mod:`manager` and :mod:`loader` own the
model lifecycle, :mod:`statistics` and :mod:`metrics` the numbers, :mod:`app`
the process.  With ``--grpc-frontends N``, :mod:`grpc_relay` serves the gRPC
port from N child processes that pass each call's bytes to this one.
"""
