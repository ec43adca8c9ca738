"""How fast could a Python server on the native transport be, against Triton and sonic?

Issue #19 asks sonic on its native gRPC transport for 1.5x Triton's throughput at batch 1,
concurrency 8 and batch 64, concurrency 4.  This measures what bounds that: a server on the
same transport (grpc++ on one completion-queue thread, calls handed to Python in bulk through
an eventfd on a uvloop loop, as ``sonic serve`` runs it) whose Python side does only what no
server can skip: parse each ModelInferRequest with tritonclient's protos, run every
ModelInfer of a hand-over as one onnxruntime execution of the benchmark MLP (one intra-op
thread, as the model's config asks), and serialize each ModelInferResponse.  No validation,
statistics, queue or batching rules.  Beside it, in alternation and with the same
perf_analyzer, real Triton and ``sonic serve`` on the same model, so that the ratios show how
much room the transport leaves and how much of it sonic's data plane uses::

    .venv/bin/python benchmarks/dataplane_bound.py --repeats 3

Medians of ``--repeats``; prints a markdown table and writes
``benchmarks/results/dataplane_bound.json``.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import onnxruntime as ort
from common import PERF_ANALYZER, arguments, load_options, report_row, write_mlp, write_results
from server_vs_triton import Triton, children_cpu_seconds, cpu_seconds, sonic_version

from sonic.launcher import LocalServer, free_ports
from sonic.zoo.examples import mlp_model

ROOT = Path(__file__).resolve().parents[1]
POINTS = [(1, 8), (64, 4)]  # (batch, concurrency), issue #19's throughput targets

BOUND = """
import asyncio, sys
import numpy as np, onnxruntime as ort, uvloop
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc, service_pb2 as pb
from sonic.server.frontends import _grpc_native
from sonic.server.frontends.grpc_frames import CALL, REPLY, relay_methods
from sonic.server.frontends.grpc_aio import server_options
from sonic.zoo.examples import MLP_BENCHMARK_CONFIG, mlp_model

port = sys.argv[1]
methods = relay_methods()
index = {m.name: i for i, m in enumerate(methods)}
options = ort.SessionOptions()
options.intra_op_num_threads = options.inter_op_num_threads = 1
session = ort.InferenceSession(mlp_model().SerializeToString(), options,
                               providers=["CPUExecutionProvider"])
config = text_format.Parse('name: "mlp"\\n' + MLP_BENCHMARK_CONFIG, mc.ModelConfig())
metadata = pb.ModelMetadataResponse(name="mlp", versions=["1"], platform="onnxruntime_onnx")
metadata.inputs.add(name="input", datatype="FP32", shape=[-1, 64])
metadata.outputs.add(name="output", datatype="FP32", shape=[-1, 2])
canned = {index["ModelMetadata"]: metadata, index["ModelConfig"]: pb.ModelConfigResponse(
    config=config), index["ModelStatistics"]: pb.ModelStatisticsResponse(
    model_stats=[pb.ModelStatistics(name="mlp", version="1")]),
    index["ServerLive"]: pb.ServerLiveResponse(live=True),
    index["ServerReady"]: pb.ServerReadyResponse(ready=True),
    index["ModelReady"]: pb.ModelReadyResponse(ready=True)}
INFER = index["ModelInfer"]
parse = pb.ModelInferRequest.FromString


def answer(server):
    out, calls, arrays = [], [], []
    for kind, call, method, body, _, _, _ in server.drain():
        if kind != CALL:
            continue
        if method != INFER:
            reply = canned.get(method)
            out.append((REPLY, call, 0, reply.SerializeToString() if reply else b""))
            continue
        request = parse(body)
        calls.append((call, request.id))
        arrays.append(np.frombuffer(request.raw_input_contents[0], np.float32).reshape(-1, 64))
    if arrays:
        y = session.run(["output"], {"input": np.concatenate(arrays)})[0]
        start = 0
        for (call, rid), x in zip(calls, arrays):
            rows = x.shape[0]
            response = pb.ModelInferResponse(model_name="mlp", model_version="1", id=rid)
            response.outputs.add(name="output", datatype="FP32", shape=[rows, 2])
            response.raw_output_contents.append(y[start:start + rows].tobytes())
            start += rows
            out.append((REPLY, call, 0, response.SerializeToString()))
    server.send(out)


