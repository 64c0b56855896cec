"""Flex and standard runs go red when requests fail (``fail_on_partial``, default True), after the
rows landed: a wrong key or an unreachable host never finishes green."""

from __future__ import annotations

import json
import socket

import pendulum
import pytest

from airflow_provider_tokentier.results import read_results
from tests.airflow.helpers import rows_for, run_dag, task_output, task_state_dir


def _closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _sync_dag(dag_id, state_root, operator, rows, **kwargs):
    from airflow.sdk import DAG

    from airflow_provider_tokentier.operators import FlexOperator, StandardOperator

    with DAG(dag_id=dag_id, schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC")) as dag:
        if operator == "flex":
            FlexOperator(task_id="run", requests=rows, state_root=state_root, **kwargs)
        else:
            StandardOperator(task_id="run", requests=rows, state_root=state_root, **kwargs)
    return dag


CASES = {
    "flex": ("flex", "openai"),
    "standard-anthropic": ("standard", "anthropic"),
    "standard-openai": ("standard", "openai"),
}


def _kwargs(operator, provider, **extra):
    return {**({"provider": provider} if operator == "standard" else {}), **extra}


@pytest.mark.parametrize("case", list(CASES))
def test_wrong_key_fails_the_task_after_landing_every_row(emulator, dag_id, state_root, capfd, caplog, case):
    operator, provider = CASES[case]
    emulator.configure(api_key="the-right-key")  # the connections carry "k"
    rows = rows_for(provider, 4)
    run = run_dag(_sync_dag(dag_id, state_root, operator, rows, **_kwargs(operator, provider)))
    output = task_output(capfd, caplog)
    assert run.states == {"run": "failed"}, run.states
    assert "PartialResultsError" in output
    assert "none of the 4 requests succeeded" in output, output[-3000:]
    first_error = next(line for line in output.splitlines() if "first error: " in line)
    assert "key" in first_error.lower(), first_error  # the user sees why, without opening the rows
    landed = list(read_results(f"file://{task_state_dir(state_root, dag_id, 'run') / 'results.jsonl'}"))
    assert sorted(r["custom_id"] for r in landed) == sorted(r["custom_id"] for r in rows)
    assert {r["status"] for r in landed} == {"errored"}
    assert emulator.billing()["usd"] == 0


@pytest.mark.parametrize("case", ["flex", "standard-anthropic"])
def test_closed_port_fails_the_task(emulator, dag_id, state_root, monkeypatch, capfd, caplog, case):
    operator, provider = CASES[case]
    dead = f"http://127.0.0.1:{_closed_port()}"
    for name, conn_type in (
        ("ANTHROPIC_DEFAULT", "tokentier_anthropic"),
        ("OPENAI_DEFAULT", "tokentier_openai"),
    ):
        monkeypatch.setenv(
            f"AIRFLOW_CONN_{name}", json.dumps({"conn_type": conn_type, "host": dead, "password": "k"})
        )
    rows = rows_for(provider, 3)
    run = run_dag(
        _sync_dag(dag_id, state_root, operator, rows, **_kwargs(operator, provider, max_attempts=2))
    )
    output = task_output(capfd, caplog)
    assert run.states == {"run": "failed"}, run.states
    assert "none of the 3 requests succeeded" in output, output[-3000:]
    landed = list(read_results(f"file://{task_state_dir(state_root, dag_id, 'run') / 'results.jsonl'}"))
    assert len(landed) == 3
    assert {r["status"] for r in landed} == {"errored"}


def test_fail_on_partial_false_accepts_failures_and_reports_them(emulator, dag_id, state_root):
    emulator.configure(api_key="the-right-key")
    rows = rows_for("anthropic", 3)
    dag = _sync_dag(dag_id, state_root, "standard", rows, provider="anthropic", fail_on_partial=False)
    run = run_dag(dag)
    assert run.states == {"run": "success"}, run.states
    assert run.xcoms["run"]["counts"]["errored"] == 3


def test_some_failed_names_how_many(emulator, dag_id, state_root, capfd, caplog):
    emulator.configure(flex_429_rate=0.5, seed=4)
    rows = rows_for("openai", 12)
    run = run_dag(_sync_dag(dag_id, state_root, "flex", rows, flex_patience=0.2, on_unavailable="fail"))
    output = task_output(capfd, caplog)
    assert run.states == {"run": "failed"}, run.states
    assert "of 12 requests did not succeed" in output, output[-3000:]
    assert "resource_unavailable" in output
