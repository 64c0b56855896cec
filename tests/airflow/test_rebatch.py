"""Re-batching: expiries (with partial output) and retryable errors get another round; nothing else."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from airflow_provider_tokentier.workflow.gate import BatchGate
from tests.airflow.helpers import (
    ANTHROPIC_MODEL,
    CHAT,
    OPENAI_MODEL,
    landed_rows,
    provider_batches,
    rows_for,
    run_dag,
    sdk_outcomes,
    task_output,
    task_state_dir,
)

PROVIDERS = ["anthropic", "openai"]


@pytest.fixture
def calm_after_round_0(monkeypatch: pytest.MonkeyPatch, emulator) -> list[int]:
    """Before each re-batch round is submitted, turn the emulator's expiries and errors off.

    A side channel only (the real `submit_round` runs unchanged): it makes round 1 settle cleanly,
    so the test can check exactly which requests each round held.
    """
    rounds: list[int] = []
    original = BatchGate.submit_round

    def submit_round(self: BatchGate, round_: int, ids: set[str], backend: Any, endpoint: str | None) -> Any:
        rounds.append(round_)
        emulator.configure(expire_rate=0.0, error_rate=0.0)
        return original(self, round_, ids, backend, endpoint)

    monkeypatch.setattr(BatchGate, "submit_round", submit_round)
    return rounds


def _round_batches(emulator, provider: str, submission: dict) -> tuple[list[str], list[str]]:
    first = [b["id"] for b in submission["batches"]]
    later = [b["id"] for b in provider_batches(emulator, provider) if b["id"] not in first]
    return first, later


@pytest.mark.parametrize("provider", PROVIDERS)
def test_expiry_rebatches_exactly_the_expired_ids_and_merges_rows(
    emulator, make_dag, calm_after_round_0, provider
):
    # 24 h of virtual time in about a second: the expiring batch ends with partial output.
    emulator.configure(time_scale=86400.0, expire_rate=0.3, seed=3)
    rows = rows_for(provider, 20)
    run = run_dag(make_dag(provider, rows, sensor_kwargs={"rebatch": "expired", "poll_interval": 0.1}))
    assert run.states == {"submit": "success", "ready": "success"}, run.states
    submission, manifest = run.xcoms["submit"], run.xcoms["ready"]

    round0, round1 = _round_batches(emulator, provider, submission)
    assert (len(round0), len(round1)) == (1, 1), (round0, round1)
    first = sdk_outcomes(emulator, provider, round0[0])
    expired = {cid for cid, outcome in first.items() if outcome == "expired"}
    finished = {cid for cid, outcome in first.items() if outcome == "succeeded"}
    assert expired, first  # an expiry with partial output
    assert finished, first
    assert len(first) == len(rows)

    # Round 2 holds exactly the expired requests, no more, no fewer.
    summary = {b["id"]: b for b in provider_batches(emulator, provider)}
    assert summary[round1[0]]["request_count"] == len(expired)
    second = sdk_outcomes(emulator, provider, round1[0])
    assert set(second) == expired
    assert set(second.values()) == {"succeeded"}
    assert calm_after_round_0 == [1]

    landed = {r["custom_id"]: r for r in landed_rows(manifest)}
    assert Counter(r["custom_id"] for r in landed_rows(manifest)) == Counter(r["custom_id"] for r in rows)
    for cid, row in landed.items():
        assert row["status"] == "succeeded", row
        assert row["round"] == (1 if cid in expired else 0), row
        assert row["batch_id"] == (round1[0] if cid in expired else round0[0])
    assert manifest["rounds"] == 2
    assert manifest["counts"]["succeeded"] == len(rows)
    assert manifest["batches"] == round0 + round1
    billed = emulator.billing()
    assert billed["requests_billed"] == len(rows)
    assert sum(r["cost_usd"] for r in landed.values()) == pytest.approx(billed["usd"], abs=1e-6)


def _permanent_error_row(provider: str, custom_id: str) -> dict[str, Any]:
    """A row our validator accepts but the provider rejects at processing: a permanent error."""
    if provider == "anthropic":
        # Role "system" inside messages is an invalid_request_error at the provider.
        return {
            "custom_id": custom_id,
            "params": {
                "model": ANTHROPIC_MODEL,
                "max_tokens": 32,
                "messages": [{"role": "system", "content": "not a valid role here"}],
            },
        }
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": CHAT,
        # A message without a role: a 400 invalid_request_error line in the error file.
        "body": {"model": OPENAI_MODEL, "messages": [{"content": "who am I?"}]},
    }


@pytest.mark.parametrize("provider", PROVIDERS)
def test_expired_plus_retryable_rebatches_retryable_errors_but_not_permanent_ones(
    emulator, make_dag, calm_after_round_0, provider
):
    emulator.configure(error_rate=0.3, seed=5)
    rows = rows_for(provider, 20) + [_permanent_error_row(provider, f"bad-{i}") for i in range(2)]
    run = run_dag(
        make_dag(
            provider,
            rows,
            sensor_kwargs={"rebatch": "expired+retryable", "fail_on_partial": False},
        )
    )
    assert run.states == {"submit": "success", "ready": "success"}, run.states
    submission, manifest = run.xcoms["submit"], run.xcoms["ready"]
    round0, round1 = _round_batches(emulator, provider, submission)
    first = sdk_outcomes(emulator, provider, round0[0])
    errored = {cid for cid, o in first.items() if o == "errored"}
    permanent = {"bad-0", "bad-1"}
    assert permanent <= errored
    retryable = errored - permanent
    assert retryable, first

    assert len(round1) == 1
    assert set(sdk_outcomes(emulator, provider, round1[0])) == retryable

    landed = {r["custom_id"]: r for r in landed_rows(manifest)}
    assert set(landed) == {r["custom_id"] for r in rows}
    for cid in retryable:
        assert landed[cid]["status"] == "succeeded"
        assert landed[cid]["round"] == 1
    for cid in permanent:
        row = landed[cid]
        assert row["status"] == "errored"
        assert row["round"] == 0
        assert row["error"]["retryable"] is False
        assert row["cost_usd"] == 0
    assert manifest["counts"]["errored"] == 2
    assert manifest["counts"]["succeeded"] == len(rows) - 2
    assert manifest["rounds"] == 2


@pytest.mark.parametrize("provider", PROVIDERS)
def test_rebatch_expired_leaves_errors_alone(emulator, make_dag, calm_after_round_0, provider):
    emulator.configure(error_rate=0.3, seed=5)
    rows = rows_for(provider, 20)
    run = run_dag(make_dag(provider, rows, sensor_kwargs={"rebatch": "expired", "fail_on_partial": False}))
    assert run.states == {"submit": "success", "ready": "success"}, run.states
    submission, manifest = run.xcoms["submit"], run.xcoms["ready"]
    round0, round1 = _round_batches(emulator, provider, submission)
    assert round1 == []
    assert calm_after_round_0 == []
    errored = {cid for cid, o in sdk_outcomes(emulator, provider, round0[0]).items() if o == "errored"}
    assert errored
    landed = {r["custom_id"]: r for r in landed_rows(manifest)}
    assert {cid for cid, r in landed.items() if r["status"] == "errored"} == errored
    assert all(landed[cid]["error"]["retryable"] is True for cid in errored)
    assert manifest["rounds"] == 1
    assert manifest["counts"]["errored"] == len(errored)
    assert manifest["counts"]["succeeded"] == len(rows) - len(errored)


@pytest.mark.parametrize("fail_on_partial", [True, False])
def test_fail_on_partial(emulator, make_dag, dag_id, state_root, fail_on_partial, capfd, caplog):
    emulator.configure(error_rate=0.3, seed=5)
    rows = rows_for("anthropic", 20)
    run = run_dag(
        make_dag(
            "anthropic",
            rows,
            sensor_kwargs={"rebatch": "none", "fail_on_partial": fail_on_partial},
        )
    )
    output = task_output(capfd, caplog)
    if fail_on_partial:
        assert run.states == {"submit": "success", "ready": "failed"}, run.states
        assert "PartialResultsError" in output
        assert run.xcoms["ready"] is None
    else:
        assert run.states == {"submit": "success", "ready": "success"}, run.states
        manifest = run.xcoms["ready"]
        assert manifest["counts"]["errored"] > 0
        assert manifest["counts"]["errored"] + manifest["counts"]["succeeded"] == len(rows)
    # Either way the rows landed before the verdict.
    results = task_state_dir(state_root, dag_id, "ready") / "results.jsonl"
    lines = results.read_text().splitlines()
    assert len(lines) == len(rows)


def test_max_rounds_caps_the_rebatching(emulator, make_dag):
    # Expiries keep happening in every round: max_rounds=2 allows one re-batch, no more.
    emulator.configure(time_scale=86400.0, expire_rate=0.5, seed=3)
    rows = rows_for("anthropic", 12)
    run = run_dag(make_dag("anthropic", rows, sensor_kwargs={"max_rounds": 2, "fail_on_partial": False}))
    assert run.states == {"submit": "success", "ready": "success"}, run.states
    submission, manifest = run.xcoms["submit"], run.xcoms["ready"]
    round0, later = _round_batches(emulator, "anthropic", submission)
    assert len(round0) == 1
    assert len(later) == 1
    second = sdk_outcomes(emulator, "anthropic", later[0])
    still_expired = {cid for cid, o in second.items() if o == "expired"}
    assert still_expired, "the scenario needs expiries in the last round"
    landed = {r["custom_id"]: r for r in landed_rows(manifest)}
    assert {cid for cid, r in landed.items() if r["status"] == "expired"} == still_expired
    assert all(landed[cid]["round"] == 1 for cid in second)
    assert manifest["rounds"] == 2
    assert manifest["counts"]["expired"] == len(still_expired)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_rebatch_rounds_respect_the_submission_caps(emulator, make_dag, calm_after_round_0, provider):
    # The workload was chunked at 4 requests a batch (say, because of an enqueued-token limit);
    # the re-batch of its expiries must not pack them into one bigger batch.
    emulator.configure(time_scale=86400.0, expire_rate=0.5, seed=3)
    rows = rows_for(provider, 16)
    run = run_dag(
        make_dag(
            provider,
            rows,
            submit_kwargs={"max_requests_per_batch": 4},
            sensor_kwargs={"poll_interval": 0.1},
        )
    )
    assert run.states == {"submit": "success", "ready": "success"}, run.states
    submission = run.xcoms["submit"]
    assert [b["requests"] for b in submission["batches"]] == [4, 4, 4, 4]
    _round0, round1 = _round_batches(emulator, provider, submission)
    sizes = {b["id"]: b["request_count"] for b in provider_batches(emulator, provider)}
    round1_sizes = [sizes[i] for i in round1]
    assert sum(round1_sizes) > 4, "the scenario needs more than one cap's worth of expiries"
    assert max(round1_sizes) <= 4, round1_sizes
