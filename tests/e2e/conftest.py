"""Fixtures for the end-to-end suite: one real Airflow stack and one emulator process per session.

The stack (api-server, scheduler with the LocalExecutor at ``parallelism=1``, dag-processor,
triggerer) runs in its own temporary AIRFLOW_HOME with SQLite, loads ``tests/e2e/dags`` and
``dags_examples/`` (with small sizes and short polls, `EXAMPLES_ENV`) and reaches the emulator
through ``AIRFLOW_CONN_*`` variables. Scenarios share it and use their own
dag_ids; each starts with an emptied emulator on a fast clock. When a test fails, the tail of
every component's log is printed with it. Teardown ends every process of the stack, including
task processes, and fails the session if any is left.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from airflow_provider_tokentier.testing import Emulator
from tests.e2e.harness import FAST_CLOCK, AirflowStack, emulator_connections, fresh_emulator, running_stack

DAGS = Path(__file__).parent / "dags"
EXAMPLES = Path(__file__).resolve().parents[2] / "dags_examples"

#: The example DAGs' settings for the stack: the small sizes tests/airflow/test_examples.py uses
#: under dag.test(), and a short poll. Each example module reads these at parse time.
EXAMPLES_ENV: dict[str, str] = {
    "TOKENTIER_POLL_INTERVAL": "0.5",
    "TOKENTIER_DEMO_DOCS": "10",
    "TOKENTIER_EVAL_CASES": "12",
    "TOKENTIER_BACKFILL_DOCS": "25",
    "TOKENTIER_PASSAGES_PER_DOC": "2",
    "TOKENTIER_MAX_REQUESTS_PER_BATCH": "10",
    "TOKENTIER_MAX_EMBEDDING_INPUTS_PER_BATCH": "0",
    "TOKENTIER_TICKETS": "20",
    "TOKENTIER_FLEX_PATIENCE": "0.5",
    "TOKENTIER_REPLY_REQUESTS": "3",
    "TOKENTIER_INCIDENT_REQUESTS": "6",
    "TOKENTIER_CATALOG_REQUESTS": "20",
    "TOKENTIER_MIN_BATCH_SAVINGS": "0",
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/e2e/" in str(item.path).replace("\\", "/"):
            item.add_marker(pytest.mark.e2e)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "e2e: runs the real Airflow stack (deselect with -m 'not e2e')")


@pytest.fixture(scope="session")
def e2e_emulator() -> Iterator[Emulator]:
    """The emulator as a child process, beside the stack (Airflow's processes reach it over HTTP)."""
    with Emulator(in_process=False, seed=11, **FAST_CLOCK) as emulator:
        yield emulator


@pytest.fixture(scope="session")
def stack(e2e_emulator: Emulator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AirflowStack]:
    home = tmp_path_factory.mktemp("airflow-e2e")
    env = {
        **emulator_connections(e2e_emulator.base_url, "e2e-key"),
        "TOKENTIER_E2E_POLL": "0.5",
        **EXAMPLES_ENV,
        # The examples are scheduled DAGs: unpausing one must not add a run of its latest
        # interval (nor an hourly one mid-session) beside the run a test triggers.
        "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
        # A task's supervisor waits in select() up to this long between heartbeats, and often
        # notices its finished task process only at the end of that wait: at the default 5 s,
        # every task holds the only worker slot for seconds after it is done.
        "AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL": "1",
        # The examples set no retries. Should apache/airflow#67287 (a trigger firing seconds after
        # its deferral can fail that try) start to hit them, give the stack default retries with
        # AIRFLOW__CORE__DEFAULT_TASK_RETRIES / AIRFLOW__CORE__DEFAULT_TASK_RETRY_DELAY here
        # rather than editing the example DAGs.
    }
    airflow = AirflowStack(home, [DAGS, EXAMPLES], env=env, parallelism=1)
    with running_stack(airflow, ["e2e_deferred_wait", "e2e_side_task", "e2e_chaos_openai"], "e2e stack"):
        yield airflow


@pytest.fixture
def emulator(
    e2e_emulator: Emulator, stack: AirflowStack, request: pytest.FixtureRequest
) -> Iterator[Emulator]:
    """The session's emulator, emptied and on the fast clock; dumps the stack's logs on failure."""
    yield from fresh_emulator(e2e_emulator, stack, request.node)
