"""``sonic perf scrape``: perf_analyzer CSV files and JSON profile exports into the tidy table.

Metadata for each file comes, in order of precedence, from

1. the file's own entry in a manifest in its directory, ``manifest.json``:
   ``{"defaults": {"model": "deepmet"}, "files": {"run1.csv": {"batch_size": 8}}}``;
2. ``key=value`` tokens in the file name, split on ``_`` or ``,``
   (``server=triton_model=deepmet_hardware=t4_batch_size=8.csv``), and
   recognisable tokens: ``b8``/``batch8`` (batch size), ``cpu``, ``gpu`` or a
   GPU name (hardware), ``triton``, ``sonic``, ``mlserver`` (server), ``grpc``,
   ``http`` (protocol);
3. the manifest's ``defaults``.

A perf_analyzer CSV carries no batch size; without one it is recorded as 1.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from sonic.perf.results import percentile_us
from sonic.perf.tidy import PA_COLUMNS, parse_number, row

HARDWARE = {"cpu", "gpu", "t4", "a10", "a100", "h100", "h200", "l4", "l40s", "v100"}
SERVERS = {"triton", "sonic", "mlserver", "tritonserver"}
ALIASES = {"batch": "batch_size", "b": "batch_size", "hw": "hardware",
           "instances": "instance_count"}  # fmt: skip


def metadata_from_name(stem: str) -> dict[str, Any]:
    meta: dict[str, Any] = {}
    for token in re.split(r"[_,]+", stem):
        t = token.lower()
        if "=" in token:
            k, v = token.split("=", 1)
            meta[ALIASES.get(k.lower(), k.lower())] = parse_number(v)
        elif m := re.fullmatch(r"(?:b|batch|bs)(\d+)", t):
            meta["batch_size"] = int(m.group(1))
        elif t in HARDWARE:
            meta["hardware"] = t
        elif t in SERVERS:
            meta["server"] = "triton" if t == "tritonserver" else t
        elif t in ("grpc", "http"):
            meta["protocol"] = t
    return meta


def _manifest(directory: Path) -> dict[str, Any]:
    path = directory / "manifest.json"
    if not path.exists():
        return {}
    doc = json.loads(path.read_text())
    if not isinstance(doc, dict):
        raise ValueError(f"{path}: expected an object with 'defaults' and/or 'files'")
    return doc


def _meta(path: Path) -> dict[str, Any]:
    manifest = _manifest(path.parent)
    meta = {"source": str(path), "batch_size": 1, **manifest.get("defaults", {})}
    meta.update(metadata_from_name(path.stem))
    meta.update(manifest.get("files", {}).get(path.name, {}))
    return meta


def read_perf_analyzer_csv(path: Path) -> list[dict[str, Any]]:
    with path.open() as f:
        reader = csv.DictReader(f)
        fields = reader.fieldnames or []
        if "Inferences/Second" not in fields or not ({"Concurrency", "Request Rate"} & set(fields)):
            raise ValueError(f"{path} is not a perf_analyzer CSV (columns {fields[:4]}...)")
        meta = _meta(path)
        return [row(meta, **{PA_COLUMNS[k]: parse_number(v) for k, v in r.items()
                             if k in PA_COLUMNS})
                for r in reader]  # fmt: skip


def read_profile_export(path: Path) -> list[dict[str, Any]]:
    """perf_analyzer's ``--profile-export-file``: per experiment, the request timestamps."""
    doc = json.loads(path.read_text())
    meta = _meta(path)
    out = []
    for exp in doc.get("experiments", []):
        e = exp.get("experiment", {})
        reqs = exp.get("requests", [])
        starts = np.array([r["timestamp"] for r in reqs], dtype=np.int64)
        ends = np.array([r["response_timestamps"][-1] for r in reqs if r["response_timestamps"]],
                        dtype=np.int64)  # fmt: skip
        if len(ends) < 2:
            continue
        lat = ends - starts[: len(ends)]
        seconds = (ends.max() - starts.min()) / 1e9
        value = e.get("value")
        out.append(row(
            meta, concurrency=value if e.get("mode") == "concurrency" else None,
            request_rate=value if e.get("mode") != "concurrency" else None,
            throughput=len(ends) * int(meta["batch_size"]) / seconds,
            avg_us=int(lat.mean() // 1000),
            **{f"p{p}_us": percentile_us(lat, p) for p in (50, 90, 95, 99)},
        ))  # fmt: skip
    return out


def scrape(paths: list[Path]) -> list[dict[str, Any]]:
    """Every perf_analyzer CSV and profile export under ``paths`` (files or directories)."""
    files: list[Path] = []
    for p in paths:
        files += sorted(p.rglob("*")) if p.is_dir() else [p]
    rows: list[dict[str, Any]] = []
    for f in files:
        if f.suffix == ".csv":
            head = f.read_text(errors="replace").split("\n", 1)[0]
            if "Inferences/Second" in head:
                rows += read_perf_analyzer_csv(f)
        elif f.suffix == ".json" and f.name != "manifest.json":
            try:
                doc = json.loads(f.read_text())
            except json.JSONDecodeError:
                continue
            if isinstance(doc, dict) and "experiments" in doc:
                rows += read_profile_export(f)
    return rows
