"""The workflow's tasks direct (in-process onnxruntime) against as a service (sonic serve).

For each task -- DeepMET (one request per chunk of 100 events), ParticleNet AK4
jet tagging (one request per event, batch = its jets), the two chained in one
job, AK8 top tagging (the same on AK8 jets, ``--task particlenet_ak8``), and
AK4 jet clustering, a step with no network served as a python-backend
model (one request per event with its candidates) -- one sample (Pythia 8
ttbar + Z->nunu, pileup 20; generated once into ``build/bench``), one
``sonic serve`` on loopback with the shipped models, and the job run
alternately direct and through the SONIC client (gRPC; async, so every
request of a chunk is in flight and the next chunk is read and built while
the server infers; sync; and async with inputs in system shared memory),
three times each.  Prints the median events/s, the
ratio to direct and the time of each stage per event.

The physics beside it: the MET resolution of the direct DeepMET run; the AK4
tagger's b-jet efficiency and ROC area against light (udsg) jets on held-out
ttbar and QCD multijet events (seed 22, never trained on), and the AK8
tagger's top-jet efficiency and ROC area against QCD jets on held-out boosted
ttbar and QCD events (seed 32), labelled from the generator record; the ROCs
are written to ``benchmarks/results/particlenet_{ak4,ak8}_roc.png``.  Writes
``benchmarks/results/workflow_direct_vs_service.json``::

    .venv/bin/python benchmarks/workflow_direct_vs_service.py --events 1000 --repeats 3
    .venv/bin/python benchmarks/workflow_direct_vs_service.py --task particlenet
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
from common import arguments, cached_sample  # noqa: E402  (benchmarks/, the script's own folder)

from sonic.launcher import LocalServer  # noqa: E402
from sonic.plots import png  # noqa: E402
from sonic.workflow import particlenet, report  # noqa: E402
from sonic.workflow.runner import STAGES, JobConfig, run_files  # noqa: E402

EXAMPLES = ROOT / "examples" / "model_repository"
MODELS = ("deepmet", "particlenet_AK4", "particlenet_AK8", "ak4_clustering")
#: What each benchmarked job runs.
TASK_SETS = {"deepmet": ("deepmet",), "particlenet": ("particlenet",),
             "chained": ("deepmet", "particlenet"), "clustering": ("clustering",),
             "particlenet_ak8": ("particlenet_ak8",)}  # fmt: skip


def _tagging(tagger: particlenet.Tagger, sample: Path, out_png: Path) -> dict:
    """A shipped tagger on held-out events: ROC area, efficiencies, the curves' plot."""
    jets = particlenet.load_jets([sample], tagger=tagger)
    model = EXAMPLES / tagger.model_name / "1" / "model.onnx"
    perf = particlenet.performance(particlenet.scores(model, jets), jets.truth, tagger)
    signal, background, other, _ = tagger.names
    curves = {f"{background} jets (AUC {perf.auc:.3f})": (*perf.roc, "C0-")}
    if perf.roc_other is not None:
        curves[f"{other} jets"] = (*perf.roc_other, "C1-")
    png(report.roc_figure(curves, signal), out_png)
    return {"sample": sample.name, **perf.as_dict()}


