"""What the benchmark scripts share: a command line whose --help is the script's docstring,
the benchmark MLP and perf_analyzer's load on it, generated samples cached between runs, and
DeepMET served to run on their events."""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

#: CMS's published versions (cms-data RecoMET/METPUSubtraction models/deepmet).
CMS_VERSIONS = {"1": "CMS v1 (resolution, 2018)", "2": "CMS v2 (response, 2018)",
                "3": "CMS v3 (response, 2016)"}  # fmt: skip
ROOT = Path(__file__).resolve().parents[1]
#: Where generated samples are kept between runs.
SAMPLES = ROOT / "build" / "bench"
#: NVIDIA's perf_analyzer, as ``make setup`` installs it (from the tritonclient wheel).
PERF_ANALYZER = str(ROOT / ".venv" / "bin" / "perf_analyzer")


def arguments(doc: str | None) -> argparse.ArgumentParser:
    """An argument parser that prints the script's docstring (how to run it, what it measures)
    as written, line breaks included."""
    return argparse.ArgumentParser(
        description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)


def write_mlp(repo: Path, config: str | None = None) -> None:
    """The benchmark MLP (``sonic.zoo.examples``) as model ``mlp`` in ``repo``, its config
    ``MLP_BENCHMARK_CONFIG`` unless given, with the name and platform that Triton's repositories
    carry (so both servers read the same file)."""
    from sonic.zoo.examples import MLP_BENCHMARK_CONFIG, mlp_model, write_model

    write_model(mlp_model(), repo, "mlp", config='name: "mlp"\nplatform: "onnxruntime_onnx"\n'
                + (MLP_BENCHMARK_CONFIG if config is None else config))  # fmt: skip


def write_results(path: Path, **fields: Any) -> None:
    """A benchmark's JSON results, the numbers its docs tables quote, and say where they went."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(fields, indent=1))
    print(f"wrote {path}")


def load_options(url: str, window_ms: int, *, batch: int = 1, concurrency: int | None = 1,
                 stability: int = 50, trials: int = 8, report: Path | None = None,
                 extra: Sequence[str] = ()) -> list[str]:  # fmt: skip
    """perf_analyzer's options for one load point on ``mlp`` over gRPC (``sonic perf`` takes
    the same): ``concurrency`` (None: the load is in ``extra``, e.g. a request rate), windows of
    ``window_ms``, stable within ``stability`` per cent over three, at most ``trials`` windows;
    ``report``: the CSV file it writes (:func:`report_row`)."""
    out = ["-m", "mlp", "-u", url, "-i", "grpc", "-b", str(batch)]
    if concurrency is not None:
        out += ["--concurrency-range", str(concurrency)]
    out += ["-p", str(window_ms), "-s", str(stability), "-r", str(trials), *extra]
    return out + (["-f", str(report)] if report is not None else [])


T = TypeVar("T")


def until_stable(run: Callable[[], T], tries: int = 3) -> T:
    """``run()``, one perf_analyzer measurement that raises RuntimeError where perf_analyzer
    found no stable window (on this shared machine it sometimes does not), tried again up to
    ``tries`` times rather than failing the whole benchmark."""
    for _ in range(tries - 1):
        try:
            return run()
        except RuntimeError as err:
            print(f"no stable measurement, trying again: {str(err)[-200:]!r}", file=sys.stderr)
    return run()


def report_row(report: Path) -> dict[str, str]:
    """The load point's numbers from perf_analyzer's CSV report (``-f``): Inferences/Second,
    and latencies in µs ("p50 latency", "p99 latency", "Avg latency")."""
    with report.open() as f:
        return next(csv.DictReader(f))


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
