"""``sonic demo`` (what ``make demo`` runs): DeepMET and jet tagging, direct and as a service.

It generates a small sample once (Pythia 8 ttbar and Z->nunu with pileup,
cached in the work directory), starts ``sonic serve`` on free loopback ports
with the example repository, runs each task (DeepMET; AK4 jets tagged by
ParticleNet) in-process with onnxruntime and then through the SONIC client,
and prints events/s, the time of each stage, the largest differences between
the two outputs, MET's response and resolution against the Z's q_T (as CMS
measures it, on the Z->nunu events) and the b-tagging ROC.  It writes a
self-contained HTML report with the plots, and fails (exit 1) if the outputs
differ by more than 1e-5 (relative for MET, absolute for class probabilities).

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
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from sonic.launcher import LocalServer
from sonic.plots import html_table, img, png, write_html
from sonic.workflow import report
from sonic.workflow.jet_inputs import AK4_LABELS
from sonic.workflow.met_performance import study
from sonic.workflow.particlenet import load_jets, performance
from sonic.workflow.runner import JobConfig, JobResult, run_files

TOLERANCE = 1e-5
#: Served against direct class probabilities (both onnxruntime, batches of different sizes).
TAG_TOLERANCE = 1e-5
#: Served TF graphdef against direct ONNX: far below the ~20 GeV MET resolution.
RUNTIME_TOLERANCE_GEV = 0.01
STAGE_LABELS = {"io": "I/O", "inputs": "input building", "infer_client": "inference (client)",
                "infer_server": "inference (server)", "output": "output"}  # fmt: skip


def _sample(work_dir: Path, n_events: int, console: Console) -> Path:
    from sonic.workflow.generate import DEFAULT_PILEUP, SAMPLE_VERSION, generate_sample

    name = f"sample-v{SAMPLE_VERSION}-ttbar-znunu-pu{DEFAULT_PILEUP:g}-seed1-{n_events}.root"
    path = work_dir / name
    if path.exists():
        console.print(f"reusing the sample {path}")
        return path
    with console.status(f"generating {n_events} events (Pythia 8, pileup {DEFAULT_PILEUP:g}) "
                        f"into {path}") as s:  # fmt: skip

        def progress(n: int) -> None:
            s.update(f"generated {n}/{n_events} events")

        generate_sample(path, n_events, seed=1, progress=progress)
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


#: The demo's jobs, side by side: each task alone, so that each has its own timing.
DEMO_TASKS = {"DeepMET": "deepmet", "jet tagging": "particlenet"}


def _jets_table(table: dict[str, Any]) -> np.ndarray:
    """Every jet's eight class probabilities, flattened over events."""
    import awkward as ak

    jets = table["Jet"]
    return np.stack([ak.to_numpy(ak.flatten(jets[f"pnet_{label}"])) for label in AK4_LABELS],
                    axis=1)  # fmt: skip


