"""perf_analyzer's measurement method: windows until the last three agree, per load level.

For each concurrency (or request rate) the load runs continuously; at each
window boundary (``time_windows``: every ``--measurement-interval`` ms;
``count_windows``: once ``--measurement-request-count`` requests and at least
1 s have completed) the completed requests are taken and the server's
statistics are read.  A level is stable when, over the last 3 windows, the
largest and smallest throughput, and the largest and smallest latency (the
average, or ``--percentile``), are within ``-s`` percent; at most ``-r``
windows are tried.  The 3 stable windows are merged: throughput is their
requests over their seconds, latencies are of the requests that ended in
them, and the server-side breakdown is the difference of the statistics at
their boundaries divided by the requests the server counted.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np

from sonic.perf.engine import Load, LoadSpec
from sonic.perf.inputs import ModelSpec
from sonic.perf.results import PERCENTILES, LevelResult, percentile_us
from sonic.perf.target import (
    ShmMap,
    Target,
    byte_size,
    grpc_request,
    http_request,
    statistics,
)


class Unstable(RuntimeError):
    """No 3 consecutive windows agreed within the stability percentage."""


@dataclass(slots=True)
class Settings:
    """perf_analyzer's measurement flags."""

    measurement_mode: str = "time_windows"
    interval_ms: int = 5000
    request_count: int = 50
    stability_pct: float = 10.0
    max_trials: int = 10
    percentile: int | None = None
    processes: int = 1
    distribution: str = "constant"

    def __post_init__(self) -> None:
        if self.measurement_mode not in ("time_windows", "count_windows"):
            raise ValueError("--measurement-mode must be time_windows or count_windows, not "
                             f"{self.measurement_mode!r}")  # fmt: skip
        if self.distribution not in ("constant", "poisson"):
            raise ValueError(f"--request-distribution must be constant or poisson, not "
                             f"{self.distribution!r}")  # fmt: skip
        if self.max_trials < 3:
            raise ValueError(f"-r (max trials) must be at least 3, not {self.max_trials}")


@dataclass(slots=True)
class _Window:
    rows: np.ndarray
    seconds: float
    stats: dict[str, int] | None  # statistics at the window's end

    def latency_ns(self) -> np.ndarray:
        ok = self.rows[:, 4] == 1
        return self.rows[ok, 1] - self.rows[ok, 0]


def _throughput(ws: list[_Window], batch: int) -> float:
    ok = sum(int((w.rows[:, 4] == 1).sum()) for w in ws)
    return ok * batch / max(sum(w.seconds for w in ws), 1e-9)


def _latency_metric(w: _Window, percentile: int | None) -> float:
    lat = w.latency_ns()
    if len(lat) == 0:
        return 0.0
    return float(percentile_us(lat, percentile)) if percentile else float(lat.mean() / 1000)


def _stable(ws: list[_Window], s: Settings, batch: int) -> bool:
    tputs = [_throughput([w], batch) for w in ws]
    lats = [_latency_metric(w, s.percentile) for w in ws]
    limit = 1 + s.stability_pct / 100
    return (min(tputs) > 0 and max(tputs) / min(tputs) <= limit
            and min(lats) > 0 and max(lats) / min(lats) <= limit)  # fmt: skip


