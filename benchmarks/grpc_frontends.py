"""How fast can a gRPC front end be on this machine, before any inference?

Starts servers that implement just enough of Triton's gRPC service for
perf_analyzer (metadata, config, and a ModelInfer that returns a canned
response) on the native transport and on two grpcio stacks, and measures them in
alternation at concurrency 1 and 8, with the server's CPU per request:

- the native transport (``sonic.server.frontends._grpc_native``: grpc++ 1.51's generic
  async service on one completion-queue thread, calls handed to Python in bulk
  through an eventfd), parsing each request and serializing each answer in
  Python as the others do;
- ``grpc.aio`` on uvloop (what ``sonic serve`` uses), with grpc's default
  EventEngine TCP transport and with the poller-thread transport that the
  ``sonic`` command selects (``sonic.server.settings.GRPC_EXPERIMENTS``);
- grpcio's thread-pool server with 2 workers.

This is the ceiling any Python server built on grpcio can reach per process;
the README's performance section quotes it to explain the gap to Triton's C++
front end.  Run::

    .venv/bin/python benchmarks/grpc_frontends.py --repeats 3
"""

from __future__ import annotations

import argparse
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

from common import PERF_ANALYZER, load_options, report_row  # noqa: E402

from sonic.launcher import free_ports  # noqa: E402
from sonic.server.settings import GRPC_EXPERIMENTS  # noqa: E402

SERVER = """
import sys, asyncio
from concurrent import futures
import grpc
from tritonclient.grpc import model_config_pb2 as mc, service_pb2 as pb, service_pb2_grpc as pbg

CONFIG = pb.ModelConfigResponse(config=mc.ModelConfig(
    name="mlp", max_batch_size=256,
    input=[mc.ModelInput(name="input", data_type=mc.TYPE_FP32, dims=[64])],
    output=[mc.ModelOutput(name="output", data_type=mc.TYPE_FP32, dims=[2])]))
RESPONSE = pb.ModelInferResponse(model_name="mlp", model_version="1")
RESPONSE.outputs.add(name="output", datatype="FP32", shape=[1, 2])
RESPONSE.raw_output_contents.append(bytes(8))
SERVER_METADATA = pb.ServerMetadataResponse(name="triton", version="0")


def metadata():
    m = pb.ModelMetadataResponse(name="mlp", versions=["1"], platform="onnxruntime_onnx")
    m.inputs.add(name="input", datatype="FP32", shape=[-1, 64])
    m.outputs.add(name="output", datatype="FP32", shape=[-1, 2])
    return m


class Sync(pbg.GRPCInferenceServiceServicer):
    def ServerMetadata(self, r, c): return SERVER_METADATA
    def ModelMetadata(self, r, c): return metadata()
    def ModelConfig(self, r, c): return CONFIG
    def ModelInfer(self, r, c): return RESPONSE


class Async(pbg.GRPCInferenceServiceServicer):
    async def ServerMetadata(self, r, c): return SERVER_METADATA
    async def ModelMetadata(self, r, c): return metadata()
    async def ModelConfig(self, r, c): return CONFIG
    async def ModelInfer(self, r, c): return RESPONSE


mode, port = sys.argv[1], sys.argv[2]
if mode == "native":
    import uvloop
    from sonic.server.frontends import _grpc_native
    from sonic.server.frontends.grpc_frames import REPLY, relay_methods
    from sonic.server.frontends.grpc_aio import server_options

    METHODS = relay_methods()
    # Parse each request and serialize each answer, as the grpc.aio servicers do.
    ANSWERS = {i: (m.request, {"ServerMetadata": lambda: SERVER_METADATA,
                               "ModelMetadata": metadata, "ModelConfig": lambda: CONFIG,
                               "ModelInfer": lambda: RESPONSE}.get(m.name))
               for i, m in enumerate(METHODS)}

    async def main():
        s = _grpc_native.Server([f"/{m.service}/{m.name}" for m in METHODS],
                                [int(m.client_streaming) + 2 * int(m.server_streaming)
                                 for m in METHODS], False)
        s.start(f"127.0.0.1:{port}", server_options(), {})

        def pump():
            out = []
            for kind, call, method, body, _, _, _ in s.drain():
                request, answer = ANSWERS[method]
                request.FromString(body)
                out.append((REPLY, call, 0, answer().SerializeToString()))
            s.send(out)

        asyncio.get_running_loop().add_reader(s.fd(), pump)
        await asyncio.Event().wait()

    uvloop.run(main())
elif mode == "threads":
    s = grpc.server(futures.ThreadPoolExecutor(2))
    pbg.add_GRPCInferenceServiceServicer_to_server(Sync(), s)
    s.add_insecure_port(f"127.0.0.1:{port}")
    s.start()
    s.wait_for_termination()
else:
    import uvloop

    async def main():
        s = grpc.aio.server()
        pbg.add_GRPCInferenceServiceServicer_to_server(Async(), s)
        s.add_insecure_port(f"127.0.0.1:{port}")
        await s.start()
        await s.wait_for_termination()

    uvloop.run(main())
"""