def run_demo(repository: Path, work_dir: Path, n_events: int = 600,
             deepmet_format: str = "onnx") -> int:  # fmt: skip
    console = Console()
    work_dir.mkdir(parents=True, exist_ok=True)
    sample = _sample(work_dir, n_events, console)
    served = repository
    if deepmet_format == "graphdef":
        served = _graphdef_repository(repository, work_dir, console)
    runs: dict[str, JobResult] = {}
    with console.status("starting sonic serve on free ports"):
        server = LocalServer(served, "--allow-client-shm=true").start()
    try:
        console.print(f"server up: gRPC {server.grpc_url}, HTTP {server.http_url}")
        configs = {}
        for label, task in DEMO_TASKS.items():
            configs[f"{label}, direct"] = JobConfig(mode="direct", tasks=(task,),
                                                    model_repository=repository)  # fmt: skip
            configs[f"{label}, service"] = JobConfig(mode="service", tasks=(task,),
                                                     servers=(server.grpc_url,))  # fmt: skip
        with console.status("warming up (one chunk each, not timed)"):
            for cfg in configs.values():
                run_files([sample], replace(cfg, max_events=cfg.chunk_size), work_dir / "warm-up")
        for name, cfg in configs.items():
            how = ("in-process onnxruntime" if cfg.mode == "direct"
                   else "SONIC client, gRPC, async")  # fmt: skip
            with console.status(f"running {name} ({how})"):
                runs[name] = run_files([sample], cfg, work_dir / name.replace(", ", "-"))
    finally:
        server.stop()

    out = {name: report.read_outputs(r.outputs) for name, r in runs.items()}
    a, b = _met_xy(out["DeepMET, direct"]), _met_xy(out["DeepMET, service"])
    max_abs = float(np.max(np.abs(a - b)))
    max_rel = float(np.max(np.abs(a - b) / np.maximum(np.abs(a), 1e-3)))
    tags = {name: _jets_table(out[f"jet tagging, {name}"]) for name in ("direct", "service")}
    max_tag = float(np.max(np.abs(tags["direct"] - tags["service"]), initial=0.0))

    rows: list[list[object]] = [["events/s", *(r.events_per_s for r in runs.values())]]
    rows += [["requests", *(sum(r.requests.values()) for r in runs.values())]]
    rows += [[f"{label} (ms/event)",
              *(r.stages[stage] / r.events * 1e3 if runs_cfg.mode == "service"
                or stage != "infer_server" else "-"
                for r, runs_cfg in zip(runs.values(), configs.values(), strict=True))]
             for stage, label in STAGE_LABELS.items()]  # fmt: skip
    served_as = "TensorFlow graphdef" if deepmet_format == "graphdef" else "ONNX"
    ratios = {label: runs[f"{label}, service"].events_per_s / runs[f"{label}, direct"].events_per_s
              for label in DEMO_TASKS}  # fmt: skip
    summary = (f"service / direct throughput: DeepMET ({served_as}) {ratios['DeepMET']:.2f}, "
               f"jet tagging {ratios['jet tagging']:.2f}; largest |difference| of MET (px, py): "
               f"{max_abs:.3g} GeV (relative {max_rel:.2g}); of a jet's class probability: "
               f"{max_tag:.2g}")  # fmt: skip
    # As CMS measures MET: on the Z->nunu events, against the neutrinos, per q_T bin.
    met_study = study(sample, out["DeepMET, direct"], "znunu", bootstrap=50)
    res_header = ["estimator", "q_T bin (GeV)", "events", "response R", "sigma_perp / R (GeV)"]
    res_rows: list[list[object]] = [
        [k, f"{b.lo:g}-{b.hi:g}", b.events, f"{b.response:.2f} ± {b.response_err:.2f}",
         f"{b.sigma_perp:.1f} ± {b.sigma_perp_err:.1f}"]
        for k, bins in met_study.items() for b in bins
    ]  # fmt: skip
    with console.status("labelling the jets from the generator record"):
        truth = load_jets([sample]).truth
    curves, tag_rows = {}, []
    for name, softmax in tags.items():
        if len(softmax) != len(truth.label):
            raise RuntimeError(f"{len(softmax)} tagged jets but {len(truth.label)} labelled")
        perf = performance(softmax, truth)
        # The service's curves lie on the direct ones: black dashes over the coloured lines.
        light, c = ("C0-", "C1-") if name == "direct" else ("k--", "k:")
        curves[f"udsg jets, {name} (AUC {perf.auc:.3f})"] = (*perf.roc, light)
        if perf.roc_other is not None:
            curves[f"c jets, {name}"] = (*perf.roc_other, c)
        tag_rows.append([name, perf.auc, *perf.efficiency.values()])
    tag_header = ["run", "AUC b vs udsg", *(f"b eff. at {k} mistag" for k in perf.efficiency)]
    console.print(_table(f"{runs['DeepMET, direct'].events} events, each task direct and as a "
                         "service", ["", *runs], rows))  # fmt: skip
    console.print(summary)
    console.print(_table("MET on the Z->nunu events: response and resolution against q_T",
                         res_header, res_rows))  # fmt: skip
    console.print(_table(f"b tagging on {len(truth.label)} AK4 jets "
                         f"({', '.join(f'{k} {n}' for k, n in perf.n_jets.items())})",
                         tag_header, tag_rows))  # fmt: skip

    timing = report.timing_plot({k: r.as_dict() for k, r in runs.items()})
    runs_json = json.dumps({k: r.as_dict() for k, r in runs.items()}, indent=1)
    title = "SONIC demo: DeepMET and jet tagging, direct and as a service"
    page = write_html(work_dir / "report.html", title, [
        ("Throughput and stages",
         html_table(["", *runs], rows) + f"<p>{summary}</p>" + img(timing)),
        ("MET response and resolution (Z->nunu events)",
         html_table(res_header, res_rows)
         + img(png(report.recoil_figure(met_study, "Z->nunu: MET against the neutrinos")))
         + img(report.resolution_plot(out["DeepMET, direct"]))),
        ("b tagging (ParticleNet AK4)",
         html_table(tag_header, tag_rows) + img(png(report.roc_figure(curves)))),
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
    if max_tag > TAG_TOLERANCE:
        console.print(f"[red]served jet tags differ from direct by more than {TAG_TOLERANCE}[/red]")
        return 1
    return 0
