"""One tidy table for every measurement: ``sonic perf``, sweeps, and scraped perf_analyzer files.

One row per measured load level, with the metadata that tells rows apart
(server, model, hardware, protocol, batch size, instance count, batcher
delay) beside perf_analyzer's numbers, all latencies in microseconds.
Written as CSV and Parquet; every report and plan reads it.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from sonic.perf.results import LevelResult

META = ("source", "server", "model", "version", "hardware", "protocol", "batch_size",
        "instance_count", "max_queue_delay_us")  # fmt: skip
NUMBERS = ("concurrency", "request_rate", "throughput", "p50_us", "p90_us", "p95_us", "p99_us",
           "avg_us", "client_send_us", "client_recv_us", "network_us", "server_queue_us",
           "server_compute_input_us", "server_compute_infer_us",
           "server_compute_output_us")  # fmt: skip
COLUMNS = META + NUMBERS

#: perf_analyzer CSV column -> tidy column.
PA_COLUMNS = {
    "Concurrency": "concurrency", "Request Rate": "request_rate",
    "Inferences/Second": "throughput", "Client Send": "client_send_us",
    "Network+Server Send/Recv": "network_us", "Server Queue": "server_queue_us",
    "Server Compute Input": "server_compute_input_us",
    "Server Compute Infer": "server_compute_infer_us",
    "Server Compute Output": "server_compute_output_us", "Client Recv": "client_recv_us",
    "p50 latency": "p50_us", "p90 latency": "p90_us", "p95 latency": "p95_us",
    "p99 latency": "p99_us", "Avg latency": "avg_us",
}  # fmt: skip


def row(meta: Mapping[str, Any], **numbers: Any) -> dict[str, Any]:
    """A row with every column, absent values as None."""
    out: dict[str, Any] = dict.fromkeys(COLUMNS)
    out.update({k: v for k, v in meta.items() if k in COLUMNS})
    out.update({k: v for k, v in numbers.items() if k in COLUMNS})
    return out


def from_level(r: LevelResult, meta: Mapping[str, Any]) -> dict[str, Any]:
    s = r.server or {}
    return row(
        {**meta, "batch_size": r.batch_size},
        concurrency=r.value if r.mode == "concurrency" else None,
        request_rate=r.value if r.mode == "rate" else None,
        throughput=r.throughput, avg_us=r.avg_us,
        **{f"p{p}_us": v for p, v in r.percentiles_us.items() if p in (50, 90, 95, 99)},
        client_send_us=r.send_us, client_recv_us=r.recv_us,
        network_us=r.network_us if r.server else None,
        server_queue_us=s.get("queue"), server_compute_input_us=s.get("compute_input"),
        server_compute_infer_us=s.get("compute_infer"),
        server_compute_output_us=s.get("compute_output"),
    )  # fmt: skip


def parse_number(v: Any) -> Any:
    if v is None or v == "":
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return v
    return int(f) if f.is_integer() else f


def write(rows: Iterable[Mapping[str, Any]], csv_path: Path | None = None,
          parquet_path: Path | None = None) -> list[dict[str, Any]]:  # fmt: skip
    rows = [row(r) for r in rows]
    if csv_path is not None:
        csv_path.parent.mkdir(parents=True, exist_ok=True)
        with csv_path.open("w", newline="") as f:
            w = csv.DictWriter(f, COLUMNS)
            w.writeheader()
            w.writerows(rows)
    if parquet_path is not None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        parquet_path.parent.mkdir(parents=True, exist_ok=True)
        columns = {c: [r[c] for r in rows] for c in COLUMNS}
        columns = {c: [None if v is None else str(v) for v in vs] if c in ("source", "server",
                   "model", "version", "hardware", "protocol") else vs
                   for c, vs in columns.items()}  # fmt: skip
        pq.write_table(pa.table(columns), parquet_path)
    return rows


def read(path: Path) -> list[dict[str, Any]]:
    """A tidy table written by :func:`write` (CSV or Parquet)."""
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return [row(r) for r in pq.read_table(path).to_pylist()]
    with path.open() as f:
        return [row({k: parse_number(v) if k in NUMBERS or k in ("batch_size", "instance_count",
                     "max_queue_delay_us") else (v or None) for k, v in r.items()})
                for r in csv.DictReader(f)]  # fmt: skip
