# prnet-keras: `make demo` sets everything up and runs the quickstart; `make test` runs the tests.
PY := .venv/bin/python

.PHONY: setup demo test test-fast bench clean

setup:
	@bash scripts/setup.sh

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
