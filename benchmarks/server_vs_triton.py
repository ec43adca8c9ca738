"""This server against NVIDIA Triton (python backend), MLServer and in-process onnxruntime.

Side by side, in one run, alternating the servers at every repetition so that
the noise of a shared machine hits all of them alike.  The model is the
64->256->256->2 FP32 MLP with max_batch_size 256, dynamic batching (max delay
100 us), one instance and one intra-op thread, served over gRPC.

- sonic vs Triton: NVIDIA perf_analyzer (from scripts/install_perf_analyzer.sh).
  sonic runs three times: on the native gRPC transport (``sonic-native``, the
  default where it is built; sonic.server.frontends.grpc_native), on grpc.aio in the server
  process (``sonic``, ``--grpc-transport python``), and on grpc.aio in a
  front-end process relaying to the data plane (``sonic-relay``,
  ``--grpc-frontends 1``; sonic.server.relay.frontend).
- sonic vs MLServer: sonic.perf.loadgen (MLServer has no ModelConfig, so
  perf_analyzer cannot drive it); the same client for both.
- in-process onnxruntime: the limit, with no serving at all.

Set up the peers once with ``scripts/setup_benchmark_peers.sh``, then::

    .venv/bin/python benchmarks/server_vs_triton.py --repeats 3 --window-ms 3000

It prints a markdown table and writes ``benchmarks/results/server_vs_triton.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import onnxruntime as ort
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from common import PERF_ANALYZER, load_options, report_row, write_mlp  # noqa: E402

from sonic.launcher import LocalServer, free_ports  # noqa: E402
from sonic.perf.loadgen import run_load  # noqa: E402
from sonic.testing.triton import TritonServer, write_triton_onnx_model  # noqa: E402
from sonic.zoo.examples import MLP_BENCHMARK_CONFIG, mlp_model  # noqa: E402

POINTS = [(1, 1), (1, 8), (64, 4)]  # (batch, concurrency)
#: perf_analyzer's CSV columns for the time outside what the server's statistics timed.
OUTSIDE_COLUMNS = ("Client Send", "Network+Server Send/Recv", "Client Recv")
MLSERVER_VENV = ROOT / "tools" / "mlserver-venv"

MLSERVER_RUNTIME = """
import numpy as np
import onnxruntime as ort
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse


class OnnxRuntime(MLModel):
    async def load(self) -> bool:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        self.session = ort.InferenceSession(self.settings.parameters.uri, options)
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        x = NumpyCodec.decode_input(payload.inputs[0])
        y = self.session.run(["output"], {"input": x})[0]
        return InferenceResponse(model_name=self.name,
                                 outputs=[NumpyCodec.encode_output("output", y)])
