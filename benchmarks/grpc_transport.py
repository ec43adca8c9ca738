"""grpc's two TCP transports under ``sonic serve`` and a Python client, side by side.

The ``sonic`` command sets ``GRPC_EXPERIMENTS`` (``sonic.server.settings.GRPC_EXPERIMENTS``) so
that grpc does its socket I/O in the thread that polls instead of EventEngine's
own threads.  This measures that choice, alternating at every repetition:

- ``sonic serve`` on the benchmark MLP with each transport, driven by
  perf_analyzer (batch 1 at concurrency 1 and 8, batch 64 at concurrency 4):
  requests/s and the server's CPU per request;
- a Python client (a loop of grpcio blocking ModelInfer calls on a channel
  with grpc's minimal filter stack, as ``sonic perf``'s load channels) with
  each transport against one server: its CPU per call, next to perf_analyzer's
  (C++) CPU per request at batch 1, concurrency 1::

    .venv/bin/python benchmarks/grpc_transport.py --repeats 3
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from common import PERF_ANALYZER, arguments, load_options, report_row, write_mlp  # noqa: E402

from sonic.launcher import LocalServer  # noqa: E402
from sonic.server.settings import GRPC_EXPERIMENTS  # noqa: E402

POINTS = [(1, 1), (1, 8), (64, 4)]  # (batch, concurrency)
TRANSPORTS = {"EventEngine (grpc's default)": "", "poller thread (sonic's)": GRPC_EXPERIMENTS}

CLIENT = """
import sys, time, grpc
from tritonclient.grpc import service_pb2 as pb
r = pb.ModelInferRequest(model_name="mlp")
r.inputs.add(name="input", datatype="FP32", shape=[1, 64])
r.raw_input_contents.append(bytes(256))
payload = r.SerializeToString()
channel = grpc.insecure_channel(sys.argv[1], options=[("grpc.minimal_stack", 1)])
call = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
for _ in range(300):
    call(payload)
n = 3000
t0, c0 = time.perf_counter(), time.process_time()
for _ in range(n):
    call(payload)
print(n / (time.perf_counter() - t0), (time.process_time() - c0) / n * 1e6)
"""


def cpu(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return t.user + t.system


def perf_analyzer(url: str, server_pid: int, batch: int, conc: int, out: Path) -> dict:
    """requests/s, server CPU per request and perf_analyzer's own CPU per request."""
    server = psutil.Process(server_pid)
    out.unlink(missing_ok=True)
    s0, t0 = cpu(server), time.monotonic()
    pa = psutil.Popen([PERF_ANALYZER, *load_options(url, 2000, batch=batch, concurrency=conc,
                                                     trials=10, report=out)],
                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    client = 0.0
    while pa.poll() is None:  # its CPU just before it exits
        try:
            client = cpu(pa)
        except psutil.NoSuchProcess:
            break
        time.sleep(0.05)
    seconds = time.monotonic() - t0
    server_cores = (cpu(server) - s0) / seconds
    rps = float(report_row(out)["Inferences/Second"]) / batch
    return {"rps": rps, "server_cpu_us": server_cores / rps * 1e6,
            "client_cpu_us": client / seconds / rps * 1e6}  # fmt: skip


def main() -> None:
    ap = arguments(__doc__)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    serve: dict[tuple[str, str], list[dict]] = {}
    client: dict[str, list[tuple[float, float]]] = {}
    pa_client: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "repo"
        write_mlp(repo)
        for rep in range(args.repeats):
            order = list(TRANSPORTS) if rep % 2 == 0 else list(reversed(TRANSPORTS))
            for name in order:
                env = {**os.environ, "GRPC_EXPERIMENTS": TRANSPORTS[name]}
                with LocalServer(repo, env=env) as server:
                    assert server.proc is not None
                    for batch, conc in POINTS:
                        r = perf_analyzer(server.grpc_url, server.proc.pid, batch, conc,
                                          Path(tmp) / "pa.csv")  # fmt: skip
                        serve.setdefault((name, f"b{batch}c{conc}"), []).append(r)
                        if (batch, conc) == (1, 1):
                            pa_client.append(r["client_cpu_us"])
                        print(f"rep {rep} {name}: b{batch} c{conc} {r['rps']:.0f} req/s, server "
                              f"{r['server_cpu_us']:.0f} us CPU/req", flush=True)  # fmt: skip
                    for cname in order:  # the Python client, each transport, same server
                        cenv = {**os.environ, "GRPC_EXPERIMENTS": TRANSPORTS[cname]}
                        out = subprocess.run([sys.executable, "-c", CLIENT, server.grpc_url],
                                             env=cenv, capture_output=True, text=True,
                                             check=True).stdout.split()  # fmt: skip
                        client.setdefault(cname, []).append((float(out[0]), float(out[1])))
    print("\n| point | " + " | ".join(TRANSPORTS) + " | ratio |\n|---|---|---|---|")
    names = list(TRANSPORTS)
    for batch, conc in POINTS:
        key = f"b{batch}c{conc}"
        cells = []
        for name in names:
            runs = serve[(name, key)]
            cells.append((statistics.median(r["rps"] for r in runs),
                          statistics.median(r["server_cpu_us"] for r in runs)))  # fmt: skip
        print(f"| batch {batch}, concurrency {conc} | "
              + " | ".join(f"{rps:.0f} req/s, {us:.0f} µs server CPU/req" for rps, us in cells)
              + f" | {cells[1][0] / cells[0][0]:.2f} |")  # fmt: skip
    print("\n| Python blocking call (batch 1) | " + " | ".join(names) + " |\n|---|---|---|")
    print("| client CPU per call | " + " | ".join(
        f"{statistics.median(c for _, c in client[n]):.0f} µs" for n in names) + " |")
    print(f"\nperf_analyzer's own CPU per request at batch 1, concurrency 1: "
          f"{statistics.median(pa_client):.0f} µs")


if __name__ == "__main__":
    main()
