"""Container recipes (no image is built here: this machine runs no Docker engine or Apptainer).

What can be checked without building: every file they copy exists, they run as a non-root user,
they start ``sonic``, and the image the manifests name is the one the Dockerfiles say they build.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CONTAINERS = ROOT / "deploy" / "containers"


@pytest.mark.parametrize("name", ["Dockerfile.cpu", "Dockerfile.cuda"])
def test_dockerfiles(name: str) -> None:
    text = (CONTAINERS / name).read_text()
    for src in re.findall(r"^COPY (?!--from)(.+?) \S+$", text, re.M):
        for path in src.split():
            assert (ROOT / path).exists(), f"{name} copies {path}, which does not exist"
    assert re.search(r"^USER 1000$", text, re.M)
    assert 'ENTRYPOINT ["sonic"]' in text
    # The native gRPC transport is built into the image and imported once as a check.
    assert "cmake -S native/grpc_transport" in text
    assert 'python -c "import sonic.server.frontends._grpc_native"' in text
    tag = "0.1.0-cpu" if name.endswith("cpu") else "0.1.0-cuda"
    assert f"sonic-inference:{tag}" in text
    overlay = "cpu" if name.endswith("cpu") else "gpu"
    assert f"newTag: {tag}" in (ROOT / "deploy" / "k8s" / "overlays" / overlay /
                                "kustomization.yaml").read_text()  # fmt: skip


def test_apptainer_definition() -> None:
    text = (CONTAINERS / "sonic.def").read_text()
    assert text.count("Bootstrap: docker") == 1
    files = text.split("%files", 1)[1].split("%post", 1)[0]
    for line in filter(None, (ln.strip() for ln in files.splitlines())):
        assert (ROOT / line.split()[0]).exists(), line
    for section in ("%post", "%runscript", "%startscript", "%test"):
        assert section in text
    assert "cmake -S /src/native/grpc_transport" in text
    assert 'exec sonic "$@"' in text