"""


def _wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited during start-up:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"http://{url}/v2/health/ready", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise TimeoutError(log.read_text()[-3000:])


class Triton(TritonServer):
    """Real tritonserver 2.51 from nvidia-pytriton, python backend running onnxruntime."""

    def __init__(self, workdir: Path, model_bytes: bytes) -> None:
        repo = workdir / "triton"
        write_triton_onnx_model(repo, "mlp", model_bytes, MLP_BENCHMARK_CONFIG)
        super().__init__(repo)
        self.start(timeout_s=120)

    def version(self) -> str:
        with urllib.request.urlopen(f"http://{self.http_url}/v2") as r:
            return "tritonserver " + json.loads(r.read())["version"]


class MLServer:
    def __init__(self, workdir: Path, model_bytes: bytes) -> None:
        root = workdir / "mlserver"
        model = root / "mlp"
        model.mkdir(parents=True)
        (model / "model.onnx").write_bytes(model_bytes)
        (model / "runtime.py").write_text(MLSERVER_RUNTIME)
        (model / "model-settings.json").write_text(json.dumps({
            "name": "mlp", "implementation": "runtime.OnnxRuntime",
            "parameters": {"uri": str(model / "model.onnx")},
        }))  # fmt: skip
        self.http, self.grpc, self.metrics = free_ports(3)
        (root / "settings.json").write_text(json.dumps({
            "http_port": self.http, "grpc_port": self.grpc, "metrics_port": self.metrics,
            "parallel_workers": 0, "host": "127.0.0.1",
        }))  # fmt: skip
        self.log = workdir / "mlserver.log"
        self.proc = subprocess.Popen(
            [str(MLSERVER_VENV / "bin" / "mlserver"), "start", str(root)],
            stdout=self.log.open("w"),
            stderr=subprocess.STDOUT,
            cwd=model,
        )
        _wait_ready(f"127.0.0.1:{self.http}", self.proc, self.log)
        self.grpc_url = f"127.0.0.1:{self.grpc}"

    def version(self) -> str:
        out = subprocess.run([str(MLSERVER_VENV / "bin" / "pip"), "show", "mlserver"],
                             capture_output=True, text=True)  # fmt: skip
        return "mlserver " + next(
            (ln.split()[1] for ln in out.stdout.splitlines() if ln.startswith("Version")), "?"
        )

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(60)


#: The sonic configurations measured, by the name the results use.
SONIC_VARIANTS: dict[str, list[str]] = {
    "sonic-native": ["--grpc-transport=native"],
    "sonic": ["--grpc-transport=python"],
    "sonic-relay": ["--grpc-transport=python", "--grpc-frontends=1"],
}


def cpu_seconds(pid: int) -> tuple[float, float]:
    """CPU time of a server and its children (Triton's python-backend stubs, sonic's gRPC front
    ends), and the part of it spent in sonic's gRPC front-end processes."""
    root = psutil.Process(pid)
    total = front = 0.0
    for proc in [root, *root.children(recursive=True)]:
        try:
            t = proc.cpu_times()
            in_front = "sonic.server.relay.frontend" in proc.cmdline()
        except psutil.NoSuchProcess:
            continue
        total += t.user + t.system
        front += (t.user + t.system) if in_front else 0.0
    return total, front


