"""Coverage-guided fuzzing (atheris, libFuzzer) of the server's untrusted-input entry points.

One harness, three targets chosen by the first byte of each input:

- the HTTP inference body parser (JSON header, binary tensors,
  ``Inference-Header-Content-Length`` taken from the next two bytes, so it lies as often as not);
- the gRPC ``ModelInferRequest`` decoder (bytes -> protobuf -> request; bytes that are not a
  protobuf are the gRPC library's to refuse and are skipped);
- ``config.pbtxt`` parsing and its structure check, and the JSON config of a load request.

Each may only raise :class:`sonic.errors.InvalidArgument` (a clear client error).  Anything else
is a finding: libFuzzer stops, prints the traceback and writes the input to ``crash-*``.
The corpus starts from valid examples of each target, written to a temporary directory::

    .venv/bin/python benchmarks/fuzz_protocol.py -runs=100000

Prints libFuzzer's log and writes ``benchmarks/results/fuzz_protocol.json`` (runs, seconds,
inputs per second, findings).  ``tests/security/test_fuzz.py`` runs a few thousand inputs.
"""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

import atheris

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

with atheris.instrument_imports(include=["sonic"]):
    from google.protobuf.message import DecodeError
    from tritonclient.grpc import service_pb2 as pb

    from sonic.errors import InvalidArgument
    from sonic.protocol import grpc_codec, http_codec
    from sonic.repository.config import check_structure, config_from_json, parse_config

HTTP, GRPC, CONFIG = 0, 1, 2


def one_input(data: bytes) -> None:
    if len(data) < 3:
        return
    target, rest = data[0] % 3, data[1:]
    try:
        if target == HTTP:
            length = int.from_bytes(rest[:2], "little")
            http_codec.decode_request(rest[2:], None if length == 0xFFFF else length, "m", "")
        elif target == GRPC:
            try:
                msg = pb.ModelInferRequest.FromString(rest)
            except DecodeError:
                return
            grpc_codec.decode_request(msg)
        else:
            text = rest.decode("utf-8", errors="replace")
            check_structure(parse_config(text, "m"), "m")
            config_from_json(text, "m")
    except InvalidArgument:
        pass


def seeds(directory: Path) -> None:
    body = json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 2],
                                   "parameters": {"binary_data_size": 8}},
                                  {"name": "s", "datatype": "BYTES", "shape": [1],
                                   "data": ["ab"]}],
                       "outputs": [{"name": "y", "parameters": {"binary_data": True}}]}).encode()
    header = len(body).to_bytes(2, "little")
    (directory / "http").write_bytes(bytes([HTTP]) + header + body + b"\0" * 8)
    (directory / "http-json").write_bytes(bytes([HTTP]) + b"\xff\xff" + json.dumps(
        {"inputs": [{"name": "x", "datatype": "INT32", "shape": [2], "data": [[1], [2]]}]}
    ).encode())
    req = pb.ModelInferRequest(model_name="m", raw_input_contents=[b"\0" * 8])
    req.inputs.add(name="x", datatype="FP32", shape=[1, 2])
    typed = req.inputs.add(name="s", datatype="BYTES", shape=[1])
    typed.contents.bytes_contents.append(b"ab")
    (directory / "grpc").write_bytes(bytes([GRPC]) + req.SerializeToString())
    (directory / "config").write_bytes(bytes([CONFIG]) + b'''
name: "m"
platform: "onnxruntime_onnx"
max_batch_size: 8
input [ { name: "x", data_type: TYPE_FP32, dims: [ 4 ] } ]
output [ { name: "y", data_type: TYPE_FP32, dims: [ 2 ], reshape: { shape: [ 1, 2 ] } } ]
dynamic_batching { preferred_batch_size: [ 4 ] max_queue_delay_microseconds: 100 }
instance_group [ { count: 2, kind: KIND_CPU } ]
''')


def fuzz() -> None:
    """The libFuzzer process (it exits on its own when done or on a finding)."""
    corpus = Path(tempfile.mkdtemp(prefix="sonic-fuzz-"))
    seeds(corpus)
    atheris.Setup([sys.argv[0], *sys.argv[1:], str(corpus)], one_input)
    atheris.Fuzz()


def main() -> int:
    """Run the fuzzer as a child, echo its log, and record what libFuzzer reports."""
    args = [a for a in sys.argv[1:] if a != "--no-record"]
    env = {**os.environ, "SONIC_FUZZ_CHILD": "1"}
    started = time.perf_counter()
    run = subprocess.run([sys.executable, __file__, *args], env=env, capture_output=True,
                         text=True)  # fmt: skip
    elapsed = time.perf_counter() - started
    sys.stdout.write(run.stdout)
    sys.stderr.write(run.stderr)
    done = re.search(r"Done (\d+) runs in (\d+) second", run.stderr)
    runs = int(done.group(1)) if done else 0
    rss = re.findall(r"rss: (\d+)Mb", run.stderr)
    result = {
        "runs": runs, "seconds": round(elapsed, 1),
        "inputs_per_second": round(runs / elapsed) if elapsed else 0,
        "exit_code": run.returncode, "peak_rss_mb": int(rss[-1]) if rss else None,
        "findings": 0 if run.returncode == 0 else 1,
        "targets": ["http inference body", "grpc ModelInferRequest", "config.pbtxt + JSON config"],
        "python": platform.python_version(), "atheris": version("atheris"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "command": "python benchmarks/fuzz_protocol.py " + " ".join(args),
    }  # fmt: skip
    print(json.dumps(result, indent=2))
    if "--no-record" not in sys.argv:
        out = ROOT / "benchmarks" / "results" / "fuzz_protocol.json"
        out.write_text(json.dumps(result, indent=2) + "\n")
    return run.returncode


if __name__ == "__main__":
    if os.environ.get("SONIC_FUZZ_CHILD") == "1":
        fuzz()
    else:
        raise SystemExit(main())
