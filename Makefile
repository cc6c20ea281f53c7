# The two quickstart commands (`make demo`, `make test`) each create or refresh .venv from pyproject.toml.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
OUT ?= out

.PHONY: venv test test-unit demo serve bench-stream bench-planning bench-serve clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

test: venv
	$(PY) -m pytest -q -ra tests

test-unit: venv
	$(PY) -m pytest -q tests/unit

demo: venv
	$(PY) jobs/demo.py --output $(OUT)/demo

serve: venv
	$(VENV)/bin/serve run serve/config.yaml

bench-serve: venv
	$(PY) jobs/benchmark_serve.py --images ../shared/data/cub50/images --output $(OUT)/bench-serve

bench-stream: venv
	$(PY) jobs/benchmark_stream.py --input ../shared/data/cub50 --output $(OUT)/bench

bench-planning: venv
	$(PY) jobs/benchmark_planning.py --output $(OUT)/bench-planning

clean:
	rm -rf $(OUT) .pytest_cache
