"""Small generated samples, shared by the workflow tests (Pythia runs once per session)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sonic.workflow.generate import generate_sample

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "model_repository"
#: The trained DeepMET of the example repository.
MODEL = EXAMPLES / "deepmet" / "1" / "model.onnx"


@pytest.fixture(scope="session")
def samples(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two files of 24 events each (ttbar and Z->nunu alternating, pileup 5)."""
    root = tmp_path_factory.mktemp("samples")
    kw = {"pileup": 5, "pool_size": 20, "chunk_size": 10}
    return [generate_sample(root / f"sample{i}.root", 24, seed=10 + i, **kw) for i in range(2)]
