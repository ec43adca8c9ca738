"""The gRPC port's HTTP/2 flow control: a static 16 MiB window unless BDP probing is asked for.

Read from the wire: the server's first SETTINGS frame and connection WINDOW_UPDATE, after a
raw HTTP/2 preface, so what is checked is what a client really gets.
"""

from __future__ import annotations

import socket
import struct
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from sonic.launcher import LocalServer
from sonic.server.frontends.grpc_aio import STATIC_WINDOW_BYTES
from sonic.zoo.examples import identity_model, write_model

SETTINGS, WINDOW_UPDATE = 0x4, 0x8
INITIAL_WINDOW_SIZE = 0x4
HTTP2_DEFAULT_WINDOW = 65_535


def _handshake(port: int) -> tuple[dict[int, int], int]:
    """The server's SETTINGS and the connection-level window it grants (HTTP/2 frames)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        s.settimeout(1.0)
        buf = b""
        try:
            while len(buf) < 256:
                data = s.recv(4096)
                if not data:
                    break
                buf += data
        except TimeoutError:
            pass
    settings: dict[int, int] = {}
    window = HTTP2_DEFAULT_WINDOW
    while len(buf) >= 9:
        length = int.from_bytes(buf[:3], "big")
        kind, flags, stream = buf[3], buf[4], int.from_bytes(buf[5:9], "big") & 0x7FFFFFFF
        payload, buf = buf[9 : 9 + length], buf[9 + length :]
        if kind == SETTINGS and not flags & 0x1:
            for i in range(0, len(payload), 6):
                key, value = struct.unpack(">HI", payload[i : i + 6])
                settings[key] = value
        elif kind == WINDOW_UPDATE and stream == 0:
            window += int.from_bytes(payload, "big") & 0x7FFFFFFF
    return settings, window


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("repo")
    write_model(identity_model("FP32"), root, "identity",
                config='name: "identity"\nplatform: "onnxruntime_onnx"\nmax_batch_size: 0\n'
                       'input [{name: "INPUT0", data_type: TYPE_FP32, dims: [-1, -1]}]\n'
                       'output [{name: "OUTPUT0", data_type: TYPE_FP32, dims: [-1, -1]}]\n')
    return root


@pytest.mark.parametrize("transport", ["native", "python"])
def test_static_window_by_default(repo: Path, transport: str) -> None:
    with LocalServer(repo, f"--grpc-transport={transport}") as server:
        settings, window = _handshake(server.grpc_port)
        # A large request is served through it (32 MiB, twice the window).
        client = grpcclient.InferenceServerClient(server.grpc_url)
        x = np.random.default_rng(0).random((8192, 1024), dtype=np.float32)
        inp = grpcclient.InferInput("INPUT0", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        out = client.infer("identity", [inp]).as_numpy("OUTPUT0")
        client.close()
    assert settings[INITIAL_WINDOW_SIZE] == STATIC_WINDOW_BYTES
    # grpcio grants the connection its window in the handshake; grpc++ 1.51 (the native
    # transport) once the first data arrives.
    assert window >= STATIC_WINDOW_BYTES if transport == "python" else window > 0
    assert out is not None and np.array_equal(out, x)


@pytest.mark.parametrize("transport", ["native", "python"])
def test_bdp_probe_on_request(repo: Path, transport: str) -> None:
    with LocalServer(repo, "--grpc-http2-bdp-probe=true",
                     f"--grpc-transport={transport}") as server:  # fmt: skip
        settings, _ = _handshake(server.grpc_port)
    # grpc's own choice (4 MiB in grpcio 1.85), not the static window
    assert settings[INITIAL_WINDOW_SIZE] != STATIC_WINDOW_BYTES