async def main():
    server = _grpc_native.Server([f"/{m.service}/{m.name}" for m in methods],
                                 [int(m.client_streaming) + 2 * int(m.server_streaming)
                                  for m in methods], False)
    server.start(f"127.0.0.1:{port}", server_options(), {})
    asyncio.get_running_loop().add_reader(server.fd(), answer, server)
    print("ready", flush=True)
    await asyncio.Event().wait()

uvloop.run(main())
"""


def measure(url: str, pid: int, batch: int, concurrency: int, window_ms: int,
            report: Path) -> dict[str, float]:  # fmt: skip
    """One perf_analyzer point: requests/s, p99 and the server's and perf_analyzer's CPU per
    request (their cores in use over the run, warm-up included, over requests/s)."""
    cmd = [PERF_ANALYZER, *load_options(url, window_ms, batch=batch, concurrency=concurrency,
                                        report=report)]  # fmt: skip
    report.unlink(missing_ok=True)
    (cpu0, _), client0, t0 = cpu_seconds(pid), children_cpu_seconds(), time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    seconds = time.monotonic() - t0
    if not report.exists():
        raise RuntimeError(proc.stdout + proc.stderr)
    row = report_row(report)
    requests = float(row["Inferences/Second"]) / batch
    return {"throughput": float(row["Inferences/Second"]), "p99_us": float(row["p99 latency"]),
            "server_cpu_us": (cpu_seconds(pid)[0] - cpu0) / seconds / requests * 1e6,
            "client_cpu_us": (children_cpu_seconds() - client0) / seconds / requests * 1e6}


def main() -> None:
    ap = arguments(__doc__)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--window-ms", type=int, default=3000)
    ap.add_argument("--out", type=Path,
                    default=ROOT / "benchmarks" / "results" / "dataplane_bound.json")
    args = ap.parse_args()
    runs: dict[str, dict[str, list[dict[str, float]]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        write_mlp(work / "sonic")
        sonic = LocalServer(work / "sonic", "--grpc-transport=native").start()
        triton = Triton(work, mlp_model().SerializeToString())
        versions = {"sonic": sonic_version(), "triton": triton.version(),
                    "onnxruntime": ort.__version__, "python": platform.python_version(),
                    "perf_analyzer": "2.41.0 (tritonclient wheel)", "cpus": os.cpu_count()}
        print(json.dumps(versions), flush=True)
        (port,) = free_ports(1)
        bound = subprocess.Popen([sys.executable, "-c", BOUND, str(port)],
                                 stdout=subprocess.PIPE, cwd=ROOT)  # fmt: skip
        try:
            assert bound.stdout is not None and bound.stdout.readline().strip() == b"ready"
            servers = {"bound": (f"127.0.0.1:{port}", bound.pid),
                       "sonic-native": (sonic.grpc_url, sonic.proc.pid),
                       "triton": (triton.grpc_url, triton.proc.pid)}  # fmt: skip
            for rep in range(args.repeats):
                for batch, conc in POINTS:
                    order = list(servers)[:: -1 if rep % 2 else 1]
                    for name in order:
                        url, pid = servers[name]
                        r = measure(url, pid, batch, conc, args.window_ms, work / "pa.csv")
                        runs.setdefault(f"b{batch}_c{conc}", {}).setdefault(name, []).append(r)
                        print(f"rep {rep} b{batch} c{conc} {name:13s} {r['throughput']:9.0f} "
                              f"infer/s  server {r['server_cpu_us']:5.0f} us/request",
                              flush=True)  # fmt: skip
        finally:
            bound.terminate()
            sonic.stop()
            triton.stop()
    summary = {point: {name: {k: statistics.median(r[k] for r in rs) for k in rs[0]}
                       for name, rs in by.items()} for point, by in runs.items()}  # fmt: skip
    print("| point | server | infer/s | / Triton | p99 µs | server CPU µs/request | "
          "perf_analyzer CPU µs/request |\n|---|---|---|---|---|---|---|")
    for point, by in summary.items():
        for name, s in by.items():
            print(f"| {point} | {name} | {s['throughput']:.0f} | "
                  f"{s['throughput'] / by['triton']['throughput']:.2f} | {s['p99_us']:.0f} | "
                  f"{s['server_cpu_us']:.0f} | {s['client_cpu_us']:.0f} |")
    write_results(args.out, versions=versions, repeats=args.repeats, window_ms=args.window_ms,
                  summary=summary, runs=runs)


if __name__ == "__main__":
    main()
