"""Real NVIDIA Triton for tests and benchmarks: the tritonserver that nvidia-pytriton ships.

``scripts/setup_triton.sh`` installs nvidia-pytriton into its own venv
(``tools/triton-venv``); :class:`TritonServer` starts that ``tritonserver`` the
way :class:`~sonic.launcher.LocalServer` starts ``sonic serve`` (free loopback
ports, readiness polled, a clean stop), so a test or benchmark can put the two
side by side with the same client code.
"""

from __future__ import annotations

import contextlib
import subprocess
from pathlib import Path

import psutil

from sonic.launcher import LocalServer

TRITON_VENV = Path(__file__).resolve().parents[3] / "tools" / "triton-venv"

TRITON_ONNX_MODEL = Path(__file__).resolve().parents[1] / "resources" / "triton_onnx_model.py"


def triton_home(venv: Path = TRITON_VENV) -> tuple[Path, str]:
    """tritonserver's directory in the nvidia-pytriton venv, and that venv's site-packages."""
    probe = ("import pytriton, onnxruntime, os; "
             "print(os.path.join(os.path.dirname(pytriton.__file__), 'tritonserver')); "
             "print(os.path.dirname(os.path.dirname(onnxruntime.__file__)))")  # fmt: skip
    out = subprocess.run([str(venv / "bin" / "python"), "-c", probe], capture_output=True,
                         text=True, check=True)  # fmt: skip
    home, site = out.stdout.split()
    return Path(home), site


def write_triton_onnx_model(repo: Path, name: str, onnx_bytes: bytes, config: str) -> Path:
    """A python-backend model for real Triton that runs ``onnx_bytes`` with onnxruntime.

    The pytriton build of tritonserver has only the python backend; this is how
    the same ONNX model is served by real Triton in the tests and benchmarks.
    """
    _, site = triton_home()
    vdir = repo / name / "1"
    vdir.mkdir(parents=True, exist_ok=True)
    (vdir / "model.onnx").write_bytes(onnx_bytes)
    # The stub does not inherit PYTHONPATH: put onnxruntime's site-packages on sys.path.
    prologue = f"import sys\nsys.path.insert(0, {site!r})\n"
    (vdir / "model.py").write_text(prologue + TRITON_ONNX_MODEL.read_text())
    (repo / name / "config.pbtxt").write_text(f'name: "{name}"\nbackend: "python"\n' + config)
    return repo / name


class TritonServer(LocalServer):
    """Real NVIDIA ``tritonserver`` (from nvidia-pytriton, set up by scripts/setup_triton.sh)."""

    def __init__(self, model_repositories: list[Path] | Path, *extra_args: str,
                 host: str = "127.0.0.1") -> None:  # fmt: skip
        home, _ = triton_home()
        super().__init__(model_repositories, *extra_args, host=host,
                         command=[str(home / "bin" / "tritonserver"),
                                  f"--backend-directory={home / 'backends'}"])  # fmt: skip

    def kill(self) -> None:
        """SIGKILL tritonserver and its python-backend stubs, as a crash of the whole server would:
        a stub whose server was killed alone keeps running, orphaned."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(psutil.Error):
                for child in psutil.Process(self.proc.pid).children(recursive=True):
                    child.kill()
        super().kill()

    def args(self) -> list[str]:
        args = [*self.command]
        args += [f"--model-repository={r}" for r in self.repos]
        args += [f"--http-port={self.http_port}", f"--grpc-port={self.grpc_port}",
                 f"--metrics-port={self.metrics_port}", f"--http-address={self.host}",
                 f"--grpc-address={self.host}", *self.extra_args]  # fmt: skip
        return args