@dataclass(slots=True)
class Profiler:
    """Measures one model on one server at several load levels."""

    target: Target
    model: ModelSpec
    batch_size: int
    payloads: tuple[object, ...]
    settings: Settings = field(default_factory=Settings)
    server_stats: bool = True
    metrics_url: str | None = None
    metrics_interval_ms: int = 1000
    log: Callable[[str], None] = print

    def _stats(self) -> dict[str, int] | None:
        if not self.server_stats:
            return None
        try:
            return statistics(self.target)
        except Exception as err:
            self.log(f"server-side statistics unavailable ({err}); client side only")
            self.server_stats = False
            return None

    def measure(self, mode: str, value: float) -> LevelResult:
        s = self.settings
        spec = LoadSpec(self.target, self.payloads, mode, value, s.distribution)
        load = Load(spec, s.processes)
        load.flush()  # the windows count from here, not from the load's start-up
        windows: list[_Window] = []
        start_stats = self._stats()
        offset = time.time_ns() - time.monotonic_ns()
        with _GpuMetrics(self.metrics_url, self.metrics_interval_ms) as gpu:
            try:
                last = time.monotonic()
                for _ in range(s.max_trials):
                    rows = self._window(load, last)
                    now = time.monotonic()
                    windows.append(_Window(rows, now - last, self._stats()))
                    last = now
                    if len(windows) >= 3 and _stable(windows[-3:], s, self.batch_size):
                        break
                else:
                    error = load.first_error
                    raise Unstable(
                        f"Failed to obtain stable measurement within {s.max_trials} measurement "
                        f"windows for {'concurrency' if mode == 'concurrency' else 'request rate'}"
                        f" {value:g}. Please try to increase the --measurement-interval."
                        + (f" Requests failed: {error}" if error else "")
                    )
            finally:
                load.stop()
        merged = windows[-3:]
        first_stats = windows[-4].stats if len(windows) > 3 else start_stats
        return self._result(mode, value, merged, first_stats, merged[-1].stats, gpu.summary(),
                            offset)  # fmt: skip

    def _window(self, load: Load, start: float) -> np.ndarray:
        s = self.settings
        if s.measurement_mode == "time_windows":
            time.sleep(max(0.0, start + s.interval_ms / 1000 - time.monotonic()))
            return load.flush()
        parts, done = [], 0
        while done < s.request_count or time.monotonic() - start < 1.0:
            time.sleep(0.01)
            parts.append(load.flush())
            done += len(parts[-1])
        return np.concatenate(parts)

    def _result(
        self, mode: str, value: float, ws: list[_Window], before: dict[str, int] | None,
        after: dict[str, int] | None, gpu: dict[str, str], offset: int,
    ) -> LevelResult:  # fmt: skip
        rows = np.concatenate([w.rows for w in ws])
        ok = rows[:, 4] == 1
        lat = rows[ok, 1] - rows[ok, 0]
        pcts = {p: percentile_us(lat, p) for p in PERCENTILES}
        if self.settings.percentile and self.settings.percentile not in pcts:
            pcts[self.settings.percentile] = percentile_us(lat, self.settings.percentile)
        server = None
        if before is not None and after is not None:
            n = after["count"] - before["count"]
            server = {k: int((after[k] - before[k]) / max(n, 1) / 1000) for k in after}
            server["count"] = n
        return LevelResult(
            mode=mode, value=value, batch_size=self.batch_size,
            throughput=_throughput(ws, self.batch_size), requests=int(ok.sum()),
            errors=int((~ok).sum()), seconds=sum(w.seconds for w in ws),
            avg_us=int(lat.mean() // 1000) if len(lat) else 0, percentiles_us=pcts,
            send_us=int(rows[ok, 2].mean() // 1000) if ok.any() else 0,
            recv_us=int(rows[ok, 3].mean() // 1000) if ok.any() else 0,
            server=server, stable=True, windows=len(ws), gpu=gpu,
            timestamps=[(int(a + offset), int(b + offset)) for a, b in rows[ok, :2]],
        )  # fmt: skip


class _GpuMetrics:
    """Scrapes ``nv_gpu_*`` from --metrics-url while a level runs (--collect-metrics)."""

    def __init__(self, url: str | None, interval_ms: int) -> None:
        self.url, self.interval = url, interval_ms / 1000
        self.samples: list[dict[tuple[str, str], float]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> _GpuMetrics:
        if self.url:
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def _run(self) -> None:
        import urllib.request

        from prometheus_client.parser import text_string_to_metric_families

        url = self.url if "://" in (self.url or "") else f"http://{self.url}"
        while not self._stop.is_set():
            with contextlib.suppress(Exception):
                text = urllib.request.urlopen(url, timeout=2).read().decode()
                sample = {}
                for fam in text_string_to_metric_families(text):
                    for smp in fam.samples:
                        if smp.name.startswith("nv_gpu_"):
                            sample[(smp.name, smp.labels.get("gpu_uuid", ""))] = smp.value
                self.samples.append(sample)
            self._stop.wait(self.interval)

    def summary(self) -> dict[str, str]:
        """perf_analyzer's aggregation, formatted ``uuid:value;`` per GPU."""
        if not self.samples:
            return {}
        uuids = sorted({u for s in self.samples for (_, u) in s})

        def agg(name: str, how: Callable[[list[float]], float]) -> str:
            out = ""
            for u in uuids:
                vals = [s[(name, u)] for s in self.samples if (name, u) in s]
                if vals:
                    out += f"{u}:{how(vals):g};"
            return out

        return {"Avg GPU Utilization": agg("nv_gpu_utilization", lambda v: sum(v) / len(v)),
                "Avg GPU Power Usage": agg("nv_gpu_power_usage", lambda v: sum(v) / len(v)),
                "Max GPU Memory Usage": agg("nv_gpu_memory_used_bytes", max),
                "Total GPU Memory": agg("nv_gpu_memory_total_bytes", lambda v: v[0])}  # fmt: skip


@contextlib.contextmanager
def system_shared_memory(
    target: Target, model: ModelSpec, steps: list[dict[str, np.ndarray]], output_size: int
) -> Iterator[list[ShmMap]]:
    """Register one region per input per data step and one per output; yield the mapping."""
    import tritonclient.utils.shared_memory as shm

    from sonic.protocol.tensors import to_raw

    client = target.client()
    handles, names, maps = [], [], []
    tag = f"sonic_perf_{time.monotonic_ns()}"
    try:
        outputs = {}
        for spec in model.outputs:
            size = byte_size(spec, max(1, next(iter(steps[0].values())).shape[0]),
                             model.max_batch_size) or output_size  # fmt: skip
            name = f"{tag}_out_{len(names)}"
            handles.append(shm.create_shared_memory_region(name, f"/{name}", size))
            client.register_system_shared_memory(name, f"/{name}", size, **target.kwargs(False))
            names.append(name)
            outputs[spec.name] = (name, size, 0)
        for i, step in enumerate(steps):
            m = dict(outputs)
            for spec in model.inputs:
                raw = to_raw(step[spec.name], spec.datatype)
                name = f"{tag}_in_{i}_{len(names)}"
                h = shm.create_shared_memory_region(name, f"/{name}", len(raw))
                shm.set_shared_memory_region(h, [np.frombuffer(raw, dtype=np.uint8)])
                handles.append(h)
                client.register_system_shared_memory(name, f"/{name}", len(raw),
                                                     **target.kwargs(False))  # fmt: skip
                names.append(name)
                m[spec.name] = (name, len(raw), 0)
            maps.append(m)
        yield maps
    finally:
        for name in names:
            with contextlib.suppress(Exception):
                client.unregister_system_shared_memory(name, **target.kwargs(False))
        for h in handles:
            with contextlib.suppress(Exception):
                shm.destroy_shared_memory_region(h)
        client.close()


def payloads(
    target: Target, model: ModelSpec, steps: list[dict[str, np.ndarray]],
    shm_maps: list[ShmMap] | None = None,
) -> tuple[object, ...]:
    encode = grpc_request if target.protocol == "grpc" else http_request
    return tuple(encode(model, step, shm_maps[i] if shm_maps else None)
                 for i, step in enumerate(steps))  # fmt: skip