def main() -> None:
    ap = arguments(__doc__)
    ap.add_argument("--events", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--chunk-size", type=int, default=100)
    ap.add_argument("--task", dest="tasks", action="append", choices=list(TASK_SETS),
                    help="a job to measure (repeatable; default: all)")
    ap.add_argument("--tagging-events", type=int, default=1000,
                    help="held-out events for each tagger's ROC")
    ap.add_argument("--out", type=Path,
                    default=ROOT / "benchmarks" / "results" / "workflow_direct_vs_service.json")
    args = ap.parse_args()
    task_sets = {k: TASK_SETS[k] for k in (args.tasks or TASK_SETS)}

    sample = cached_sample("ttbar-znunu-pu20-seed7", args.events, pileup=20, seed=7)
    runs: dict[str, list[dict]] = {}
    met_resolution = None
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "repo"
        for model in MODELS:
            shutil.copytree(EXAMPLES / model, repo / model)
        with LocalServer(repo, "--allow-client-shm=true") as server:
            configs = {}
            for job, tasks in task_sets.items():
                common = {"tasks": tasks, "chunk_size": args.chunk_size}
                url = (server.grpc_url,)
                configs |= {
                    f"{job}/direct": JobConfig(mode="direct", model_repository=EXAMPLES, **common),
                    f"{job}/service (async)": JobConfig(mode="service", servers=url,
                                                        shared_memory="off", **common),
                    f"{job}/service (sync)": JobConfig(mode="service", servers=url,
                                                       client_mode="sync", shared_memory="off",
                                                       **common),
                    f"{job}/service (async, shm)": JobConfig(mode="service", servers=url,
                                                             **common),
                }  # fmt: skip
                run_files([sample], configs[f"{job}/service (async)"], Path(tmp) / "warm")
            for rep in range(args.repeats):
                order = list(configs) if rep % 2 == 0 else list(reversed(configs))
                for name in order:
                    result = run_files([sample], configs[name], Path(tmp) / "out")
                    r = result.as_dict()
                    runs.setdefault(name, []).append(r)
                    print(f"rep {rep} {name:30s} {r['events_per_s']:7.1f} events/s", flush=True)
                    if name == "deepmet/direct" and met_resolution is None:
                        met_resolution = report.resolution(report.read_outputs(result.outputs))

    summary = {}
    for name, rs in runs.items():
        summary[name] = {
            "events_per_s": statistics.median(r["events_per_s"] for r in rs),
            "requests": rs[0]["requests"],
            "ms_per_event": {s: statistics.median(r["stages"][s] / r["events"] * 1e3 for r in rs)
                             for s in STAGES},
        }  # fmt: skip
    print("| job | run | events/s | / direct | requests | "
          + " | ".join(f"{s} ms/ev" for s in STAGES) + " |")
    print("|---" * (5 + len(STAGES)) + "|")
    for name, s in summary.items():
        job, run = name.split("/")
        direct = summary[f"{job}/direct"]["events_per_s"]
        stages = " | ".join(f"{s['ms_per_event'][k]:.2f}" for k in STAGES)
        print(f"| {job} | {run} | {s['events_per_s']:.1f} | {s['events_per_s'] / direct:.2f} | "
              f"{sum(s['requests'].values())} | {stages} |")
    physics: dict[str, object] = {"met_resolution": met_resolution}
    if {"particlenet", "particlenet_ak8"} & {t for ts in task_sets.values() for t in ts}:
        held_out = {
            "ak4": cached_sample("ttbar-qcd-pu20-seed22", args.tagging_events,
                           processes=["ttbar", "qcd"], pileup=20, seed=22),
            "ak8": cached_sample("boosted-pu20-seed32", args.tagging_events,
                           processes=["ttbar_boosted", "qcd_boosted"], pileup=20, seed=32),
        }  # fmt: skip
        for name, sample_path in held_out.items():
            tagger = particlenet.TAGGERS[name]
            t = _tagging(tagger, sample_path, args.out.parent / f"particlenet_{name}_roc.png")
            physics[f"tagging_{name}"] = t
            print(f"{tagger.model_name} on {t['sample']}: AUC {tagger.names[3]} {t['auc']:.3f}, "
                  f"{tagger.names[0]} efficiency "
                  + ", ".join(f"{v:.3f} at {k} mistag" for k, v in t["efficiency"].items()))
    versions = {"python": platform.python_version(), "onnxruntime": ort.__version__,
                "cpus": os.cpu_count(), "events": args.events,
                "chunk_size": args.chunk_size}  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"versions": versions, "summary": summary, "physics": physics,
                                    "runs": runs}, indent=1, default=float))  # fmt: skip
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
