"""Request traces over OTLP/HTTP, with tritonserver's ``--trace-config`` flags.

The receiver is a real OTLP/HTTP endpoint (``POST /v1/traces``, protobuf bodies decoded with
OpenTelemetry's own ``opentelemetry-proto``), as a collector or Jaeger would run it; no
collector installs from the package registries, so the test is its own.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from sonic.launcher import LocalServer
from tests.conftest import write_mlp


class Receiver(ThreadingHTTPServer):
    """An OTLP/HTTP trace endpoint that keeps every span it is sent."""

    def __init__(self) -> None:
        self.spans: list[tuple[dict[str, Any], Any]] = []  # (resource attributes, span)
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _Handler)

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.server_address[1]}/v1/traces"

    def wait(self, n: int, timeout_s: float = 30) -> list[Any]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.spans) >= n:
                    return list(self.spans)
            time.sleep(0.1)
        return list(self.spans)


class _Handler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        ok = self.path == "/v1/traces" and self.headers["Content-Type"] == "application/x-protobuf"
        if ok:
            export = ExportTraceServiceRequest.FromString(body)
            with self.server.lock:
                for rs in export.resource_spans:
                    attrs = {a.key: a.value.string_value for a in rs.resource.attributes}
                    for ss in rs.scope_spans:
                        self.server.spans += [(attrs, span) for span in ss.spans]
        answer = ExportTraceServiceResponse().SerializeToString()
        self.send_response(200 if ok else 400)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    thread = threading.Thread(target=r.serve_forever, daemon=True)
    thread.start()
    yield r
    r.shutdown()


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("repo")
    write_mlp(d)
    return d


def infer(server: LocalServer, n: int) -> None:
    client = grpcclient.InferenceServerClient(server.grpc_url)
    x = grpcclient.InferInput("input", [2, 64], "FP32")
    x.set_data_from_numpy(np.ones((2, 64), np.float32))
    for i in range(n):
        client.infer("mlp", [x], request_id=f"event-{i}")
    client.close()


def tracing(receiver: Receiver, *extra: str) -> list[str]:
    return ["--trace-config=mode=opentelemetry", "--trace-config=level=TIMESTAMPS",
            f"--trace-config=opentelemetry,url={receiver.url}",
            "--trace-config=opentelemetry,bsp_schedule_delay=200", *extra]  # fmt: skip


def test_each_request_is_a_trace_of_queue_and_compute(repo: Path, receiver: Receiver) -> None:
    args = tracing(receiver, "--trace-config=rate=1",
                   "--trace-config=opentelemetry,resource=service.name=sonic-site-a")  # fmt: skip
    with LocalServer(repo, *args) as server:
        infer(server, 3)
        spans = receiver.wait(3 * 6)
    assert {attrs["service.name"] for attrs, _ in spans} == {"sonic-site-a"}
    by_id = {s.span_id: s for _, s in spans}
    roots = [s for _, s in spans if s.name == "InferRequest"]
    assert len(roots) == 3
    ids = []
    for root in roots:
        attrs = {a.key: a.value.string_value for a in root.attributes}
        assert (attrs["triton.model_name"], attrs["triton.model_version"]) == ("mlp", "1")
        ids.append(attrs["triton.request_id"])
        children = {s.name: s for s in by_id.values() if s.parent_span_id == root.span_id}
        assert set(children) == {"queue", "compute"}
        steps = [s for s in by_id.values() if s.parent_span_id == children["compute"].span_id]
        assert sorted(s.name for s in steps) == ["compute_infer", "compute_input",
                                                  "compute_output"]  # fmt: skip
        # Inside the request, in order: queue, then compute, which its three steps fill.
        q, c = children["queue"], children["compute"]
        assert root.start_time_unix_nano <= q.start_time_unix_nano <= q.end_time_unix_nano
        assert q.end_time_unix_nano == c.start_time_unix_nano
        assert c.end_time_unix_nano == root.end_time_unix_nano
        assert sum(s.end_time_unix_nano - s.start_time_unix_nano for s in steps) == (
            c.end_time_unix_nano - c.start_time_unix_nano)
        assert all(s.trace_id == root.trace_id for s in steps)
    assert sorted(ids) == ["event-0", "event-1", "event-2"]


def test_rate_samples_one_request_in_n(repo: Path, receiver: Receiver) -> None:
    with LocalServer(repo, *tracing(receiver, "--trace-config=rate=4")) as server:
        infer(server, 8)
        time.sleep(1.5)  # two export delays: every sampled span is out
        spans = receiver.wait(2 * 6)
    assert len([s for _, s in spans if s.name == "InferRequest"]) == 2


def test_off_by_default_and_bad_settings_refused_by_name(repo: Path, receiver: Receiver) -> None:
    with LocalServer(repo) as server:
        infer(server, 3)
        time.sleep(1.0)
    assert receiver.spans == []
    out = subprocess.run([sys.executable, "-m", "sonic.cli", "serve", f"--model-repository={repo}",
                          "--trace-config=level=TIMESTAMPS"],
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert out.returncode != 0 and "mode=opentelemetry" in out.stderr
