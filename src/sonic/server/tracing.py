"""Request traces in OpenTelemetry, with tritonserver's ``--trace-config`` flags; off by default.

A site that runs Jaeger or Tempo beside its Prometheus sees where each sampled
request's time went, as Triton shows it: a span ``InferRequest`` (the model,
its version and the request id as attributes) with the children ``queue`` and
``compute``, and ``compute`` split into ``compute_input``, ``compute_infer`` and
``compute_output``.  The durations are the ones the statistics extension
records; the spans are laid end to end, ending when the response was built.

tritonserver's settings are taken as it takes them::

    --trace-config mode=opentelemetry --trace-config level=TIMESTAMPS
    --trace-config rate=100            # one request in 100 (Triton's default: 1000)
    --trace-config count=-1            # how many traces at most (-1: no limit)
    --trace-config opentelemetry,url=localhost:4318/v1/traces
    --trace-config opentelemetry,resource=service.name=sonic-site-a

The OpenTelemetry SDK (the ``[tracing]`` extra) is imported only when tracing
is on, and exports from its own thread over OTLP/HTTP, so the request path pays
one check of a global when tracing is off and a few microseconds per sampled
request when it is on.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("sonic.server.tracing")

LEVELS = ("OFF", "TIMESTAMPS", "TENSORS")
MODES = ("triton", "opentelemetry")


@dataclass(slots=True)
class TraceConfig:
    """What ``--trace-config`` set; :meth:`parse` refuses what this server cannot do, by name."""

    level: str = "OFF"
    rate: int = 1000
    count: int = -1
    mode: str = "triton"
    url: str = "http://localhost:4318/v1/traces"
    resource: dict[str, str] = field(default_factory=dict)
    #: The span processor's export delay (OpenTelemetry's bsp_schedule_delay, in ms).
    schedule_delay_ms: int = 5000

    @property
    def enabled(self) -> bool:
        return self.level != "OFF"

    @classmethod
    def parse(cls, items: list[str]) -> TraceConfig:
        config = cls()
        for item in items:
            head, sep, value = item.partition("=")
            if not sep:
                raise ValueError(f"--trace-config '{item}' must be [MODE,]SETTING=VALUE")
            scope, _, key = head.rpartition(",")
            where = f"--trace-config '{item}'"
            if scope == "opentelemetry":
                if key == "url":
                    config.url = value if "://" in value else f"http://{value}"
                elif key == "resource":
                    name, sep, attr = value.partition("=")
                    if not sep:
                        raise ValueError(f"{where}: a resource is KEY=VALUE")
                    config.resource[name] = attr
                elif key == "bsp_schedule_delay":
                    config.schedule_delay_ms = _int(value, where)
                else:
                    raise ValueError(f"{where}: opentelemetry settings are url, resource and "
                                     "bsp_schedule_delay")  # fmt: skip
            elif scope == "triton":
                pass  # Triton's trace-file settings: harmless while mode=triton is off (below)
            elif scope:
                raise ValueError(f"{where}: the modes are {', '.join(MODES)}")
            elif key == "level":
                if value.upper() not in LEVELS:
                    raise ValueError(f"{where}: level is one of {', '.join(LEVELS)}")
                config.level = value.upper()
            elif key == "rate":
                config.rate = _int(value, where, minimum=1)
            elif key == "count":
                config.count = _int(value, where, minimum=-1)
            elif key == "mode":
                if value not in MODES:
                    raise ValueError(f"{where}: mode is one of {', '.join(MODES)}")
                config.mode = value
            else:
                raise ValueError(f"{where}: global settings are level, rate, count and mode")
        if config.enabled and config.mode != "opentelemetry":
            raise ValueError("--trace-config level=TIMESTAMPS needs --trace-config "
                             "mode=opentelemetry: this server exports traces over OTLP only, not "
                             "as Triton's trace files")  # fmt: skip
        return config


def _int(text: str, where: str, minimum: int = 0) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"{where}: '{text}' is not an integer") from None
    if value < minimum:
        raise ValueError(f"{where}: must be at least {minimum}")
    return value


def _sdk() -> Any:
    try:
        import opentelemetry.exporter.otlp.proto.http.trace_exporter as otlp
    except ImportError as err:
        raise ModuleNotFoundError(
            "--trace-config level=TIMESTAMPS needs OpenTelemetry: pip install "
            "'sonic-inference[tracing]'"
        ) from err
    return otlp


def check(items: list[str]) -> TraceConfig:
    """The settings, or ValueError / ModuleNotFoundError naming what is wrong: at start."""
    config = TraceConfig.parse(items)
    if config.enabled:
        _sdk()
    return config


class Tracer:
    """Samples requests and turns their timings into spans; the SDK exports them."""

    def __init__(self, config: TraceConfig) -> None:
        otlp = _sdk()
        from opentelemetry import trace
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        self.config = config
        self._trace = trace
        resource = Resource.create({"service.name": "sonic", **config.resource})
        self.provider = TracerProvider(resource=resource)
        self.provider.add_span_processor(BatchSpanProcessor(
            otlp.OTLPSpanExporter(endpoint=config.url),
            schedule_delay_millis=config.schedule_delay_ms))  # fmt: skip
        self.tracer = self.provider.get_tracer("sonic.server")
        self.seen = 0
        self.traced = 0
        log.info("tracing one request in %d to %s (OpenTelemetry)", config.rate, config.url)

    def record(self, model: str, version: str, request_id: str, start_ns: int, timing: Any,
               end_ns: int) -> None:  # fmt: skip
        """One answered request, its times on the perf_counter clock (as the statistics)."""
        self.seen += 1
        if self.seen % self.config.rate or 0 <= self.config.count <= self.traced:
            return
        self.traced += 1
        to_epoch = time.time_ns() - time.perf_counter_ns()
        end = end_ns + to_epoch
        compute = timing.compute_input_ns + timing.compute_infer_ns + timing.compute_output_ns
        attrs = {"triton.model_name": model, "triton.model_version": version}
        if request_id:
            attrs["triton.request_id"] = request_id
        root = self.tracer.start_span("InferRequest", start_time=start_ns + to_epoch,
                                      attributes=attrs)  # fmt: skip
        parent = self._trace.set_span_in_context(root)
        t = end - compute
        self._span("queue", t - timing.queue_ns, t, parent)
        span = self.tracer.start_span("compute", context=parent, start_time=t)
        inner = self._trace.set_span_in_context(span)
        for name in ("compute_input", "compute_infer", "compute_output"):
            t_next = t + getattr(timing, f"{name}_ns")
            self._span(name, t, t_next, inner)
            t = t_next
        span.end(end_time=end)
        root.end(end_time=end)

    def _span(self, name: str, start: int, end: int, context: Any) -> None:
        self.tracer.start_span(name, context=context, start_time=start).end(end_time=end)

    def shutdown(self) -> None:
        """Export what is buffered (on the SIGTERM drain) and stop the export thread."""
        self.provider.shutdown()


_tracer: Tracer | None = None


def configure(config: TraceConfig) -> None:
    """Start tracing for this process (``sonic serve`` calls it once, at start)."""
    global _tracer
    _tracer = Tracer(config) if config.enabled else None


def record(model: str, version: str, request_id: str, start_ns: int, timing: Any,
           end_ns: int) -> None:  # fmt: skip
    """Called for every answered request; costs one global check while tracing is off."""
    if _tracer is not None:
        _tracer.record(model, version, request_id, start_ns, timing, end_ns)


def shutdown() -> None:
    global _tracer
    if _tracer is not None:
        _tracer.shutdown()
        _tracer = None
