#!/usr/bin/env bash
# Install NVIDIA perf_analyzer into the project venv.
#
# perf_analyzer is not usable from PyPI on its own; the tritonclient 2.41.0
# manylinux wheel carries the binary (bin/perf_analyzer). It links Debian's
# libb64 and libcudart.so.12 (even for CPU-only runs), which come from
# libb64-0d and the PyPI package nvidia-cuda-runtime-cu12. A wrapper script in
# .venv/bin puts that library directory on LD_LIBRARY_PATH.
set -euo pipefail
VENV=${VENV:-.venv}
PY="$VENV/bin/python"
LIBEXEC="$VENV/libexec"
BIN="$LIBEXEC/perf_analyzer"

if ! ldconfig -p 2>/dev/null | grep -q 'libb64.so.0d'; then
  if [ "$(id -u)" = 0 ]; then
    (apt-get install -y -qq libb64-0d >/dev/null 2>&1) || (apt-get update -qq && apt-get install -y -qq libb64-0d >/dev/null)
  else
    sudo apt-get install -y -qq libb64-0d >/dev/null
  fi
fi

"$PY" -m pip install -q "nvidia-cuda-runtime-cu12"

if [ ! -x "$BIN" ]; then
  tmp=$(mktemp -d)
  "$PY" -m pip download -q --no-deps --only-binary=:all: --platform manylinux1_x86_64 \
      "tritonclient==2.41.0" -d "$tmp"
  mkdir -p "$LIBEXEC"
  "$PY" - "$tmp" "$BIN" <<'PYEOF'
import sys, zipfile, pathlib
tmp, dest = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
wheel = next(tmp.glob("tritonclient-2.41.0-*.whl"))
with zipfile.ZipFile(wheel) as z:
    dest.write_bytes(z.read("tritonclient-2.41.0.data/data/bin/perf_analyzer"))
dest.chmod(0o755)
PYEOF
  rm -rf "$tmp"
fi

cudart=$("$PY" -c 'import nvidia.cuda_runtime, os; print(os.path.join(list(nvidia.cuda_runtime.__path__)[0], "lib"))')
cat > "$VENV/bin/perf_analyzer" <<WRAP
#!/usr/bin/env bash
export LD_LIBRARY_PATH="$cudart\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
exec "$(cd "$LIBEXEC" && pwd)/perf_analyzer" "\$@"
WRAP
chmod +x "$VENV/bin/perf_analyzer"
"$VENV/bin/perf_analyzer" --version >/dev/null 2>&1 || "$VENV/bin/perf_analyzer" -h 2>&1 | head -1 >/dev/null
echo "perf_analyzer installed: $VENV/bin/perf_analyzer"
