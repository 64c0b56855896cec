# Two commands do all the set-up on a fresh machine with Python 3.10+ and make:
#   make demo   - run the example nightly DAG end to end (emulator unless an API key is set)
#   make test   - lint, type-check, check the import layering and run the whole test suite
# uv comes from PATH, or is bootstrapped from PyPI into .tools/ on first use.

PYTHON ?= python3
UV := $(shell command -v uv 2>/dev/null || echo $(CURDIR)/.tools/bin/uv)
SYNC := $(UV) sync --locked

.PHONY: demo test test-oldest lint typecheck unit bench stack clean

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
	$(MAKE) test-oldest

# The unit, integration and dag.test() suites again on the oldest Airflow pyproject.toml accepts
# (3.1), in its own locked environment (ci/oldest): the version claim is tested, not assumed.
# --frozen: the pins in ci/oldest/uv.lock are used as they are, so a change to this package's
# dev tools does not invalidate them; after changing its runtime dependencies, refresh them with
# `uv lock --project ci/oldest`.
OLDEST := $(UV) run --frozen --project ci/oldest
test-oldest: | $(UV)
	$(UV) sync --frozen --project ci/oldest
	$(OLDEST) python -c "import airflow; print('Airflow', airflow.__version__)"
	$(OLDEST) python -m pytest tests/unit tests/integration tests/airflow $(OLDEST_DESELECT)

# Deselected on 3.1 only: these need a batch still running at the sensor's first poll, ~1 s
# after submission, but Airflow 3.1's dag.test() spends 10+ s starting each task on a loaded
# machine, so the batch has ended by then (timing, not behaviour; they run on 3.3 above).
OLDEST_DESELECT := \
	--deselect tests/airflow/test_deadline_stuck.py::test_deadline_already_past_at_first_poke_cancels_and_lands_round_0_only \
	--deselect tests/airflow/test_secrets.py::test_api_key_appears_nowhere \
	--deselect tests/airflow/test_waiting.py::test_sensor_rides_out_a_short_provider_outage_when_it_resumes \
	--deselect tests/airflow/test_waiting_bounds.py::test_the_wait_timeout_of_a_try_is_kept_across_deferrals \
	--deselect tests/airflow/test_monitoring.py
# test_monitoring reads the progress record from the task_state_store table, which 3.1 lacks
# (there the record is an XCom); it runs on 3.3 above.

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
	rm -rf .venv ci/oldest/.venv .tools .pytest_cache .mypy_cache .ruff_cache out
