"""Soak: hold 80% of the maximum throughput for 30 minutes with several client processes.

The production model (``deepmet``, CMSSW's DeepMET interface, one event per request, 4500
candidates: 180 kB per request) on one ``sonic serve`` with its dynamic batcher:

1. the maximum: gRPC at concurrency 8 from the same four load processes, 30 s after a
   warm-up;
2. the soak: four load processes (independent "jobs") sending Poisson arrivals at 80% of that
   maximum in total, for ``--minutes`` (30 by default), recorded per one-minute window:
   requests answered, errors, p50/p99 latency, and the server's resident memory (VmRSS);
3. the verdict: zero errors, resident memory growth under 5% after the warm-up (the first
   five minutes: allocator arenas and gRPC buffers reach their working size), and p99 steady
   (within 0.8-1.25x), each as the median of the second half of the windows after the
   warm-up against the first half.

::

    .venv/bin/python benchmarks/soak.py            # 30 minutes
    .venv/bin/python benchmarks/soak.py --minutes 2  # a quick look

Writes ``benchmarks/results/soak.json``.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from common import arguments  # noqa: E402  (benchmarks/, the script's own folder)

from sonic import __version__  # noqa: E402
from sonic.launcher import LocalServer  # noqa: E402
from sonic.perf.engine import Load, LoadSpec  # noqa: E402
from sonic.perf.inputs import build_inputs  # noqa: E402
from sonic.perf.profiler import payloads  # noqa: E402
from sonic.perf.target import Target, model_spec  # noqa: E402

REPO = ROOT / "examples" / "model_repository"
MODEL = "deepmet"


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def window(rows: np.ndarray, seconds: float) -> dict[str, float]:
    ok = rows[rows[:, 4] == 1]
    lat_ms = (ok[:, 1] - ok[:, 0]) / 1e6 if len(ok) else np.zeros(1)
    return {"requests": len(rows), "errors": int((rows[:, 4] == 0).sum()),
            "throughput": len(ok) / seconds, "p50_ms": float(np.percentile(lat_ms, 50)),
            "p99_ms": float(np.percentile(lat_ms, 99))}  # fmt: skip


def verdict(summary: dict) -> None:
    """Add the figures and print the verdict.  RSS and p99 are compared as the medians of the
    first and the second half of the windows after the warm-up: single readings on a shared
    machine move by ±10% (RSS) and by a factor of 3 (p99) from one minute to the next."""
    windows, minutes = summary["windows"], summary["minutes"]
    warm = next((i for i, w in enumerate(windows) if w["minute"] >= min(5.0, minutes / 3)), 0)
    body = windows[warm:]
    k = max(1, len(body) // 2)

    def median(key: str, part: list[dict]) -> float:
        return statistics.median(w[key] for w in part)

    rss_first, rss_last = median("rss_mb", body[:k]), median("rss_mb", body[k:] or body)
    p99_first, p99_last = median("p99_ms", body[:k]), median("p99_ms", body[k:] or body)
    summary.update({
        "achieved_req_per_s": statistics.mean(w["throughput"] for w in windows),
        "requests": sum(w["requests"] for w in windows),
        "errors": sum(w["errors"] for w in windows),
        "warmup_minutes": body[0]["minute"] if body else 0,
        "rss_mb_after_warmup": rss_first, "rss_mb_end": rss_last,
        "rss_growth": rss_last / rss_first - 1,
        "rss_mb_min": min(w["rss_mb"] for w in windows),
        "rss_mb_max": max(w["rss_mb"] for w in windows),
        "p99_ms_after_warmup": p99_first, "p99_ms_end": p99_last,
        "p99_ms_max_window": max(w["p99_ms"] for w in windows),
        "p50_ms_median": median("p50_ms", body),
    })  # fmt: skip
    summary["p99_ratio"] = p99_last / p99_first
    ok = summary["errors"] == 0 and summary["rss_growth"] < 0.05 and summary["server_alive"]
    summary["pass"] = ok and 0.8 <= summary["p99_ratio"] <= 1.25
    print(f"\n{summary['requests']} requests, {summary['errors']} errors; RSS (medians of two "
          f"halves of {len(body)} windows) {rss_first:.0f} -> {rss_last:.0f} MB "
          f"({summary['rss_growth']:+.1%}), min/max {summary['rss_mb_min']:.0f}/"
          f"{summary['rss_mb_max']:.0f}; p99 {p99_first:.1f} -> {p99_last:.1f} ms "
          f"(x{summary['p99_ratio']:.2f}): {'PASS' if summary['pass'] else 'FAIL'}")  # fmt: skip


def main() -> None:
    ap = arguments(__doc__)
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--window-s", type=float, default=60.0)
    ap.add_argument("--fraction", type=float, default=0.8)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--from-json", type=Path, help="recompute the verdict of a finished run")
    args = ap.parse_args()
    if args.from_json:
        summary = json.loads(args.from_json.read_text())
        verdict(summary)
        args.from_json.write_text(json.dumps(summary, indent=1) + "\n")
        return

    with LocalServer(REPO, "--model-control-mode=explicit", f"--load-model={MODEL}") as server:
        assert server.proc is not None
        pid = server.proc.pid
        target = Target(server.grpc_url, "grpc", MODEL)
        model = model_spec(target)
        data = payloads(target, model, build_inputs(model, 1))

        # The maximum from the same number of client processes as the soak: on a small machine
        # the clients share the cores with the server, and their cost must be the same in both.
        peak = Load(LoadSpec(target, data, "concurrency", 8), processes=args.clients)
        time.sleep(5)
        peak.flush()
        time.sleep(30)
        top = window(peak.flush(), 30)
        peak.stop()
        if top["errors"]:
            raise SystemExit(f"errors at the maximum: {peak.first_error}")
        rate = args.fraction * top["throughput"]
        print(f"maximum {top['throughput']:.1f} req/s (p99 {top['p99_ms']:.1f} ms); soaking at "
              f"{rate:.1f} req/s from {args.clients} processes for {args.minutes:g} min",
              flush=True)  # fmt: skip

        load = Load(LoadSpec(target, data, "rate", rate, "poisson", seed=7),
                    processes=args.clients)  # fmt: skip
        windows = []
        end = time.monotonic() + args.minutes * 60
        while time.monotonic() < end:
            t0 = time.monotonic()
            time.sleep(min(args.window_s, max(1.0, end - t0)))
            w = window(load.flush(), time.monotonic() - t0)
            w["rss_mb"] = rss_bytes(pid) / 2**20
            w["minute"] = round((time.monotonic() - (end - args.minutes * 60)) / 60, 2)
            windows.append(w)
            print(f"t={w['minute']:5.1f} min  {w['throughput']:6.1f} req/s  errors "
                  f"{w['errors']}  p50 {w['p50_ms']:6.2f} ms  p99 {w['p99_ms']:6.2f} ms  "
                  f"RSS {w['rss_mb']:.1f} MB", flush=True)  # fmt: skip
        load.stop()
        first_error = load.first_error
        alive = server.proc.poll() is None

    summary = {
        "model": MODEL, "minutes": args.minutes, "clients": args.clients,
        "max_req_per_s": top["throughput"], "target_req_per_s": rate,
        "first_error": first_error, "server_alive": alive,
        "versions": {"sonic": __version__, "python": platform.python_version()},
        "machine": f"{platform.machine()}, {os.cpu_count()} cores (shared with the clients)",
        "command": "python benchmarks/soak.py " + " ".join(sys.argv[1:]),
        "windows": windows,
    }  # fmt: skip
    verdict(summary)
    out = ROOT / "benchmarks" / "results" / "soak.json"
    out.write_text(json.dumps(summary, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
