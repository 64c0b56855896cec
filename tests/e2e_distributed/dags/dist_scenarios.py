"""DAGs of the distributed end-to-end suite (tests/e2e_distributed), one dag_id per scenario.

Parsed by the dag-processor of `DistributedStack` and run by its Celery workers. They use the
provider's public API only (``airflow_provider_tokentier.operators``, ``.sensors``,
``.results``), keep no state of their own, and name no state root: ``[tokentier] state_root``
(an S3 bucket) serves every machine. A task pinned to a machine names the worker's own queue
(``worker-a`` / ``worker-b``); the rest use the shared ``default`` queue.
"""

from __future__ import annotations

import datetime
import os
import time
from typing import Any

import pendulum
from airflow.sdk import DAG, task

from airflow_provider_tokentier.operators import BatchSubmitOperator, FlexOperator
from airflow_provider_tokentier.results import read_results
from airflow_provider_tokentier.sensors import BatchSensor

POLL = float(os.environ.get("TOKENTIER_E2E_POLL", "0.5"))
START = pendulum.datetime(2026, 1, 1, tz="UTC")
MODELS = {"anthropic": "claude-haiku-4-5", "openai": "gpt-6-luna"}
RETRY_FAST = {"retry_delay": datetime.timedelta(seconds=1)}

#: Rows of each scenario, read by the tests too.
SPREAD_ROWS = 80
FLEX_ROWS = 40
#: How long a held submit keeps its worker busy before giving up (the test kills it first).
HOLD_S = 240.0


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


def scenario_dag(dag_id: str, retries: int = 0) -> DAG:
    """A manual DAG of one scenario; ``retries`` for every task, one second apart."""
    return DAG(
        dag_id=dag_id,
        schedule=None,
        start_date=START,
        catchup=False,
        tags=["tokentier-e2e-distributed"],
        default_args={"retries": retries, **RETRY_FAST},
    )


class SubmitThenHold(BatchSubmitOperator):
    """On its first try, submits and then keeps its worker busy: the test SIGKILLs that worker
    while the batch is on the provider's side and the task has not returned."""

    def execute(self, context: Any) -> dict[str, Any]:
        manifest = super().execute(context)
        if context["ti"].try_number == 1:
            time.sleep(HOLD_S)
        return manifest


# (1) submit on worker-a, the wait on a triggerer, the resume (and re-batching) on worker-b,
# reading the results back on worker-a; with expiries and errored lines.
for _provider in ("anthropic", "openai"):
    with scenario_dag(f"dist_spread_{_provider}"):
        _submit = BatchSubmitOperator(
            task_id="submit",
            provider=_provider,
            requests=rows(_provider, SPREAD_ROWS, f"spread-{_provider}"),
            queue="worker-a",
        )
        _ready = BatchSensor(
            task_id="ready",
            submission=_submit.output,
            queue="worker-b",
            retries=3,
            poll_interval=POLL,
            rebatch="expired+retryable",
            max_rounds=12,
            fail_on_partial=False,
            deadline=None,
        )

        @task(queue="worker-a")
        def collect(manifest: dict[str, Any]) -> list[str]:
            """The custom_ids of every landed row, read where the results were not written."""
            return [row["custom_id"] for row in read_results(manifest)]

        collect(_ready.output)  # type: ignore[arg-type]  # the XComArg is the manifest at run time

# (2) the triggerer that owns the wait is SIGKILLed: the other one adopts the trigger.
with scenario_dag("dist_triggerer_dies"):
    _submit = BatchSubmitOperator(task_id="submit", provider="openai", requests=rows("openai", 4, "trig"))
    BatchSensor(task_id="ready", submission=_submit.output, retries=2, poll_interval=POLL)

# (3) a Celery worker is SIGKILLed right after the submission: the retry runs on the other one.
with scenario_dag("dist_worker_dies", retries=1):
    _submit = SubmitThenHold(task_id="submit", provider="anthropic", requests=rows("anthropic", 3, "dies"))
    BatchSensor(task_id="ready", submission=_submit.output, retries=2, poll_interval=POLL)

# (4) a flex run's worker is SIGKILLed mid-run: the retry pays only for the rows not yet saved.
with scenario_dag("dist_flex_worker_dies", retries=1):
    FlexOperator(
        task_id="enrich",
        requests=rows("openai", FLEX_ROWS, "flexdies"),
        flex_patience=0.5,
        on_unavailable="standard",
        max_concurrency=1,
    )

# (5) a small run on both workers and a triggerer, whose machines must keep no state afterwards.
with scenario_dag("dist_local_state"):
    _submit = BatchSubmitOperator(
        task_id="submit", provider="anthropic", requests=rows("anthropic", 3, "local"), queue="worker-a"
    )
    BatchSensor(task_id="ready", submission=_submit.output, retries=2, poll_interval=POLL, queue="worker-b")
    FlexOperator(task_id="enrich", requests=rows("openai", 3, "localflex"), queue="worker-b")
