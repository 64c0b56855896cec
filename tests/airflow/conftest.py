"""Fixtures for the Airflow-level tests: the emulator as Airflow connections, and a DAG builder.

Every test builds its own small DAG (unique ``dag_id``) with our operators and runs it with
``dag.test()`` -- real Airflow, in-process, the trigger run inline -- against the emulator on a
fast virtual clock. State lives under the test's ``tmp_path`` so nothing leaks between tests.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pendulum
import pytest

from airflow_provider_tokentier.testing import Emulator
from tests.airflow.helpers import FAST, POLL, set_connections


@pytest.fixture
def emulator(tokentier_emulator: Emulator, monkeypatch: pytest.MonkeyPatch, airflow_db: Path) -> Emulator:
    """The emulator on a fast clock, reachable as ``anthropic_default`` / ``openai_default``."""
    tokentier_emulator.configure(**FAST)
    set_connections(monkeypatch, tokentier_emulator, "k")
    return tokentier_emulator


@pytest.fixture
def dag_id(request: pytest.FixtureRequest) -> str:
    """A dag_id unique to the test (and its parameters)."""
    return "tt_" + re.sub(r"[^A-Za-z0-9_]", "_", request.node.name)[:200]


@pytest.fixture
def state_root(tmp_path: Path) -> str:
    return str(tmp_path / "state")


@pytest.fixture
def make_dag(dag_id: str, state_root: str) -> Callable[..., Any]:
    """Build a ``submit -> ready`` DAG with test-friendly defaults.

    ``make_dag(provider, requests, submit_kwargs={...}, sensor_kwargs={...})``; ``sensor=False``
    builds a submit-only DAG, ``default_args`` sets retries.
    """
    from airflow.sdk import DAG

    from airflow_provider_tokentier.operators import BatchSubmitOperator
    from airflow_provider_tokentier.sensors import BatchSensor

    def build(
        provider: str,
        requests: Any = None,
        *,
        submit_kwargs: dict[str, Any] | None = None,
        sensor_kwargs: dict[str, Any] | None = None,
        sensor: bool = True,
        default_args: dict[str, Any] | None = None,
    ) -> Any:
        with DAG(
            dag_id=dag_id,
            schedule=None,
            start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
            catchup=False,
            default_args=default_args or {"retries": 0},
        ) as dag:
            submit = BatchSubmitOperator(
                task_id="submit",
                provider=provider,
                state_root=state_root,
                **({"requests": requests} if requests is not None else {}),
                **(submit_kwargs or {}),
            )
            if sensor:
                BatchSensor(
                    task_id="ready",
                    submission=submit.output,
                    state_root=state_root,
                    **{"poll_interval": POLL, **(sensor_kwargs or {})},
                )
        return dag

    return build
