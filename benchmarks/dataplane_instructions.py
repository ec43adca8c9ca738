"""Instructions per ModelInfer on the server's Python side, counted, not timed.

The development machine is shared: its speed moves by 2-3x within an hour, and timed A/Bs of a
few per cent in the data plane drown in it.  An instruction count hardly moves (the same code
counted twice: within about 1%, docs/performance.md).  This runs
``benchmarks/dataplane_cost.py``'s harness (real serialized requests handed to the native
transport's Python side N at a time, through decoding, the servicer, the data plane, the
batcher, onnxruntime, statistics and encoding; no transport) under valgrind's callgrind, twice,
with a short and a long run of hand-overs: the difference, over the difference in requests, is
what one request costs once the server is started and warm.  Given ``--base REF``, the same for
that commit (a git worktree), side by side::

    .venv/bin/python benchmarks/dataplane_instructions.py --base HEAD~1

It counts instructions, not CPU time: a change that trades instructions for cache misses or
system calls shows only in the timed benchmarks (``dataplane_cost.py``, ``commits_ab.py``).
Under valgrind each call takes far longer than the single-instance pool's inline limit, so the
child raises that limit: the model runs inline, as it does at these points on a normal machine.
Only the event loop's thread is counted, with a fixed hash seed, so that a count repeats:
the other threads (onnxruntime's, grpc's) wake by the clock, which valgrind slows 50 times.
Needs ``valgrind`` (Debian's package; ``make setup`` does not install it).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: (rows per request, requests per hand-over), as in dataplane_cost.POINTS.
POINTS = [(1, 1), (1, 4), (1, 16), (64, 2)]
#: Hand-overs in the short and the long run of each point.
SHORT, LONG = 50, 450


def child(rows: int, per_pump: int, hand_overs: int) -> None:
    """In valgrind: start the harness's server, warm it, run exactly ``hand_overs``.  The
    harness is this tree's; the server code is the tree on ``PYTHONPATH``, imported first
    (dataplane_cost puts this tree's ``src`` on the path)."""
    import sonic

    assert Path(sonic.__file__).resolve().is_relative_to(os.environ["PYTHONPATH"]), sonic.__file__
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import uvloop
    from common import write_mlp
    from dataplane_cost import CONFIG, measure

    from sonic.server.scheduling import instances

    instances.INLINE_BELOW_NS = 10**12  # see the module docstring
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "repo"
        write_mlp(repo, CONFIG)
        uvloop.run(measure(repo, rows, per_pump, 0.0, hand_overs=hand_overs))


def instructions(tree: Path, rows: int, per_pump: int, hand_overs: int) -> int:
    """Instructions callgrind counted on the child's event-loop thread, serving with
    ``tree``'s server code."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "callgrind.out"
        cmd = ["valgrind", "--tool=callgrind", "--separate-threads=yes",
               f"--callgrind-out-file={out}",
               sys.executable, str(Path(__file__).resolve()),
               "--child", str(rows), str(per_pump), str(hand_overs)]  # fmt: skip
        # A fixed hash seed: set and dict layouts, and so the count, repeat.
        env = {"PYTHONPATH": str(tree / "src"), "PATH": "/usr/bin:/bin", "PYTHONHASHSEED": "0"}
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tree)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
        # The event loop's thread only (callgrind's thread 1): other threads (onnxruntime's,
        # grpc's) work by the clock, and under valgrind the clock runs 50 times longer.
        main = out.with_name(out.name + "-01")
        match = re.search(r"^summary: (\d+)", main.read_text(), re.MULTILINE)
        if match is None:
            raise RuntimeError(f"no summary line in {main}")
        return int(match.group(1))


def per_request(tree: Path, rows: int, per_pump: int) -> float:
    short = instructions(tree, rows, per_pump, SHORT)
    long = instructions(tree, rows, per_pump, LONG)
    return (long - short) / ((LONG - SHORT) * per_pump)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", help="a git ref to count side by side with the working tree")
    ap.add_argument("--points", nargs="+", metavar="ROWSxN",
                    help="only these points, e.g. 1x4 (default: " + " ".join(
                        f"{r}x{n}" for r, n in POINTS) + ")")
    ap.add_argument("--child", nargs=3, type=int, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path,
                    default=ROOT / "benchmarks" / "results" / "dataplane_instructions.json")
    args = ap.parse_args()
    if args.child:
        child(*args.child)
        return
    if shutil.which("valgrind") is None:
        sys.exit("valgrind is not installed (apt-get install valgrind)")
    trees = {"working tree": ROOT}
    with tempfile.TemporaryDirectory() as tmp:
        if args.base:
            base = Path(tmp) / "base"
            subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(base),
                            args.base], check=True, capture_output=True)  # fmt: skip
            trees = {args.base: base, **trees}
        # Bytecode compiled beforehand: else a point's first run compiles it, its second not.
        for tree in trees.values():
            subprocess.run([sys.executable, "-m", "compileall", "-q", str(tree / "src"),
                            str(Path(__file__).resolve().parent)], check=True)  # fmt: skip
        try:
            print("| rows per request | requests per hand-over | "
                  + " | ".join(f"instructions per request ({name})" for name in trees)
                  + (" | working tree / base |" if args.base else " |"))
            print("|---" * (2 + len(trees) + bool(args.base)) + "|")
            results = []
            points = ([tuple(map(int, p.split("x"))) for p in args.points] if args.points
                      else POINTS)  # fmt: skip
            for rows, per_pump in points:
                # The trees side by side: a count hardly depends on what else runs.
                with ThreadPoolExecutor(len(trees)) as pool:
                    counted = pool.map(partial(per_request, rows=rows, per_pump=per_pump),
                                       trees.values())  # fmt: skip
                    counts = dict(zip(trees, counted, strict=True))
                results.append({"rows": rows, "per_pump": per_pump, "instructions": counts})
                cells = " | ".join(f"{n / 1000:.0f}k" for n in counts.values())
                ratio = (f" | {counts['working tree'] / counts[args.base]:.3f}"
                         if args.base else "")  # fmt: skip
                print(f"| {rows} | {per_pump} | {cells}{ratio} |", flush=True)
        finally:
            if args.base:
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force",
                                str(base)], check=False)  # fmt: skip
    args.out.write_text(json.dumps({"python": sys.version.split()[0], "short": SHORT,
                                    "long": LONG, "points": results}, indent=1))  # fmt: skip
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
