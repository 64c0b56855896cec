"""A flex DAG run in a process of its own, so a test can SIGKILL it mid-run like a dying worker.

``python -m tests.airflow.flex_worker DAG_ID STATE_ROOT ROWS PART_ROWS`` runs the DAG that
`flex_dag` builds with ``dag.test()``; the test process builds the same DAG for the retry.
"""

from __future__ import annotations

import sys
from typing import Any

import pendulum

from tests.airflow.helpers import rows_for, run_dag


def flex_dag(dag_id: str, state_root: str, rows: int, part_rows: int) -> Any:
    """One FlexOperator, one request in flight at a time, progress parts of ``part_rows`` rows."""
    from airflow.sdk import DAG

    from airflow_provider_tokentier.operators import FlexOperator

    with DAG(dag_id=dag_id, schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC")) as dag:
        FlexOperator(
            task_id="enrich",
            requests=rows_for("openai", rows),
            state_root=state_root,
            max_concurrency=1,
            flex_patience=0.2,
            on_unavailable="fail",
            progress_part_rows=part_rows,
            progress_part_seconds=600,
        )
    return dag


if __name__ == "__main__":
    dag_id, state_root, rows, part_rows = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    run_dag(flex_dag(dag_id, state_root, rows, part_rows))
