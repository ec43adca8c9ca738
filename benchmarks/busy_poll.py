"""``sonic serve --busy-poll-us``: what polling the event loop between requests buys and costs.

Two ``sonic serve`` processes on the benchmark MLP (the server_vs_triton
config), one with ``--busy-poll-us 0`` (the loop sleeps as soon as it has
nothing to do) and one with the default window, driven by perf_analyzer over
gRPC in turns, at:

- batch 1 at concurrency 1 and 8, batch 64 at concurrency 4 (the issue #3
  points): requests/s, p50/p99 latency, server CPU per request;
- a paced stream of 500 requests/s (one every 2 ms, longer than the window):
  latency, and the server's CPU per request, which is where polling costs.

It also reads the idle server's CPU over a few seconds with no traffic::

    .venv/bin/python benchmarks/busy_poll.py --repeats 3

Prints a markdown table and writes ``benchmarks/results/busy_poll.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from common import PERF_ANALYZER, load_options, report_row, until_stable, write_mlp  # noqa: E402

from sonic.launcher import LocalServer  # noqa: E402
from sonic.server.settings import DEFAULT_BUSY_POLL_US  # noqa: E402

#: (label, batch, concurrency, perf_analyzer's other load flags)
POINTS = [
    ("batch 1, concurrency 1", 1, 1, []),
    ("batch 1, concurrency 8", 1, 8, []),
    ("batch 64, concurrency 4", 64, 4, []),
    ("batch 1, paced 500 req/s", 1, None, ["--request-rate-range", "500"]),
]
KEYS = ("requests_per_s", "p50_us", "p99_us", "server_cpu_us_per_request")
SETTINGS = {"off (0)": 0, f"default ({DEFAULT_BUSY_POLL_US} µs)": DEFAULT_BUSY_POLL_US}


def cpu(pid: int) -> float:
    t = psutil.Process(pid).cpu_times()
    return t.user + t.system


def perf_analyzer(url: str, pid: int, batch: int, concurrency: int | None, load: list[str],
                  window_ms: int) -> dict:  # fmt: skip
    return until_stable(lambda: _perf_analyzer_once(url, pid, batch, concurrency, load,
                                                    window_ms))  # fmt: skip


def _perf_analyzer_once(url: str, pid: int, batch: int, concurrency: int | None,
                        load: list[str], window_ms: int) -> dict:  # fmt: skip
    out = Path(tempfile.mktemp(suffix=".csv"))
    cmd = [PERF_ANALYZER, *load_options(url, window_ms, batch=batch, concurrency=concurrency,
                                        extra=load, report=out)]  # fmt: skip
    c0, t0 = cpu(pid), time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    cores = (cpu(pid) - c0) / (time.monotonic() - t0)
    if not out.exists():
        raise RuntimeError(proc.stdout + proc.stderr)
    row = report_row(out)
    out.unlink()
    rps = float(row["Inferences/Second"]) / batch
    return {"requests_per_s": rps, "p50_us": float(row["p50 latency"]),
            "p99_us": float(row["p99 latency"]), "server_cpu_us_per_request": cores / rps * 1e6,
            "command": " ".join(cmd[3:]).replace(url, "URL")}  # fmt: skip


def measure(servers: dict[str, LocalServer], order: list[str], points: list[tuple],
            window_ms: int, runs: dict[str, dict[str, list[dict]]], rep: int) -> None:
    """One repetition of ``points`` on each server, in ``order``; appends to runs[point][server]."""
    for label, batch, concurrency, load in points:
        for name in order:
            s = servers[name]
            assert s.proc is not None
            r = perf_analyzer(s.grpc_url, s.proc.pid, batch, concurrency, load, window_ms)
            runs.setdefault(label, {}).setdefault(name, []).append(r)
            print(f"rep {rep} {label:26s} {name:30s} {r['requests_per_s']:7.0f} req/s "
                  f"p50 {r['p50_us']:6.0f} p99 {r['p99_us']:6.0f} µs "
                  f"CPU {r['server_cpu_us_per_request']:5.0f} µs/req", flush=True)


def medians(runs: dict[str, dict[str, list[dict]]]) -> dict[str, dict[str, dict[str, float]]]:
    return {label: {name: {k: statistics.median(r[k] for r in rs) for k in KEYS}
                    for name, rs in d.items()} for label, d in runs.items()}  # fmt: skip


def ab_table(summary: dict[str, dict[str, dict[str, float]]], a: tuple[str, str],
             b: tuple[str, str]) -> list[str]:  # fmt: skip
    """Markdown rows comparing server ``a`` and ``b`` (each: its name in ``summary``, a short
    label for the header) at every point, with b/a of requests/s."""
    (na, la), (nb, lb) = a, b
    lines = [f"| point | req/s {la} / {lb} | **{lb}/{la}** | p50 µs {la} / {lb} | "
             f"p99 µs {la} / {lb} | server CPU µs/request {la} / {lb} |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for label, d in summary.items():
        x, y = d[na], d[nb]
        cpu_x, cpu_y = x["server_cpu_us_per_request"], y["server_cpu_us_per_request"]
        lines.append(f"| {label} | {x['requests_per_s']:.0f} / {y['requests_per_s']:.0f} | "
                     f"**{y['requests_per_s'] / x['requests_per_s']:.2f}** | "
                     f"{x['p50_us']:.0f} / {y['p50_us']:.0f} | "
                     f"{x['p99_us']:.0f} / {y['p99_us']:.0f} | {cpu_x:.0f} / {cpu_y:.0f} |")
    return lines


def idle_cpu(pid: int, seconds: float = 3.0) -> float:
    """Cores the server uses with no traffic at all."""
    c0 = cpu(pid)
    time.sleep(seconds)
    return (cpu(pid) - c0) / seconds


def alternate(flags: dict[str, str], points: list[tuple], repeats: int, window_ms: int,
              after: Callable[[dict[str, LocalServer], list[str]], None] | None = None,
              ) -> dict[str, dict[str, list[dict]]]:  # fmt: skip
    """``sonic serve`` on the benchmark MLP once per entry of ``flags`` (name: one extra flag),
    measured in turns, the order reversed every repetition; ``after`` runs after each one."""
    runs: dict[str, dict[str, list[dict]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "repo"
        write_mlp(repo)
        servers = {name: LocalServer(repo, flag).start() for name, flag in flags.items()}
        try:
            for rep in range(repeats):
                order = list(servers) if rep % 2 == 0 else list(reversed(servers))
                measure(servers, order, points, window_ms, runs, rep)
                if after is not None:
                    after(servers, order)
        finally:
            for s in servers.values():
                s.stop()
    return runs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--window-ms", type=int, default=2000)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "busy_poll.json")
    args = ap.parse_args()

    idle: dict[str, list[float]] = {}

    def read_idle(servers: dict[str, LocalServer], order: list[str]) -> None:
        for name in order:
            assert servers[name].proc is not None
            idle.setdefault(name, []).append(idle_cpu(servers[name].proc.pid))  # type: ignore[union-attr]

    runs = alternate({name: f"--busy-poll-us={us}" for name, us in SETTINGS.items()}, POINTS,
                     args.repeats, args.window_ms, read_idle)  # fmt: skip
    summary = medians(runs)
    idle_median = {name: statistics.median(v) for name, v in idle.items()}
    off, on = list(SETTINGS)
    lines = ab_table(summary, (off, "off"), (on, "on"))
    lines.append(f"| idle, no traffic | cores used: {idle_median[off]:.3f} / {idle_median[on]:.3f} "
                 "| | | | |")
    print("\n".join(lines))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    result = {"settings": SETTINGS, "repeats": args.repeats, "window_ms": args.window_ms,
              "summary": summary, "idle_cores": idle_median, "runs": runs}
    args.out.write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
