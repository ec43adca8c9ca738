"""The DeepMET workflow direct (in-process onnxruntime) against as a service (sonic serve).

One sample (Pythia 8 ttbar + Z->nunu, pileup 20; generated once into
``build/bench``), one ``sonic serve`` on loopback with the shipped DeepMET, and
the job run alternately direct and through the SONIC client (gRPC; async, so
the next chunk is read and built while the server infers, and sync; inputs on
the wire, and async with inputs in system shared memory), three times each.
Prints the median events/s, the ratio to direct and the time of each stage
per event, and writes ``benchmarks/results/workflow_direct_vs_service.json``::

    .venv/bin/python benchmarks/workflow_direct_vs_service.py --events 1000 --repeats 3
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import onnxruntime as ort  # noqa: E402
from common import arguments  # noqa: E402  (benchmarks/, the script's own folder)

from sonic.launcher import LocalServer  # noqa: E402
from sonic.workflow.generate import generate_sample  # noqa: E402
from sonic.workflow.runner import STAGES, JobConfig, run_files  # noqa: E402

MODEL_DIR = ROOT / "examples" / "model_repository" / "deepmet"


def main() -> None:
    ap = arguments(__doc__)
    ap.add_argument("--events", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--chunk-size", type=int, default=100)
    ap.add_argument("--out", type=Path,
                    default=ROOT / "benchmarks" / "results" / "workflow_direct_vs_service.json")
    args = ap.parse_args()

    sample = ROOT / "build" / "bench" / f"sample-pu20-seed7-{args.events}.root"
    if not sample.exists():
        print(f"generating {sample}", flush=True)
        generate_sample(sample, args.events, pileup=20, seed=7)
    runs: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "repo"
        shutil.copytree(MODEL_DIR, repo / "deepmet")
        with LocalServer(repo, "--allow-client-shm=true") as server:
            configs = {
                "direct": JobConfig(mode="direct", model=MODEL_DIR / "1" / "model.onnx",
                                    chunk_size=args.chunk_size),
                "service (async)": JobConfig(mode="service", servers=(server.grpc_url,),
                                             chunk_size=args.chunk_size, shared_memory="off"),
                "service (sync)": JobConfig(mode="service", servers=(server.grpc_url,),
                                            client_mode="sync", chunk_size=args.chunk_size,
                                            shared_memory="off"),
                "service (async, shm)": JobConfig(mode="service", servers=(server.grpc_url,),
                                                  chunk_size=args.chunk_size),
            }  # fmt: skip
            run_files([sample], configs["service (async)"], Path(tmp) / "warm")  # warm the server
            for rep in range(args.repeats):
                order = list(configs) if rep % 2 == 0 else list(reversed(configs))
                for name in order:
                    r = run_files([sample], configs[name], Path(tmp) / "out").as_dict()
                    runs.setdefault(name, []).append(r)
                    print(f"rep {rep} {name:16s} {r['events_per_s']:7.1f} events/s", flush=True)

    summary = {}
    for name, rs in runs.items():
        eps = statistics.median(r["events_per_s"] for r in rs)
        summary[name] = {
            "events_per_s": eps,
            "ms_per_event": {s: statistics.median(r["stages"][s] / r["events"] * 1e3 for r in rs)
                             for s in STAGES},
        }  # fmt: skip
    direct = summary["direct"]["events_per_s"]
    print("| run | events/s | / direct | " + " | ".join(f"{s} ms/ev" for s in STAGES) + " |")
    print("|---" * (3 + len(STAGES)) + "|")
    for name, s in summary.items():
        stages = " | ".join(f"{s['ms_per_event'][k]:.2f}" for k in STAGES)
        print(f"| {name} | {s['events_per_s']:.1f} | {s['events_per_s'] / direct:.2f} | {stages} |")
    versions = {"python": platform.python_version(), "onnxruntime": ort.__version__,
                "cpus": os.cpu_count(), "events": args.events,
                "chunk_size": args.chunk_size}  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"versions": versions, "summary": summary, "runs": runs},
                                   indent=1))  # fmt: skip
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
