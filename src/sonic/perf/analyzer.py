"""``sonic perf``: perf_analyzer's command line, measurement and output, in Python.

:func:`analyze` reads the model's metadata, builds the inputs, optionally
registers system shared memory, then measures each load level with the
:class:`~sonic.perf.profiler.Profiler` and writes perf_analyzer's CSV
(``-f``) and profile export (``--profile-export-file``).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from sonic.perf.inputs import build_inputs
from sonic.perf.profiler import Profiler, Settings, Unstable, payloads, system_shared_memory
from sonic.perf.results import LevelResult, console, write_csv
from sonic.perf.target import Target, model_spec


def parse_range(text: str, kind: type = int) -> list[float]:
    """perf_analyzer's ``start:end:step`` (end defaults to start, step to 1)."""
    try:
        parts = [kind(p) for p in text.split(":")]
        if not 1 <= len(parts) <= 3:
            raise ValueError
    except ValueError:
        raise ValueError(f"a range must look like start[:end[:step]], not {text!r}") from None
    start = parts[0]
    end = parts[1] if len(parts) > 1 else start
    step = parts[2] if len(parts) > 2 else 1
    if step <= 0 or end < start or start <= 0:
        raise ValueError(f"range {text!r}: need 0 < start <= end and step > 0")
    out, v = [], start
    while v <= end + 1e-9:
        out.append(v)
        v += step
    return out


@dataclass(slots=True)
class Options:
    """Everything one ``sonic perf`` run needs besides the target."""

    batch_size: int = 1
    levels: list[tuple[str, float]] = field(default_factory=lambda: [("concurrency", 1)])
    settings: Settings = field(default_factory=Settings)
    input_data: str = "random"
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    shared_memory: str = "none"
    output_shared_memory_size: int = 102400
    csv: Path | None = None
    verbose_csv: bool = False
    collect_metrics: bool = False
    metrics_url: str = "localhost:8002/metrics"
    metrics_interval_ms: int = 1000
    profile_export: Path | None = None


def analyze(target: Target, opts: Options,
            log: Callable[[str], None] = print) -> list[LevelResult]:  # fmt: skip
    """Measure every level; raises :class:`Unstable` (after writing what was measured)."""
    if opts.shared_memory not in ("none", "system"):
        raise ValueError(f"--shared-memory must be none or system (no CUDA here), "
                         f"not {opts.shared_memory!r}")  # fmt: skip
    model = model_spec(target)
    steps = build_inputs(model, opts.batch_size, opts.input_data, opts.shapes)
    s = opts.settings
    log("*** Measurement Settings ***")
    log(f"  Batch size: {opts.batch_size}")
    log(f"  Service Kind: Triton ({target.protocol}, sonic perf)")
    if s.measurement_mode == "time_windows":
        log('  Using "time_windows" mode for stabilization')
        log(f"  Measurement window: {s.interval_ms} msec")
    else:
        log('  Using "count_windows" mode for stabilization')
        log(f"  Minimum number of samples in each window: {s.request_count}")
    log(f"  Using asynchronous calls for inference ({s.processes} load process(es))")
    log("  Stabilizing using " + (f"p{s.percentile} latency" if s.percentile
                                  else "average latency") + "\n")  # fmt: skip
    results: list[LevelResult] = []
    with contextlib.ExitStack() as stack:
        maps = None
        if opts.shared_memory == "system":
            region = system_shared_memory(target, model, steps, opts.output_shared_memory_size)
            maps = stack.enter_context(region)
        profiler = Profiler(target, model, opts.batch_size, payloads(target, model, steps, maps),
                            s, metrics_url=opts.metrics_url if opts.collect_metrics else None,
                            metrics_interval_ms=opts.metrics_interval_ms, log=log)  # fmt: skip
        try:
            for mode, value in opts.levels:
                r = profiler.measure(mode, value)
                results.append(r)
                log(console(r) + "\n")
        finally:
            _write(results, opts)
    log("Inferences/Second vs. Client Average Batch Latency")
    for r in results:
        what = "Concurrency" if r.mode == "concurrency" else "Request Rate"
        log(f"{what}: {r.value:g}, throughput: {r.throughput:g} infer/sec, latency {r.avg_us} usec")
    return results


def _write(results: list[LevelResult], opts: Options) -> None:
    if opts.csv is not None and results:
        write_csv(opts.csv, results, verbose=opts.verbose_csv,
                  extra_percentile=opts.settings.percentile,
                  gpu=opts.collect_metrics)  # fmt: skip
    if opts.profile_export is not None and results:
        doc = {"experiments": [
            {"experiment": {"mode": "concurrency" if r.mode == "concurrency" else "request_rate",
                            "value": r.value},
             "requests": [{"timestamp": a, "response_timestamps": [b]} for a, b in r.timestamps],
             "window_boundaries": []}
            for r in results], "version": "sonic perf"}  # fmt: skip
        opts.profile_export.write_text(json.dumps(doc))


__all__ = ["Options", "Unstable", "analyze", "parse_range"]
