"""``sonic demo``: serve the example repository and check it against direct inference.

Until the physics workflow lands, the demo starts ``sonic serve`` on free
loopback ports, sends the ``mlp`` model the same random batches over gRPC and
HTTP with the stock ``tritonclient``, runs them in-process with onnxruntime,
and prints throughput, latency and the largest difference (which must be 0).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
from rich.console import Console
from rich.table import Table

from sonic.launcher import LocalServer


def _run(
    client_mod: object, url: str, batches: list[np.ndarray]
) -> tuple[list[np.ndarray], list[float]]:
    client = client_mod.InferenceServerClient(url)  # type: ignore[attr-defined]
    outputs, latencies = [], []
    for x in batches:
        inp = client_mod.InferInput("input", list(x.shape), "FP32")  # type: ignore[attr-defined]
        inp.set_data_from_numpy(x)
        t0 = time.perf_counter()
        result = client.infer("mlp", [inp])
        latencies.append(time.perf_counter() - t0)
        outputs.append(result.as_numpy("output"))
    client.close()
    return outputs, latencies


def run_demo(repository: Path, n_requests: int = 200) -> int:
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient

    console = Console()
    rng = np.random.default_rng(1)
    batches = [
        rng.standard_normal((int(rng.integers(1, 9)), 64)).astype(np.float32)
        for _ in range(n_requests)
    ]
    session = ort.InferenceSession(
        str(repository / "mlp" / "1" / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    t0 = time.perf_counter()
    direct = [session.run(["output"], {"input": x})[0] for x in batches]
    direct_s = time.perf_counter() - t0

    table = Table(title=f"mlp (64-256-256-2), {n_requests} requests of 1-8 rows")
    for col in ("path", "requests/s", "p50 latency (ms)", "p99 latency (ms)", "max |Δ| vs direct"):
        table.add_column(col, justify="right" if col != "path" else "left")
    table.add_row("direct onnxruntime", f"{n_requests / direct_s:,.0f}", "-", "-", "0")
    worst = 0.0
    with (
        console.status("starting sonic serve on free ports ..."),
        LocalServer(repository) as server,
    ):
        for label, mod, url in (
            ("gRPC (tritonclient)", grpcclient, server.grpc_url),
            ("HTTP (tritonclient)", httpclient, server.http_url),
        ):
            outs, lat = _run(mod, url, batches)
            diff = max(float(np.max(np.abs(a - b))) for a, b in zip(outs, direct, strict=True))
            worst = max(worst, diff)
            ms = np.array(lat) * 1e3
            table.add_row(
                label,
                f"{n_requests / sum(lat):,.0f}",
                f"{np.percentile(ms, 50):.2f}",
                f"{np.percentile(ms, 99):.2f}",
                f"{diff:g}",
            )
    console.print(table)
    if worst != 0.0:
        console.print(f"[red]served outputs differ from direct inference by {worst:g}[/red]")
        return 1
    console.print("[green]served outputs are bit-identical to direct onnxruntime[/green]")
    return 0
