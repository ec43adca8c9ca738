"""Check ``sonic plan`` against a measured run of several client processes on this machine.

1. Profile the benchmark MLP on one ``sonic serve`` with perf_analyzer's
   method (``sonic perf``, batch 64, gRPC): concurrency 1, 2, 4, 8 for the
   capacity, and Poisson request rates of 5, 20, 40 and 60% of it for the
   latency under open-loop load, from 4 load processes (``--processes 4``):
   a server that many jobs share sees many connections, and the same total
   rate costs it more over several connections than over one (measured here:
   one client's profile predicted 30% too little latency at 55% load).  Like
   the jobs (which must run together), the profile takes its first three
   windows (``-s 100``): a tighter stability bound would keep only calm windows
   and bias the profile low.
2. For each workload (jobs x events/s, one request of 64 rows per event, as
   a jet tagger sends the jets of an event), ask the planner for servers and
   the expected average latency.
3. Run the workload for real: one ``sonic perf`` process per job, all at once,
   each sending its events at its rate (Poisson arrivals, as independent jobs
   do), and compare the achieved throughput and the average latency with the
   prediction.  Each workload runs ``--repeats`` times (alternating order); the
   table gives the medians and the range of the error over the runs.

The server runs on half of this machine's CPUs and every client (the
profiling one and the jobs) on the other half, as on a site where the jobs
run on other nodes than the server: on shared CPUs the jobs' own CPU use
would slow the server down, which no server profile can foresee
(``--shared-cpus`` measures that case too)::

    .venv/bin/python benchmarks/plan_validation.py

Writes ``benchmarks/results/plan_validation.json``.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from common import arguments, load_options, report_row, write_mlp  # noqa: E402

from sonic.launcher import LocalServer  # noqa: E402
from sonic.perf.inputs import build_inputs  # noqa: E402
from sonic.perf.plan import Workload, plan  # noqa: E402
from sonic.perf.profiler import Profiler, Settings, payloads  # noqa: E402
from sonic.perf.target import Target, model_spec  # noqa: E402
from sonic.perf.tidy import from_level  # noqa: E402

BATCH = 64  # rows per request: e.g. the jets of one event, as ParticleNet's producer sends
WORKLOADS = [(4, 50.0), (4, 150.0), (4, 240.0), (8, 120.0)]  # (jobs, events/s per job)


def cpu_ticks() -> dict[int, tuple[int, int]]:
    """(busy, total) jiffies per CPU since boot, from /proc/stat."""
    ticks = {}
    for line in Path("/proc/stat").read_text().splitlines():
        name, *fields = line.split()
        if name.startswith("cpu") and name[3:].isdigit():
            values = [int(v) for v in fields[:8]]
            idle = values[3] + values[4]  # idle + iowait
            ticks[int(name[3:])] = (sum(values) - idle, sum(values))
    return ticks


def busy(before: dict[int, tuple[int, int]], after: dict[int, tuple[int, int]],
         cpus: list[int]) -> float:  # fmt: skip
    """Fraction of the time ``cpus`` were busy between two :func:`cpu_ticks`."""
    used = sum(after[c][0] - before[c][0] for c in cpus)
    total = sum(after[c][1] - before[c][1] for c in cpus)
    return used / total if total else 0.0


def run_jobs(url: str, jobs: int, rate: float, tmp: Path, window_ms: int) -> dict:
    procs, outs = [], []
    for j in range(jobs):
        out = tmp / f"job{j}.csv"
        out.unlink(missing_ok=True)
        outs.append(out)
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "sonic.cli", "perf",
             *load_options(url, window_ms, batch=BATCH, concurrency=None, stability=100,
                           trials=10, report=out,
                           extra=["--request-rate-range", f"{rate:g}",
                                  "--request-distribution", "poisson", "--verbose-csv"])],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))  # fmt: skip
    for p in procs:
        p.wait(600)
    rows = [report_row(out) for out in outs]
    tput = sum(float(r["Inferences/Second"]) for r in rows)
    avg = sum(float(r["Avg latency"]) * float(r["Inferences/Second"]) for r in rows) / tput
    return {"throughput": tput, "avg_latency_us": avg,
            "p99_latency_us_max": max(float(r["p99 latency"]) for r in rows)}  # fmt: skip


def main() -> None:
    ap = arguments(__doc__)
    ap.add_argument("--window-ms", type=int, default=3000)
    ap.add_argument("--repeats", type=int, default=3, help="runs of each workload (medians)")
    ap.add_argument("--profile-processes", type=int, default=4,
                    help="load processes (connections) of the profile")  # fmt: skip
    ap.add_argument("--shared-cpus", action="store_true",
                    help="run the server and the clients on the same CPUs")  # fmt: skip
    args = ap.parse_args()
    results = []
    cpus = sorted(os.sched_getaffinity(0))
    split = not args.shared_cpus and len(cpus) >= 2
    server_cpus, client_cpus = (cpus[len(cpus) // 2:], cpus[: len(cpus) // 2]) if split \
        else (cpus, cpus)  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "repo"
        write_mlp(repo)
        os.sched_setaffinity(0, server_cpus)  # the server process and its threads inherit it
        with LocalServer(repo) as server:
            os.sched_setaffinity(0, client_cpus)  # this process and the job processes
            print(f"server on CPUs {server_cpus}, clients on CPUs {client_cpus}", flush=True)
            target = Target(server.grpc_url, "grpc", "mlp")
            model = model_spec(target)
            steps = build_inputs(model, BATCH)
            prof = Profiler(target, model, BATCH, payloads(target, model, steps),
                            Settings(interval_ms=args.window_ms, stability_pct=100,
                                     distribution="poisson", processes=args.profile_processes),
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
            runs: dict[tuple[int, float], list[dict]] = {}
            for rep in range(args.repeats):  # workloads alternate; medians over repetitions
                for jobs, rate in WORKLOADS if rep % 2 == 0 else WORKLOADS[::-1]:
                    t0 = cpu_ticks()
                    m = run_jobs(server.grpc_url, jobs, rate, Path(tmp), args.window_ms)
                    t1 = cpu_ticks()
                    m["server_cpus_busy"] = busy(t0, t1, server_cpus)
                    m["client_cpus_busy"] = busy(t0, t1, client_cpus)
                    runs.setdefault((jobs, rate), []).append(m)
                    print(f"rep {rep} {jobs} jobs x {rate:g}/s: {m['throughput']:.0f} infer/s, "
                          f"avg {m['avg_latency_us']:.0f} us; CPUs busy: server "
                          f"{m['server_cpus_busy']:.0%}, clients {m['client_cpus_busy']:.0%}",
                          flush=True)  # fmt: skip
            for jobs, rate in WORKLOADS:
                p = plan(profile, Workload(jobs, rate, BATCH))
                ms = runs[(jobs, rate)]
                m = {k: statistics.median(r[k] for r in ms) for k in ms[0]}
                errors = [p.expected_avg_latency_us / r["avg_latency_us"] - 1 for r in ms]
                err = p.expected_avg_latency_us / m["avg_latency_us"] - 1
                results.append({"jobs": jobs, "events_per_s": rate, "plan": p.as_dict(),
                                "measured": m, "runs": ms, "latency_error": err,
                                "latency_error_range": [min(errors), max(errors)]})  # fmt: skip
    print("| workload | demand | servers (plan) | measured infer/s | avg latency plan | "
          "avg latency measured | error (range over runs) | CPUs busy (server / clients) |\n"
          "|---|---|---|---|---|---|---|---|")  # fmt: skip
    for r in results:
        p, m = r["plan"], r["measured"]
        print(f"| {r['jobs']} jobs x {r['events_per_s']:g} ev/s | {p['demand']:.0f}/s | "
              f"{p['servers']} | {m['throughput']:.0f} | {p['expected_avg_latency_us']:.0f} us | "
              f"{m['avg_latency_us']:.0f} us | {r['latency_error']:+.0%} "
              f"({r['latency_error_range'][0]:+.0%} to {r['latency_error_range'][1]:+.0%}) | "
              f"{m['server_cpus_busy']:.0%} / {m['client_cpus_busy']:.0%} |")  # fmt: skip
    out = ROOT / "benchmarks" / "results" / ("plan_validation_shared_cpus.json" if not split
                                             else "plan_validation.json")  # fmt: skip
    out.write_text(json.dumps({"server_cpus": server_cpus, "client_cpus": client_cpus,
                               "profile": profile, "workloads": results}, indent=1))  # fmt: skip
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
