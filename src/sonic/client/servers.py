"""Servers a job may use: addresses, or a file of named servers, as CMSSW's TritonService has.

A server file is JSON: ``{"servers": [{"name": "purdue", "address": "host", "port": 8001,
"useSsl": false, "rootCertificates": "", "privateKey": "", "certificateChain": "",
"token": ""}]}`` (CMSSW's key names; the key and chain are a client certificate for
servers that require mutual TLS).
``SONIC_LOCAL_BALANCER_HOST``/``_PORT`` add the site's local balancer, as in CMSSW.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Server:
    name: str
    url: str  # host:port
    ssl: bool = False
    root_certificates: str = ""
    token: str = ""
    #: Client certificate and its key (PEM paths), for servers that require mutual TLS.
    private_key: str = ""
    certificate_chain: str = ""

    @classmethod
    def parse(cls, spec: str | Server) -> Server:
        """``host:port`` (or a Server) -> Server named after its address."""
        if isinstance(spec, Server):
            return spec
        host, sep, port = spec.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError(f"server address must look like 'host:port', got {spec!r}")
        return cls(name=spec, url=spec)


def load_servers(path: Path) -> list[Server]:
    """Named servers from a JSON file in CMSSW's terms; duplicate names are refused."""
    data = json.loads(Path(path).read_text())
    servers: list[Server] = []
    for entry in data.get("servers", []):
        try:
            server = Server(
                name=str(entry["name"]),
                url=f"{entry['address']}:{int(entry['port'])}",
                ssl=bool(entry.get("useSsl", False)),
                root_certificates=str(entry.get("rootCertificates", "")),
                token=str(entry.get("token", "")),
                private_key=str(entry.get("privateKey", "")),
                certificate_chain=str(entry.get("certificateChain", "")),
            )
        except (KeyError, ValueError, TypeError) as err:
            raise ValueError(
                f"{path}: each server needs 'name', 'address' and 'port'; got {entry!r}"
            ) from err
        if any(s.name == server.name for s in servers):
            raise ValueError(f"{path}: server name '{server.name}' appears twice")
        servers.append(server)
    return servers


def environment_servers() -> list[Server]:
    host = os.environ.get("SONIC_LOCAL_BALANCER_HOST")
    port = os.environ.get("SONIC_LOCAL_BALANCER_PORT")
    return [Server("local_balancer", f"{host}:{port}")] if host and port else []
