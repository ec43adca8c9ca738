"""A/B two revisions of ``sonic serve`` under NVIDIA perf_analyzer: did a change pay?

The base revision is checked out in a temporary git worktree and run with the
same Python environment (``PYTHONPATH`` puts its ``src`` first); the working
tree is the other side.  Both serve the benchmark MLP (gRPC, the native
transport where built), alternating at every repetition, and perf_analyzer
measures each point; the table gives medians of throughput and of server CPU
per request (the server's process tree, over each perf_analyzer run).

    .venv/bin/python benchmarks/commits_ab.py --base HEAD --repeats 3
    .venv/bin/python benchmarks/commits_ab.py --base HEAD --serve-arg=--busy-poll-us=0

The base gets the working tree's native extension when ``native/`` is the same
in both, and is built with ``scripts/build_native.sh`` otherwise.
"""

from __future__ import annotations

import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from common import PERF_ANALYZER, arguments, load_options, until_stable, write_mlp  # noqa: E402

from sonic.launcher import LocalServer  # noqa: E402

POINTS = [(1, 1), (1, 8), (64, 4)]  # (batch, concurrency)
NATIVE = Path("src/sonic/server/frontends")


def worktree(base: str, into: Path) -> Path:
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(into), base],
                   check=True)  # fmt: skip
    same_native = subprocess.run(["git", "-C", str(ROOT), "diff", "--quiet", base, "--",
                                  "native/"]).returncode == 0  # fmt: skip
    if same_native:
        for so in (ROOT / NATIVE).glob("_grpc_native*.so"):
            shutil.copy(so, into / NATIVE)
    else:
        subprocess.run(["bash", "scripts/build_native.sh"], cwd=into, check=True,
                       env={**os.environ, "VENV": str(ROOT / ".venv")})  # fmt: skip
    return into / "src"


def tree_cpu(pid: int) -> float:
    total = 0.0
    proc = psutil.Process(pid)
    for p in [proc, *proc.children(recursive=True)]:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


def measure(repo: Path, src: str, extra: list[str], batch: int, concurrency: int,
            window_ms: int) -> tuple[float, float]:  # fmt: skip
    """(inferences/s, server CPU µs per request) of one perf_analyzer run, on a fresh server
    for each try (common.until_stable)."""
    return until_stable(lambda: _measure_once(repo, src, extra, batch, concurrency,
                                              window_ms))  # fmt: skip


def _measure_once(repo: Path, src: str, extra: list[str], batch: int, concurrency: int,
                  window_ms: int) -> tuple[float, float]:  # fmt: skip
    env = {**os.environ, "PYTHONPATH": src}
    with LocalServer(repo, *extra, env=env) as server:
        assert server.proc is not None
        c0, t0 = tree_cpu(server.proc.pid), time.monotonic()
        out = subprocess.run(
            [PERF_ANALYZER, *load_options(server.grpc_url, window_ms, batch=batch,
                                          concurrency=concurrency, stability=25)],
            capture_output=True, text=True, timeout=600).stdout  # fmt: skip
        cpu_s, wall_s = tree_cpu(server.proc.pid) - c0, time.monotonic() - t0
    m = re.search(r"Throughput: ([\d.]+) infer/sec", out)
    if m is None:
        raise RuntimeError(f"perf_analyzer gave no throughput: {out[-300:]!r}")
    infer_s = float(m.group(1))
    return infer_s, cpu_s / wall_s / (infer_s / batch) * 1e6


def main() -> None:
    ap = arguments(__doc__)
    ap.add_argument("--base", default="HEAD", help="the revision to compare against")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--window-ms", type=int, default=3000)
    ap.add_argument("--serve-arg", action="append", default=[],
                    help="a sonic serve flag for both sides (repeatable)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "repo"
        write_mlp(repo)
        sides = {"base": worktree(args.base, Path(tmp) / "base"), "tree": str(ROOT / "src")}
        try:
            runs: dict[tuple[int, int, str], list[tuple[float, float]]] = {}
            for batch, conc in POINTS:
                for r in range(args.repeats):
                    for side in (("base", "tree") if r % 2 == 0 else ("tree", "base")):
                        runs.setdefault((batch, conc, side), []).append(measure(
                            repo, str(sides[side]), args.serve_arg, batch, conc,
                            args.window_ms))  # fmt: skip
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force",
                            str(Path(tmp) / "base")], check=False)  # fmt: skip
    print(f"base {args.base} against the working tree; perf_analyzer, alternating, "
          f"medians of {args.repeats}")
    print("| point | base infer/s | tree infer/s | **tree/base** | server CPU µs/request "
          "(base / tree) |\n|---|---|---|---|---|")
    for batch, conc in POINTS:
        base = runs[(batch, conc, "base")]
        tree = runs[(batch, conc, "tree")]
        b, t = (statistics.median(x[0] for x in base), statistics.median(x[0] for x in tree))
        bc, tc = (statistics.median(x[1] for x in base), statistics.median(x[1] for x in tree))
        print(f"| batch {batch}, concurrency {conc} | {b:.0f} | {t:.0f} | **{t / b:.2f}** | "
              f"{bc:.0f} / {tc:.0f} |")


if __name__ == "__main__":
    main()
