# Two commands do all the set-up on a fresh machine with Python 3.10+ and make:
#   make demo   - run the example nightly DAG end to end (emulator unless an API key is set)
#   make test   - lint, type-check, check the import layering and run the whole test suite
# uv comes from PATH, or is bootstrapped from PyPI into .tools/ on first use.

PYTHON ?= python3
UV := $(shell command -v uv 2>/dev/null || echo $(CURDIR)/.tools/bin/uv)
SYNC := $(UV) sync --locked

.PHONY: demo test lint typecheck unit bench stack clean

$(CURDIR)/.tools/bin/uv:
	$(PYTHON) -m venv $(CURDIR)/.tools
	$(CURDIR)/.tools/bin/pip install --quiet --disable-pip-version-check "uv==0.13.9"

demo: | $(UV)
	$(SYNC)
	$(UV) run --locked python -m dags_examples.run_demo

test: | $(UV)
	$(SYNC)
	$(UV) run --locked ruff check .
	$(UV) run --locked ruff format --check .
	$(UV) run --locked mypy
	$(UV) run --locked lint-imports
	$(UV) run --locked pytest

lint: | $(UV)
	$(UV) run --locked ruff check .
	$(UV) run --locked ruff format --check .
	$(UV) run --locked mypy
	$(UV) run --locked lint-imports

unit: | $(UV)
	$(UV) run --locked pytest tests/unit

# A third command, not set-up: the demo stack (api-server, scheduler, dag-processor, triggerer
# and the emulator) with the example DAGs, for a person to browse the Airflow UI. Ctrl-C stops it.
stack: | $(UV)
	$(SYNC)
	$(UV) run --locked python -m tests.e2e.stack $(ARGS)

bench: | $(UV)
	$(SYNC) --group bench
	$(UV) run --locked --group bench python -m bench

clean:
	rm -rf .venv .tools .pytest_cache .mypy_cache .ruff_cache out