def children_cpu_seconds() -> float:
    """CPU time of this process's finished children (perf_analyzer, once it has exited)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def perf_analyzer(url: str, batch: int, concurrency: int, window_ms: int, out: Path,
                  server_pid: int) -> dict:  # fmt: skip
    """One perf_analyzer point; on a noisy machine it may need a looser stability bound.

    Also the server's CPU per request: its CPU cores in use over the whole
    perf_analyzer run divided by the measured requests per second (the run's
    warm-up is counted too, alike for both servers); the same for sonic's gRPC
    front-end processes alone and for perf_analyzer itself.
    """
    for stability in (25, 50, 100):
        cmd = [PERF_ANALYZER, *load_options(url, window_ms, batch=batch, concurrency=concurrency,
                                            stability=stability, report=out)]  # fmt: skip
        out.unlink(missing_ok=True)  # never read the previous point's numbers
        (cpu0, front0), client0 = cpu_seconds(server_pid), children_cpu_seconds()
        t0 = time.monotonic()
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        seconds = time.monotonic() - t0
        cpu1, front1 = cpu_seconds(server_pid)
        cores, front_cores = (cpu1 - cpu0) / seconds, (front1 - front0) / seconds
        client_cores = (children_cpu_seconds() - client0) / seconds
        if out.exists():
            break
    else:
        raise RuntimeError(proc.stdout + proc.stderr)
    row = report_row(out)
    throughput = float(row["Inferences/Second"])
    return {
        "throughput": throughput,
        "p50_us": float(row["p50 latency"]),
        "p99_us": float(row["p99 latency"]),
        "server_cpu_us_per_request": cores / (throughput / batch) * 1e6,
        "frontend_cpu_us_per_request": front_cores / (throughput / batch) * 1e6,
        "client_cpu_us_per_request": client_cores / (throughput / batch) * 1e6,
        # perf_analyzer's split of the average latency, from the server's statistics extension:
        # what the server timed (queue, model) and the rest (client, network, and the server's
        # gRPC work outside its request timer).
        "queue_us": float(row["Server Queue"]),
        "compute_us": sum(float(row[f"Server Compute {k}"]) for k in ("Input", "Infer", "Output")),
        "outside_us": sum(float(row[k]) for k in OUTSIDE_COLUMNS),
        "stability_pct": stability,
        "command": " ".join([*cmd[:1], "...", *cmd[3:]]).replace(str(ROOT) + "/", ""),
    }


def loadgen(url: str, batch: int, concurrency: int, window_ms: int) -> dict:
    x = np.random.default_rng(0).standard_normal((batch, 64)).astype(np.float32)
    r = run_load(url, "mlp", {"input": x}, concurrency=concurrency, warmup_s=1.0,
                 window_s=window_ms / 1000)  # fmt: skip
    return {"throughput": r.throughput, "p50_us": r.percentile(50), "p99_us": r.percentile(99)}


def in_process(model_bytes: bytes, batch: int, concurrency: int, window_ms: int) -> dict:
    """onnxruntime alone: ``concurrency`` threads calling one single-threaded session."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(model_bytes, options)
    x = np.random.default_rng(0).standard_normal((batch, 64)).astype(np.float32)
    lat: list[float] = []
    stop = time.perf_counter() + window_ms / 1000

    def work() -> None:
        while (t0 := time.perf_counter()) < stop:
            session.run(["output"], {"input": x})
            lat.append((time.perf_counter() - t0) * 1e6)

    threads = [threading.Thread(target=work) for _ in range(concurrency)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - t0
    return {"throughput": len(lat) * batch / seconds, "p50_us": float(np.percentile(lat, 50)),
            "p99_us": float(np.percentile(lat, 99))}  # fmt: skip


def median_of(runs: list[dict]) -> dict:
    keys = ("throughput", "p50_us", "p99_us", "server_cpu_us_per_request",
            "frontend_cpu_us_per_request", "client_cpu_us_per_request", "queue_us",
            "compute_us", "outside_us")  # fmt: skip
    return {k: statistics.median(r[k] for r in runs) for k in keys if k in runs[0]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--window-ms", type=int, default=3000)
    ap.add_argument("--skip-mlserver", action="store_true")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" /
                    "server_vs_triton.json")  # fmt: skip
    args = ap.parse_args()

    model_bytes = mlp_model().SerializeToString()
    results: dict[str, dict[str, list[dict]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        sonic_repo = work / "sonic"
        write_mlp(sonic_repo)
        peers: dict[str, object] = {}
        sonics = {name: LocalServer(sonic_repo, *extra).start()
                  for name, extra in SONIC_VARIANTS.items()}  # fmt: skip
        try:
            peers["triton"] = Triton(work, model_bytes)
            if not args.skip_mlserver:
                peers["mlserver"] = MLServer(work, model_bytes)
            versions = {
                "sonic": f"sonic {sonic_version()}",
                **{k: p.version() for k, p in peers.items()},  # type: ignore[attr-defined]
                "onnxruntime": ort.__version__, "python": platform.python_version(),
                "perf_analyzer": "2.41.0 (tritonclient wheel)", "cpus": os.cpu_count(),
            }  # fmt: skip
            print(json.dumps(versions))
            for rep in range(args.repeats):
                for batch, conc in POINTS:
                    key = f"b{batch}_c{conc}"
                    triton_url = peers["triton"].grpc_url  # type: ignore[attr-defined]
                    triton_pid = peers["triton"].proc.pid  # type: ignore[attr-defined]
                    jobs: list[tuple[str, Callable[[], dict]]] = [
                        (f"{name}/perf_analyzer", partial(perf_analyzer, srv.grpc_url, batch,
                                                          conc, args.window_ms, work / "s.csv",
                                                          srv.proc.pid))
                        for name, srv in sonics.items()
                    ]
                    jobs += [
                        ("triton/perf_analyzer", partial(perf_analyzer, triton_url, batch, conc,
                                                         args.window_ms, work / "t.csv",
                                                         triton_pid)),
                        ("in-process", partial(in_process, model_bytes, batch, conc,
                                               args.window_ms)),
                    ]  # fmt: skip
                    if "mlserver" in peers:
                        ml_url = peers["mlserver"].grpc_url  # type: ignore[attr-defined]
                        jobs += [
                            (f"{name}/loadgen", partial(loadgen, srv.grpc_url, batch, conc,
                                                        args.window_ms))
                            for name, srv in sonics.items()
                        ]
                        jobs.append(("mlserver/loadgen", partial(loadgen, ml_url, batch, conc,
                                                                 args.window_ms)))  # fmt: skip
                    if rep % 2:
                        jobs.reverse()  # alternate who goes first
                    for name, job in jobs:
                        r = job()
                        results.setdefault(key, {}).setdefault(name, []).append(r)
                        print(
                            f"rep {rep} {key:8s} {name:22s} {r['throughput']:10.0f} infer/s "
                            f"p50 {r['p50_us']:7.0f} us  p99 {r['p99_us']:7.0f} us",
                            flush=True,
                        )
        finally:
            for srv in sonics.values():
                srv.stop()
            for p in peers.values():
                p.stop()  # type: ignore[attr-defined]

    summary = {k: {n: median_of(v) for n, v in d.items()} for k, d in results.items()}
    print(table(summary))
    print(breakdown(summary))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"versions": versions, "repeats": args.repeats,
                                    "window_ms": args.window_ms, "summary": summary,
                                    "runs": results}, indent=1))  # fmt: skip
    print(f"wrote {args.out}")


