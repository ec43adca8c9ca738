"""Metrics with Triton's names and labels, including the failure reason."""

from __future__ import annotations

import http.client
import json
from typing import Any

from tests.fixtures.metrics import metric


def post(server: Any, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    conn = http.client.HTTPConnection(server.host, server.http_port, timeout=30)
    conn.request("POST", path, json.dumps(body).encode())
    resp = conn.getresponse()
    data = json.loads(resp.read() or b"{}")
    conn.close()
    return resp.status, data


def test_failures_carry_triton_reason_labels(server: Any) -> None:
    before = metric(server, "nv_inference_request_failure", model="simple", reason="OTHER")
    for reason in ("REJECTED", "CANCELED", "BACKEND"):
        metric(server, "nv_inference_request_failure", model="simple", reason=reason)
    inputs = [{"name": n, "datatype": "INT32", "shape": [1, 16], "data": [0] * 16}
              for n in ("INPUT0", "INPUT1")]  # fmt: skip
    status, data = post(server, "/v2/models/simple/infer",
                        {"inputs": inputs, "parameters": {"priority": "high"}})  # fmt: skip
    assert status == 400 and "priority" in data["error"]
    bad = [dict(inputs[0], shape=[1, 8], data=[0] * 8), inputs[1]]
    status, _ = post(server, "/v2/models/simple/infer", {"inputs": bad})
    assert status == 400
    after = metric(server, "nv_inference_request_failure", model="simple", reason="OTHER")
    assert after - before == 2
    assert metric(server, "nv_inference_request_success", model="simple", version="1") >= 0
