#!/usr/bin/env bash
# Real NVIDIA Triton for the tests and benchmarks: tritonserver 2.51 from the nvidia-pytriton==0.7.0
# wheel (binary, python backend, stubs) in tools/triton-venv, with onnxruntime for python-backend
# models. The stub links Debian's /usr/lib libpython3.11, so the venv is made with /usr/bin/python3.11.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p tools
if [ ! -x /usr/bin/python3.11 ]; then
  echo "setup_triton.sh: /usr/bin/python3.11 (Debian's python3.11) is required" >&2
  exit 1
fi
if [ ! -x tools/triton-venv/bin/python ]; then
  /usr/bin/python3.11 -m venv tools/triton-venv
fi
tools/triton-venv/bin/pip install -q --upgrade pip
tools/triton-venv/bin/pip install -q "nvidia-pytriton==0.7.0" onnxruntime numpy
T=$(tools/triton-venv/bin/python -c 'import pytriton, os; print(os.path.join(os.path.dirname(pytriton.__file__), "tritonserver"))')
cp "$T/python_backend_stubs/3.11/triton_python_backend_stub" "$T/backends/python/"
touch tools/triton-venv/.ready
echo "tritonserver: $T/bin/tritonserver"
