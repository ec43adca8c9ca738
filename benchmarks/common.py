"""What the benchmark scripts share: a command line whose --help is the script's docstring,
generated samples cached between runs, and DeepMET served to run on their events."""

from __future__ import annotations

import argparse
import contextlib
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

#: CMS's published versions (cms-data RecoMET/METPUSubtraction models/deepmet).
CMS_VERSIONS = {"1": "CMS v1 (resolution, 2018)", "2": "CMS v2 (response, 2018)",
                "3": "CMS v3 (response, 2016)"}  # fmt: skip
#: Where generated samples are kept between runs.
SAMPLES = Path(__file__).resolve().parents[1] / "build" / "bench"


def arguments(doc: str | None) -> argparse.ArgumentParser:
    """An argument parser that prints the script's docstring (how to run it, what it measures)
    as written, line breaks included."""
    return argparse.ArgumentParser(
        description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)


def cached_sample(name: str, events: int, **options: Any) -> Path:
    """``build/bench/v<SAMPLE_VERSION>-<name>-<events>.root``: generated once
    (``sonic.workflow.generate_sample`` with ``options``), reused after; the name must say what
    the options chose, the version which generator made it."""
    from sonic.workflow.generate import SAMPLE_VERSION, generate_sample

    path = SAMPLES / f"v{SAMPLE_VERSION}-{name}-{events}.root"
    if not path.exists():
        print(f"generating {path}", flush=True)
        generate_sample(path, events, **options)
    return path


def serve_deepmet(model_dir: Path, stack: contextlib.ExitStack) -> str:
    """A sonic server (gRPC URL) on a repository holding ``model_dir`` as ``deepmet``, linked
    rather than copied: CMS's published graphdefs stay outside this repository."""
    from sonic.launcher import LocalServer

    repo = Path(stack.enter_context(tempfile.TemporaryDirectory()))
    (repo / "deepmet").symlink_to(model_dir.resolve())
    server = LocalServer(repo).start()
    stack.callback(server.stop)
    return server.grpc_url


def deepmet_met(url: str, versions: dict[str, str], cands: Any,
                chunk: int = 100) -> dict[str, np.ndarray]:  # fmt: skip
    """MET (px, py) per event from each served ``deepmet`` version (version -> label), on
    ``cands``, the ``PFCands_*`` columns of some events; ``chunk`` events per request (the
    configs' max_batch_size)."""
    from sonic.client import Client
    from sonic.workflow.inputs import INPUT_NAMES, OUTPUT_NAME, PF_BRANCHES, build_inputs

    out: dict[str, list[np.ndarray]] = {label: [] for label in versions.values()}
    clients = {v: Client("deepmet", [url], version=v) for v in versions}
    try:
        for lo in range(0, len(cands), chunk):
            part = cands[lo:lo + chunk]
            inputs = build_inputs({b: part[f"PFCands_{b}"] for b in PF_BRANCHES})
            tensors = {k: inputs.tensors[k] for k in INPUT_NAMES}
            for v, client in clients.items():
                out[versions[v]].append(inputs.met(client.infer(tensors)[OUTPUT_NAME]))
    finally:
        for client in clients.values():
            client.close()
    return {label: np.concatenate(m) for label, m in out.items()}