DEFAULT = {"GRPC_EXPERIMENTS": ""}
POLLER = {"GRPC_EXPERIMENTS": GRPC_EXPERIMENTS}
MODES = {  # label: (server script mode, extra environment)
    "native transport: grpc++ generic service, one completion-queue thread (as `sonic serve`)":
        ("native", DEFAULT),
    "grpc.aio, grpc's default transport (EventEngine)": ("aio", DEFAULT),
    "grpc.aio, poller-thread transport (as `sonic serve`)": ("aio", POLLER),
    "thread-pool server, 2 workers": ("threads", DEFAULT),
}


def measure(port: int, pid: int, concurrency: int, window_ms: int,
            out: Path) -> tuple[float, float]:  # fmt: skip
    """Requests/s, and the server's CPU per request over the perf_analyzer run."""
    server = psutil.Process(pid)
    cpu0, t0 = sum(server.cpu_times()[:2]), time.monotonic()
    subprocess.run(
        [PERF_ANALYZER, *load_options(f"127.0.0.1:{port}", window_ms, concurrency=concurrency,
                                      stability=25, report=out)],
        capture_output=True, check=True, timeout=300,
    )  # fmt: skip
    cores = (sum(server.cpu_times()[:2]) - cpu0) / (time.monotonic() - t0)
    rps = float(report_row(out)["Inferences/Second"])
    return rps, cores / rps * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--window-ms", type=int, default=2000)
    args = ap.parse_args()
    results: dict[tuple[str, int], list[tuple[float, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "server.py"
        script.write_text(SERVER)
        servers = {}
        for label, (mode, env) in MODES.items():
            (port,) = free_ports(1)
            proc = subprocess.Popen([sys.executable, str(script), mode, str(port)],
                                    env={**os.environ, **env,
                                         "PYTHONPATH": str(ROOT / "src")})  # fmt: skip
            servers[label] = (port, proc)
        time.sleep(3)
        try:
            for rep in range(args.repeats):
                order = list(MODES) if rep % 2 == 0 else list(reversed(MODES))
                for conc in (1, 8):
                    for label in order:
                        port, proc = servers[label]
                        r = measure(port, proc.pid, conc, args.window_ms, Path(tmp) / "pa.csv")
                        results.setdefault((label, conc), []).append(r)
                        print(f"rep {rep} c{conc} {label}: {r[0]:.0f} requests/s, "
                              f"{r[1]:.0f} us CPU/request", flush=True)  # fmt: skip
        finally:
            for _, proc in servers.values():
                proc.terminate()
                proc.wait()
    print("| gRPC front end (no inference) | concurrency 1 | concurrency 8 |\n|---|---|---|")
    for label in MODES:
        cells = []
        for conc in (1, 8):
            runs = results[(label, conc)]
            rps = statistics.median(r[0] for r in runs)
            cpu = statistics.median(r[1] for r in runs)
            cells.append(f"{rps:.0f} req/s, {cpu:.0f} µs CPU/req")
        print(f"| {label} | {cells[0]} | {cells[1]} |")


if __name__ == "__main__":
    main()
