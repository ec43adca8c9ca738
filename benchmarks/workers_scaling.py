"""How throughput scales with ``sonic serve --workers N`` when many clients connect.

Workers share the ports with SO_REUSEPORT, so the kernel spreads *connections*
over them; the load is therefore several perf_analyzer processes at once (each
its own connections), as many grid jobs are.  Worker counts alternate at every
repetition.  Run::

    .venv/bin/python benchmarks/workers_scaling.py --workers 1 2 --clients 4 --repeats 3
"""

from __future__ import annotations

import argparse
import csv
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from sonic.launcher import LocalServer  # noqa: E402
from sonic.repository.examples import MLP_BENCHMARK_CONFIG, mlp_model, write_model  # noqa: E402


def load(url: str, clients: int, concurrency: int, window_ms: int, tmp: Path) -> float:
    exe = ROOT / ".venv" / "bin" / "perf_analyzer"
    procs = []
    for i in range(clients):
        cmd = [str(exe), "-m", "mlp", "-u", url, "-i", "grpc", "--concurrency-range",
               str(concurrency), "-p", str(window_ms), "-s", "50", "-r", "5",
               "-f", str(tmp / f"c{i}.csv")]  # fmt: skip
        procs.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    for p in procs:
        p.wait(600)
    total = 0.0
    for i in range(clients):
        with (tmp / f"c{i}.csv").open() as f:
            total += float(next(csv.DictReader(f))["Inferences/Second"])
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--concurrency", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--window-ms", type=int, default=2000)
    args = ap.parse_args()
    results: dict[int, list[float]] = {w: [] for w in args.workers}
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "repo"
        write_model(mlp_model(), repo, "mlp", config=MLP_BENCHMARK_CONFIG)
        for rep in range(args.repeats):
            order = args.workers if rep % 2 == 0 else list(reversed(args.workers))
            for w in order:
                with LocalServer(repo, f"--workers={w}") as srv:
                    r = load(srv.grpc_url, args.clients, args.concurrency, args.window_ms,
                             Path(tmp))  # fmt: skip
                results[w].append(r)
                print(f"rep {rep} workers {w}: {r:8.0f} infer/s", flush=True)
    base = statistics.median(results[args.workers[0]])
    print(f"| workers | infer/s ({args.clients} clients x concurrency {args.concurrency}) | "
          "vs first |\n|---|---|---|")  # fmt: skip
    for w in args.workers:
        m = statistics.median(results[w])
        print(f"| {w} | {m:.0f} | {m / base:.2f} |")


if __name__ == "__main__":
    main()
