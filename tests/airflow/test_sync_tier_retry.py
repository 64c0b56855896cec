"""Flex/standard runs are retry-safe: a retry or a clear never pays twice for a finished request."""

from __future__ import annotations

import pendulum

from airflow_provider_tokentier.core.pricing import sum_usd
from airflow_provider_tokentier.results import read_results
from tests.airflow.helpers import landed_rows, rows_for, run_dag, task_state_dir


def _flex_dag(dag_id, state_root, rows):
    from airflow.sdk import DAG

    from airflow_provider_tokentier.operators import FlexOperator

    with DAG(dag_id=dag_id, schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC")) as dag:
        FlexOperator(
            task_id="enrich",
            requests=rows,
            state_root=state_root,
            flex_patience=0.2,
            on_unavailable="fail",
        )
    return dag


def _chat_calls(emulator):
    return emulator.calls().get("POST /v1/chat/completions", 0)


def test_a_retry_runs_only_what_earlier_tries_did_not_finish(emulator, dag_id, state_root):
    rows = rows_for("openai", 12)
    # First try: flex refuses half the requests and there is no fallback, so those land
    # errored and retryable while the rest succeed on flex.
    # The task fails (fail_on_partial), after landing every row.
    emulator.configure(flex_429_rate=0.5, seed=4)
    first = run_dag(_flex_dag(dag_id, state_root, rows))
    assert first.states == {"enrich": "failed"}
    results = task_state_dir(state_root, dag_id, "enrich") / "results.jsonl"
    first_rows = list(read_results(f"file://{results}"))
    assert len(first_rows) == len(rows)
    failed = {r["custom_id"] for r in first_rows if r["status"] != "succeeded"}
    assert failed
    assert len(failed) < len(rows)
    billed = emulator.billing()["requests_billed"]

    # The clear re-runs the task: only the failed requests are sent again.
    emulator.configure(flex_429_rate=0.0)
    calls_before = _chat_calls(emulator)
    second = run_dag(_flex_dag(dag_id, state_root, rows)).xcoms["enrich"]
    assert _chat_calls(emulator) - calls_before == len(failed)
    assert emulator.billing()["requests_billed"] == billed + len(failed)
    landed = landed_rows(second)
    assert sorted(r["custom_id"] for r in landed) == sorted(r["custom_id"] for r in rows)
    assert {r["status"] for r in landed} == {"succeeded"}
    assert second["counts"]["succeeded"] == len(rows)
    # Exactly, whatever order the rows landed in: a plain float sum depends on it.
    assert sum_usd(r["cost_usd"] for r in landed) == second["cost_usd"]

    # A third run finds everything finished: no call at all, the same rows land again.
    calls_before = _chat_calls(emulator)
    third = run_dag(_flex_dag(dag_id, state_root, rows)).xcoms["enrich"]
    assert _chat_calls(emulator) == calls_before
    assert third["counts"] == second["counts"]
    assert third["cost_usd"] == second["cost_usd"]
