"""Names from requests never reach files outside the repository or the allowed regions."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from multiprocessing import shared_memory
from pathlib import Path

import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from sonic.launcher import LocalServer
from sonic.zoo.examples import mlp_model, write_model

CONFIG = ('{"name": "x", "platform": "onnxruntime_onnx", "max_batch_size": 4, "input": [{"name": '
          '"input", "data_type": "TYPE_FP32", "dims": [64]}], "output": [{"name": "output", '
          '"data_type": "TYPE_FP32", "dims": [2]}]}')  # fmt: skip


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    repo = tmp_path_factory.mktemp("names")
    write_model(mlp_model(), repo, "mlp")
    with LocalServer(repo, "--model-control-mode=explicit", "--load-model=*",
                     "--allow-client-shm=true", "--client-shm-key-prefix=sonic_") as s:  # fmt: skip
        yield s


def test_model_names_are_never_paths(server: LocalServer, tmp_path: Path) -> None:
    g = grpcclient.InferenceServerClient(server.grpc_url)
    onnx_bytes = mlp_model().SerializeToString()
    target = tmp_path / "escaped"
    for name in ("../escaped", str(target), "a/b", "..", ".hidden", "x\\y"):
        with pytest.raises(InferenceServerException) as info:
            g.load_model(name, config=CONFIG, files={"file:1/model.onnx": onnx_bytes})
        assert info.value.status() == "StatusCode.INVALID_ARGUMENT", name
        assert "invalid model name" in info.value.message()
    assert not target.exists()
    # File parameters may not climb out of the model directory either.
    with pytest.raises(InferenceServerException) as info:
        g.load_model("fine", config=CONFIG, files={"file:../../1/model.onnx": onnx_bytes})
    assert "relative path inside the model directory" in info.value.message()
    # An unknown name is NOT_FOUND and leaves no trace in the index.
    with pytest.raises(InferenceServerException) as info:
        g.load_model("no_such_model")
    assert info.value.status() == "StatusCode.NOT_FOUND"
    names = {m["name"] for m in g.get_model_repository_index(as_json=True)["models"]}
    assert names == {"mlp"}
    h = httpclient.InferenceServerClient(server.http_url)
    for path in ("..%2F..%2Fetc%2Fpasswd", "%2Fetc%2Fpasswd"):
        with pytest.raises(InferenceServerException) as info:
            h.get_model_metadata(path)
        assert info.value.status() in ("400", "404")


def test_shared_memory_keys_stay_in_the_allowed_regions(server: LocalServer) -> None:
    g = grpcclient.InferenceServerClient(server.grpc_url)
    link = f"sonic_link_{uuid.uuid4().hex[:8]}"
    os.symlink("/etc/hostname", f"/dev/shm/{link}")
    own = shared_memory.SharedMemory(f"sonic_ok_{uuid.uuid4().hex[:8]}", create=True, size=64)
    other = shared_memory.SharedMemory(f"other_{uuid.uuid4().hex[:8]}", create=True, size=64)
    try:
        refused = {
            "/../../etc/passwd": "directly under /dev/shm",
            "etc/passwd": "directly under /dev/shm",
            f"/{link}": "unable to open",
            f"/{other.name}": "--client-shm-key-prefix",
        }
        for key, words in refused.items():
            with pytest.raises(InferenceServerException) as info:
                g.register_system_shared_memory("r", key, 64)
            assert info.value.status() == "StatusCode.INVALID_ARGUMENT", key
            assert words in info.value.message(), (key, info.value.message())
        g.register_system_shared_memory("r", f"/{own.name}", 64)
        assert g.get_system_shared_memory_status(as_json=True)["regions"]["r"]["byte_size"] == "64"
        g.unregister_system_shared_memory("r")
    finally:
        os.unlink(f"/dev/shm/{link}")
        for region in (own, other):
            region.close()
            region.unlink()
