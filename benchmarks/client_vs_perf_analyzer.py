"""Is the SONIC client the bottleneck?  Its asyncio throughput against perf_analyzer's.

The 64->256->256->2 MLP (max_batch_size 256, dynamic batching 100 us, one
instance) on one ``sonic serve``; batch 1 at concurrency 8, measured by NVIDIA
perf_analyzer and by ``Client.infer_async`` with 8 requests in flight,
alternating at every repetition.  Run::

    .venv/bin/python benchmarks/client_vs_perf_analyzer.py --repeats 3
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from common import PERF_ANALYZER, load_options, report_row, write_mlp  # noqa: E402

from sonic.client import Client  # noqa: E402
from sonic.launcher import LocalServer  # noqa: E402


def perf_analyzer(url: str, concurrency: int, window_ms: int, out: Path) -> float:
    subprocess.run([PERF_ANALYZER, *load_options(url, window_ms, concurrency=concurrency,
                                                 stability=25, report=out)],
                   capture_output=True, check=True, timeout=600)  # fmt: skip
    return float(report_row(out)["Inferences/Second"])


def client_async(url: str, concurrency: int, window_ms: int) -> float:
    x = np.random.default_rng(0).standard_normal((1, 64)).astype(np.float32)

    async def main() -> float:
        client = Client("mlp", [url])
        client.info()
        done = 0
        stop = 0.0

        async def worker() -> None:
            nonlocal done
            while time.perf_counter() < stop:
                await client.infer_async({"input": x})
                done += 1

        warm_end = time.perf_counter() + 1.0
        stop = warm_end
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        done = 0
        start = time.perf_counter()
        stop = start + window_ms / 1000
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
        client.close()
        return done / elapsed

    return asyncio.run(main())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--window-ms", type=int, default=3000)
    args = ap.parse_args()
    pa: list[float] = []
    cl: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "repo"
        write_mlp(repo)
        with LocalServer(repo) as srv:
            for rep in range(args.repeats):
                jobs = [("perf_analyzer", lambda: perf_analyzer(
                            srv.grpc_url, args.concurrency, args.window_ms, Path(tmp) / "pa.csv")),
                        ("client", lambda: client_async(srv.grpc_url, args.concurrency,
                                                        args.window_ms))]  # fmt: skip
                for name, job in jobs if rep % 2 == 0 else list(reversed(jobs)):
                    r = job()
                    (pa if name == "perf_analyzer" else cl).append(r)
                    print(f"rep {rep} {name:14s} {r:8.0f} infer/s", flush=True)
    p, c = statistics.median(pa), statistics.median(cl)
    print(
        f"| perf_analyzer infer/s | Client.infer_async infer/s | client/perf_analyzer |\n"
        f"|---|---|---|\n| {p:.0f} | {c:.0f} | {c / p:.2f} |"
    )


if __name__ == "__main__":
    main()
