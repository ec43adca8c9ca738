#!/usr/bin/env bash
# Build the native gRPC transport (native/grpc_transport) into src/sonic/server/frontends/: Debian's grpc++
# and a compiler from apt, pybind11 from PyPI into the venv, CMake against the venv's Python.
# `sonic serve --grpc-transport python` (grpc.aio) needs none of it.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PY="$VENV/bin/python"
need=()
pkg-config --exists grpc++ 2>/dev/null || need+=(libgrpc++-dev)
command -v cmake >/dev/null || need+=(cmake)
command -v g++ >/dev/null || need+=(g++)
command -v pkg-config >/dev/null || need+=(pkg-config)
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" = 0 ] || SUDO=sudo
  export DEBIAN_FRONTEND=noninteractive
  ($SUDO apt-get install -y -qq "${need[@]}" >/dev/null) \
    || ($SUDO apt-get update -qq && $SUDO apt-get install -y -qq "${need[@]}" >/dev/null)
fi
"$PY" -m pip install -q "pybind11>=2.10"
build=build/native
cmake -S native/grpc_transport -B "$build" -DPython_EXECUTABLE="$(realpath "$PY")" \
  -Dpybind11_DIR="$("$PY" -m pybind11 --cmakedir)" >/dev/null
cmake --build "$build" -j 2 >/dev/null
cp "$build"/_grpc_native*.so src/sonic/server/frontends/
"$PY" -c "import sonic.server.frontends._grpc_native as m; print('native gRPC transport built, grpc++', m.GRPC_VERSION)"
