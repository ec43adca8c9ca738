"""Check ``sonic plan`` against a measured run of several client processes on this machine.

1. Profile the benchmark MLP on one ``sonic serve`` with perf_analyzer's
   method (``sonic perf``, batch 64, gRPC): concurrency 1, 2, 4, 8 for the
   capacity, and one client at Poisson request rates of 5, 20, 40 and 60% of
   it for the latency under open-loop load.
2. For each workload (jobs x events/s, one request of 64 rows per event, as
   a jet tagger sends the jets of an event), ask the planner for servers and
   the expected average latency.
3. Run the workload for real: one ``sonic perf`` process per job, all at once,
   each sending its events at its rate (Poisson arrivals, as independent jobs
   do), and compare the achieved throughput and the average latency with the
   prediction::

    .venv/bin/python benchmarks/plan_validation.py

Writes ``benchmarks/results/plan_validation.json``.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from sonic.launcher import LocalServer  # noqa: E402
from sonic.perf.inputs import build_inputs  # noqa: E402
from sonic.perf.plan import Workload, plan  # noqa: E402
from sonic.perf.profiler import Profiler, Settings, payloads  # noqa: E402
from sonic.perf.target import Target, model_spec  # noqa: E402
from sonic.perf.tidy import from_level  # noqa: E402
from sonic.repository.examples import MLP_BENCHMARK_CONFIG, mlp_model, write_model  # noqa: E402

BATCH = 64  # rows per request: e.g. the jets of one event, as ParticleNet's producer sends
WORKLOADS = [(4, 50.0), (4, 150.0), (8, 120.0)]  # (jobs, events/s per job)


def run_jobs(url: str, jobs: int, rate: float, tmp: Path, window_ms: int) -> dict:
    procs, outs = [], []
    for j in range(jobs):
        out = tmp / f"job{j}.csv"
        out.unlink(missing_ok=True)
        outs.append(out)
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "sonic.cli", "perf", "-m", "mlp", "-u", url, "-i", "grpc",
             "-b", str(BATCH), "--request-rate-range", f"{rate:g}",
             "--request-distribution", "poisson",
             "-p", str(window_ms), "-s", "100", "-r", "10", "--verbose-csv", "-f", str(out)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))  # fmt: skip
    for p in procs:
        p.wait(600)
    rows = []
    for out in outs:
        with out.open() as f:
            rows.append(next(csv.DictReader(f)))
    tput = sum(float(r["Inferences/Second"]) for r in rows)
    avg = sum(float(r["Avg latency"]) * float(r["Inferences/Second"]) for r in rows) / tput
    return {"throughput": tput, "avg_latency_us": avg,
            "p99_latency_us_max": max(float(r["p99 latency"]) for r in rows)}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    ap.add_argument("--window-ms", type=int, default=3000)
    args = ap.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "repo"
        config = 'name: "mlp"\nplatform: "onnxruntime_onnx"\n' + MLP_BENCHMARK_CONFIG
        write_model(mlp_model(), repo, "mlp", config=config)
        with LocalServer(repo) as server:
            target = Target(server.grpc_url, "grpc", "mlp")
            model = model_spec(target)
            steps = build_inputs(model, BATCH)
            prof = Profiler(target, model, BATCH, payloads(target, model, steps),
                            Settings(interval_ms=args.window_ms, stability_pct=25,
                                     distribution="poisson"),
                            log=lambda _: None)  # fmt: skip
            profile = [from_level(prof.measure("concurrency", c), {"server": "sonic"})
                       for c in (1, 2, 4, 8)]  # fmt: skip
            top = max(r["throughput"] for r in profile) / BATCH  # requests/s at saturation
            profile += [from_level(prof.measure("rate", round(f * top)), {"server": "sonic"})
                        for f in (0.05, 0.2, 0.4, 0.6)]  # fmt: skip
            for r in profile:
                level = (f"c{r['concurrency']}" if r["concurrency"] is not None
                         else f"rate {r['request_rate']:g}/s")  # fmt: skip
                print(f"profile {level}: {r['throughput']:.0f} infer/s, avg {r['avg_us']} us",
                      flush=True)  # fmt: skip
            for jobs, rate in WORKLOADS:
                p = plan(profile, Workload(jobs, rate, BATCH))
                m = run_jobs(server.grpc_url, jobs, rate, Path(tmp), args.window_ms)
                err = p.expected_avg_latency_us / m["avg_latency_us"] - 1
                results.append({"jobs": jobs, "events_per_s": rate, "plan": p.as_dict(),
                                "measured": m, "latency_error": err})  # fmt: skip
                print(f"{jobs} jobs x {rate:g}/s: plan {p.servers} server(s), avg "
                      f"{p.expected_avg_latency_us:.0f} us; measured {m['throughput']:.0f} "
                      f"infer/s, avg {m['avg_latency_us']:.0f} us ({err:+.0%})",
                      flush=True)  # fmt: skip
    print("| workload | demand | servers (plan) | measured infer/s | avg latency plan | "
          "avg latency measured | error |\n|---|---|---|---|---|---|---|")  # fmt: skip
    for r in results:
        p, m = r["plan"], r["measured"]
        print(f"| {r['jobs']} jobs x {r['events_per_s']:g} ev/s | {p['demand']:.0f}/s | "
              f"{p['servers']} | {m['throughput']:.0f} | {p['expected_avg_latency_us']:.0f} us | "
              f"{m['avg_latency_us']:.0f} us | {r['latency_error']:+.0%} |")  # fmt: skip
    out = ROOT / "benchmarks" / "results" / "plan_validation.json"
    out.write_text(json.dumps({"profile": profile, "workloads": results}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
