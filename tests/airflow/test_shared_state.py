"""No silent local state: under a multi-machine executor, a local ``state_root`` or
``results_uri`` is refused at the first tokentier task, before any paid call; object storage
(``s3://<conn_id>@bucket/prefix``) or an explicit shared-mount opt-in runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_tokentier.exceptions import LocalStateError
from airflow_provider_tokentier.runtime.settings import multi_machine_executors, refuse_local_state
from tests.airflow.helpers import landed_rows, paid_calls, rows_for, run_dag, task_output


@pytest.mark.parametrize(
    ("executor", "multi"),
    [
        ("LocalExecutor", []),
        ("SequentialExecutor", []),
        ("", []),
        ("airflow.executors.local_executor.LocalExecutor", []),
        ("CeleryExecutor", ["CeleryExecutor"]),
        ("KubernetesExecutor", ["KubernetesExecutor"]),
        ("LocalExecutor,KubernetesExecutor", ["KubernetesExecutor"]),
        (
            "LocalExecutor, edge:airflow.providers.edge3.executors.EdgeExecutor",
            ["edge:airflow.providers.edge3.executors.EdgeExecutor"],
        ),
        ("my_company.executors.GridExecutor", ["my_company.executors.GridExecutor"]),
    ],
)
def test_which_executors_run_tasks_on_other_machines(
    monkeypatch: pytest.MonkeyPatch, executor: str, multi: list[str]
) -> None:
    monkeypatch.setenv("AIRFLOW__CORE__EXECUTOR", executor)
    assert multi_machine_executors() == multi


def test_the_refusal_says_why_and_how_to_fix_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW__CORE__EXECUTOR", "CeleryExecutor")
    locations = {
        "state_root of task 'submit'": "/opt/airflow/tokentier",
        "results_uri of task 'x'": "s3://b/k",
    }
    with pytest.raises(LocalStateError) as caught:
        refuse_local_state(locations)
    message = str(caught.value)
    for part in (
        "CeleryExecutor",
        "state_root of task 'submit' is /opt/airflow/tokentier",
        "[tokentier] state_root = s3://",
        "gs://",
        "[tokentier] state_root_is_shared = True",
    ):
        assert part in message
    assert "results_uri of task 'x'" not in message
    monkeypatch.setenv("AIRFLOW__TOKENTIER__STATE_ROOT_IS_SHARED", "True")
    refuse_local_state(locations)
    monkeypatch.setenv("AIRFLOW__TOKENTIER__STATE_ROOT_IS_SHARED", "False")
    monkeypatch.setenv("AIRFLOW__CORE__EXECUTOR", "LocalExecutor")
    refuse_local_state(locations)


def _batch_dag(dag_id: str, state_root: str | None, results_uri: str | None = None) -> Any:
    import pendulum
    from airflow.sdk import DAG

    from airflow_provider_tokentier.operators import BatchSubmitOperator
    from airflow_provider_tokentier.sensors import BatchSensor

    with DAG(dag_id=dag_id, schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC")) as dag:
        submit = BatchSubmitOperator(
            task_id="submit", provider="anthropic", requests=rows_for("anthropic", 5), state_root=state_root
        )
        BatchSensor(
            task_id="ready",
            submission=submit.output,
            state_root=state_root,
            results_uri=results_uri,
            poll_interval=0.2,
        )
    return dag


def test_default_local_state_under_celery_fails_the_submit_before_any_call(
    emulator: Any,
    dag_id: str,
    monkeypatch: pytest.MonkeyPatch,
    airflow_home: Path,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("AIRFLOW__CORE__EXECUTOR", "CeleryExecutor")
    monkeypatch.delenv("AIRFLOW__TOKENTIER__STATE_ROOT", raising=False)
    result = run_dag(_batch_dag(dag_id, None))
    assert result.states["submit"] == "failed"
    assert "LocalStateError: tokentier state would stay on one machine's disk" in task_output(capfd, caplog)
    assert paid_calls(emulator.calls()) == {}
    assert emulator.billing()["requests_billed"] == 0
    assert not (airflow_home / "tokentier" / dag_id).exists()


def test_a_local_results_uri_downstream_is_refused_at_the_submit(
    emulator: Any,
    dag_id: str,
    monkeypatch: pytest.MonkeyPatch,
    s3_root: str,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("AIRFLOW__CORE__EXECUTOR", "LocalExecutor,KubernetesExecutor")
    result = run_dag(_batch_dag(dag_id, s3_root, results_uri=str(tmp_path / "results.jsonl")))
    assert result.states["submit"] == "failed"
    assert "results_uri of task 'ready' is " in task_output(capfd, caplog)
    assert paid_calls(emulator.calls()) == {}


def test_the_shared_mount_opt_in_runs_on_local_disk(
    emulator: Any, dag_id: str, monkeypatch: pytest.MonkeyPatch, state_root: str
) -> None:
    monkeypatch.setenv("AIRFLOW__CORE__EXECUTOR", "CeleryExecutor")
    monkeypatch.setenv("AIRFLOW__TOKENTIER__STATE_ROOT_IS_SHARED", "True")
    result = run_dag(_batch_dag(dag_id, state_root))
    assert result.states == {"submit": "success", "ready": "success"}
    assert result.xcoms["ready"]["counts"]["succeeded"] == 5


def test_state_on_s3_under_celery_runs_and_leaves_nothing_local(
    emulator: Any,
    dag_id: str,
    monkeypatch: pytest.MonkeyPatch,
    s3_root: str,
    moto_s3: Any,
    airflow_home: Path,
) -> None:
    monkeypatch.setenv("AIRFLOW__CORE__EXECUTOR", "CeleryExecutor")
    monkeypatch.setenv("AIRFLOW__TOKENTIER__STATE_ROOT", s3_root)  # the configured root, not per task
    result = run_dag(_batch_dag(dag_id, None))
    assert result.states == {"submit": "success", "ready": "success"}
    manifest = result.xcoms["ready"]
    assert manifest["results_uri"].startswith(s3_root)
    assert sorted(r["custom_id"] for r in landed_rows(manifest)) == [f"a-{i:04d}" for i in range(5)]
    bucket = s3_root.split("@", 1)[1].split("/", 1)[0]
    assert any(key.endswith("results.jsonl") for key in moto_s3.keys(bucket))
    assert not (airflow_home / "tokentier" / dag_id).exists()


def _show_values_flag() -> list[str]:
    """Airflow 3.3 hides config values unless asked; 3.1 always shows them and has no such flag."""
    from airflow.cli import cli_config

    return ["--show-values"] if hasattr(cli_config, "ARG_CONFIG_SHOW_VALUES") else []


def test_airflow_config_list_shows_every_tokentier_option(airflow_home: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW__TOKENTIER__")}
    listed = subprocess.run(
        [
            sys.executable,
            "-m",
            "airflow",
            "config",
            "list",
            "--section",
            "tokentier",
            *_show_values_flag(),
            "--include-descriptions",
            "--include-examples",
        ],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    ).stdout
    for line in (
        "# state_root = ",
        "state_root_is_shared = False",
        "progress_part_rows = 1000",
        "progress_part_seconds = 60.0",
        "# anthropic_console_url = ",
        "# openai_console_url = ",
        "# prices = ",
        "# Example: state_root = s3://aws_default@my-bucket/tokentier",
    ):
        assert line in listed
    assert "a local root is refused before anything is paid" in listed
    assert "a worker killed mid-run loses at most one part" in listed
