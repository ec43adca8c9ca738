"""``sonic perf`` against NVIDIA perf_analyzer: same server, model, points, alternating.

One ``sonic serve`` with the benchmark MLP (64->256->256->2, max_batch_size
256, dynamic batching 100 us); both tools measure the same points over gRPC
with the same flags (``-p 2000 -s 25 -r 10``), alternating at every repetition;
the table gives the medians and the throughput ratio sonic perf / perf_analyzer::

    .venv/bin/python benchmarks/perf_vs_perf_analyzer.py --repeats 3

Writes ``benchmarks/results/perf_vs_perf_analyzer.json``.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from common import PERF_ANALYZER, arguments, load_options, report_row, write_mlp  # noqa: E402

from sonic.launcher import LocalServer  # noqa: E402

POINTS = [(1, 1), (1, 8), (64, 4)]  # (batch, concurrency)
TOOLS = {
    "perf_analyzer": [PERF_ANALYZER],
    "sonic perf": [sys.executable, "-m", "sonic.cli", "perf"],
}


def measure(cmd: list[str], url: str, batch: int, conc: int, window_ms: int, out: Path) -> dict:
    for stability in (25, 50, 100):  # a shared machine may need a looser bound
        out.unlink(missing_ok=True)
        args = [*cmd, *load_options(url, window_ms, batch=batch, concurrency=conc,
                                    stability=stability, trials=10, report=out)]  # fmt: skip
        subprocess.run(args, capture_output=True, text=True, timeout=600)
        if out.exists():
            break
    else:
        raise RuntimeError(f"no stable measurement: {' '.join(args)}")
    row = report_row(out)
    return {"throughput": float(row["Inferences/Second"]), "p50_us": int(row["p50 latency"]),
            "p99_us": int(row["p99 latency"]), "stability_pct": stability}  # fmt: skip


def main() -> None:
    ap = arguments(__doc__)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--window-ms", type=int, default=2000)
    args = ap.parse_args()
    runs: dict[str, dict[str, list[dict]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "repo"
        write_mlp(repo)
        with LocalServer(repo) as server:
            for rep in range(args.repeats):
                for batch, conc in POINTS:
                    key = f"b{batch}_c{conc}"
                    order = list(TOOLS) if rep % 2 == 0 else list(reversed(TOOLS))
                    for tool in order:
                        r = measure(TOOLS[tool], server.grpc_url, batch, conc, args.window_ms,
                                    Path(tmp) / "out.csv")  # fmt: skip
                        runs.setdefault(key, {}).setdefault(tool, []).append(r)
                        print(f"rep {rep} {key:7s} {tool:14s} {r['throughput']:10.0f} infer/s "
                              f"p50 {r['p50_us']} us", flush=True)  # fmt: skip
    summary = {k: {t: {m: statistics.median(r[m] for r in rs) for m in ("throughput", "p50_us",
                                                                       "p99_us")}
                   for t, rs in d.items()} for k, d in runs.items()}  # fmt: skip
    print("| point | perf_analyzer infer/s | sonic perf infer/s | ratio | p50 us (pa / sonic) |")
    print("|---|---|---|---|---|")
    for key, d in summary.items():
        pa, so = d["perf_analyzer"], d["sonic perf"]
        print(f"| {key} | {pa['throughput']:.0f} | {so['throughput']:.0f} | "
              f"{so['throughput'] / pa['throughput']:.2f} | {pa['p50_us']:.0f} / "
              f"{so['p50_us']:.0f} |")  # fmt: skip
    out = ROOT / "benchmarks" / "results" / "perf_vs_perf_analyzer.json"
    out.write_text(json.dumps({"summary": summary, "runs": runs}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
