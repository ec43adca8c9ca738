"""The CPU the server's Python side costs per ModelInfer, with no transport under it.

On the native transport, grpc++ hands calls to
:class:`sonic.server.frontends.grpc_native.NativeSide` in bulk and takes its answers back in
bulk.  This feeds ``NativeSide`` the same frames (serialized ``ModelInferRequest``\\ s of the
benchmark MLP, built with tritonclient's protos), N calls per hand-over, with a stand-in for
the compiled module's ``drain`` and ``send``; everything above them is the real server:
decoding, the servicer, the data plane, the dynamic batcher, onnxruntime, statistics and
encoding.  It waits for the N answers before the next hand-over, as N clients at concurrency 1
would.  The batcher's delay is 0 here: nothing more comes while a partial batch waits.

That is the floor of the event-loop thread's CPU per request at N requests per batch.  Beside
it, the whole server under perf_analyzer at the points of ``benchmarks/server_vs_triton.py``
(its model config, ``sonic serve``'s defaults): the CPU per request of each of the server's
threads (the event loop; grpc++'s completion-queue thread, named ``sonic-grpc-cq``; the
rest) and of perf_analyzer, so the loop's cost above the floor (waking it, handing calls over
a few at a time, busy polling, the kernel) shows::

    .venv/bin/python benchmarks/dataplane_cost.py

Medians of ``--repeats`` runs of each point.  Prints markdown tables and writes
``benchmarks/results/dataplane_cost.json``.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import psutil
import uvloop

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from common import PERF_ANALYZER, arguments, load_options, report_row, write_mlp  # noqa: E402
from tritonclient.grpc import service_pb2 as pb  # noqa: E402

from sonic.launcher import LocalServer  # noqa: E402
from sonic.server.app import Server  # noqa: E402
from sonic.server.frontends.grpc_frames import CALL, REPLY, Dispatch, relay_methods  # noqa: E402
from sonic.server.frontends.grpc_native import NativeSide  # noqa: E402
from sonic.server.frontends.grpc_servicers import servicers  # noqa: E402
from sonic.server.settings import ServerSettings  # noqa: E402
from sonic.zoo.examples import MLP_BENCHMARK_CONFIG  # noqa: E402

#: (rows per request, requests per hand-over)
POINTS = [(1, 1), (1, 2), (1, 4), (1, 8), (1, 16), (64, 1), (64, 2), (64, 4)]
#: The live server's perf_analyzer points (benchmarks/server_vs_triton.py): (batch, concurrency)
LIVE_POINTS = [(1, 1), (1, 8), (64, 4)]
THREADS = ("event loop", "grpc++ completion queue", "other threads")
DELAY = "max_queue_delay_microseconds: 100"
assert DELAY in MLP_BENCHMARK_CONFIG, "the benchmark config's batch delay changed"
CONFIG = MLP_BENCHMARK_CONFIG.replace(DELAY, "max_queue_delay_microseconds: 0")


class Transport:
    """What NativeSide calls on the compiled module: ``drain`` the waiting calls, ``send``
    answers; counts the answers, so that a hand-over can wait for all of its own."""

    def __init__(self) -> None:
        self.waiting: list[tuple[int, int, int, bytes, Any, Any, int]] = []
        self.answered = 0
        self.want = 0
        self.done = asyncio.Event()

    def drain(self) -> list[tuple[int, int, int, bytes, Any, Any, int]]:
        calls, self.waiting = self.waiting, []
        return calls

    def send(self, answers: list[tuple[int, int, int, bytes]]) -> None:
        for kind, call, code, body in answers:
            if kind != REPLY:
                raise RuntimeError(f"call {call} failed with status {code}: {body!r}")
        self.answered += len(answers)
        if self.answered >= self.want:
            self.done.set()


def request_bytes(rows: int) -> bytes:
    req = pb.ModelInferRequest(model_name="mlp")
    req.inputs.add(name="input", datatype="FP32", shape=[rows, 64])
    req.raw_input_contents.append(np.random.default_rng(0).random((rows, 64), np.float32)
                                  .tobytes())  # fmt: skip
    req.outputs.add(name="output")
    return req.SerializeToString()


async def measure(repo: Path, rows: int, per_pump: int, seconds: float,
                  hand_overs: int = 0) -> dict[str, float]:  # fmt: skip
    """CPU and wall time per request over ``seconds``, or over exactly ``hand_overs``
    hand-overs (``benchmarks/dataplane_instructions.py`` counts their instructions)."""
    server = Server(ServerSettings(model_repositories=[repo], busy_poll_us=0))
    await server.manager.startup()
    server.dataplane.accepting = True
    stats = server.manager.get("mlp").stats
    transport = Transport()
    side = NativeSide(Dispatch(servicers(server.dataplane, server.auth)), transport, server.auth)
    infer = next(i for i, m in enumerate(relay_methods()) if m.name == "ModelInfer")
    body = request_bytes(rows)
    call = 0

    async def hand_over() -> None:
        nonlocal call
        transport.want = transport.answered + per_pump
        transport.done.clear()
        for _ in range(per_pump):
            call += 1
            transport.waiting.append((CALL, call, infer, body, None, None, time.perf_counter_ns()))
        side.pump()
        await transport.done.wait()

    for _ in range(200):  # warm-up: the instance pool starts on its thread
        await hand_over()
    requests, executions = stats.success.count, stats.execution_count
    cpu0, wall0 = time.process_time(), time.perf_counter()
    if hand_overs:
        for _ in range(hand_overs):
            await hand_over()
    else:
        while time.perf_counter() - wall0 < seconds:
            for _ in range(50):
                await hand_over()
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    n = stats.success.count - requests
    server.manager.get("mlp").close()
    return {"rows": rows, "per_pump": per_pump, "requests": n,
            "cpu_us_per_request": cpu / n * 1e6, "wall_us_per_request": wall / n * 1e6,
            "requests_per_execution": n / (stats.execution_count - executions)}  # fmt: skip


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds so far of each of the server's threads, by role (:data:`THREADS`)."""
    out = dict.fromkeys(THREADS, 0.0)
    for t in psutil.Process(pid).threads():
        try:
            comm = Path(f"/proc/{pid}/task/{t.id}/comm").read_text().strip()
        except OSError:  # the thread ended meanwhile
            continue
        role = THREADS[0] if t.id == pid else THREADS[1] if comm == "sonic-grpc-cq" else THREADS[2]
        out[role] += t.user_time + t.system_time
    return out


