"""HTTP at the byte level: routes, status codes, the binary extension, compression.

Sent with the standard library's ``http.client`` so that malformed bodies
reach the server exactly as written.
"""

from __future__ import annotations

import gzip
import http.client
import json
import struct
import zlib
from typing import Any

import numpy as np
import pytest


def request(
    server: Any, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection(server.host, server.http_port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def infer_body(
    inputs: list[dict[str, Any]], binary: list[bytes], **extra: Any
) -> tuple[bytes, dict]:
    header = json.dumps({"inputs": inputs, **extra}).encode()
    headers = {"Inference-Header-Content-Length": str(len(header))} if binary else {}
    return header + b"".join(binary), headers


def test_health_routes_and_status_codes(server: Any) -> None:
    assert request(server, "GET", "/v2/health/live")[0] == 200
    assert request(server, "GET", "/v2/health/ready")[0] == 200
    assert request(server, "GET", "/v2/models/mlp/ready")[0] == 200
    assert request(server, "GET", "/v2/models/mlp/versions/1/ready")[0] == 200
    assert request(server, "GET", "/v2/models/mlp/versions/2/ready")[0] == 400
    status, _, body = request(server, "GET", "/v2/models/nope")
    assert status == 404 and "nope" in json.loads(body)["error"]
    status, _, body = request(server, "GET", "/v2/not/a/route")
    assert status == 404 and "error" in json.loads(body)
    # A version segment must be numeric, as in Triton's router.
    assert request(server, "GET", "/v2/models/mlp/versions/x/ready")[0] == 404
    status, _, body = request(server, "GET", "/v2")
    assert status == 200 and json.loads(body)["name"] == "triton"


def test_json_and_binary_infer(server: Any) -> None:
    a = np.arange(16, dtype=np.int32).reshape(1, 16)
    inputs = [
        {"name": "INPUT0", "datatype": "INT32", "shape": [1, 16], "data": a.tolist()},
        {"name": "INPUT1", "datatype": "INT32", "shape": [1, 16],
         "parameters": {"binary_data_size": 64}},
    ]  # fmt: skip
    body, headers = infer_body(
        inputs, [a.tobytes()], id="mixed",
        outputs=[{"name": "OUTPUT0", "parameters": {"binary_data": True}}, {"name": "OUTPUT1"}],
    )  # fmt: skip
    status, rh, resp = request(server, "POST", "/v2/models/simple/infer", body, headers)
    assert status == 200, resp
    n = int(rh["inference-header-content-length"])
    header = json.loads(resp[:n])
    assert header["id"] == "mixed" and header["model_name"] == "simple"
    out0, out1 = header["outputs"]
    assert out0["parameters"]["binary_data_size"] == 64
    np.testing.assert_array_equal(np.frombuffer(resp[n:], dtype=np.int32), (a + a).reshape(-1))
    assert out1["data"] == [0] * 16


def test_raw_binary_request(server: Any) -> None:
    """Inference-Header-Content-Length: 0 means the body is the single input tensor."""
    x = np.arange(6, dtype=np.float32)
    status, rh, resp = request(
        server, "POST", "/v2/models/identity_fp32/infer", x.tobytes(),
        {"Inference-Header-Content-Length": "0"},
    )  # fmt: skip
    assert status == 200, resp
    n = int(rh["inference-header-content-length"])
    assert json.loads(resp[:n])["outputs"][0]["shape"] == [1, 6]
    assert resp[n:] == x.tobytes()
    status, _, resp = request(
        server, "POST", "/v2/models/simple/infer", x.tobytes(),
        {"Inference-Header-Content-Length": "0"},
    )  # fmt: skip
    assert status == 400 and "exactly one input" in json.loads(resp)["error"]


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
def test_compressed_bodies(server: Any, encoding: str) -> None:
    a = np.arange(16, dtype=np.int32).reshape(1, 16)
    inputs = [
        {"name": n, "datatype": "INT32", "shape": [1, 16], "data": a.reshape(-1).tolist()}
        for n in ("INPUT0", "INPUT1")
    ]
    body, _ = infer_body(inputs, [])
    packed = gzip.compress(body) if encoding == "gzip" else zlib.compress(body)
    status, rh, resp = request(
        server, "POST", "/v2/models/simple/infer", packed,
        {"Content-Encoding": encoding, "Accept-Encoding": encoding},
    )  # fmt: skip
    assert status == 200
    assert rh["content-encoding"] == encoding
    plain = gzip.decompress(resp) if encoding == "gzip" else zlib.decompress(resp)
    assert json.loads(plain)["outputs"][0]["data"] == (2 * a).reshape(-1).tolist()


BAD_BODIES = [
    ("not json", b"{not json", {}, "JSON"),
    ("not an object", b"[1, 2]", {}, "object"),
    ("no inputs", b"{}", {}, "inputs"),
    ("header longer than body", b'{"inputs": []}', {"Inference-Header-Content-Length": "999"},
     "Inference-Header-Content-Length"),
    ("header not a number", b'{"inputs": []}', {"Inference-Header-Content-Length": "x"},
     "Inference-Header-Content-Length"),
    ("binary size past the end",
     b'{"inputs":[{"name":"INPUT0","datatype":"FP32","shape":[1,4],'
     b'"parameters":{"binary_data_size":16}}]}' + b"\0" * 8, "HDR", "binary_data_size"),
    ("byte size not matching the shape",
     b'{"inputs":[{"name":"INPUT0","datatype":"FP32","shape":[1,4],'
     b'"parameters":{"binary_data_size":8}}]}' + b"\0" * 8, "HDR", "expecting 16"),
    ("negative dim", b'{"inputs":[{"name":"INPUT0","datatype":"FP32","shape":[1,-4],"data":[]}]}',
     {}, "dims must be >= 0"),
    ("wrong element count", b'{"inputs":[{"name":"INPUT0","datatype":"FP32","shape":[1,4],'
     b'"data":[1,2,3]}]}', {}, "expecting 4"),
    ("strings for numbers", b'{"inputs":[{"name":"INPUT0","datatype":"FP32","shape":[1,1],'
     b'"data":["a"]}]}', {}, "numbers"),
    ("unknown datatype", b'{"inputs":[{"name":"INPUT0","datatype":"F32","shape":[1,1],'
     b'"data":[1]}]}', {}, "unknown datatype"),
    ("shape not a list", b'{"inputs":[{"name":"INPUT0","datatype":"FP32","shape":4,"data":[1]}]}',
     {}, "shape"),
    ("no data", b'{"inputs":[{"name":"INPUT0","datatype":"FP32","shape":[1,1]}]}', {}, "data"),
    ("unclaimed binary", b'{"inputs":[{"name":"INPUT0","datatype":"FP32","shape":[1,1],'
     b'"data":[1]}]}' + b"\0" * 4, "HDR", "no input claims"),
    ("bad gzip", b"\x1f\x8b garbage", {"Content-Encoding": "gzip"}, "decompress"),
]  # fmt: skip


@pytest.mark.parametrize(("label", "body", "headers", "words"), BAD_BODIES,
                         ids=[b[0] for b in BAD_BODIES])  # fmt: skip
def test_malformed_bodies_get_400(server: Any, label: str, body: bytes, headers: Any,
                                  words: str) -> None:  # fmt: skip
    if headers == "HDR":
        headers = {"Inference-Header-Content-Length": str(body.index(b"}]}") + 3)}
    status, _, resp = request(server, "POST", "/v2/models/identity_fp32/infer", body, headers)
    assert status == 400, (label, resp)
    assert words in json.loads(resp)["error"], resp
    assert request(server, "GET", "/v2/health/live")[0] == 200


def test_bytes_binary_layout(server: Any) -> None:
    words = [b"alpha", b"", "é".encode()]
    raw = b"".join(struct.pack("<I", len(w)) + w for w in words)
    body, headers = infer_body(
        [{"name": "INPUT0", "datatype": "BYTES", "shape": [1, 3],
          "parameters": {"binary_data_size": len(raw)}}],
        [raw], parameters={"binary_data_output": True},
    )  # fmt: skip
    status, rh, resp = request(server, "POST", "/v2/models/identity_bytes/infer", body, headers)
    assert status == 200, resp
    n = int(rh["inference-header-content-length"])
    assert resp[n:] == raw


def test_repository_routes_in_none_mode(server: Any) -> None:
    status, _, body = request(server, "POST", "/v2/repository/index", b"")
    assert status == 200 and {"name": "mlp", "version": "1", "state": "READY", "reason": ""} in (
        json.loads(body)
    )
    status, _, body = request(server, "POST", "/v2/repository/index", b'{"ready": true}')
    assert all(r["state"] == "READY" for r in json.loads(body))
    status, _, body = request(server, "POST", "/v2/repository/models/mlp/unload", b"")
    assert status == 503 and "explicit" in json.loads(body)["error"]
    status, _, body = request(server, "GET", "/v2/models/mlp/stats")
    assert status == 200 and json.loads(body)["model_stats"][0]["name"] == "mlp"
