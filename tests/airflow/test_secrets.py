"""The API key never reaches trigger kwargs, XCom, the ledger/state files or any log line."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_tokentier.triggers.batch import BatchTrigger
from tests.airflow.helpers import (
    all_xcom_values,
    landed_rows,
    rows_for,
    run_dag,
    set_connections,
    slow_rebatch_rounds,
    task_output,
)

SECRET = "sk-tokentier-SECRET-123"
PROVIDERS = ["anthropic", "openai"]


@pytest.fixture
def secret_key(emulator, monkeypatch: pytest.MonkeyPatch) -> str:
    """The emulator accepts only SECRET, and the connections carry it as their password."""
    emulator.configure(api_key=SECRET)
    set_connections(monkeypatch, emulator, SECRET)
    return SECRET


@pytest.fixture
def serialized_triggers(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every `BatchTrigger.serialize()` output produced while deferring (recorded, not changed)."""
    seen: list[Any] = []
    original = BatchTrigger.serialize

    def serialize(self: BatchTrigger) -> tuple[str, dict[str, Any]]:
        result = original(self)
        seen.append(result)
        return result

    monkeypatch.setattr(BatchTrigger, "serialize", serialize)
    return seen


def _files_containing(root: Path, needle: bytes) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and needle in p.read_bytes()]


@pytest.mark.parametrize("provider", PROVIDERS)
def test_api_key_appears_nowhere(
    emulator, secret_key, serialized_triggers, make_dag, state_root, provider, capfd, caplog, monkeypatch
):
    # Expiries force a second round, so there are two deferrals and a re-submission. Round 1
    # expires after 4 s of real time and round 2 is slowed down, so the sensor finds each one
    # running even on a loaded machine.
    emulator.configure(time_scale=21600.0, expire_rate=0.2, seed=3)
    slow_rebatch_rounds(monkeypatch, emulator)
    rows = rows_for(provider, 10)
    dag = make_dag(provider, rows)
    run = run_dag(dag)
    output = task_output(capfd, caplog)
    assert run.states == {"submit": "success", "ready": "success"}, run.states
    manifest = run.xcoms["ready"]
    assert manifest["rounds"] >= 2, "the test needs a re-batch round"
    assert len(landed_rows(manifest)) == len(rows)

    # Trigger kwargs (stored in clear text by Airflow 3): the ones actually deferred with...
    assert len(serialized_triggers) >= 2
    for classpath, kwargs in serialized_triggers:
        assert classpath == "airflow_provider_tokentier.triggers.batch.BatchTrigger"
        assert SECRET not in json.dumps(kwargs, default=str)
        assert kwargs["conn_id"] == f"{provider}_default"
    # ... and one built by hand.
    direct = BatchTrigger(provider=provider, conn_id=f"{provider}_default", batch_ids=["b1"]).serialize()
    assert SECRET not in json.dumps(direct, default=str)

    # XCom values in the metadata DB.
    values = all_xcom_values(dag.dag_id)
    assert values
    assert SECRET not in json.dumps(values, default=str)

    # Every file of the ledger and state, results included.
    assert list(Path(state_root).rglob("*.json")), "the ledger exists"
    assert _files_containing(Path(state_root), SECRET.encode()) == []

    # Logs: what the tasks printed and logged, and any task log file Airflow wrote.
    assert "tokentier summary" in output, "the capture holds the task logs"
    assert SECRET not in output
    logs = Path(os.environ["AIRFLOW_HOME"]) / "logs"
    if logs.exists():
        assert _files_containing(logs, SECRET.encode()) == []

    # Rendered template fields and any other serialized task state in the DB.
    from airflow.models.renderedtifields import RenderedTaskInstanceFields
    from airflow.utils.session import create_session

    with create_session() as session:
        rendered = session.query(RenderedTaskInstanceFields).filter_by(dag_id=dag.dag_id).all()
        assert SECRET not in json.dumps([r.rendered_fields for r in rendered], default=str)


def test_wrong_key_is_rejected_so_the_key_is_really_in_use(emulator, make_dag, monkeypatch, capfd, caplog):
    emulator.configure(api_key=SECRET)
    set_connections(monkeypatch, emulator, "sk-some-other-key")
    run = run_dag(make_dag("anthropic", rows_for("anthropic", 2)))
    assert run.states["submit"] == "failed"
    assert "AuthenticationError" in task_output(capfd, caplog)
    assert emulator.batches()["anthropic"] == []


HOST_SECRET = "hostpass-SECRET-789"


@pytest.mark.parametrize("provider", PROVIDERS)
def test_credentials_in_the_connection_host_are_stripped_and_never_logged(
    emulator, make_dag, state_root, monkeypatch, provider, capfd, caplog
):
    host = emulator.base_url.replace("://", f"://tokuser:{HOST_SECRET}@")
    for name, conn_type in (
        ("ANTHROPIC_DEFAULT", "tokentier_anthropic"),
        ("OPENAI_DEFAULT", "tokentier_openai"),
    ):
        monkeypatch.setenv(
            f"AIRFLOW_CONN_{name}", json.dumps({"conn_type": conn_type, "host": host, "password": "k"})
        )
    run = run_dag(make_dag(provider, rows_for(provider, 3)))
    output = task_output(capfd, caplog)
    assert run.states == {"submit": "success", "ready": "success"}, run.states
    assert "the host carried credentials" in output, "the capture holds the task logs"
    assert HOST_SECRET not in output
    assert _files_containing(Path(state_root), HOST_SECRET.encode()) == []
    assert HOST_SECRET not in json.dumps(all_xcom_values(run.dag_run.dag_id), default=str)


def test_without_a_connection_the_environment_key_is_used_and_the_log_says_so(
    emulator, make_dag, monkeypatch, capfd, caplog
):
    monkeypatch.delenv("AIRFLOW_CONN_ANTHROPIC_DEFAULT")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "k")
    monkeypatch.setenv("ANTHROPIC_BASE_URL", emulator.base_url)
    run = run_dag(make_dag("anthropic", rows_for("anthropic", 2)))
    output = task_output(capfd, caplog)
    assert run.states == {"submit": "success", "ready": "success"}, run.states
    assert "connection 'anthropic_default' does not exist; using the API key in ANTHROPIC_API_KEY" in output
