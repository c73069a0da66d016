# Two entry points a newcomer needs (see README "Quick start"); both create or update .venv.
#   make demo   — install the core (no torch) and audit the bundled example adapters
#   make test   — install everything the tests need and run the whole suite
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
# torch is installed first and pinned: 2.13.0 is a local CPU wheel on these machines, and
# the bench extra's range accepts it, so pip never resolves another (CUDA) build.
TORCH  := torch==2.13.0

.PHONY: demo test lint format bench examples clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

$(VENV)/.core: $(PY) pyproject.toml
	$(PIP) install --quiet -e .
	touch $@

$(VENV)/.dev: $(PY) pyproject.toml
	$(PIP) install --quiet $(TORCH)
	$(PIP) install --quiet -e ".[dev,bench]" "$(TORCH)"
	touch $@ $(VENV)/.core

demo: $(VENV)/.core
	@for d in examples/*/; do \
		[ -f "$$d/adapter_config.json" ] || continue; \
		echo; $(VENV)/bin/gradience audit "$$d" || exit $$?; \
	done

test: $(VENV)/.dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m pytest

lint: $(VENV)/.dev
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

format: $(VENV)/.dev
	$(VENV)/bin/ruff check --fix . && $(VENV)/bin/ruff format .

bench: $(VENV)/.dev
	$(PY) benchmarks/bench_audit.py

examples: $(VENV)/.dev
	$(PY) scripts/make_examples.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
