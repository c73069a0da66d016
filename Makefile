# Two entry points a newcomer needs (see README "Quick start"); both create or update .venv.
#   make space  — install the core + the Space (no torch) and serve it on the bundled examples
#   make test   — install everything the tests need and run the whole suite
# (make demo = make space; make cli-demo audits the bundled examples in the terminal.)
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
# torch is installed first and pinned: 2.13.0 is a local CPU wheel on these machines, and
# the bench extra's range accepts it, so pip never resolves another (CUDA) build.
TORCH  := torch==2.13.0

.PHONY: space demo cli-demo browser test lint format bench examples clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

$(VENV)/.core: $(PY) pyproject.toml
	$(PIP) install --quiet -e .
	touch $@

$(VENV)/.space: $(PY) pyproject.toml
	$(PIP) install --quiet -e ".[space]"
	touch $@ $(VENV)/.core

$(VENV)/.dev: $(PY) pyproject.toml
	$(PIP) install --quiet $(TORCH)
	$(PIP) install --quiet -e ".[dev,bench,space]" "$(TORCH)"
	touch $@ $(VENV)/.core $(VENV)/.space

# The browser test drives Debian's chromium through Playwright (never `playwright install`).
browser:
	command -v chromium >/dev/null || (apt-get update && apt-get install -y chromium)

# Serves on 127.0.0.1:7860 (GRADIO_SERVER_PORT / GRADIO_SERVER_NAME change it); HF_ENDPOINT
# may point it at any Hub-compatible server, e.g. the local one (docs/local-hub.md).
space: $(VENV)/.space
	$(PY) space/app.py

demo: space

cli-demo: $(VENV)/.core
	@for d in examples/*/; do \
		[ -f "$$d/adapter_config.json" ] || continue; \
		echo; $(VENV)/bin/gradience audit "$$d" || exit $$?; \
	done

test: $(VENV)/.dev browser
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
