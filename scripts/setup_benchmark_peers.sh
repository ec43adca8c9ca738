#!/usr/bin/env bash
# Install the servers the benchmarks compare against, each in its own venv under tools/:
#
# - tools/triton-venv: NVIDIA Triton 2.51 from the nvidia-pytriton==0.7.0 wheel (its tritonserver
#   binary, python backend and stubs) plus onnxruntime for the python-backend model. The stub links
#   Debian's /usr/lib libpython3.11, so the venv must be made with /usr/bin/python3.11.
# - tools/mlserver-venv: Seldon MLServer with onnxruntime for a custom runtime.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p tools

bash scripts/setup_triton.sh

if [ ! -x tools/mlserver-venv/bin/python ]; then
  python3.11 -m venv tools/mlserver-venv
fi
tools/mlserver-venv/bin/pip install -q --upgrade pip
tools/mlserver-venv/bin/pip install -q mlserver onnxruntime numpy
echo "mlserver: tools/mlserver-venv/bin/mlserver"
