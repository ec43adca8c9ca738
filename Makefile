# SONIC in Python. `make demo` and `make test` each set up everything on a fresh clone.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.stamp-install
MODELS := examples/model_repository/mlp/1/model.onnx examples/model_repository/facile/1/model.onnx

.PHONY: setup setup-core models demo test lint clean

TRITON := tools/triton-venv/.ready

# The demo needs the package and the models; the tests also need perf_analyzer and real Triton.
setup-core: $(STAMP) $(MODELS)

DEPLOY_TOOLS := /usr/sbin/haproxy /usr/bin/prometheus /usr/sbin/nft

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

$(MODELS) &: $(STAMP) src/sonic/repository/examples.py src/sonic/repository/cms_models.py
	$(VENV)/bin/sonic repo examples examples/model_repository

models: $(MODELS)

demo: setup-core
	$(VENV)/bin/sonic demo --model-repository examples/model_repository

test: setup
	$(VENV)/bin/ruff check src tests $(wildcard benchmarks)
	$(PY) -m pytest -q tests

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests $(wildcard benchmarks)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
