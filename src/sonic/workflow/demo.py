"""``sonic demo`` (what ``make demo`` runs): the DeepMET job direct and as a service.

It generates a small sample once (Pythia 8 ttbar and Z->nunu with pileup,
cached in the work directory), starts ``sonic serve`` on free loopback ports
with the example repository, runs the workflow in-process with onnxruntime and
then through the SONIC client, and prints events/s, the time of each stage,
the largest difference between the two outputs and the MET resolution.  It
writes a self-contained HTML report with the plots, and fails (exit 1) if
the outputs differ by more than a relative 1e-5.

With ``deepmet_format="graphdef"`` the server runs DeepMET as CMS serves it, a
TensorFlow graphdef (:mod:`sonic.workflow.deepmet_tf`, the same trained
weights), while the direct run stays on onnxruntime: the comparison is then
between two runtimes, whose float32 sums over thousands of candidates differ in
their last bits, so the bound is an absolute 0.01 GeV instead.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from sonic.launcher import LocalServer
from sonic.plots import html_table, img, write_html
from sonic.workflow import report
from sonic.workflow.runner import JobConfig, JobResult, run_files

TOLERANCE = 1e-5
#: Served TF graphdef against direct ONNX: far below the ~20 GeV MET resolution.
RUNTIME_TOLERANCE_GEV = 0.01
STAGE_LABELS = {"io": "I/O", "inputs": "input building", "infer_client": "inference (client)",
                "infer_server": "inference (server)", "output": "output"}  # fmt: skip


def _sample(work_dir: Path, n_events: int, console: Console) -> Path:
    from sonic.workflow.generate import generate_sample

    path = work_dir / f"sample-ttbar-znunu-pu20-seed1-{n_events}.root"
    if path.exists():
        console.print(f"reusing the sample {path}")
        return path
    with console.status(f"generating {n_events} events (Pythia 8, pileup 20) into {path}") as s:

        def progress(n: int) -> None:
            s.update(f"generated {n}/{n_events} events")

        generate_sample(path, n_events, pileup=20, seed=1, progress=progress)
    return path


def _table(title: str, header: list[str], rows: list[list[object]]) -> Table:
    table = Table(title=title)
    for col in header:
        table.add_column(col, justify="right")
    for row in rows:
        table.add_row(*(f"{v:.3g}" if isinstance(v, float) else str(v) for v in row))
    return table


def _met_xy(table: dict[str, np.ndarray]) -> np.ndarray:
    pt, phi = table["DeepMETResolutionTune_pt"], table["DeepMETResolutionTune_phi"]
    return np.stack([pt * np.cos(phi), pt * np.sin(phi)], axis=1)


def _graphdef_repository(repository: Path, work_dir: Path, console: Console) -> Path:
    from sonic.workflow.deepmet_tf import write_graphdef_model

    served = work_dir / "repository-graphdef"
    shutil.rmtree(served, ignore_errors=True)
    shutil.copytree(repository, served, symlinks=True)
    with console.status("exporting the trained DeepMET as a TensorFlow graphdef"):
        write_graphdef_model(repository / "deepmet" / "1" / "model.onnx", served)
    return served


def run_demo(repository: Path, work_dir: Path, n_events: int = 600,
             deepmet_format: str = "onnx") -> int:  # fmt: skip
    console = Console()
    work_dir.mkdir(parents=True, exist_ok=True)
    sample = _sample(work_dir, n_events, console)
    model = repository / "deepmet" / "1" / "model.onnx"
    served = repository
    if deepmet_format == "graphdef":
        served = _graphdef_repository(repository, work_dir, console)
    runs: dict[str, JobResult] = {}
    with console.status("starting sonic serve on free ports"):
        server = LocalServer(served, "--allow-client-shm=true").start()
    try:
        console.print(f"server up: gRPC {server.grpc_url}, HTTP {server.http_url}")
        configs = {"direct": JobConfig(mode="direct", model=model),
                   "service": JobConfig(mode="service", servers=(server.grpc_url,))}  # fmt: skip
        with console.status("warming up both (one chunk each, not timed)"):
            for cfg in configs.values():
                run_files([sample], replace(cfg, max_events=cfg.chunk_size), work_dir / "warm-up")
        with console.status("running DeepMET direct (in-process onnxruntime)"):
            runs["direct"] = run_files([sample], configs["direct"], work_dir / "direct")
        with console.status("running DeepMET as a service (SONIC client, gRPC, async)"):
            runs["service"] = run_files([sample], configs["service"], work_dir / "service")
    finally:
        server.stop()

    direct = report.read_outputs(runs["direct"].outputs)
    service = report.read_outputs(runs["service"].outputs)
    a, b = _met_xy(direct), _met_xy(service)
    max_abs = float(np.max(np.abs(a - b)))
    max_rel = float(np.max(np.abs(a - b) / np.maximum(np.abs(a), 1e-3)))

    ratio = runs["service"].events_per_s / runs["direct"].events_per_s
    rows: list[list[object]] = [["events/s", *(r.events_per_s for r in runs.values())]]
    rows += [[f"{label} (ms/event)",
              *(r.stages[stage] / r.events * 1e3 if (name, stage) != ("direct", "infer_server")
                else "-" for name, r in runs.items())]
             for stage, label in STAGE_LABELS.items()]  # fmt: skip
    served_as = "TensorFlow graphdef" if deepmet_format == "graphdef" else "ONNX"
    summary = (f"service ({served_as}) / direct (ONNX) throughput: {ratio:.2f}; largest "
               f"|difference| of MET (px, py): {max_abs:.3g} GeV "
               f"(relative {max_rel:.2g})")  # fmt: skip
    res = report.resolution(direct)
    res_header = ["estimator", "std x", "std y", "sigma68 x", "sigma68 y"]
    res_rows: list[list[object]] = [
        [k, *(v[c] for c in ("std_x", "std_y", "sigma68_x", "sigma68_y"))] for k, v in res.items()
    ]
    console.print(_table(f"DeepMET on {runs['direct'].events} events, direct vs as a service",
                         ["", *runs], rows))  # fmt: skip
    console.print(summary)
    console.print(_table("MET resolution against GenMET (GeV)", res_header, res_rows))

    timing = report.timing_plot({k: r.as_dict() for k, r in runs.items()})
    runs_json = json.dumps({k: r.as_dict() for k, r in runs.items()}, indent=1)
    title = "SONIC demo: DeepMET direct and as a service"
    page = write_html(work_dir / "report.html", title, [
        ("Throughput and stages",
         html_table(["", *runs], rows) + f"<p>{summary}</p>" + img(timing)),
        ("MET resolution",
         html_table(res_header, res_rows) + img(report.resolution_plot(direct))),
        ("Runs (JSON)", f"<pre>{runs_json}</pre>"),
    ])  # fmt: skip
    console.print(f"report: {page}")
    if deepmet_format == "graphdef" and max_abs > RUNTIME_TOLERANCE_GEV:
        console.print(f"[red]service outputs differ from direct by more than "
                      f"{RUNTIME_TOLERANCE_GEV} GeV[/red]")  # fmt: skip
        return 1
    if deepmet_format == "onnx" and max_rel > TOLERANCE:
        console.print(f"[red]service outputs differ from direct by more than {TOLERANCE}[/red]")
        return 1
    return 0
