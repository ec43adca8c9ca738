"""The inference server: Triton's protocol over gRPC and HTTP, in one asyncio process.

Request flow: a front end (:mod:`~sonic.server.frontends`) decodes the wire
format -> :class:`~sonic.server.dataplane.DataPlane` (admission, shared memory
from :mod:`~sonic.server.memory`) -> the model version (:mod:`~sonic.server.model`,
validation) -> its scheduler (:mod:`~sonic.server.scheduling`) -> a backend
instance on its own thread.  :mod:`~sonic.server.manager` and
:mod:`~sonic.server.loader` own the model lifecycle, :mod:`~sonic.server.statistics`
and :mod:`~sonic.server.metrics` the numbers, :mod:`~sonic.server.app` the
process, :mod:`~sonic.server.settings` and :mod:`~sonic.server.flags` its
configuration.  With ``--grpc-frontends N``, :mod:`~sonic.server.relay` serves
the gRPC port from N child processes that pass each call's bytes to this one;
with ``--workers N``, :mod:`~sonic.server.workers` runs N such servers.
"""
