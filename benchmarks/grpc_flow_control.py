"""The gRPC port's HTTP/2 flow control: grpc's BDP probing against sonic's static window.

``sonic serve`` turns grpc's bandwidth-delay-product probing off and announces
a static 16 MiB receive window instead (``--grpc-http2-bdp-probe=false``, the
default; ``sonic.server.frontends.grpc_aio.STATIC_WINDOW_BYTES``).  This measures
both sides of that choice, with the two settings in turns:

- small requests: perf_analyzer on the benchmark MLP (batch 1 at concurrency 1
  and 8, batch 64 at concurrency 4): requests/s, latency, server CPU;
- large requests: one 32 MiB FP32 tensor per call (tritonclient, a model that
  sums it) through a TCP proxy that delays each direction by 0, 2 and 10 ms,
  so that a window too small for the round trip would show::

    .venv/bin/python benchmarks/grpc_flow_control.py --repeats 3

Prints markdown tables and writes ``benchmarks/results/grpc_flow_control.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tritonclient.grpc as grpcclient
from onnx import TensorProto, helper

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from busy_poll import POINTS, ab_table, measure, medians  # noqa: E402
from common import write_mlp  # noqa: E402

from sonic.launcher import LocalServer, free_ports  # noqa: E402
from sonic.zoo.examples import write_model  # noqa: E402

SETTINGS = {"BDP probing (grpc's default)": "true", "static 16 MiB window (sonic's)": "false"}
ONE_WAY_DELAYS_MS = (0, 2, 10)
SUM_CONFIG = """name: "sum"
platform: "onnxruntime_onnx"
max_batch_size: 0
input [{name: "x", data_type: TYPE_FP32, dims: [-1, 1024]}]
output [{name: "y", data_type: TYPE_FP32, dims: [1, 1]}]
"""


def proxy(listen: int, target: int, delay_s: float) -> None:
    """A TCP proxy that delays every chunk by ``delay_s`` in each direction (run as a process)."""

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        try:
            while data := await reader.read(1 << 20):
                loop.call_later(delay_s, writer.write, data)
        finally:
            loop.call_later(delay_s + 0.001, writer.close)

    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        tr, tw = await asyncio.open_connection("127.0.0.1", target)
        await asyncio.gather(pipe(r, tw), pipe(tr, w), return_exceptions=True)

    async def main() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", listen)
        async with server:
            await server.serve_forever()

    asyncio.run(main())


def sum_model() -> object:
    graph = helper.make_graph(
        [helper.make_node("ReduceSum", ["x"], ["y"], keepdims=1)], "sum",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 1024])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1])],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


def upload_ms(grpc_port: int, delay_ms: int, x: np.ndarray, calls: int = 5) -> float:
    """Median time of one 32 MiB call through a proxy with ``delay_ms`` each way."""
    (port,) = free_ports(1)
    proc = subprocess.Popen([sys.executable, __file__, "--proxy", str(port), str(grpc_port),
                             str(delay_ms / 1000)])  # fmt: skip
    try:
        time.sleep(1.0)
        client = grpcclient.InferenceServerClient(f"127.0.0.1:{port}")
        inp = grpcclient.InferInput("x", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        client.infer("sum", [inp])  # connection set-up and warm-up
        times = []
        for _ in range(calls):
            t0 = time.perf_counter()
            client.infer("sum", [inp])
            times.append((time.perf_counter() - t0) * 1000)
        client.close()
        return statistics.median(times)
    finally:
        proc.kill()
        proc.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--window-ms", type=int, default=2000)
    ap.add_argument("--proxy", nargs=3, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path,
                    default=ROOT / "benchmarks" / "results" / "grpc_flow_control.json")  # fmt: skip
    args = ap.parse_args()
    if args.proxy:
        proxy(int(args.proxy[0]), int(args.proxy[1]), float(args.proxy[2]))
        return

    x = np.random.default_rng(0).random((8192, 1024), dtype=np.float32)  # 32 MiB
    small: dict[str, dict[str, list[dict]]] = {}
    large: dict[int, dict[str, list[float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "repo"
        write_mlp(repo)
        write_model(sum_model(), repo, "sum", config=SUM_CONFIG)  # type: ignore[arg-type]
        servers = {name: LocalServer(repo, f"--grpc-http2-bdp-probe={v}").start()
                   for name, v in SETTINGS.items()}  # fmt: skip
        try:
            for rep in range(args.repeats):
                order = list(servers) if rep % 2 == 0 else list(reversed(servers))
                measure(servers, order, POINTS[:3], args.window_ms, small, rep)
                for delay in ONE_WAY_DELAYS_MS:
                    for name in order:
                        ms = upload_ms(servers[name].grpc_port, delay, x)
                        large.setdefault(delay, {}).setdefault(name, []).append(ms)
                        print(f"rep {rep} 32 MiB, {delay} ms each way {name:30s} {ms:7.0f} ms",
                              flush=True)
        finally:
            for s in servers.values():
                s.stop()

    bdp, static = list(SETTINGS)
    small_median = medians(small)
    large_median = {d: {n: statistics.median(v) for n, v in by.items()} for d, by in large.items()}
    lines = ab_table(small_median, (bdp, "BDP"), (static, "static"))
    lines += ["", "| 32 MiB request, delay each way | BDP ms/call | static ms/call |",
              "|---|---|---|"]
    for delay, by in large_median.items():
        lines.append(f"| {delay} ms | {by[bdp]:.0f} | {by[static]:.0f} |")
    print("\n".join(lines))
    result = {"settings": SETTINGS, "repeats": args.repeats, "small": small_median,
              "large_ms": large_median, "runs": {"small": small, "large_ms": large}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
