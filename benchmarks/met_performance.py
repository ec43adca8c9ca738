"""MET performance as CMS measures it: response and resolution against q_T, per estimator.

Generates Z->mumu and Z->nunu samples (Pythia 8; cached in ``build/bench``),
runs the shipped DeepMET direct on them, and measures raw PF, CHS,
PUPPI-like and DeepMET MET: in Z->mumu the hadronic recoil against the
dimuon's q_T (u_par, u_perp), in Z->nunu MET against the neutrinos' q_T
(MET_par, MET_perp); per q_T bin the response and the response-corrected
resolutions, with bootstrap errors (sonic.workflow.met_performance).

With several ``--pileup`` values it also scans the pileup: Z->nunu at each
value, sigma_perp/R for q_T 50-150 GeV against the mean number of pileup
vertices, and the fit sigma^2 = sigma_0^2 + n_PU s^2 per estimator::

    .venv/bin/python benchmarks/met_performance.py --events 1000 --pileup 20
    .venv/bin/python benchmarks/met_performance.py --events 600 --pileup 0 20 55 80

Writes ``benchmarks/results/met_performance.json`` and ``met_performance_<process>.png``
(the first pileup's tables), and with a scan ``met_performance_pileup.png``.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from common import arguments, cached_sample  # noqa: E402  (benchmarks/, the script's own folder)

from sonic.plots import png, pyplot  # noqa: E402
from sonic.workflow.met_performance import BinResult, fit_pileup, study  # noqa: E402
from sonic.workflow.report import read_outputs, recoil_figure  # noqa: E402
from sonic.workflow.runner import JobConfig, run_files  # noqa: E402

PROCESSES = {"zmumu": r"Z$\to\mu\mu$: hadronic recoil against the dimuon",
             "znunu": r"Z$\to\nu\nu$: MET against the neutrinos"}  # fmt: skip
#: The q_T range of the pileup scan (the bulk of the Z->nunu sample).
SCAN_BINS = (50.0, 150.0)


def _measure(process: str, pileup: float, args: object,
             bins: tuple[float, ...] | None = None) -> dict[str, list[BinResult]]:  # fmt: skip
    seed = args.seed  # type: ignore[attr-defined]
    sample = cached_sample(f"{process}-pu{pileup:g}-seed{seed}", args.events,  # type: ignore[attr-defined]
                           processes=[process], pileup=pileup, seed=seed)  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        cfg = JobConfig(model_repository=ROOT / "examples" / "model_repository")
        outputs = read_outputs(run_files([sample], cfg, Path(tmp)).outputs)
    extra = {"bins": bins} if bins else {}
    return study(sample, outputs, process, bootstrap=args.bootstrap, **extra)  # type: ignore[attr-defined]


def _scan(args: object, out_dir: Path) -> dict[str, object]:
    pileups = np.array(args.pileup, dtype=float)  # type: ignore[attr-defined]
    points: dict[str, list[BinResult]] = {}
    for pu in pileups:
        for name, bins in _measure("znunu", float(pu), args, SCAN_BINS).items():
            points.setdefault(name, []).extend(bins)
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(10, 7))
    record: dict[str, object] = {}
    print(f"\npileup scan, Z->nunu, q_T {SCAN_BINS[0]:g}-{SCAN_BINS[1]:g} GeV")
    print("| estimator | " + " | ".join(f"pileup {p:g}" for p in pileups)
          + " | sigma_0 (GeV) | s per vertex (GeV) |")
    print("|---" * (len(pileups) + 3) + "|")
    for name, bins in points.items():
        sigma = np.array([b.sigma_perp for b in bins])
        err = np.array([b.sigma_perp_err for b in bins])
        s0, s, ds0, ds = fit_pileup(pileups, sigma, err)
        record[name] = {"pileup": pileups.tolist(), "sigma_perp": sigma.tolist(),
                        "sigma_perp_err": err.tolist(), "sigma0": s0, "sigma0_err": ds0,
                        "per_vertex": s, "per_vertex_err": ds}  # fmt: skip
        line = ax.errorbar(pileups, sigma, yerr=err, marker="o", capsize=3, linestyle="none",
                           label=f"{name}: s = {s:.2f} GeV per vertex")  # fmt: skip
        grid = np.linspace(0, pileups.max(), 50)
        ax.plot(grid, np.sqrt(s0**2 + grid * s**2), color=line[0].get_color(), linewidth=1)
        print(f"| {name} | " + " | ".join(f"{v:.1f} ± {e:.1f}" for v, e in zip(sigma, err,
                                                                              strict=True))
              + f" | {s0:.1f} ± {ds0:.1f} | {s:.2f} ± {ds:.2f} |")  # fmt: skip
    ax.set_xlabel("mean number of pileup collisions")
    ax.set_ylabel(r"$\sigma_\perp$ / R [GeV]")
    ax.legend(fontsize=13)
    ax.set_title(r"Z$\to\nu\nu$, $q_T$ 50-150 GeV: fits $\sigma^2 = \sigma_0^2 + n_{PU} s^2$",
                 fontsize=18)
    png(fig, out_dir / "met_performance_pileup.png")
    return record


def main() -> None:
    ap = arguments(__doc__)
    ap.add_argument("--events", type=int, default=1000)
    ap.add_argument("--pileup", type=float, nargs="+", default=[20.0])
    ap.add_argument("--seed", type=int, default=4004)
    ap.add_argument("--bootstrap", type=int, default=200)
    args = ap.parse_args()
    out_dir = ROOT / "benchmarks" / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    pileup = args.pileup[0]
    record: dict[str, object] = {"events": args.events, "pileup": pileup, "seed": args.seed,
                                 "processes": {}}  # fmt: skip
    for process, title in PROCESSES.items():
        results = _measure(process, pileup, args)
        record["processes"][process] = {k: [b.as_dict() for b in v]  # type: ignore[index]
                                        for k, v in results.items()}  # fmt: skip
        print(f"\n{process} (pileup {pileup:g})")
        print("| estimator | q_T bin | events | response | sigma_par/R | sigma_perp/R |")
        print("|---|---|---|---|---|---|")
        for name, bins in results.items():
            for b in bins:
                print(f"| {name} | {b.lo:g}-{b.hi:g} | {b.events} | {b.response:.3f} ± "
                      f"{b.response_err:.3f} | {b.sigma_par:.1f} ± {b.sigma_par_err:.1f} | "
                      f"{b.sigma_perp:.1f} ± {b.sigma_perp_err:.1f} |")
        png(recoil_figure(results, f"{title}, pileup {pileup:g}"),
            out_dir / f"met_performance_{process}.png")  # fmt: skip
    if len(args.pileup) > 1:
        record["pileup_scan"] = _scan(args, out_dir)
    (out_dir / "met_performance.json").write_text(json.dumps(record, indent=1))
    print(f"wrote {out_dir / 'met_performance.json'} and the plots")


if __name__ == "__main__":
    main()
