"""The native gRPC transport (sonic.server.grpc_native): selection, the start-up log, and what
an operator sees where it is not built."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import tritonclient.grpc as grpcclient

from sonic.launcher import LocalServer
from sonic.repository.examples import mlp_model, write_model

MISSING = "import sys; sys.modules['sonic.server._grpc_native'] = None; "


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("native")
    write_model(mlp_model(), root, "mlp")
    return root


@pytest.mark.parametrize("transport", ["native", "python"])
def test_the_log_says_which_transport_serves(repo: Path, transport: str) -> None:
    with LocalServer(repo, f"--grpc-transport={transport}") as server:
        assert grpcclient.InferenceServerClient(server.grpc_url).is_server_ready()
        words = "native transport, grpc++" if transport == "native" else "python transport"
        assert words in server.log()
        assert "Unknown experiment" not in server.log()  # grpcio's setting kept from grpc++


def test_native_is_the_default_where_it_is_built(repo: Path) -> None:
    with LocalServer(repo, env={"PATH": "/usr/bin:/bin"}) as server:
        assert "(native transport, grpc++)" in server.log()


def _serve(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    code = (MISSING + "from sonic.cli import main; "
            f"main(['serve', '--model-repository={repo}', '--http-port=0', '--grpc-port=0', "
            f"'--metrics-port=0', '--allow-http=false', '--allow-metrics=false', "
            + "".join(f"'{a}', " for a in args) + "])")  # fmt: skip
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)  # fmt: skip


def test_asking_for_native_where_it_is_not_built_fails_clearly(repo: Path) -> None:
    run = _serve(repo, "--grpc-transport=native")
    assert run.returncode == 2, run.stderr
    assert "the native gRPC transport is not built: run 'make setup'" in run.stderr
    assert "--grpc-transport python" in run.stderr


def test_without_the_extension_the_default_is_python() -> None:
    code = MISSING + "from sonic.server.grpc_native import default_transport as d; print(d())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "python", out.stderr