def sonic_version() -> str:
    from sonic import __version__

    return __version__


def table(summary: dict[str, dict[str, dict[str, float]]]) -> str:
    lines = [
        "| point | sonic | sonic infer/s | Triton infer/s | sonic/Triton | sonic p50/p99 µs | "
        "Triton p50/p99 µs | server CPU µs/request (sonic / Triton) | sonic/MLServer (loadgen) | "
        "in-process infer/s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key, d in summary.items():
        batch, conc = key[1:].split("_c")
        t = d["triton/perf_analyzer"]
        for name in SONIC_VARIANTS:
            if f"{name}/perf_analyzer" not in d:
                continue
            s = d[f"{name}/perf_analyzer"]
            ml = (f"{d[f'{name}/loadgen']['throughput'] / d['mlserver/loadgen']['throughput']:.2f}"
                  if "mlserver/loadgen" in d else "n/a")  # fmt: skip
            lines.append(
                f"| batch {batch}, concurrency {conc} | {name} | {s['throughput']:.0f} | "
                f"{t['throughput']:.0f} | "
                f"{s['throughput'] / t['throughput']:.2f} | {s['p50_us']:.0f}/{s['p99_us']:.0f} | "
                f"{t['p50_us']:.0f}/{t['p99_us']:.0f} | "
                f"{s['server_cpu_us_per_request']:.0f} / {t['server_cpu_us_per_request']:.0f} | "
                f"{ml} | {d['in-process']['throughput']:.0f} |"
            )
    return "\n".join(lines)


def breakdown(summary: dict[str, dict[str, dict[str, float]]]) -> str:
    """perf_analyzer's average-latency split for both servers, and where the CPU went, in µs."""
    lines = [
        "| point | server | queue | model (compute) | outside the server's timer | "
        "server CPU/request | of it in the gRPC front end | perf_analyzer CPU/request |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for key, d in summary.items():
        batch, conc = key[1:].split("_c")
        for name in (*SONIC_VARIANTS, "triton"):
            r = d.get(f"{name}/perf_analyzer", {})
            if "queue_us" not in r:
                continue
            lines.append(
                f"| batch {batch}, concurrency {conc} | {name} | {r['queue_us']:.0f} | "
                f"{r['compute_us']:.0f} | {r['outside_us']:.0f} | "
                f"{r['server_cpu_us_per_request']:.0f} | "
                f"{r.get('frontend_cpu_us_per_request', 0):.0f} | "
                f"{r.get('client_cpu_us_per_request', 0):.0f} |"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
