"""Fixtures of the distributed end-to-end suite: one `DistributedStack` and one emulator per session.

The deployment (PostgreSQL, Redis, an S3 server, the CeleryExecutor with two workers, two
triggerers, scheduler, dag-processor, api-server) loads ``tests/e2e_distributed/dags`` and
reaches the emulator through ``AIRFLOW_CONN_*`` variables. Scenarios share it; each starts with an
emptied emulator on a fast clock, and one that kills a worker or triggerer starts it again before
it ends. When a test fails, the tail of every component's log is printed with it. Teardown ends
every process, and fails the session if any is left.

Run this suite alone with ``uv run --locked pytest tests/e2e_distributed`` (or select it from the
whole tree with ``-m e2e_distributed``). It needs Debian's ``postgresql`` and ``redis-server``;
``.ci/run`` installs them when missing.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from airflow_provider_tokentier.testing import Emulator
from tests.e2e.harness import FAST_CLOCK, emulator_connections, fresh_emulator, running_stack
from tests.e2e_distributed.deployment import DistributedStack

DAGS = Path(__file__).parent / "dags"

#: Flex/standard progress is saved as one object per this many rows or seconds, whichever
#: comes first (`[tokentier] progress_part_rows` / `progress_part_seconds`).
PART_ROWS = 5
PART_SECONDS = 2.0


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/e2e_distributed/" in str(item.path).replace("\\", "/"):
            item.add_marker(pytest.mark.e2e_distributed)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "e2e_distributed: runs the Celery/PostgreSQL/Redis/S3 deployment (select with -m e2e_distributed)",
    )


@pytest.fixture(scope="session")
def dist_emulator() -> Iterator[Emulator]:
    """The emulator as a child process (the deployment's machines reach it over HTTP)."""
    with Emulator(in_process=False, seed=13, **FAST_CLOCK) as emulator:
        yield emulator


@pytest.fixture(scope="session")
def deployment(
    dist_emulator: Emulator, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DistributedStack]:
    home = tmp_path_factory.mktemp("airflow-distributed")
    env = {
        **emulator_connections(dist_emulator.base_url, "dist-key"),
        "TOKENTIER_E2E_POLL": "0.5",
        "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
        # See tests/e2e/conftest.py: a supervisor notices its finished task sooner.
        "AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL": "1",
        # Importing the SDKs can take longer than the default 30 s on a busy 2-core machine.
        "AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT": "120",
        "AIRFLOW__DAG_PROCESSOR__DAG_FILE_PROCESSOR_TIMEOUT": "180",
        "AIRFLOW__TOKENTIER__PROGRESS_PART_ROWS": str(PART_ROWS),
        "AIRFLOW__TOKENTIER__PROGRESS_PART_SECONDS": str(PART_SECONDS),
    }
    stack = DistributedStack(home, DAGS, env=env, parallelism=8)
    dag_ids = ["dist_spread_anthropic", "dist_local_state"]
    with running_stack(stack, dag_ids, "distributed stack", start_timeout=240, dags_timeout=180):
        yield stack


@pytest.fixture
def emulator(
    dist_emulator: Emulator, deployment: DistributedStack, request: pytest.FixtureRequest
) -> Iterator[Emulator]:
    """The session's emulator, emptied and on the fast clock; dumps the logs on failure."""
    yield from fresh_emulator(dist_emulator, deployment, request.node)
