# prnet-keras: `make demo` sets everything up and runs the quickstart; `make test` runs the tests.
# GPU=1 (e.g. `make demo GPU=1`) installs TensorFlow with NVIDIA's CUDA libraries instead of the CPU wheel.
PY := .venv/bin/python
GPU ?= 0

.PHONY: setup demo test test-fast bench clean

setup:
	@GPU=$(GPU) bash scripts/setup.sh

demo: setup
	@$(PY) -m prnet_keras.cli.demo --out quickstart

test: setup
	@$(PY) -m pytest -q tests

test-fast: setup
	@$(PY) -m pytest -q -m "not slow" tests

bench: setup
	@for b in bench/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf quickstart .pytest_cache
