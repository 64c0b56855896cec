"""A retry never adopts another task's batch, and no row lands whose request this task did not send.

The scenario of issue 8: the submit call fails before it leaves the machine (connection refused),
another task creates a batch of the same size in the window, and the retry runs. Real SDKs,
real HTTP, real Airflow (``dag.test()``); the connection refusal is a real closed port.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_tokentier.testing import Emulator
from tests.airflow.helpers import (
    anthropic_client,
    landed_rows,
    openai_client,
    paid_calls,
    provider_batches,
    rows_for,
    run_dag,
    task_output,
    task_state_dir,
)

PROVIDERS = ["anthropic", "openai"]
CONN_ENV = {"anthropic": "AIRFLOW_CONN_ANTHROPIC_DEFAULT", "openai": "AIRFLOW_CONN_OPENAI_DEFAULT"}
CONN_TYPE = {"anthropic": "tokentier_anthropic", "openai": "tokentier_openai"}


def closed_port_url() -> str:
    """A loopback URL nothing listens on: connecting to it is refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def point_connection(monkeypatch: pytest.MonkeyPatch, provider: str, host: str) -> None:
    conn = {"conn_type": CONN_TYPE[provider], "host": host, "password": "k"}
    monkeypatch.setenv(CONN_ENV[provider], json.dumps(conn))


def intents(state_root: str, dag_id: str) -> list[str]:
    ledger = task_state_dir(state_root, dag_id, "submit") / "ledger"
    return sorted(p.name for p in Path(ledger).glob("intent-*.json"))


def foreign_batch(emulator: Emulator, provider: str, rows: list[dict[str, Any]]) -> str:
    """Another task's batch: same size and same custom_ids, other prompts, created through the SDK."""
    if provider == "anthropic":
        requests = [
            {"custom_id": r["custom_id"], "params": {**r["params"], "system": "another task's prompt"}}
            for r in rows
        ]
        with anthropic_client(emulator) as client:
            return str(client.messages.batches.create(requests=requests).id)
    lines = "".join(
        json.dumps({**r, "body": {**r["body"], "user": "another-task"}}) + "\n" for r in rows
    ).encode()
    with openai_client(emulator) as client:
        uploaded = client.files.create(file=("other.jsonl", lines, "application/jsonl"), purpose="batch")
        batch = client.batches.create(
            input_file_id=uploaded.id,
            endpoint="/v1/chat/completions",
            completion_window="24h",
            metadata={"tokentier_task": "someone-else"},
        )
        return batch.id


@pytest.mark.parametrize("provider", PROVIDERS)
def test_connection_refused_then_a_foreign_batch_is_never_adopted(
    emulator, make_dag, monkeypatch, provider, state_root, dag_id, capfd, caplog
):
    rows = rows_for(provider, 6)
    point_connection(monkeypatch, provider, closed_port_url())
    first = run_dag(make_dag(provider, rows))
    output = task_output(capfd, caplog)
    assert first.states["submit"] == "failed", first.states
    assert "created no batch" in output
    assert intents(state_root, dag_id) == [], "a call that never left must not leave an intent"
    assert paid_calls(emulator.calls()) == {}

    foreign = foreign_batch(emulator, provider, rows)
    point_connection(monkeypatch, provider, emulator.base_url)
    second = run_dag(make_dag(provider, rows))
    output = task_output(capfd, caplog)

    assert second.states == {"submit": "success", "ready": "success"}, second.states
    assert "adopting it" not in output
    ours = [b["id"] for b in second.xcoms["submit"]["batches"]]
    assert foreign not in ours
    assert {b["id"] for b in provider_batches(emulator, provider)} == {foreign, *ours}
    landed = landed_rows(second.xcoms["ready"])
    assert sorted(r["custom_id"] for r in landed) == sorted(r["custom_id"] for r in rows)
    assert {r["status"] for r in landed} == {"succeeded"}
    assert {r["batch_id"] for r in landed} == set(ours)


def test_a_foreign_batch_adopted_by_time_and_size_is_disowned_at_harvest(
    emulator, make_dag, state_root, dag_id, capfd, caplog
):
    # A 500 proves nothing (the provider may have created the batch), so the intent stays and
    # the retry searches by creation time and size -- which finds another task's batch. Its
    # results carry no custom_id this task sent: the batch is disowned, none of its rows land,
    # and this task's requests go out again in the next round.
    rows = rows_for("anthropic", 6)
    emulator.configure(faults={"create_500": 3})  # every attempt of the SDK client (2 retries)
    first = run_dag(make_dag("anthropic", rows))
    task_output(capfd, caplog)
    assert first.states["submit"] == "failed", first.states
    assert intents(state_root, dag_id) == ["intent-r00-c00000.json"]
    assert provider_batches(emulator, "anthropic") == []

    foreign = foreign_batch(emulator, "anthropic", rows)
    second = run_dag(make_dag("anthropic", rows))
    output = task_output(capfd, caplog)

    assert second.states == {"submit": "success", "ready": "success"}, second.states
    assert [b["id"] for b in second.xcoms["submit"]["batches"]] == [foreign]  # adopted by size...
    assert "Disowning it" in output  # ...and recognised at harvest
    manifest = second.xcoms["ready"]
    assert manifest["disowned_batches"] == [foreign]
    assert manifest["dropped_results"] == {"foreign": 6, "repeated": 0}
    assert manifest["rounds"] == 2
    landed = landed_rows(manifest)
    assert sorted(r["custom_id"] for r in landed) == sorted(r["custom_id"] for r in rows)
    assert {r["status"] for r in landed} == {"succeeded"}
    assert foreign not in {r["batch_id"] for r in landed}
    for row in landed:  # the answers are to this task's prompts, not the foreign ones
        assert row["round"] == 1


@pytest.mark.parametrize("provider", PROVIDERS)
def test_changed_workload_is_accepted_when_nothing_was_ever_sent(
    emulator, make_dag, monkeypatch, provider, state_root, dag_id
):
    rows = rows_for(provider, 4)
    point_connection(monkeypatch, provider, closed_port_url())
    assert run_dag(make_dag(provider, rows)).states["submit"] == "failed"

    changed = rows_for(provider, 5, prefix="new")
    point_connection(monkeypatch, provider, emulator.base_url)
    second = run_dag(make_dag(provider, changed))
    assert second.states == {"submit": "success", "ready": "success"}, second.states
    landed = landed_rows(second.xcoms["ready"])
    assert sorted(r["custom_id"] for r in landed) == sorted(r["custom_id"] for r in changed)


def test_changed_workload_is_accepted_when_an_unresolved_intent_found_no_batch(
    emulator, make_dag, state_root, dag_id
):
    rows = rows_for("openai", 4)
    emulator.configure(faults={"create_500": 3})
    assert run_dag(make_dag("openai", rows)).states["submit"] == "failed"
    assert intents(state_root, dag_id) == ["intent-r00-c00000.json"]

    changed = rows_for("openai", 5, prefix="new")
    second = run_dag(make_dag("openai", changed))
    assert second.states == {"submit": "success", "ready": "success"}, second.states
    assert len(provider_batches(emulator, "openai")) == 1
    landed = landed_rows(second.xcoms["ready"])
    assert sorted(r["custom_id"] for r in landed) == sorted(r["custom_id"] for r in changed)
