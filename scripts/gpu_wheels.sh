#!/usr/bin/env bash
# Download the wheels benchmarks/gpu_check.py needs on the GPU machine, which reaches no package
# registry: the packages its image (Python 3.12, PyTorch, numpy, grpcio, protobuf, onnxruntime,
# nvidia-ml-py, uvloop, click, rich, ...) does not already hold.  They go to build/gpu-wheels
# (ignored by git; the device tool carries it), 16 MB in all.  tritonclient 2.50 because its
# generated protobuf and gRPC code accept older runtimes (protobuf's builder API, grpcio >= 1.66)
# than today's releases do (protobuf >= 6.33, grpcio >= 1.81), whatever the image holds.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
out=build/gpu-wheels
mkdir -p "$out"
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --abi cp312 --platform manylinux_2_28_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform any \
    -d "$out" \
    "tritonclient==2.50.0" \
    uvicorn starlette httptools orjson python-rapidjson sniffio pyjwt \
    "grpcio-health-checking==1.66.2"
du -sh "$out"
ls "$out"
