"""What each MET estimator makes of each kind of PF candidate in a Z->nunu recoil.

On the Z->nunu events of one q_T bin (by default the high-q_T sample's 250-350 GeV,
where CMS's response tunes overshoot most), MET_par / q_T summed over the bin is
split by candidate class: charged hadrons from pileup (what CHS removes) and the
others, leptons, photons, neutral hadrons, and the forward calorimeter's
candidates.  For raw PF MET a class's share is its own -sum p_par / q_T.  For a
DeepMET model it is how much MET_par drops when the class is taken out of the
events: DeepMET weighs each candidate from that candidate's features alone, so the
shares add up to the model's response, bar the bias terms.  A model's share over
raw PF's is the factor by which it scales that class.

Why: CMS's response tunes scale up what CMS measures well, to make up for what
CMS loses.  Where the emulated recoil is made differently from CMS's, their
response moves away from 1, and this shows which class is responsible::

    .venv/bin/python benchmarks/met_composition.py --cms-deepmet ../shared/reference/cms-deepmet

Writes ``benchmarks/results/met_composition.json``.
"""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from common import CMS_VERSIONS, arguments, cached_sample, deepmet_met, serve_deepmet  # noqa: E402

#: Candidate classes, from pdgId, charge and fromPV (pileup as CHS has it).
CLASSES = ("charged, PV", "charged, pileup", "leptons", "photons", "neutral hadrons", "forward")
#: The project's two tunes (versions of examples/model_repository/deepmet).
OWN = {"1": "DeepMET, resolution tune", "2": "DeepMET, response tune"}


def classes(pdg: Any, charge: Any, from_pv: Any) -> dict[str, Any]:
    """Per class, a jagged mask over the candidates."""
    from sonic.workflow.primary_vertex import charged_pileup

    apdg = abs(pdg)
    hadron = (charge != 0) & (apdg == 211)
    pileup = charged_pileup(charge, from_pv)
    return {"charged, PV": hadron & ~pileup, "charged, pileup": hadron & pileup,
            "leptons": (apdg == 11) | (apdg == 13), "photons": apdg == 22,
            "neutral hadrons": apdg == 130, "forward": (apdg == 1) | (apdg == 2)}  # fmt: skip


def composition(sample: Path, lo: float, hi: float,
                models: list[tuple[str, dict[str, str]]]) -> dict[str, Any]:  # fmt: skip
    """Shares of MET_par / q_T per class for raw PF and each served model (url, versions), with
    each model's scale per class against raw PF's."""
    import awkward as ak
    import uproot

    from sonic.workflow.inputs import PF_BRANCHES

    a = uproot.open(sample)["Events"].arrays([f"PFCands_{b}" for b in PF_BRANCHES]
                                             + ["GenMET_pt", "GenMET_phi"])  # fmt: skip
    qt, qphi = ak.to_numpy(a["GenMET_pt"]), ak.to_numpy(a["GenMET_phi"])
    inside = (qt >= lo) & (qt < hi)
    a, ux, uy, qt_sum = a[inside], np.cos(qphi[inside]), np.sin(qphi[inside]), qt[inside].sum()

    def response(met: np.ndarray) -> float:
        return float(np.sum(met[:, 0] * ux + met[:, 1] * uy) / float(qt_sum))

    cands = ak.zip({f"PFCands_{b}": a[f"PFCands_{b}"] for b in PF_BRANCHES}, depth_limit=1)
    px = a["PFCands_pt"] * np.cos(a["PFCands_phi"])
    py = a["PFCands_pt"] * np.sin(a["PFCands_phi"])
    masks = classes(a["PFCands_pdgId"], a["PFCands_charge"], a["PFCands_fromPV"])
    raw = {c: response(-np.stack([ak.to_numpy(ak.sum(px[m], axis=1)),
                                  ak.to_numpy(ak.sum(py[m], axis=1))], axis=1))
           for c, m in masks.items()}  # fmt: skip
    estimators: dict[str, Any] = {"PF (raw)": {"response": sum(raw.values()), "shares": raw}}
    for url, versions in models:
        full = deepmet_met(url, versions, cands)
        without = {c: deepmet_met(url, versions, cands[~m]) for c, m in masks.items()}
        for label, met in full.items():
            total = response(met)
            shares = {c: total - response(without[c][label]) for c in CLASSES}
            estimators[label] = {"response": total, "shares": shares,
                                 "scale": {c: shares[c] / raw[c] if abs(raw[c]) > 1e-3
                                           else None for c in CLASSES}}  # fmt: skip
    return {"events": len(a), "q_T": [lo, hi], "estimators": estimators}


def main() -> None:
    ap = arguments(__doc__)
    ap.add_argument("--events", type=int, default=2000, help="high-q_T Z->nunu sample size")
    ap.add_argument("--pileup", type=float, default=55.0)
    ap.add_argument("--seed", type=int, default=4004)
    ap.add_argument("--bin", type=float, nargs=2, default=(250.0, 350.0), metavar=("LO", "HI"))
    ap.add_argument("--cms-deepmet", type=Path, default=None,
                    help="CMS's deepmet model directory, served to run its graphdefs")  # fmt: skip
    args = ap.parse_args()
    name = f"znunu_highpt-pu{args.pileup:g}-seed{args.seed}"  # met_performance.py's sample
    sample = cached_sample(name, args.events, processes=["znunu_highpt"], pileup=args.pileup,
                           seed=args.seed)  # fmt: skip
    with contextlib.ExitStack() as stack:
        models = [(serve_deepmet(ROOT / "examples" / "model_repository" / "deepmet", stack), OWN)]
        if args.cms_deepmet:
            models.append((serve_deepmet(args.cms_deepmet, stack), CMS_VERSIONS))
        result = composition(sample, *args.bin, models)
    print(f"Z->nunu, q_T {args.bin[0]:g}-{args.bin[1]:g} GeV, {result['events']} events: "
          "share of MET_par / q_T per class (x its scale against raw PF)")
    print("| estimator | response | " + " | ".join(CLASSES) + " |")
    print("|---" * (len(CLASSES) + 2) + "|")
    for label, r in result["estimators"].items():
        scale = r.get("scale", {})
        cells = [f"{r['shares'][c]:+.3f}" + (f" (x{scale[c]:.2f})" if scale.get(c) else "")
                 for c in CLASSES]  # fmt: skip
        print(f"| {label} | {r['response']:.3f} | " + " | ".join(cells) + " |")
    out = ROOT / "benchmarks" / "results" / "met_composition.json"
    out.write_text(json.dumps({"sample": sample.name, **result}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
