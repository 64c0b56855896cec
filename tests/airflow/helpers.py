"""Helpers for the Airflow-level tests: request rows, DAG runs, XCom and emulator look-ups."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pendulum
import pytest

from airflow_provider_tokentier.testing import Emulator

ANTHROPIC_MODEL = "claude-haiku-4-5"
OPENAI_MODEL = "gpt-6-luna"
CHAT = "/v1/chat/completions"
# Fast clock: a batch takes 0.5x-1.5x of an hour of virtual time, i.e. 0.25-0.75 s real.
FAST = {"time_scale": 7200.0, "batch_turnaround_s": 3600.0}
POLL = 0.2
# A fixed logical date, so a second dag.test() of the same DAG hits the same run (a "clear").
LOGICAL_DATE = pendulum.datetime(2026, 11, 1, 1, tz="UTC")

# Paid or mutating provider calls, as the emulator's /_emulator/calls names them.
PAID_CALLS = ("POST /v1/messages/batches", "POST /v1/batches", "POST /v1/files")


def anthropic_rows(n: int, *, prefix: str = "a", max_tokens: int = 64) -> list[dict[str, Any]]:
    return [
        {
            "custom_id": f"{prefix}-{i:04d}",
            "params": {
                "model": ANTHROPIC_MODEL,
                "max_tokens": max_tokens,
                "messages": [{"role": "user", "content": f"Summarize doc {i}: owners, risks, next steps."}],
            },
        }
        for i in range(n)
    ]


def openai_rows(n: int, *, prefix: str = "o") -> list[dict[str, Any]]:
    return [
        {
            "custom_id": f"{prefix}-{i:04d}",
            "method": "POST",
            "url": CHAT,
            "body": {
                "model": OPENAI_MODEL,
                "messages": [{"role": "user", "content": f"Judge answer {i} for accuracy."}],
            },
        }
        for i in range(n)
    ]


def rows_for(provider: str, n: int, **kwargs: Any) -> list[dict[str, Any]]:
    return anthropic_rows(n, **kwargs) if provider == "anthropic" else openai_rows(n, **kwargs)


def paid_calls(calls: dict[str, int]) -> dict[str, int]:
    """The POSTs that create files or batches (what could cost money)."""
    return {k: v for k, v in calls.items() if k in PAID_CALLS and v}


def provider_batches(emulator: Emulator, provider: str) -> list[dict[str, Any]]:
    return emulator.batches().get(provider, [])


def set_connections(monkeypatch: pytest.MonkeyPatch, emulator: Emulator, key: str) -> None:
    """``anthropic_default`` / ``openai_default`` as env-var connections to the emulator."""
    for name, conn_type in (
        ("ANTHROPIC_DEFAULT", "tokentier_anthropic"),
        ("OPENAI_DEFAULT", "tokentier_openai"),
    ):
        conn = {"conn_type": conn_type, "host": emulator.base_url, "password": key}
        monkeypatch.setenv(f"AIRFLOW_CONN_{name}", json.dumps(conn))


@dataclass
class RunResult:
    """What a dag.test() run left behind: task states and return-value XComs."""

    dag_run: Any
    states: dict[str, str]
    xcoms: dict[str, Any] = field(default_factory=dict)

    @property
    def state(self) -> str:
        return str(self.dag_run.state)


def xcom_value(dag_id: str, run_id: str, task_id: str) -> Any:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        row = (
            session.query(XComModel)
            .filter_by(dag_id=dag_id, run_id=run_id, task_id=task_id, key="return_value")
            .one_or_none()
        )
        return None if row is None else XComModel.deserialize_value(row)


def all_xcom_values(dag_id: str) -> list[Any]:
    """Every XCom value stored for ``dag_id``, deserialized."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        return [XComModel.deserialize_value(r) for r in session.query(XComModel).filter_by(dag_id=dag_id)]


def serialize_dag(dag: Any) -> None:
    """Write ``dag`` to the metadata DB as the dag-processor would (dag.test() needs it there)."""
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.collection import update_dag_parsing_results_in_db
    from airflow.serialization.serialized_objects import LazyDeserializedDAG
    from airflow.utils.session import create_session

    with create_session() as session:
        DagBundlesManager().sync_bundles_to_db(session=session)
        session.flush()
        update_dag_parsing_results_in_db(
            "dags-folder", None, [LazyDeserializedDAG.from_dag(dag)], {}, None, set(), session=session
        )


