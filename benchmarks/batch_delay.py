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
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from busy_poll import POINTS, ab_table, alternate, medians  # noqa: E402

SETTINGS = {"held (Triton's rule)": "false", "adaptive (default)": "true"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--window-ms", type=int, default=3000)
    ap.add_argument("--out", type=Path,
                    default=ROOT / "benchmarks" / "results" / "batch_delay.json")
    args = ap.parse_args()

    runs = alternate({name: f"--adaptive-batch-delay={flag}" for name, flag in SETTINGS.items()},
                     POINTS, args.repeats, args.window_ms)
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
