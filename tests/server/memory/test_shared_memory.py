"""System shared memory with tritonclient.utils.shared_memory and perf_analyzer."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
import tritonclient.utils.shared_memory as shm
from tritonclient.utils import InferenceServerException

from sonic.launcher import LocalServer
from tests.fixtures.perf_analyzer import perf_analyzer_path


@pytest.fixture(scope="module")
def shm_server(model_repo: Path) -> Iterator[LocalServer]:
    with LocalServer(model_repo, "--allow-client-shm=true") as srv:
        yield srv


@pytest.mark.parametrize("mod", [grpcclient, httpclient], ids=["grpc", "http"])
def test_inputs_and_outputs_through_shared_memory(shm_server: LocalServer, mod: Any) -> None:
    url = shm_server.grpc_url if mod is grpcclient else shm_server.http_url
    client = mod.InferenceServerClient(url)
    tag = f"{mod.__name__.split('.')[-1]}_{os.getpid()}"
    a = np.arange(32, dtype=np.int32).reshape(2, 16)
    b = np.full((2, 16), 3, dtype=np.int32)
    size = a.nbytes
    ins = shm.create_shared_memory_region(f"in_{tag}", f"/sonic_in_{tag}", 2 * size)
    outs = shm.create_shared_memory_region(f"out_{tag}", f"/sonic_out_{tag}", 2 * size)
    try:
        shm.set_shared_memory_region(ins, [a, b])
        client.unregister_system_shared_memory()
        client.register_system_shared_memory(f"in_{tag}", f"/sonic_in_{tag}", 2 * size)
        client.register_system_shared_memory(f"out_{tag}", f"/sonic_out_{tag}", 2 * size)
        status = client.get_system_shared_memory_status()
        names = {r["name"] for r in (status if isinstance(status, list) else [])} or set(
            status.regions
        )
        assert {f"in_{tag}", f"out_{tag}"} <= names

        inputs = [mod.InferInput("INPUT0", [2, 16], "INT32"),
                  mod.InferInput("INPUT1", [2, 16], "INT32")]  # fmt: skip
        inputs[0].set_shared_memory(f"in_{tag}", size)
        inputs[1].set_shared_memory(f"in_{tag}", size, offset=size)
        outputs = [mod.InferRequestedOutput("OUTPUT0"), mod.InferRequestedOutput("OUTPUT1")]
        outputs[0].set_shared_memory(f"out_{tag}", size)
        outputs[1].set_shared_memory(f"out_{tag}", size, offset=size)
        result = client.infer("simple", inputs, outputs=outputs)
        out0 = result.get_output("OUTPUT0")
        shape = list(out0["shape"] if isinstance(out0, dict) else out0.shape)
        assert shape == [2, 16]
        got0 = shm.get_contents_as_numpy(outs, np.int32, [2, 16])
        got1 = shm.get_contents_as_numpy(outs, np.int32, [2, 16], offset=size)
        np.testing.assert_array_equal(got0, a + b)
        np.testing.assert_array_equal(got1, a - b)

        # An output region too small is refused with the sizes.
        small = mod.InferRequestedOutput("OUTPUT0")
        small.set_shared_memory(f"out_{tag}", 16)
        with pytest.raises(InferenceServerException) as info:
            client.infer("simple", inputs, outputs=[small])
        assert "at least 128 bytes" in info.value.message()
        with pytest.raises(InferenceServerException) as info:
            client.register_system_shared_memory(f"in_{tag}", f"/sonic_in_{tag}", size)
        assert "already registered" in info.value.message()
        with pytest.raises(InferenceServerException) as info:
            client.register_system_shared_memory("evil", "/../etc/passwd", 16)
        assert "directly under /dev/shm" in info.value.message()
        client.unregister_system_shared_memory(f"in_{tag}")
        with pytest.raises(InferenceServerException) as info:
            client.infer("simple", inputs)
        assert f"in_{tag}" in info.value.message()
    finally:
        client.unregister_system_shared_memory()
        shm.destroy_shared_memory_region(ins)
        shm.destroy_shared_memory_region(outs)


def test_registration_is_off_by_default(server: LocalServer) -> None:
    client = grpcclient.InferenceServerClient(server.grpc_url)
    region = shm.create_shared_memory_region("off", f"/sonic_off_{os.getpid()}", 64)
    try:
        with pytest.raises(InferenceServerException) as info:
            client.register_system_shared_memory("off", f"/sonic_off_{os.getpid()}", 64)
        assert "--allow-client-shm=true" in info.value.message()
    finally:
        shm.destroy_shared_memory_region(region)


@pytest.mark.perf_analyzer
@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_perf_analyzer_system_shared_memory(shm_server: LocalServer, protocol: str) -> None:
    url = shm_server.grpc_url if protocol == "grpc" else shm_server.http_url
    proc = subprocess.run(
        [perf_analyzer_path(), "-m", "mlp", "-u", url, "-i", protocol, "--shared-memory", "system",
         "--output-shared-memory-size", "4096", "-b", "4", "-p", "400", "-s", "50", "-r", "20"],
        capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Throughput" in proc.stdout and "Server:" in proc.stdout
