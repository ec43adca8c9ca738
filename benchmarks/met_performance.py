"""MET performance as CMS measures it: response and resolution against q_T, per estimator.

Generates Z->mumu and Z->nunu samples (Pythia 8, pileup as given; cached in
``build/bench``), runs the shipped DeepMET direct on both, and measures raw
PF, CHS, PUPPI-like and DeepMET MET: in Z->mumu the hadronic recoil against
the dimuon's q_T (u_par, u_perp), in Z->nunu MET against the neutrinos' q_T
(MET_par, MET_perp); per q_T bin the response and the response-corrected
resolutions, with bootstrap errors (sonic.workflow.met_performance)::

    .venv/bin/python benchmarks/met_performance.py --events 1000 --pileup 20

Writes ``benchmarks/results/met_performance.json`` and ``met_performance_<process>.png``.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from common import arguments  # noqa: E402  (benchmarks/, the script's own folder)

from sonic.plots import png  # noqa: E402
from sonic.workflow.generate import generate_sample  # noqa: E402
from sonic.workflow.met_performance import study  # noqa: E402
from sonic.workflow.report import read_outputs, recoil_figure  # noqa: E402
from sonic.workflow.runner import JobConfig, run_files  # noqa: E402

PROCESSES = {"zmumu": r"Z$\to\mu\mu$: hadronic recoil against the dimuon",
             "znunu": r"Z$\to\nu\nu$: MET against the neutrinos"}  # fmt: skip


def main() -> None:
    ap = arguments(__doc__)
    ap.add_argument("--events", type=int, default=1000)
    ap.add_argument("--pileup", type=float, default=20.0)
    ap.add_argument("--seed", type=int, default=4004)
    ap.add_argument("--bootstrap", type=int, default=200)
    args = ap.parse_args()
    out_dir = ROOT / "benchmarks" / "results"
    record: dict[str, object] = {"events": args.events, "pileup": args.pileup,
                                 "seed": args.seed, "processes": {}}  # fmt: skip
    for process, title in PROCESSES.items():
        sample = ROOT / "build" / "bench" / (f"{process}-pu{args.pileup:g}-seed{args.seed}-"
                                             f"{args.events}.root")  # fmt: skip
        if not sample.exists():
            print(f"generating {sample}", flush=True)
            generate_sample(sample, args.events, processes=[process], pileup=args.pileup,
                            seed=args.seed)  # fmt: skip
        with tempfile.TemporaryDirectory() as tmp:
            cfg = JobConfig(model_repository=ROOT / "examples" / "model_repository")
            outputs = read_outputs(run_files([sample], cfg, Path(tmp)).outputs)
        results = study(sample, outputs, process, bootstrap=args.bootstrap)
        record["processes"][process] = {k: [b.as_dict() for b in v]  # type: ignore[index]
                                        for k, v in results.items()}  # fmt: skip
        print(f"\n{process} (pileup {args.pileup:g})")
        print("| estimator | q_T bin | events | response | sigma_par/R | sigma_perp/R |")
        print("|---|---|---|---|---|---|")
        for name, bins in results.items():
            for b in bins:
                print(f"| {name} | {b.lo:g}-{b.hi:g} | {b.events} | {b.response:.3f} ± "
                      f"{b.response_err:.3f} | {b.sigma_par:.1f} ± {b.sigma_par_err:.1f} | "
                      f"{b.sigma_perp:.1f} ± {b.sigma_perp_err:.1f} |")
        png(recoil_figure(results, f"{title}, pileup {args.pileup:g}"),
            out_dir / f"met_performance_{process}.png")  # fmt: skip
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "met_performance.json").write_text(json.dumps(record, indent=1))
    print(f"wrote {out_dir / 'met_performance.json'} and the plots")


if __name__ == "__main__":
    main()