def live(repo: Path, batch: int, concurrency: int, window_ms: int) -> dict[str, Any]:
    """perf_analyzer against ``sonic serve``: requests/s and CPU µs per request by thread,
    read over perf_analyzer's whole run (its warm-up passes run the same load)."""
    with LocalServer(repo) as server, tempfile.TemporaryDirectory() as tmp:
        assert server.proc is not None
        report = Path(tmp) / "pa.csv"
        cmd = [PERF_ANALYZER, *load_options(server.grpc_url, window_ms, batch=batch,
                                            concurrency=concurrency, trials=4, report=report)]
        with (Path(tmp) / "pa.log").open("w") as log:
            pa = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
            before, t0 = thread_cpu(server.proc.pid), time.monotonic()
            _, status, usage = os.wait4(pa.pid, 0)  # its rusage: perf_analyzer's own CPU
            pa.returncode = os.waitstatus_to_exitcode(status)
            after, seconds = thread_cpu(server.proc.pid), time.monotonic() - t0
        if pa.returncode != 0 or not report.exists():
            raise RuntimeError((Path(tmp) / "pa.log").read_text())
        rps = float(report_row(report)["Inferences/Second"]) / batch
    per_request = {k: (after[k] - before[k]) / seconds / rps * 1e6 for k in THREADS}
    client = (usage.ru_utime + usage.ru_stime) / seconds / rps * 1e6
    return {"batch": batch, "concurrency": concurrency, "requests_per_s": rps,
            "cpu_us_per_request": per_request, "server_cpu_us_per_request":
            sum(per_request.values()), "perf_analyzer_cpu_us_per_request": client,
            "command": " ".join(cmd[3:]).replace(server.grpc_url, "URL")}  # fmt: skip


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Each number's median over the repetitions of one point (nested dicts too)."""
    out: dict[str, Any] = {}
    for key, value in runs[0].items():
        if isinstance(value, dict):
            out[key] = median_run([r[key] for r in runs])
        elif isinstance(value, int | float):
            out[key] = statistics.median(r[key] for r in runs)
        else:
            out[key] = value
    return out


def main() -> None:
    ap = arguments(__doc__)
    ap.add_argument("--repeats", type=int, default=3, help="medians of this many runs")
    ap.add_argument("--seconds", type=float, default=2.0, help="per point without transport")
    ap.add_argument("--window-ms", type=int, default=3000, help="perf_analyzer's window")
    ap.add_argument("--out", type=Path,
                    default=ROOT / "benchmarks" / "results" / "dataplane_cost.json")  # fmt: skip
    args = ap.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "repo"
        write_mlp(repo, CONFIG)
        print("| rows per request | requests per hand-over | requests per execution | "
              "CPU µs per request | wall µs per request |\n|---|---|---|---|---|")
        for rows, per_pump in POINTS:
            r = median_run([uvloop.run(measure(repo, rows, per_pump, args.seconds))
                            for _ in range(args.repeats)])  # fmt: skip
            results.append(r)
            print(f"| {rows} | {per_pump} | {r['requests_per_execution']:.1f} | "
                  f"{r['cpu_us_per_request']:.1f} | {r['wall_us_per_request']:.1f} |", flush=True)
        write_mlp(repo)
        print("\n| point | requests/s | CPU µs per request: " + " / ".join(THREADS)
              + " | server | perf_analyzer |\n|---|---|---|---|---|")
        served = []
        for batch, concurrency in LIVE_POINTS:
            r = median_run([live(repo, batch, concurrency, args.window_ms)
                            for _ in range(args.repeats)])  # fmt: skip
            served.append(r)
            parts = " / ".join(f"{r['cpu_us_per_request'][k]:.0f}" for k in THREADS)
            print(f"| batch {batch}, concurrency {concurrency} | {r['requests_per_s']:.0f} | "
                  f"{parts} | {r['server_cpu_us_per_request']:.0f} | "
                  f"{r['perf_analyzer_cpu_us_per_request']:.0f} |", flush=True)
    versions = {"python": platform.python_version(), "onnxruntime": ort.__version__}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"versions": versions, "repeats": args.repeats,
                                    "seconds": args.seconds,
                                    "without_transport": results, "served": served},
                                   indent=1))  # fmt: skip
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
