"""The four stock ``tritonclient`` variants against a real ``sonic serve`` process."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from tritonclient.utils import InferenceServerException

from tests.conftest import CLIENT_VARIANTS, DATATYPES, random_tensor, run_with_client

pytestmark = pytest.mark.parametrize("variant", CLIENT_VARIANTS)


def _json(variant: str) -> dict[str, Any]:
    return {"as_json": True} if variant.startswith("grpc") else {}


def _output(mod: Any, name: str, *, binary: bool = True) -> Any:
    if mod.__name__.startswith("tritonclient.http"):
        return mod.InferRequestedOutput(name, binary_data=binary)
    return mod.InferRequestedOutput(name)


def _input(mod: Any, name: str, array: np.ndarray, datatype: str, *, binary: bool = True) -> Any:
    inp = mod.InferInput(name, list(array.shape), datatype)
    if mod.__name__.startswith("tritonclient.http"):
        inp.set_data_from_numpy(array, binary_data=binary)
    else:
        inp.set_data_from_numpy(array)
    return inp


def test_health_and_metadata(variant: str, server: Any) -> None:
    async def scenario(c: Any, mod: Any) -> None:
        assert await c.is_server_live()
        assert await c.is_server_ready()
        assert await c.is_model_ready("mlp")
        assert await c.is_model_ready("mlp", "1")
        assert not await c.is_model_ready("mlp", "7")
        assert not await c.is_model_ready("no_such_model")
        meta = await c.get_server_metadata(**_json(variant))
        assert meta["name"] == "triton"
        assert "statistics" in meta["extensions"]
        assert "binary_tensor_data" in meta["extensions"]
        model = await c.get_model_metadata("simple", **_json(variant))
        assert model["name"] == "simple"
        assert model["versions"] == ["1"]
        assert model["platform"] == "onnxruntime_onnx"
        shapes = {t["name"]: [int(d) for d in t["shape"]] for t in model["inputs"]}
        assert shapes == {"INPUT0": [-1, 16], "INPUT1": [-1, 16]}
        assert [t["datatype"] for t in model["outputs"]] == ["INT32", "INT32"]

    run_with_client(variant, server, scenario)


def test_model_config(variant: str, server: Any) -> None:
    async def scenario(c: Any, mod: Any) -> None:
        cfg = await c.get_model_config("mlp", **_json(variant))
        cfg = cfg.get("config", cfg)
        assert int(cfg["max_batch_size"]) == 256
        assert cfg["input"][0]["name"] == "input"
        assert cfg["input"][0]["data_type"] == "TYPE_FP32"
        assert [int(d) for d in cfg["input"][0]["dims"]] == [64]
        assert cfg["instance_group"][0]["kind"] == "KIND_CPU"
        assert int(cfg["instance_group"][0]["count"]) == 2
        # Auto-completed from the ONNX file: no config.pbtxt exists for this one.
        auto = await c.get_model_config("identity_fp32", **_json(variant))
        auto = auto.get("config", auto)
        assert int(auto["max_batch_size"]) == 4
        assert auto["input"][0]["data_type"] == "TYPE_FP32"
        assert [int(d) for d in auto["input"][0]["dims"]] == [-1]
        assert "dynamic_batching" in auto

    run_with_client(variant, server, scenario)


def test_infer_bit_identical_to_onnxruntime(variant: str, server: Any, model_repo: Path) -> None:
    session = ort.InferenceSession(str(model_repo / "mlp" / "1" / "model.onnx"))
    rng = np.random.default_rng(7)
    batches = [rng.standard_normal((n, 64)).astype(np.float32) for n in (1, 3, 64, 256)]

    async def scenario(c: Any, mod: Any) -> None:
        for binary in (True, False) if variant.startswith("http") else (True,):
            for x in batches:
                result = await c.infer(
                    "mlp",
                    [_input(mod, "input", x, "FP32", binary=binary)],
                    outputs=[_output(mod, "output", binary=binary)],
                    request_id="req-42",
                )
                got = result.as_numpy("output")
                want = session.run(["output"], {"input": x})[0]
                assert got.dtype == want.dtype and got.shape == want.shape
                assert got.tobytes() == want.tobytes()
                assert result.get_response(**_json(variant))["id"] == "req-42"

    run_with_client(variant, server, scenario)


@pytest.mark.parametrize("datatype", DATATYPES)
def test_every_datatype_round_trips(variant: str, datatype: str, server: Any) -> None:
    rng = np.random.default_rng(3)
    x = random_tensor(datatype, (2, 5), rng)
    model = f"identity_{datatype.lower()}"
    json_ok = variant.startswith("http") and datatype != "BF16"

    async def scenario(c: Any, mod: Any) -> None:
        for binary in (True, False) if json_ok else (True,):
            result = await c.infer(
                model,
                [_input(mod, "INPUT0", x, datatype, binary=binary)],
                outputs=[_output(mod, "OUTPUT0", binary=binary)],
            )
            got = result.as_numpy("OUTPUT0")
            assert got.shape == x.shape
            if datatype == "BYTES":
                as_bytes = [v.encode() if isinstance(v, str) else bytes(v) for v in got.reshape(-1)]
                assert as_bytes == list(x.reshape(-1))
            else:
                assert got.tobytes() == x.tobytes(), (binary, got, x)

    run_with_client(variant, server, scenario)


def test_requested_output_subset(variant: str, server: Any) -> None:
    a = np.arange(32, dtype=np.int32).reshape(2, 16)
    b = np.ones((2, 16), dtype=np.int32)

    async def scenario(c: Any, mod: Any) -> None:
        inputs = [_input(mod, "INPUT0", a, "INT32"), _input(mod, "INPUT1", b, "INT32")]
        only = await c.infer("simple", inputs, outputs=[_output(mod, "OUTPUT1")])
        assert only.as_numpy("OUTPUT0") is None
        np.testing.assert_array_equal(only.as_numpy("OUTPUT1"), a - b)
        both = await c.infer("simple", inputs)
        np.testing.assert_array_equal(both.as_numpy("OUTPUT0"), a + b)
        np.testing.assert_array_equal(both.as_numpy("OUTPUT1"), a - b)

    run_with_client(variant, server, scenario)


def test_classification_extension(variant: str, server: Any) -> None:
    x = np.array([[0.1, 3.0, -1.0, 2.0]], dtype=np.float32)

    async def scenario(c: Any, mod: Any) -> None:
        out = mod.InferRequestedOutput("OUTPUT0", class_count=2)
        result = await c.infer("identity_fp32", [_input(mod, "INPUT0", x, "FP32")], outputs=[out])
        top = [v.decode() if isinstance(v, bytes) else v for v in result.as_numpy("OUTPUT0")[0]]
        assert [t.split(":")[1] for t in top] == ["1", "3"]
        assert float(top[0].split(":")[0]) == pytest.approx(3.0)

    run_with_client(variant, server, scenario)


def test_statistics_semantics(variant: str, server: Any) -> None:
    """inference_count counts rows, execution_count executions, as perf_analyzer expects."""
    x = np.zeros((4, 16), dtype=np.int32)

    async def stats(c: Any) -> dict[str, Any]:
        s = await c.get_inference_statistics("simple", **_json(variant))
        (entry,) = s["model_stats"]
        return entry

    async def scenario(c: Any, mod: Any) -> None:
        before = await stats(c)
        for _ in range(3):
            await c.infer("simple", [_input(mod, "INPUT0", x, "INT32"),
                                     _input(mod, "INPUT1", x, "INT32")])  # fmt: skip
        with pytest.raises(InferenceServerException):
            await c.infer("simple", [_input(mod, "INPUT0", x, "INT32")])
        after = await stats(c)
        d = lambda *path: int(_get(after, path)) - int(_get(before, path))  # noqa: E731
        assert d("inference_count") == 12
        assert d("execution_count") == 3
        assert d("inference_stats", "success", "count") == 3
        assert d("inference_stats", "fail", "count") == 1
        for stage in ("queue", "compute_input", "compute_infer", "compute_output"):
            assert d("inference_stats", stage, "count") == 3
            assert d("inference_stats", stage, "ns") > 0 or stage == "queue"
        assert d("inference_stats", "success", "ns") >= d("inference_stats", "compute_infer", "ns")
        sizes = {int(b["batch_size"]) for b in after["batch_stats"]}
        assert 4 in sizes
        everything = await c.get_inference_statistics(**_json(variant))
        names = {m["name"] for m in everything["model_stats"]}
        assert {"mlp", "simple", "identity_fp32"} <= names

    run_with_client(variant, server, scenario)


def _get(d: dict[str, Any], path: tuple[str, ...]) -> Any:
    for key in path:
        d = d.get(key, 0) if isinstance(d, dict) else 0
    return d or 0


def test_repository_index(variant: str, server: Any) -> None:
    async def scenario(c: Any, mod: Any) -> None:
        index = await c.get_model_repository_index(**_json(variant))
        rows = index["models"] if isinstance(index, dict) else index
        by_name = {r["name"]: r for r in rows}
        assert by_name["mlp"]["state"] == "READY"
        assert by_name["mlp"]["version"] == "1"
        assert len(by_name) >= 3 + len(DATATYPES)

    run_with_client(variant, server, scenario)


def test_errors_name_what_was_wrong(variant: str, server: Any) -> None:
    x = np.zeros((1, 16), dtype=np.int32)
    grpc = variant.startswith("grpc")
    bad_request = "StatusCode.INVALID_ARGUMENT" if grpc else "400"
    not_found = "StatusCode.NOT_FOUND" if grpc else "404"

    async def expect(coro: Any, status: str, *words: str) -> None:
        with pytest.raises(InferenceServerException) as info:
            await coro
        assert info.value.status() == status, info.value
        for w in words:
            assert w in info.value.message(), info.value.message()

    async def scenario(c: Any, mod: Any) -> None:
        inp = lambda name, arr, dt="INT32": _input(mod, name, arr, dt)  # noqa: E731
        ok = [inp("INPUT0", x), inp("INPUT1", x)]
        await expect(c.infer("no_such_model", ok), not_found, "no_such_model")
        await expect(c.infer("simpel", ok), not_found, "did you mean 'simple'")
        await expect(c.infer("simple", ok, model_version="9"), not_found, "version 9")
        await expect(c.infer("simple", [inp("INPUT0", x), inp("INPUT9", x)]), bad_request, "INPUT9")
        await expect(
            c.infer("simple", [inp("INPUT0", x), inp("INPUT1", x.astype(np.float32), "FP32")]),
            bad_request, "INPUT1", "FP32", "INT32",
        )  # fmt: skip
        wrong = np.zeros((1, 15), dtype=np.int32)
        await expect(
            c.infer("simple", [inp("INPUT0", x), inp("INPUT1", wrong)]),
            bad_request, "INPUT1", "[-1, 16]", "[1, 15]",
        )  # fmt: skip
        await expect(c.infer("simple", [inp("INPUT0", x)]), bad_request, "INPUT1", "missing")
        big = np.zeros((9, 16), dtype=np.int32)
        await expect(
            c.infer("simple", [inp("INPUT0", big), inp("INPUT1", big)]), bad_request, "<= 8"
        )
        await expect(
            c.infer("simple", ok, outputs=[_output(mod, "OUTPUT7")]), bad_request, "OUTPUT7"
        )
        await expect(c.get_model_metadata("nope"), not_found, "nope")
        assert await c.is_server_live()

    run_with_client(variant, server, scenario)
