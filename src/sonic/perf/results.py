"""One measured load level, and perf_analyzer's CSV and console formats for it.

The CSV columns, their order and units (microseconds, throughput in
inferences per second, rows sorted by throughput) are perf_analyzer's
(``report_writer.cc``), so scripts written for its ``-f`` files read these.
"""

from __future__ import annotations

import csv
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

PERCENTILES = (50, 90, 95, 99)
SERVER_COLUMNS = ("Network+Server Send/Recv", "Server Queue", "Server Compute Input",
                  "Server Compute Infer", "Server Compute Output")  # fmt: skip
GPU_COLUMNS = ("Avg GPU Utilization", "Avg GPU Power Usage", "Max GPU Memory Usage",
               "Total GPU Memory")  # fmt: skip


def percentile_us(latencies_ns: np.ndarray, p: float) -> int:
    """perf_analyzer's index ``(p/100)*(n-1)+0.5`` into the sorted latencies, in us."""
    if len(latencies_ns) == 0:
        return 0
    s = np.sort(latencies_ns)
    return int(s[int(p / 100 * (len(s) - 1) + 0.5)] // 1000)


@dataclass(slots=True)
class LevelResult:
    """The merged stable windows of one concurrency or request-rate level."""

    mode: str  # "concurrency" | "rate"
    value: float
    batch_size: int
    throughput: float  # inferences/s
    requests: int
    errors: int
    seconds: float
    avg_us: int
    percentiles_us: dict[int, int]
    send_us: int
    recv_us: int
    server: dict[str, int] | None  # us per request: queue, compute_input/infer/output, count
    stable: bool
    windows: int
    gpu: dict[str, str] = field(default_factory=dict)
    timestamps: list[tuple[int, int]] = field(default_factory=list)  # epoch ns (start, end)

    @property
    def network_us(self) -> int:
        if self.server is None:
            return 0
        busy = sum(self.server[k] for k in ("queue", "compute_input", "compute_infer",
                                            "compute_output"))  # fmt: skip
        return max(0, self.avg_us - self.send_us - self.recv_us - busy)

    def as_row(self) -> dict[str, Any]:
        """One tidy row (used by sweeps, scrape and reports)."""
        d = {k: v for k, v in asdict(self).items() if k not in ("percentiles_us", "server",
                                                                "gpu", "timestamps")}  # fmt: skip
        for p, v in self.percentiles_us.items():
            d[f"p{p}_us"] = v
        s = self.server or {}
        for k in ("queue", "compute_input", "compute_infer", "compute_output"):
            d[f"server_{k}_us"] = s.get(k)
        d["network_us"] = self.network_us if self.server else None
        return d


def header(mode: str, server: bool, verbose: bool, extra_percentile: int | None,
           gpu: bool) -> list[str]:  # fmt: skip
    cols = ["Concurrency" if mode == "concurrency" else "Request Rate", "Inferences/Second",
            "Client Send"]  # fmt: skip
    if server:
        cols += SERVER_COLUMNS
    cols.append("Client Recv")
    cols += [f"p{p} latency" for p in PERCENTILES]
    if extra_percentile is not None and extra_percentile not in PERCENTILES:
        cols.append(f"p{extra_percentile} latency")
    if verbose:
        if extra_percentile is None:
            cols.append("Avg latency")
        cols += ["request/response", "response wait"]
        if gpu:
            cols += GPU_COLUMNS
    return cols


def _fmt(v: float) -> str:
    return f"{v:g}" if isinstance(v, float) and not v.is_integer() else str(int(v))


def write_csv(path: Path, results: list[LevelResult], *, verbose: bool = False,
              extra_percentile: int | None = None, gpu: bool = False) -> None:  # fmt: skip
    if not results:
        return
    server = all(r.server is not None for r in results)
    cols = header(results[0].mode, server, verbose, extra_percentile, gpu)
    with path.open("w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")  # perf_analyzer's line ends, not csv's \r\n
        w.writerow(cols)
        for r in sorted(results, key=lambda r: r.throughput):
            row: list[Any] = [_fmt(r.value), f"{r.throughput:g}", r.send_us]
            if server:
                s = r.server or {}
                row += [r.network_us, s["queue"], s["compute_input"], s["compute_infer"],
                        s["compute_output"]]  # fmt: skip
            row.append(r.recv_us)
            row += [r.percentiles_us[p] for p in PERCENTILES]
            if extra_percentile is not None and extra_percentile not in PERCENTILES:
                row.append(r.percentiles_us[extra_percentile])
            if verbose:
                if extra_percentile is None:
                    row.append(r.avg_us)
                row += [r.send_us + r.recv_us, max(0, r.avg_us - r.send_us - r.recv_us)]
                if gpu:
                    row += [r.gpu.get(c, "") for c in GPU_COLUMNS]
            w.writerow(row)


def console(r: LevelResult) -> str:
    """The Client/Server block perf_analyzer prints per level."""
    what = "Request concurrency" if r.mode == "concurrency" else "Request Rate"
    lines = [f"{what}: {_fmt(r.value)}", "  Client: ",
             f"    Request count: {r.requests}",
             f"    Throughput: {r.throughput:g} infer/sec",
             f"    Avg latency: {r.avg_us} usec"]  # fmt: skip
    lines += [f"    p{p} latency: {v} usec" for p, v in r.percentiles_us.items()]
    if r.errors:
        lines.append(f"    Failed requests: {r.errors}")
    if r.server is not None:
        s = r.server
        busy = s["queue"] + s["compute_input"] + s["compute_infer"] + s["compute_output"]
        lines += ["  Server: ", f"    Inference count: {s['count'] * r.batch_size}",
                  f"    Successful request count: {s['count']}",
                  f"    Avg request latency: {s['request']} usec (overhead "
                  f"{max(0, s['request'] - busy)} usec + queue {s['queue']} usec + compute input "
                  f"{s['compute_input']} usec + compute infer {s['compute_infer']} usec + "
                  f"compute output {s['compute_output']} usec)"]  # fmt: skip
    return "\n".join(lines)
