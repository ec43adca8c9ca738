"""Property-based tests: every malformed request or config is a clear client error (HTTP 4xx,
gRPC INVALID_ARGUMENT and the like), never a 500, a hang or a crash.

The decoders are exercised in-process with many examples; then the same strategies go over the
wire to a real ``sonic serve`` with fewer, and the server must still be answering at the end.
"""

from __future__ import annotations

import contextlib
import http.client
import os
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from sonic.errors import InvalidArgument, SonicError
from sonic.launcher import LocalServer
from sonic.protocol import grpc_codec, http_codec
from sonic.repository.config import check_structure, config_from_json, parse_config
from tests.security.strategies import config_texts, grpc_requests, http_bodies

# More for a deep local run: SONIC_PROPERTY_EXAMPLES=20000 pytest tests/security/test_properties.py
EXAMPLES = int(os.environ.get("SONIC_PROPERTY_EXAMPLES", "600"))
CLIENT_ERRORS = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND,
                 grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNIMPLEMENTED,
                 grpc.StatusCode.RESOURCE_EXHAUSTED}  # fmt: skip


@settings(max_examples=EXAMPLES, deadline=None)
@given(http_bodies())
def test_http_decoder_raises_only_invalid_argument(case: tuple[bytes, int | None]) -> None:
    body, length = case
    try:
        http_codec.decode_request(body, length, "mlp", "")
    except InvalidArgument as err:
        assert err.message


@settings(max_examples=EXAMPLES // 2, deadline=None)
@given(st.binary(max_size=400), st.one_of(st.none(), st.integers(-4, 500)))
def test_http_decoder_on_random_bytes(body: bytes, length: int | None) -> None:
    with contextlib.suppress(InvalidArgument):
        http_codec.decode_request(body, length, "mlp", "")


@settings(max_examples=EXAMPLES, deadline=None)
@given(grpc_requests())
def test_grpc_decoder_raises_only_invalid_argument(req: pb.ModelInferRequest) -> None:
    try:
        grpc_codec.decode_request(pb.ModelInferRequest.FromString(req.SerializeToString()))
    except InvalidArgument as err:
        assert err.message


@settings(max_examples=EXAMPLES, deadline=None)
@given(config_texts)
def test_config_parsing_raises_only_config_errors(text: str) -> None:
    try:
        check_structure(parse_config(text, "m"), "m")
    except SonicError as err:
        assert isinstance(err, InvalidArgument) and "'m'" in err.message
    try:
        config_from_json(text, "m")
    except SonicError as err:
        assert isinstance(err, InvalidArgument)


# -- over the wire ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def live(model_repo: Path) -> Iterator[LocalServer]:
    with LocalServer(model_repo) as server:
        yield server


WIRE = settings(max_examples=EXAMPLES // 4, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip


@WIRE
@given(case=http_bodies(), model=st.sampled_from(["mlp", "simple", "nope"]))
def test_server_answers_malformed_http_with_4xx(
    live: LocalServer, model: str, case: tuple[bytes, int | None]
) -> None:
    body, length = case
    headers = {"Content-Type": "application/json"}
    if length is not None:
        headers["Inference-Header-Content-Length"] = str(length)
    conn = http.client.HTTPConnection(live.http_url, timeout=10)
    conn.request("POST", f"/v2/models/{model}/infer", body=body, headers=headers)
    resp = conn.getresponse()
    text = resp.read()
    assert resp.status < 500, text
    if resp.status >= 400:
        assert b'"error"' in text
    conn.close()


@WIRE
@given(req=grpc_requests())
def test_server_answers_malformed_grpc_with_client_errors(live: LocalServer,
                                                          req: pb.ModelInferRequest) -> None:
    with grpc.insecure_channel(live.grpc_url) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        try:
            stub.ModelInfer(req, timeout=10)
        except grpc.RpcError as err:
            assert err.code() in CLIENT_ERRORS, (err.code(), err.details())
            assert err.details()


def test_server_is_alive_after_the_storm(live: LocalServer) -> None:
    with grpc.insecure_channel(live.grpc_url) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        assert stub.ServerLive(pb.ServerLiveRequest()).live
        assert stub.ServerReady(pb.ServerReadyRequest()).ready
