"""gRPC keepalive and HTTP/2 ping policy with tritonserver's flags, read from the wire on both
transports: a raw HTTP/2 connection pings the server, or waits for its pings."""

from __future__ import annotations

import socket
import struct
import time
from pathlib import Path

import pytest

from sonic.launcher import LocalServer
from sonic.zoo.examples import mlp_model, write_model

PING, GOAWAY = 0x6, 0x7
ACK = 0x1
ENHANCE_YOUR_CALM = 0xB
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("keepalive")
    write_model(mlp_model(), root, "mlp")
    return root


def _frames(buf: bytes) -> list[tuple[int, int, bytes]]:
    out = []
    while len(buf) >= 9:
        length = int.from_bytes(buf[:3], "big")
        out.append((buf[3], buf[4], buf[9 : 9 + length]))
        buf = buf[9 + length :]
    return out


def _ping(payload: bytes = b"sonic-ka") -> bytes:
    return struct.pack(">I", 8)[1:] + bytes([PING, 0]) + b"\x00\x00\x00\x00" + payload


def _session(port: int, pings: int, wait_s: float) -> list[tuple[int, int, bytes]]:
    """Open a connection with no call on it, send ``pings`` pings 20 ms apart, then listen."""
    buf = b""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(PREFACE)
        for _ in range(pings):
            try:
                s.sendall(_ping())
            except OSError:
                break
            time.sleep(0.02)
        s.settimeout(0.2)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            try:
                data = s.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                break
            if not data:
                break
            buf += data
    return _frames(buf)


@pytest.mark.parametrize("transport", ["native", "python"])
def test_pings_without_calls_are_refused_by_default(repo: Path, transport: str) -> None:
    """Triton's defaults: pings without data at most every 5 minutes, 2 strikes."""
    with LocalServer(repo, f"--grpc-transport={transport}") as server:
        frames = _session(server.grpc_port, pings=6, wait_s=1.0)
    goaways = [p for kind, _, p in frames if kind == GOAWAY]
    assert goaways, frames
    assert struct.unpack(">II", goaways[0][:8])[1] == ENHANCE_YOUR_CALM
    assert b"too_many_pings" in goaways[0][8:]


@pytest.mark.parametrize("transport", ["native", "python"])
def test_the_flags_allow_pings_and_make_the_server_ping(repo: Path, transport: str) -> None:
    with LocalServer(repo, f"--grpc-transport={transport}",
                     "--grpc-keepalive-permit-without-calls=true",
                     "--grpc-http2-min-recv-ping-interval-without-data=0",
                     "--grpc-http2-max-ping-strikes=0", "--grpc-keepalive-time=300",
                     "--grpc-http2-max-pings-without-data=0") as server:  # fmt: skip
        frames = _session(server.grpc_port, pings=6, wait_s=1.5)
    assert not [f for f in frames if f[0] == GOAWAY], frames
    acks = [p for kind, flags, p in frames if kind == PING and flags & ACK]
    assert acks.count(b"sonic-ka") == 6
    # The server's own keepalive pings on the idle connection (every 300 ms).
    assert [p for kind, flags, p in frames if kind == PING and not flags & ACK]
