"""How throughput scales with server processes when many clients connect.

Two ways to use more cores: ``sonic serve --workers N`` (N whole servers sharing
the ports with SO_REUSEPORT; the kernel spreads *connections* over them) and
``--grpc-frontends N`` (N gRPC front-end processes relaying to one data plane).
The load is several perf_analyzer processes at once (each its own connections),
as many grid jobs are.  The configurations alternate at every repetition.  Run::

    .venv/bin/python benchmarks/workers_scaling.py --clients 4 --repeats 3

(``--config FLAGS``, repeatable, replaces the default set of configurations.)
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from common import PERF_ANALYZER, load_options, report_row, write_mlp  # noqa: E402

from sonic.launcher import LocalServer  # noqa: E402

#: One process; two whole servers; one data plane with one and two gRPC front ends.
DEFAULT_CONFIGS = ["", "--workers=2", "--grpc-frontends=1", "--grpc-frontends=2"]


def load(url: str, clients: int, concurrency: int, window_ms: int, tmp: Path) -> float:
    procs = []
    for i in range(clients):
        cmd = [PERF_ANALYZER, *load_options(url, window_ms, concurrency=concurrency, trials=5,
                                            report=tmp / f"c{i}.csv")]  # fmt: skip
        procs.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    for p in procs:
        p.wait(600)
    return sum(float(report_row(tmp / f"c{i}.csv")["Inferences/Second"])
               for i in range(clients))  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--config", action="append", dest="configs",
                    help="the sonic serve flags of one configuration (repeatable)")
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--concurrency", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--window-ms", type=int, default=2000)
    args = ap.parse_args()
    configs = args.configs or DEFAULT_CONFIGS
    results: dict[str, list[float]] = {c: [] for c in configs}
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "repo"
        write_mlp(repo)
        for rep in range(args.repeats):
            for config in configs if rep % 2 == 0 else list(reversed(configs)):
                with LocalServer(repo, *config.split()) as srv:
                    r = load(srv.grpc_url, args.clients, args.concurrency, args.window_ms,
                             Path(tmp))  # fmt: skip
                results[config].append(r)
                print(f"rep {rep} {config or '(one process)':22s}: {r:8.0f} infer/s", flush=True)
    base = statistics.median(results[configs[0]])
    print(f"| sonic serve | infer/s ({args.clients} clients x concurrency {args.concurrency}) | "
          "vs first |\n|---|---|---|")  # fmt: skip
    for config in configs:
        m = statistics.median(results[config])
        print(f"| `{config or '(one process)'}` | {m:.0f} | {m / base:.2f} |")

if __name__ == "__main__":
    main()
