# Two commands for a fresh machine: `make demo` (the pipeline on a local broker) and `make test`.
# Each does its own set-up: virtualenv, install, and (through json-engine) the local Kafka broker.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin

.PHONY: demo test lint bench bench-smoke clean

# uv resolves and installs the same versions as pip, in parallel: 10 s here against pip's 112.
# Compiled at install as pip does: where PYTHONDONTWRITEBYTECODE is set (here) nothing else
# writes the .pyc files, and every process would compile its imports again (1.5 -> 3.4 s).
$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q uv
	$(BIN)/uv pip install -q --compile-bytecode --python $(BIN)/python -e '.[dev]'
	touch $@

demo: $(BIN)/.installed
	$(BIN)/json-engine demo

test: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/pytest -n 3 --dist loadfile --durations=30

bench: $(BIN)/.installed
	$(BIN)/python -m bench

bench-smoke: $(BIN)/.installed
	$(BIN)/python -m bench --smoke

clean:
	rm -rf $(VENV) output models .pytest_cache
