"""DAGs for the end-to-end fault scenarios (tests/e2e/test_stack.py), one dag_id per scenario.

Parsed by a real dag-processor in the e2e stack; every DAG is manual (``schedule=None``) and
talks to the emulator through the ``anthropic_default`` / ``openai_default`` connections the
stack sets as environment variables. ``TOKENTIER_E2E_POLL`` sets the sensors' poll interval.
"""

from __future__ import annotations

import datetime
import os
import signal
from typing import Any

import pendulum
from airflow.sdk import DAG, task

from airflow_provider_tokentier.operators import BatchSubmitOperator, FlexOperator
from airflow_provider_tokentier.sensors import BatchSensor

POLL = float(os.environ.get("TOKENTIER_E2E_POLL", "0.5"))
START = pendulum.datetime(2026, 1, 1, tz="UTC")
MODELS = {"anthropic": "claude-haiku-4-5", "openai": "gpt-6-luna"}


def rows(provider: str, n: int, prefix: str) -> list[dict[str, Any]]:
    """``n`` small request rows for ``provider`` with ids ``{prefix}-0000``..."""
    if provider == "anthropic":
        return [
            {
                "custom_id": f"{prefix}-{i:04d}",
                "params": {
                    "model": MODELS[provider],
                    "max_tokens": 32,
                    "messages": [{"role": "user", "content": f"Summarize doc {i} in one line."}],
                },
            }
            for i in range(n)
        ]
    return [
        {
            "custom_id": f"{prefix}-{i:04d}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {
                "model": MODELS[provider],
                "messages": [{"role": "user", "content": f"Judge answer {i} for accuracy."}],
            },
        }
        for i in range(n)
    ]


def _die() -> None:
    """Die the way a worker does when the OOM killer or a node loss takes it: no clean-up at all."""
    os.kill(os.getpid(), signal.SIGKILL)


class SubmitThenDie(BatchSubmitOperator):
    """On its first try, submits (the ledger records the batch id), then dies before returning."""

    def execute(self, context: Any) -> dict[str, Any]:
        manifest = super().execute(context)
        if context["ti"].try_number == 1:
            _die()
        return manifest


class DieBeforeRecording(BatchSubmitOperator):
    """On its first try, dies right after the provider accepted the batch, before the ledger has
    its id: only the intent record is left, so the retry must find the orphan and adopt it."""

    def execute(self, context: Any) -> dict[str, Any]:
        if context["ti"].try_number == 1:
            from airflow_provider_tokentier.state.ledger import Ledger

            Ledger.record_submitted = lambda *args, **kwargs: _die()  # type: ignore[method-assign]
        return super().execute(context)


def batch_wait_dag(
    dag_id: str,
    provider: str,
    n: int,
    *,
    submit_cls: type[BatchSubmitOperator] = BatchSubmitOperator,
    retries: int = 0,
    sensor_retries: int = 2,
    **sensor_kwargs: Any,
) -> DAG:
    """``submit -> ready``: one batch workload and its deferrable sensor.

    The sensor gets retries of its own (it is safe to retry: every try resumes from its ledger)
    because Airflow 3.3's LocalExecutor sometimes reports the exit of the try that deferred only
    after a fast trigger has re-queued the task, and the scheduler then takes that late report
    for an external kill and fails the try ("... finished with state success, but the task
    instance's state attribute is queued"). Real batches never fire seconds after deferring;
    the accelerated ones here do.
    """
    with DAG(
        dag_id=dag_id,
        schedule=None,
        start_date=START,
        catchup=False,
        tags=["tokentier-e2e"],
        default_args={"retries": retries, "retry_delay": datetime.timedelta(seconds=1)},
    ) as dag:
        submit = submit_cls(task_id="submit", provider=provider, requests=rows(provider, n, dag_id[-12:]))
        BatchSensor(
            task_id="ready",
            submission=submit.output,
            retries=sensor_retries,
            **{"poll_interval": POLL, "deadline": datetime.timedelta(hours=8), **sensor_kwargs},
        )
    return dag


# (1) a deferred wait holds no worker slot: with parallelism=1 the side DAG still runs.
batch_wait_dag("e2e_deferred_wait", "anthropic", 4)

with DAG(dag_id="e2e_side_task", schedule=None, start_date=START, catchup=False, tags=["tokentier-e2e"]):

    @task
    def side_work() -> str:
        return "ran while the batch waited"

    side_work()

# (2) the triggerer is SIGKILLed mid-wait and restarted.
batch_wait_dag("e2e_triggerer_restart", "openai", 4)

# (3) the worker dies right after submission: after the id is recorded, and before.
batch_wait_dag("e2e_worker_dies", "anthropic", 3, submit_cls=SubmitThenDie, retries=1)
batch_wait_dag("e2e_worker_dies_unrecorded", "openai", 3, submit_cls=DieBeforeRecording, retries=1)

# (4) a finished sensor task is cleared: the results re-land from state.
batch_wait_dag("e2e_clear_finished", "anthropic", 5)

# (5) the user marks the deferred sensor failed: its batches are cancelled (trigger on_kill).
batch_wait_dag("e2e_mark_failed_openai", "openai", 4)
batch_wait_dag("e2e_mark_failed_anthropic", "anthropic", 4)

# (6) chaos: expiries, errored lines and poll 5xx; every custom_id lands exactly once.
for _provider in ("anthropic", "openai"):
    batch_wait_dag(
        f"e2e_chaos_{_provider}",
        _provider,
        120,
        # The sensor's own status and results calls meet the 5xx too; when the SDK's retries
        # run out the try fails and the next one resumes from the ledger.
        sensor_retries=3,
        rebatch="expired+retryable",
        max_rounds=12,
        fail_on_partial=False,
        deadline=None,
    )

# ... and flex 429s: half the flex calls are refused; refused requests back off briefly and
# fall back to standard.
with DAG(dag_id="e2e_chaos_flex", schedule=None, start_date=START, catchup=False, tags=["tokentier-e2e"]):
    FlexOperator(
        task_id="enrich",
        requests=rows("openai", 60, "chaos_flex"),
        flex_patience=0.5,
        on_unavailable="standard",
        retries=2,
    )
