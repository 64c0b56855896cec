"""A deferred wait never outlives its timeout: Airflow gets it with the deferral, and the trigger
ends itself at it with an event that fails the task naming the batches."""

from __future__ import annotations

import datetime

import pendulum
import pytest

from airflow_provider_tokentier.sensors import BatchSensor
from tests.airflow.helpers import rows_for, run_dag, task_output


@pytest.fixture
def deferral_timeouts(monkeypatch):
    """The ``timeout`` every BatchSensor/TieredInferenceOperator deferral hands Airflow (recorded)."""
    from airflow.sdk import BaseOperator

    seen: list[datetime.timedelta | None] = []
    original = BaseOperator.defer

    def defer(self, **kwargs):
        seen.append(kwargs.get("timeout"))
        return original(self, **kwargs)

    monkeypatch.setattr(BaseOperator, "defer", defer)
    return seen


def test_sensor_timeout_goes_into_the_deferral_and_ends_the_wait(
    emulator, make_dag, deferral_timeouts, capfd, caplog
):
    emulator.configure(time_scale=1.0)  # batches take an hour: they never end during the test
    dag = make_dag("anthropic", rows_for("anthropic", 3), sensor_kwargs={"timeout": 2})
    run = run_dag(dag)
    output = task_output(capfd, caplog)
    assert run.states == {"submit": "success", "ready": "failed"}, run.states
    assert "BatchWaitTimeoutError" in output
    batch_id = run.xcoms["submit"]["batches"][0]["id"]
    assert any(
        "timed out waiting for anthropic batches" in line and batch_id in line for line in output.splitlines()
    )
    assert deferral_timeouts, "the sensor deferred"
    first = deferral_timeouts[0]
    assert first is not None
    assert datetime.timedelta(seconds=2) < first <= datetime.timedelta(seconds=2 + 60)


def test_the_wait_timeout_of_a_try_is_kept_across_deferrals(emulator, make_dag, deferral_timeouts):
    # Expiries force a second round, so the sensor defers twice: the second deferral hands
    # Airflow what is left of the same timeout, not a fresh one.
    emulator.configure(time_scale=86400.0, expire_rate=0.2, seed=3)
    dag = make_dag("anthropic", rows_for("anthropic", 10), sensor_kwargs={"timeout": 300})
    run = run_dag(dag)
    assert run.states == {"submit": "success", "ready": "success"}, run.states
    assert run.xcoms["ready"]["rounds"] >= 2
    assert len(deferral_timeouts) >= 2
    assert all(t is not None for t in deferral_timeouts)
    assert list(deferral_timeouts) == sorted(deferral_timeouts, reverse=True)
    assert deferral_timeouts[-1] < deferral_timeouts[0]


def test_tiered_operator_wait_timeout_ends_a_batch_wait(
    emulator, dag_id, state_root, deferral_timeouts, capfd, caplog
):
    from airflow.sdk import DAG

    from airflow_provider_tokentier.operators import TieredInferenceOperator

    emulator.configure(time_scale=1.0)
    with DAG(dag_id=dag_id, schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC")) as dag:
        TieredInferenceOperator(
            task_id="infer",
            provider="anthropic",
            requests=rows_for("anthropic", 3),
            tier="batch",
            state_root=state_root,
            poll_interval=0.2,
            wait_timeout=datetime.timedelta(seconds=2),
        )
    run = run_dag(dag)
    output = task_output(capfd, caplog)
    assert run.states == {"infer": "failed"}, run.states
    assert "BatchWaitTimeoutError" in output
    assert deferral_timeouts
    assert deferral_timeouts[0] is not None


def test_poll_error_patience_is_checked_and_passed_on():
    with pytest.raises(ValueError, match="poll_error_patience"):
        BatchSensor(task_id="ready", submission={"batches": []}, poll_error_patience=0)
