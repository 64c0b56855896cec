"""A DAG in a bundle owned by the team ``finance``: users of other teams may not read it.

The UI tests (tests/e2e/test_ui.py) check that such a user gets 403 on its task instances in
the tokentier plugin and does not see them in the workloads list.
"""

from __future__ import annotations

import datetime

import pendulum
from airflow.sdk import DAG

from airflow_provider_tokentier.operators import BatchSubmitOperator
from airflow_provider_tokentier.sensors import BatchSensor

with DAG(
    dag_id="e2e_restricted_finance",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["tokentier-e2e"],
):
    submit = BatchSubmitOperator(
        task_id="submit",
        provider="anthropic",
        requests=[
            {
                "custom_id": f"ledger-{i}",
                "params": {
                    "model": "claude-haiku-4-5",
                    "max_tokens": 32,
                    "messages": [{"role": "user", "content": f"Classify ledger line {i}."}],
                },
            }
            for i in range(3)
        ],
    )
    BatchSensor(
        task_id="ready",
        submission=submit.output,
        poll_interval=0.5,
        deadline=datetime.timedelta(hours=8),
        retries=2,
    )
