"""``sonic serve --adaptive-batch-delay``: what not holding a futile batch delay buys.

Two ``sonic serve`` processes on the benchmark MLP (the server_vs_triton config,
``max_queue_delay_microseconds: 100``), one holding every delay as Triton does
(``--adaptive-batch-delay=false``) and one with the default rule
(sonic.server.scheduling.delay: after 32 waits in a row that gathered no
request, a partial batch goes at once), driven by perf_analyzer over gRPC in
turns at the server_vs_triton points and a paced 500 requests/s::

    .venv/bin/python benchmarks/batch_delay.py --repeats 3

Prints a markdown table and writes ``benchmarks/results/batch_delay.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from busy_poll import POINTS, ab_table, measure, medians  # noqa: E402

from sonic.launcher import LocalServer  # noqa: E402
from sonic.zoo.examples import MLP_BENCHMARK_CONFIG, mlp_model, write_model  # noqa: E402

SETTINGS = {"held (Triton's rule)": "false", "adaptive (default)": "true"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--window-ms", type=int, default=3000)
    ap.add_argument("--out", type=Path,
                    default=ROOT / "benchmarks" / "results" / "batch_delay.json")
    args = ap.parse_args()

    runs: dict[str, dict[str, list[dict]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "repo"
        write_model(mlp_model(), repo, "mlp",
                    config='name: "mlp"\nplatform: "onnxruntime_onnx"\n' + MLP_BENCHMARK_CONFIG)
        servers = {name: LocalServer(repo, f"--adaptive-batch-delay={flag}").start()
                   for name, flag in SETTINGS.items()}  # fmt: skip
        try:
            for rep in range(args.repeats):
                order = list(servers) if rep % 2 == 0 else list(reversed(servers))
                measure(servers, order, POINTS, args.window_ms, runs, rep)
        finally:
            for s in servers.values():
                s.stop()

    summary = medians(runs)
    held, adaptive = list(SETTINGS)
    print("\n".join(ab_table(summary, (held, "held"), (adaptive, "adaptive"))))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"settings": SETTINGS, "repeats": args.repeats,
                                    "window_ms": args.window_ms, "summary": summary,
                                    "runs": runs}, indent=1))  # fmt: skip
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
