"""MET resolution of the shipped DeepMET against raw PF MET (and PUPPI-like) on held-out events.

Generates a held-out sample with a seed the training never saw (2002; the
training sample used 1001), runs the workflow direct, and writes the widths of
MET - GenMET in x and y with a plot::

    .venv/bin/python benchmarks/deepmet_resolution.py --events 800

Outputs ``benchmarks/results/deepmet_resolution.json`` and ``.png``.
"""

from __future__ import annotations

import base64
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from common import arguments, cached_sample  # noqa: E402  (benchmarks/, the script's own folder)

from sonic.workflow.report import read_outputs, resolution, resolution_plot  # noqa: E402
from sonic.workflow.runner import JobConfig, run_files  # noqa: E402

MODEL = ROOT / "examples" / "model_repository" / "deepmet" / "1" / "model.onnx"


def main() -> None:
    ap = arguments(__doc__)
    ap.add_argument("--events", type=int, default=800)
    ap.add_argument("--seed", type=int, default=2002)
    args = ap.parse_args()
    sample = cached_sample(f"heldout-pu20-seed{args.seed}", args.events, pileup=20,
                           seed=args.seed)  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        result = run_files([sample], JobConfig(mode="direct", model=MODEL), Path(tmp))
        table = read_outputs(result.outputs)
    res = resolution(table)
    print("| estimator | std x | std y | sigma68 x | sigma68 y |\n|---|---|---|---|---|")
    for name, r in res.items():
        print(f"| {name} | {r['std_x']:.1f} | {r['std_y']:.1f} | {r['sigma68_x']:.1f} | "
              f"{r['sigma68_y']:.1f} |")  # fmt: skip
    out = ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    record = {"events": args.events, "seed": args.seed, "pileup": 20, "resolution_gev": res}
    (out / "deepmet_resolution.json").write_text(json.dumps(record, indent=1))
    (out / "deepmet_resolution.png").write_bytes(base64.b64decode(resolution_plot(table)))
    print(f"wrote {out / 'deepmet_resolution.json'} and .png")


if __name__ == "__main__":
    main()
