"""``sonic perf report``: plots and one HTML page from the tidy table.

- throughput against concurrency, one line per series (server, hardware,
  model, protocol, instances, delay) and batch size;
- latency percentiles (p50, p90, p99) against concurrency;
- stacked bars of where the time of a request goes (client, network, server
  queue and compute) at each level;
- a comparison of the series (server against server, CPU against GPU): the
  best throughput of each at every batch size.

Each plot is also written as a PNG next to the page.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sonic.plots import html_table, img, png, pyplot, write_html

SERIES_KEYS = ("server", "hardware", "model", "protocol", "instance_count", "max_queue_delay_us")
STAGES = (("client_send_us", "client send"), ("network_us", "network + server I/O"),
          ("server_queue_us", "server queue"), ("server_compute_input_us", "compute input"),
          ("server_compute_infer_us", "compute infer"),
          ("server_compute_output_us", "compute output"),
          ("client_recv_us", "client recv"))  # fmt: skip


def series_name(r: dict[str, Any]) -> str:
    parts = []
    for k in SERIES_KEYS:
        v = r.get(k)
        if v not in (None, ""):
            parts.append(f"{v} inst" if k == "instance_count"
                         else f"{v} us delay" if k == "max_queue_delay_us" else str(v))  # fmt: skip
    return " / ".join(parts) or "run"


def _groups(rows: Sequence[dict[str, Any]]) -> dict[tuple[str, int], list[dict[str, Any]]]:
    g: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        g[(series_name(r), int(r.get("batch_size") or 1))].append(r)
    return dict(sorted(g.items()))


def _x(r: dict[str, Any]) -> float:
    return float(r["concurrency"] if r.get("concurrency") is not None else r["request_rate"])


def throughput_plot(rows: Sequence[dict[str, Any]], path: Path | None = None) -> str:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(11, 7))
    for (name, batch), rs in _groups(rows).items():
        rs = sorted(rs, key=_x)
        ax.plot([_x(r) for r in rs], [r["throughput"] for r in rs], "o-",
                label=f"{name}, batch {batch}")  # fmt: skip
    ax.set_xlabel("concurrency (or request rate)")
    ax.set_ylabel("inferences / s")
    ax.legend(fontsize=11)
    return png(fig, path)


def latency_plot(rows: Sequence[dict[str, Any]], path: Path | None = None) -> str:
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(20, 6), sharey=True)
    for ax, p in zip(axes, (50, 90, 99), strict=True):
        for (name, batch), rs in _groups(rows).items():
            rs = sorted(rs, key=_x)
            ax.plot([_x(r) for r in rs], [(r.get(f"p{p}_us") or 0) / 1000 for r in rs], "o-",
                    label=f"{name}, batch {batch}")  # fmt: skip
        ax.set_title(f"p{p} latency")
        ax.set_xlabel("concurrency (or request rate)")
    axes[0].set_ylabel("ms")
    axes[0].legend(fontsize=10)
    return png(fig, path)


def breakdown_plot(rows: Sequence[dict[str, Any]], path: Path | None = None) -> str:
    plt = pyplot()
    bars = [(f"{name}\nb{batch} c{_x(r):g}", r) for (name, batch), rs in _groups(rows).items()
            for r in sorted(rs, key=_x)]  # fmt: skip
    fig, ax = plt.subplots(figsize=(max(8, 0.9 * len(bars)), 7))
    bottom = np.zeros(len(bars))
    for key, label in STAGES:
        v = np.array([float(r.get(key) or 0) / 1000 for _, r in bars])
        ax.bar(range(len(bars)), v, bottom=bottom, label=label)
        bottom += v
    ax.set_xticks(range(len(bars)), [b for b, _ in bars], rotation=60, ha="right", fontsize=9)
    ax.set_ylabel("ms per request (averages)")
    ax.legend(fontsize=11)
    return png(fig, path)


def comparison_plot(rows: Sequence[dict[str, Any]], path: Path | None = None) -> str:
    plt = pyplot()
    best: dict[str, dict[int, float]] = defaultdict(dict)
    for (name, batch), rs in _groups(rows).items():
        best[name][batch] = max(float(r["throughput"]) for r in rs)
    batches = sorted({b for d in best.values() for b in d})
    fig, ax = plt.subplots(figsize=(11, 7))
    width = 0.8 / max(len(best), 1)
    for i, (name, d) in enumerate(best.items()):
        ax.bar(np.arange(len(batches)) + i * width, [d.get(b, 0) for b in batches], width,
               label=name)  # fmt: skip
    ax.set_xticks(np.arange(len(batches)) + width * (len(best) - 1) / 2,
                  [f"batch {b}" for b in batches])  # fmt: skip
    ax.set_ylabel("best inferences / s")
    ax.set_yscale("log")
    ax.legend(fontsize=11)
    return png(fig, path)


def write_report(rows: Sequence[dict[str, Any]], out_dir: Path,
                 title: str = "Inference performance") -> Path:  # fmt: skip
    """PNG files and ``report.html`` in ``out_dir``; returns the page."""
    rows = [r for r in rows if r.get("throughput") is not None]  # unstable points have none
    if not rows:
        raise ValueError("no measurements to report (the table is empty)")
    plots = {
        "throughput.png": ("Throughput against concurrency", throughput_plot),
        "latency.png": ("Latency percentiles", latency_plot),
        "breakdown.png": ("Where the time goes", breakdown_plot),
        "comparison.png": ("Comparison of servers and hardware", comparison_plot),
    }
    sections = [(heading, img(fn(rows, out_dir / name))) for name, (heading, fn) in plots.items()]
    cols = ["series", "batch", "concurrency", "rate", "infer/s", "p50 us", "p99 us"]
    table = [[series_name(r), r.get("batch_size"), r.get("concurrency"), r.get("request_rate"),
              float(r["throughput"]), r.get("p50_us"), r.get("p99_us")]
             for r in rows]  # fmt: skip
    sections.append(("Measurements", html_table(cols, table)))
    return write_html(out_dir / "report.html", title, sections)
