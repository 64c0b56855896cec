"""Retries, clears and crashes never submit a paid batch twice."""

from __future__ import annotations

import datetime
import json
from typing import Any

import pytest

from airflow_provider_tokentier.backends.anthropic import AnthropicBatchBackend
from airflow_provider_tokentier.backends.openai import OpenAIBatchBackend
from airflow_provider_tokentier.state.ledger import Ledger
from tests.airflow.helpers import (
    anthropic_client,
    landed_rows,
    paid_calls,
    provider_batches,
    rows_for,
    run_dag,
    task_output,
)

PROVIDERS = ["anthropic", "openai"]
RETRY_NOW = {"retries": 1, "retry_delay": datetime.timedelta(0)}


@pytest.fixture
def crash_after_submit(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """Make `Ledger.record_submitted` raise once, for the chunks listed in the returned list.

    That is a worker dying between the paid call and recording the batch id. Empty list: crash
    on the first chunk recorded.
    """
    targets: list[tuple[int, int]] = []
    crashed: list[tuple[int, int]] = []
    original = Ledger.record_submitted

    def record_submitted(self: Ledger, round_: int, chunk: int, record: dict[str, Any]) -> None:
        key = (round_, chunk)
        if not crashed and (not targets or key in targets):
            crashed.append(key)
            raise RuntimeError(f"simulated worker crash before recording round {round_} chunk {chunk}")
        original(self, round_, chunk, record)

    monkeypatch.setattr(Ledger, "record_submitted", record_submitted)
    return targets


@pytest.mark.parametrize("provider", PROVIDERS)
def test_clearing_the_submit_task_reattaches_without_a_second_batch(emulator, make_dag, provider):
    rows = rows_for(provider, 12)
    first = run_dag(make_dag(provider, rows, submit_kwargs={"max_requests_per_batch": 5}, sensor=False))
    assert first.states == {"submit": "success"}
    batches_after_first = provider_batches(emulator, provider)
    calls_after_first = paid_calls(emulator.calls())
    assert len(batches_after_first) == 3

    second = run_dag(make_dag(provider, rows, submit_kwargs={"max_requests_per_batch": 5}, sensor=False))
    assert second.states == {"submit": "success"}
    assert [b["id"] for b in provider_batches(emulator, provider)] == [b["id"] for b in batches_after_first]
    assert paid_calls(emulator.calls()) == calls_after_first
    assert second.xcoms["submit"] == first.xcoms["submit"]


@pytest.mark.parametrize("provider", PROVIDERS)
def test_crash_between_submit_and_record_adopts_the_orphan(
    emulator, make_dag, crash_after_submit, provider, capfd, caplog
):
    rows = rows_for(provider, 8)
    run = run_dag(make_dag(provider, rows, default_args=RETRY_NOW))
    output = task_output(capfd, caplog)
    assert "simulated worker crash" in output
    assert run.states == {"submit": "success", "ready": "success"}, run.states
    assert run.dag_run.get_task_instance("submit").try_number == 2

    in_emulator = provider_batches(emulator, provider)
    assert len(in_emulator) == 1, in_emulator
    submission = run.xcoms["submit"]
    assert [b["id"] for b in submission["batches"]] == [in_emulator[0]["id"]]
    assert "adopting it" in output
    landed = landed_rows(run.xcoms["ready"])
    assert sorted(r["custom_id"] for r in landed) == sorted(r["custom_id"] for r in rows)
    assert {r["status"] for r in landed} == {"succeeded"}


@pytest.mark.parametrize("provider", PROVIDERS)
def test_crash_on_a_later_chunk_of_equal_size_adopts_the_right_orphan(
    emulator, make_dag, crash_after_submit, provider, capfd, caplog
):
    # Two chunks of 5: the first is recorded, the worker dies before recording the second. The
    # first chunk's batch is known to the ledger and must not count as a candidate orphan.
    crash_after_submit.append((0, 1))
    rows = rows_for(provider, 10)
    run = run_dag(
        make_dag(provider, rows, submit_kwargs={"max_requests_per_batch": 5}, default_args=RETRY_NOW)
    )
    output = task_output(capfd, caplog)
    assert "simulated worker crash" in output
    assert "AmbiguousSubmissionError" not in output, [
        line for line in output.splitlines() if "AmbiguousSubmissionError" in line
    ][:1]
    assert run.states == {"submit": "success", "ready": "success"}, run.states
    in_emulator = provider_batches(emulator, provider)
    assert len(in_emulator) == 2, in_emulator
    assert [b["id"] for b in run.xcoms["submit"]["batches"]] == [b["id"] for b in in_emulator]


@pytest.mark.parametrize("provider", PROVIDERS)
def test_crash_before_the_paid_call_submits_once_on_retry(
    emulator, make_dag, monkeypatch, provider, capfd, caplog
):
    # The intent is recorded, then the worker dies before the provider saw anything.
    backend = AnthropicBatchBackend if provider == "anthropic" else OpenAIBatchBackend
    original = backend.submit
    calls: list[int] = []

    def submit(self: Any, *args: Any, **kwargs: Any) -> str:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("simulated worker crash before the paid call")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(backend, "submit", submit)
    rows = rows_for(provider, 6)
    run = run_dag(make_dag(provider, rows, default_args=RETRY_NOW))
    assert run.states == {"submit": "success", "ready": "success"}, run.states
    assert len(calls) == 2
    assert len(provider_batches(emulator, provider)) == 1
    assert "No batch found for the unrecorded intent" in task_output(capfd, caplog)


def test_ambiguous_anthropic_orphan_refuses_loudly(emulator, make_dag, crash_after_submit, capfd, caplog):
    rows = rows_for("anthropic", 6)
    first = run_dag(make_dag("anthropic", rows))
    assert first.states["submit"] == "failed"
    orphan = provider_batches(emulator, "anthropic")
    assert len(orphan) == 1

    # Someone else creates a batch of the same size inside the recovery window.
    with anthropic_client(emulator) as client:
        decoy = client.messages.batches.create(
            requests=[{"custom_id": r["custom_id"], "params": r["params"]} for r in rows]
        )
    task_output(capfd, caplog)
    before = paid_calls(emulator.calls())

    second = run_dag(make_dag("anthropic", rows))
    output = task_output(capfd, caplog)
    assert second.states["submit"] == "failed", second.states
    errors = [line for line in output.splitlines() if "AmbiguousSubmissionError" in line]
    assert errors, output[-3000:]
    assert orphan[0]["id"] in errors[-1]
    assert decoy.id in errors[-1]
    assert paid_calls(emulator.calls()) == before, "nothing submitted"
    assert {b["id"] for b in provider_batches(emulator, "anthropic")} == {orphan[0]["id"], decoy.id}


@pytest.mark.parametrize("provider", PROVIDERS)
def test_cleared_sensor_relands_without_provider_calls(emulator, make_dag, provider):
    rows = rows_for(provider, 8)
    first = run_dag(make_dag(provider, rows))
    assert first.states == {"submit": "success", "ready": "success"}
    calls = emulator.calls()
    batches = provider_batches(emulator, provider)
    rows_first = landed_rows(first.xcoms["ready"])

    second = run_dag(make_dag(provider, rows))  # clears and re-runs both tasks of the same run
    assert second.states == {"submit": "success", "ready": "success"}
    assert emulator.calls() == calls, "no provider call of any kind"
    assert provider_batches(emulator, provider) == batches
    assert second.xcoms["ready"]["results_uri"] == first.xcoms["ready"]["results_uri"]
    assert second.xcoms["ready"]["counts"] == first.xcoms["ready"]["counts"]
    assert second.xcoms["ready"]["finished_at"] == first.xcoms["ready"]["finished_at"]
    assert landed_rows(second.xcoms["ready"]) == rows_first


@pytest.mark.parametrize("provider", PROVIDERS)
def test_changed_requests_after_submission_raise_workload_changed(
    emulator, make_dag, provider, capfd, caplog
):
    rows = rows_for(provider, 6)
    first = run_dag(make_dag(provider, rows, sensor=False))
    assert first.states == {"submit": "success"}
    before = paid_calls(emulator.calls())

    changed = json.loads(json.dumps(rows))
    changed[0]["custom_id"] = "something-else"
    task_output(capfd, caplog)
    second = run_dag(make_dag(provider, changed, sensor=False))
    output = task_output(capfd, caplog)
    assert second.states == {"submit": "failed"}
    assert "WorkloadChangedError" in output
    assert paid_calls(emulator.calls()) == before
    assert len(provider_batches(emulator, provider)) == 1


@pytest.mark.parametrize("provider", PROVIDERS)
def test_crash_between_rebatch_submit_and_record_adopts_the_orphan(
    emulator, make_dag, crash_after_submit, provider, capfd, caplog
):
    # The sensor dies right after submitting round 2 (round index 1); its retry must adopt that
    # batch, not pay for another.
    crash_after_submit.append((1, 0))
    emulator.configure(time_scale=86400.0, expire_rate=0.3, seed=3)
    rows = rows_for(provider, 12)
    run = run_dag(
        make_dag(
            provider, rows, default_args=RETRY_NOW, sensor_kwargs={"max_rounds": 2, "fail_on_partial": False}
        )
    )
    output = task_output(capfd, caplog)
    assert "simulated worker crash before recording round 1 chunk 0" in output
    assert run.states == {"submit": "success", "ready": "success"}, run.states
    submitted = {b["id"] for b in run.xcoms["submit"]["batches"]}
    later = [b for b in provider_batches(emulator, provider) if b["id"] not in submitted]
    assert len(later) == 1, later
    assert run.dag_run.get_task_instance("ready").try_number == 2
    assert "adopting it" in output
    landed = landed_rows(run.xcoms["ready"])
    assert sorted(r["custom_id"] for r in landed) == sorted(r["custom_id"] for r in rows)
    assert {r["batch_id"] for r in landed if r["round"] == 1} == {later[0]["id"]}
