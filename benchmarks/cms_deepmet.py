"""CMS's own DeepMET model directory, served unchanged, against TensorFlow run directly.

CMS publishes DeepMET as a Triton model directory (``cms-data``
RecoMET/METPUSubtraction, folder ``models/deepmet``): a TensorFlow graphdef in three
versions with MD5 checksum agents and named symlinks beside the versions.  This
serves that directory as it is and checks, for every version, that it is READY
and that its outputs on DeepMET-like events (1,000 candidates zero-padded to
4,500, categorical inputs as FP32 class indices) equal TensorFlow's on the same
graph; then it times the served model against TensorFlow in-process.  The
model is CMS's work and is not in this repository: give its path::

    .venv/bin/python benchmarks/cms_deepmet.py /path/to/cms-data/.../models/deepmet

It prints a markdown table and writes ``benchmarks/results/cms_deepmet.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tensorflow as tf
import tritonclient.grpc as grpcclient

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from sonic.launcher import LocalServer  # noqa: E402

N_PF = 4500


def events(rng: np.random.Generator, batch: int, n: int = 1000) -> dict[str, np.ndarray]:
    x = np.zeros((batch, N_PF, 8), np.float32)
    x[:, :n] = rng.standard_normal((batch, n, 8)) * 0.5
    feeds = {"input": x}
    for i, classes in enumerate((3, 11, 4)):  # charge, pdgId, fromPV classes as CMSSW encodes
        cat = np.zeros((batch, N_PF, 1), np.float32)
        cat[:, :n, 0] = rng.integers(0, classes, (batch, n))
        feeds[f"input_cat{i}"] = cat
    return feeds


def tf_session(graph_file: Path) -> tf.compat.v1.Session:
    graph_def = tf.compat.v1.GraphDef()
    graph_def.ParseFromString(graph_file.read_bytes())
    graph = tf.Graph()
    with graph.as_default():
        tf.graph_util.import_graph_def(graph_def, name="")
    return tf.compat.v1.Session(graph=graph)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model_dir", type=Path, help="CMS's deepmet model directory")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--out", type=Path,
                    default=ROOT / "benchmarks" / "results" / "cms_deepmet.json")  # fmt: skip
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    feeds = events(rng, args.batch)
    fetch = {f"{k}:0": v for k, v in feeds.items()}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp)
        (repo / "deepmet").symlink_to(args.model_dir.resolve())  # served as it is, not copied
        with LocalServer(repo) as server:
            client = grpcclient.InferenceServerClient(server.grpc_url)
            index = {m.version: m.state for m in client.get_model_repository_index().models}
            inputs = []
            for name, value in feeds.items():
                t = grpcclient.InferInput(name, list(value.shape), "FP32")
                t.set_data_from_numpy(value)
                inputs.append(t)
            for version in sorted(index, key=int):
                session = tf_session(args.model_dir / version / "model.graphdef")
                want = session.run("output/BiasAdd:0", fetch)
                got = client.infer("deepmet", inputs, model_version=version)
                diff = float(np.abs(got.as_numpy("output/BiasAdd") - want).max())
                timings = {}
                for label, call in (
                    ("served", lambda v=version: client.infer("deepmet", inputs, model_version=v)),
                    ("tensorflow", lambda s=session: s.run("output/BiasAdd:0", fetch)),
                ):
                    n, t0 = 0, time.perf_counter()
                    while time.perf_counter() - t0 < args.seconds:
                        call()
                        n += 1
                    timings[label] = n * args.batch / (time.perf_counter() - t0)
                rows.append({"version": version, "state": index[version], "max_abs_diff": diff,
                             "served_events_per_s": timings["served"],
                             "tensorflow_events_per_s": timings["tensorflow"]})  # fmt: skip
    print(f"| version | state | max abs diff served vs TF | events/s served | events/s TF "
          f"in-process (batch {args.batch}) |\n|---|---|---|---|---|")  # fmt: skip
    for r in rows:
        print(f"| {r['version']} | {r['state']} | {r['max_abs_diff']:g} | "
              f"{r['served_events_per_s']:.0f} | {r['tensorflow_events_per_s']:.0f} |")
    args.out.write_text(json.dumps({"tensorflow": tf.__version__, "batch": args.batch,
                                    "rows": rows}, indent=1) + "\n")  # fmt: skip


if __name__ == "__main__":
    main()
