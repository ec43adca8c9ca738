"""The server's front ends: wire formats in, :class:`~sonic.server.dataplane.DataPlane` calls out.

- :mod:`~sonic.server.frontends.grpc_servicers`: every gRPC method, for all transports.
- Transports of the gRPC bytes: :mod:`~sonic.server.frontends.grpc_native` (grpc++, the
  default), :mod:`~sonic.server.frontends.grpc_aio` (grpcio, the fallback) and the relay
  (:mod:`sonic.server.relay`); :mod:`~sonic.server.frontends.grpc_frames` is what the native
  transport and the relay hand the servicers.
- :mod:`~sonic.server.frontends.http` and :mod:`~sonic.server.frontends.http_limits`:
  HTTP/REST on starlette and uvicorn, with the header limits uvicorn lacks.
- :mod:`~sonic.server.frontends.auth`: tokens and JWTs, checked before a message is read.
- :mod:`~sonic.server.frontends.busypoll`: keeping the event loop awake between requests.
"""