def run_dag(dag: Any) -> RunResult:
    """``dag.test()`` at a fixed logical date: running it again clears and re-runs the same run."""
    serialize_dag(dag)
    dag_run = dag.test(logical_date=LOGICAL_DATE, run_after=LOGICAL_DATE)
    tis = dag_run.get_task_instances()
    states = {ti.task_id: str(ti.state) for ti in tis}
    xcoms = {ti.task_id: xcom_value(dag.dag_id, dag_run.run_id, ti.task_id) for ti in tis}
    return RunResult(dag_run, states, xcoms)


def landed_rows(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    from airflow_provider_tokentier.results import read_results

    return list(read_results(manifest))


def task_state_dir(state_root: str, dag_id: str, task_id: str) -> Path:
    """The one state dir of ``task_id`` under ``state_root`` for ``dag_id``."""
    matches = [p for p in Path(state_root, dag_id).glob(f"*/{task_id}/-1") if p.is_dir()]
    assert len(matches) == 1, matches
    return matches[0]


def anthropic_client(emulator: Emulator, key: str = "k") -> Any:
    import anthropic

    return anthropic.Anthropic(base_url=emulator.base_url, api_key=key, max_retries=5)


def openai_client(emulator: Emulator, key: str = "k") -> Any:
    import openai

    return openai.OpenAI(base_url=emulator.openai_base_url, api_key=key, max_retries=5)


def user_id(wire_id: str) -> str:
    """The user's custom_id behind a task-scoped Anthropic wire id (see core.wire_ids)."""
    from airflow_provider_tokentier.core.wire_ids import SCOPE_LENGTH, from_wire, is_scope

    scope = wire_id[:SCOPE_LENGTH]
    found = from_wire(scope, wire_id) if is_scope(scope) else None
    return found if isinstance(found, str) else wire_id


def sdk_outcomes(emulator: Emulator, provider: str, batch_id: str) -> dict[str, str]:
    """custom_id -> outcome of an ended batch, read straight through the official SDK."""
    if provider == "anthropic":
        with anthropic_client(emulator) as client:
            return {user_id(r.custom_id): r.result.type for r in client.messages.batches.results(batch_id)}
    outcomes: dict[str, str] = {}
    with openai_client(emulator) as client:
        batch = client.batches.retrieve(batch_id)
        for file_id in (batch.output_file_id, batch.error_file_id):
            if not file_id:
                continue
            for line in client.files.content(file_id).text.splitlines():
                item = json.loads(line)
                if item.get("response") and item["response"]["status_code"] == 200:
                    outcomes[item["custom_id"]] = "succeeded"
                elif item.get("response"):
                    outcomes[item["custom_id"]] = "errored"
                else:
                    code = item["error"]["code"]
                    outcomes[item["custom_id"]] = {"batch_expired": "expired", "batch_cancelled": "canceled"}[
                        code
                    ]
    return outcomes


def batch_summaries(emulator: Emulator, provider: str, ids: list[str]) -> list[dict[str, Any]]:
    by_id = {b["id"]: b for b in provider_batches(emulator, provider)}
    return [by_id[i] for i in ids]


def task_output(capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> str:
    """Everything the in-process task runs logged so far: structlog goes to the process's stdout,
    stdlib loggers (ours among them) to the log capture, depending on Airflow's logging set-up."""
    out, err = capfd.readouterr()
    text = out + err + "\n" + caplog.text
    caplog.clear()
    return text


def slow_rebatch_rounds(monkeypatch: pytest.MonkeyPatch, emulator: Emulator, **knobs: Any) -> list[int]:
    """Before each re-batch round is submitted, reconfigure the emulator (a side channel only).

    The default makes later rounds settle cleanly and take 0.25-0.75 s real time, so the sensor
    always finds them running and defers: a test counting deferrals must not depend on how
    fast a loaded machine polls. Returns the rounds submitted.
    """
    from airflow_provider_tokentier.workflow.gate import BatchGate

    rounds: list[int] = []
    original = BatchGate.submit_round

    def submit_round(self: BatchGate, round_: int, ids: set[str], backend: Any, endpoint: str | None) -> Any:
        rounds.append(round_)
        emulator.configure(**{"expire_rate": 0.0, "error_rate": 0.0, "batch_turnaround_s": 43200.0, **knobs})
        return original(self, round_, ids, backend, endpoint)

    monkeypatch.setattr(BatchGate, "submit_round", submit_round)
    return rounds
