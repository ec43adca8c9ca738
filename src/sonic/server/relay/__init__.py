"""gRPC front-end processes that relay raw messages to the data plane (``--grpc-frontends N``).

Why: in one process the event-loop thread does everything, and at concurrency
a third to a half of its time goes to ``grpc.aio``'s own per-call work (py-spy:
55% at concurrency 8), while the node's other core idles.  With
``--grpc-frontends N`` the server process keeps the data plane (decoding,
batching, models, statistics, HTTP, metrics, model control) and N child
processes serve the gRPC port (``SO_REUSEPORT`` when N > 1).  A front end never
parses a message: it hands the request's bytes and the method's number to the
server over a private Unix socket and returns the bytes that come back, so the
two halves of each request's CPU run on two cores
(``benchmarks/server_vs_triton.py`` measures the effect; the README has it).
Only the server process busy-polls (``--busy-poll-us``): with the front ends
polling as well, two spinning loops took the client's core on the two-core VM
(ad hoc, concurrency 1: 1130-1300 instead of 1640 requests/s).

Every method of ``inference.GRPCInferenceService`` and ``grpc.health.v1.Health``
is relayed, streams included; the server calls the same servicer objects as
the in-process gRPC server (:func:`sonic.server.frontends.grpc_servicers.servicers`), so
errors, status codes and messages are identical.  A client's cancellation
cancels the call in the server.  A front end that dies is restarted; a front end
whose server is gone fails its calls with UNAVAILABLE and exits.

- :mod:`~sonic.server.relay.hub`: the server's end (the Unix socket, starting and restarting
  the front ends);
- :mod:`~sonic.server.relay.frontend`: the front-end process (``python -m
  sonic.server.relay.frontend``).

The frames and the server's side of them are in :mod:`sonic.server.frontends.grpc_frames`,
shared with the native transport.
"""
