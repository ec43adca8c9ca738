"""One server as the client sees it: its tritonclient clients, TLS and token, shared memory.

tritonclient's HTTP clients run on gevent and must stay on one thread, and its asyncio clients
belong to one event loop, so an endpoint keeps one client per thread (HTTP) or per loop
(asyncio); the gRPC client is thread-safe and shared.  Every client carries a deadline
(``timeout_s``): tritonclient's HTTP clients take it only at construction.
"""

from __future__ import annotations

import asyncio
import importlib
import threading
from dataclasses import dataclass, field
from typing import Any

from sonic.client.servers import Server
from sonic.client.shm import ShmPool

#: The deadline of a control call (health, metadata, statistics) when the client has no
#: ``timeout``: a server that stops answering (a network partition) must not hold a job.
CONTROL_TIMEOUT_S = 10.0


@dataclass(slots=True)
class Endpoint:
    server: Server
    protocol: str
    failures: int = 0
    models: set[str] = field(default_factory=set)
    _sync: dict[int, Any] = field(default_factory=dict)
    _aio: dict[int, Any] = field(default_factory=dict)
    #: None: not decided yet; False: inputs go on the wire.
    shm: ShmPool | bool | None = None
    #: How long any one call may wait on this server (the client's ``timeout``, or
    #: CONTROL_TIMEOUT_S): tritonclient's HTTP clients take it at construction only.
    timeout_s: float = CONTROL_TIMEOUT_S

    def module(self, aio: bool = False) -> Any:
        name = f"tritonclient.{self.protocol}" + (".aio" if aio else "")
        return importlib.import_module(name)

    def sync(self) -> Any:
        # tritonclient.http runs on gevent, whose clients must stay on one thread;
        # the gRPC client is thread-safe and shared.
        key = threading.get_ident() if self.protocol == "http" else 0
        client = self._sync.get(key)
        if client is None:
            limits = {}
            if self.protocol == "http":
                limits = {"connection_timeout": self.timeout_s, "network_timeout": self.timeout_s}
            client = self._sync[key] = self.module().InferenceServerClient(
                self.server.url, **limits, **self._ssl()
            )
        return client

    def aio(self) -> Any:
        loop = id(asyncio.get_running_loop())
        if loop not in self._aio:
            limits = {"conn_timeout": self.timeout_s} if self.protocol == "http" else {}
            self._aio[loop] = self.module(True).InferenceServerClient(
                self.server.url, **limits, **self._ssl(aio=True)
            )
        return self._aio[loop]

    async def close_aio(self) -> None:
        """Close this event loop's client (before the loop ends, e.g. in asyncio.run)."""
        client = self._aio.pop(id(asyncio.get_running_loop()), None)
        if client is not None:
            await client.close()

    def _ssl(self, aio: bool = False) -> dict[str, Any]:
        """tritonclient's TLS arguments, which differ by protocol and by sync/asyncio."""
        sv = self.server
        if not sv.ssl:
            return {}
        if self.protocol == "grpc":
            kwargs: dict[str, Any] = {"ssl": True}
            for key in ("root_certificates", "private_key", "certificate_chain"):
                if getattr(sv, key):
                    kwargs[key] = getattr(sv, key)
            return kwargs
        if not (sv.root_certificates or sv.certificate_chain):
            return {"ssl": True}
        if aio:  # aiohttp takes an SSL context, geventhttpclient a dict of options
            import ssl

            ctx = ssl.create_default_context(cafile=sv.root_certificates or None)
            if sv.certificate_chain:
                ctx.load_cert_chain(sv.certificate_chain, sv.private_key or None)
            return {"ssl": True, "ssl_context": ctx}
        options = {"ca_certs": sv.root_certificates, "certfile": sv.certificate_chain,
                   "keyfile": sv.private_key}  # fmt: skip
        return {"ssl": True, "ssl_options": {k: v for k, v in options.items() if v}}

    def headers(self) -> dict[str, str] | None:
        return {"authorization": f"Bearer {self.server.token}"} if self.server.token else None

    def close(self) -> None:
        if isinstance(self.shm, ShmPool):
            self.shm.close()
            self.shm = None
        for client in self._sync.values():
            client.close()
        self._sync.clear()
