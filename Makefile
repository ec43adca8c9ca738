# SONIC in Python. `make demo` and `make test` each set up everything on a fresh clone.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.stamp-install
MODELS := examples/model_repository/mlp/1/model.onnx examples/model_repository/facile/1/model.onnx

.PHONY: setup setup-core models demo test lint docs clean

TRITON := tools/triton-venv/.ready

# The native gRPC transport (grpc++), built against the venv's Python; see native/grpc_transport.
NATIVE := src/sonic/server/frontends/_grpc_native.so.stamp

# The demo needs the package, the models and the native transport; the tests also need
# perf_analyzer and real Triton.
setup-core: $(STAMP) $(MODELS) $(NATIVE)

$(NATIVE): $(STAMP) scripts/build_native.sh native/grpc_transport/transport.cc native/grpc_transport/CMakeLists.txt
	VENV=$(VENV) bash scripts/build_native.sh
	touch $@

DEPLOY_TOOLS := /usr/sbin/haproxy /usr/bin/prometheus /usr/sbin/nft /usr/bin/kubectl /usr/bin/openssl

setup: setup-core $(VENV)/bin/perf_analyzer $(TRITON) $(DEPLOY_TOOLS)

$(DEPLOY_TOOLS) &: scripts/install_deploy_tools.sh
	bash scripts/install_deploy_tools.sh

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON)"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

$(TRITON): scripts/setup_triton.sh
	bash scripts/setup_triton.sh

$(VENV)/bin/perf_analyzer: scripts/install_perf_analyzer.sh $(STAMP)
	VENV=$(VENV) bash scripts/install_perf_analyzer.sh

$(MODELS) &: $(STAMP) src/sonic/zoo/examples.py src/sonic/zoo/cms_models.py
	$(VENV)/bin/sonic repo examples examples/model_repository

models: $(MODELS)

demo: setup-core
	$(VENV)/bin/sonic demo --model-repository examples/model_repository

# The whole suite runs on the native gRPC transport (the default); the gRPC suites run again
# on the python one (grpc.aio), which stays as the fallback.
GRPC_SUITES := tests/server/test_tritonclient.py tests/server/frontends/test_grpc_wire.py \
	tests/server/test_perf_analyzer.py tests/server/memory/test_shared_memory.py \
	tests/security/test_auth_tls.py tests/security/test_properties.py tests/security/test_fuzz.py \
	tests/security/test_connections.py tests/security/test_faults.py \
	tests/security/test_hardening_auth.py

test: setup
	$(VENV)/bin/ruff check src tests $(wildcard benchmarks)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet
	$(PY) -m pytest -q tests
	SONIC_GRPC_TRANSPORT=python $(PY) -m pytest -q $(GRPC_SUITES)

# The documentation site (MkDocs Material, API reference from the docstrings) in build/site.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests $(wildcard benchmarks)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
