"""The spend cap ``max_cost_usd``: refused before paying, never crossed by a round, a rescue or a
flex/standard run. ``dag.test()`` against the emulator; what was spent is read from its billing."""

from __future__ import annotations

import datetime
from typing import Any

import pendulum
import pytest

from airflow_provider_tokentier.core.budget import estimate_row_cost
from airflow_provider_tokentier.core.requests import iter_validated
from tests.airflow.helpers import (
    landed_rows,
    paid_calls,
    provider_batches,
    rows_for,
    run_dag,
    task_output,
)

PROVIDERS = ["anthropic", "openai"]


def row_estimate(provider: str, tier: str, raw: dict[str, Any] | None = None) -> float:
    """The estimate tokentier makes for one of the test rows (they are all alike in size)."""
    row = next(iter_validated([raw or rows_for(provider, 1)[0]], provider))
    cost = estimate_row_cost(row, provider, tier)
    assert cost is not None
    assert cost > 0
    return cost


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_workload_estimated_over_the_cap_is_refused_before_any_paid_call(
    emulator, make_dag, provider, capfd, caplog
):
    rows = rows_for(provider, 8)
    cap = row_estimate(provider, "batch") * 5  # the 8 rows are estimated at 8x that
    run = run_dag(make_dag(provider, rows, submit_kwargs={"max_cost_usd": cap}))
    output = task_output(capfd, caplog)
    assert run.states["submit"] == "failed"
    assert "BudgetExceededError" in output
    assert "Nothing was submitted" in output
    assert paid_calls(emulator.calls()) == {}
    assert emulator.billing()["usd"] == 0


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_workload_within_the_cap_runs_and_the_manifest_says_so(emulator, make_dag, provider):
    rows = rows_for(provider, 8)
    cap = row_estimate(provider, "batch") * 8 * 1.5
    run = run_dag(make_dag(provider, rows, submit_kwargs={"max_cost_usd": cap}))
    assert run.states == {"submit": "success", "ready": "success"}, run.states
    assert run.xcoms["submit"]["max_cost_usd"] == cap
    assert run.xcoms["submit"]["estimated_cost_usd"] == pytest.approx(row_estimate(provider, "batch") * 8)
    budget = run.xcoms["ready"]["budget"]
    assert budget == {
        "max_cost_usd": cap,
        "spent_usd": run.xcoms["ready"]["cost_usd"],
        "stopped": None,
        "skipped": 0,
    }
    assert emulator.billing()["usd"] == pytest.approx(budget["spent_usd"], abs=1e-9)
    assert emulator.billing()["usd"] <= cap


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_rebatch_round_that_would_cross_the_cap_is_not_started(emulator, make_dag, provider):
    emulator.configure(expire_rate=0.5, seed=11)
    rows = rows_for(provider, 16)
    # The sensor's own cap (it overrides the submission's): a round of the expired requests
    # (about half of 16) is estimated above it whatever the first round cost.
    cap = row_estimate(provider, "batch") * 16 * 0.3
    run = run_dag(make_dag(provider, rows, sensor_kwargs={"fail_on_partial": False, "max_cost_usd": cap}))
    assert run.states == {"submit": "success", "ready": "success"}, run.states
    manifest = run.xcoms["ready"]
    expired = manifest["counts"]["expired"]
    assert expired >= 5  # fixed by the seed
    assert manifest["rounds"] == 1
    assert len(provider_batches(emulator, provider)) == 1  # no second round was submitted
    assert manifest["budget"]["stopped"] == "rebatch"
    assert manifest["budget"]["skipped"] == expired
    assert emulator.billing()["usd"] == pytest.approx(manifest["cost_usd"], abs=1e-9)


def test_a_rescue_that_would_cross_the_cap_is_not_started(emulator, make_dag):
    # Every request would expire; the rescue on standard would cost more than the cap allows,
    # so the sensor waits for the deadline instead and lands what the batch did.
    emulator.configure(expire_rate=1.0, cancel_latency_s=60.0, seed=5)
    rows = rows_for("openai", 12)
    cap = row_estimate("openai", "standard") * 6  # half of what the rescue would cost
    run = run_dag(
        make_dag(
            "openai",
            rows,
            sensor_kwargs={
                "deadline": datetime.timedelta(seconds=6),
                "rescue_tier": "standard",
                "rescue_margin": datetime.timedelta(seconds=3),
                "fail_on_partial": False,
                "max_cost_usd": cap,
            },
        )
    )
    assert run.states == {"submit": "success", "ready": "success"}, run.states
    manifest = run.xcoms["ready"]
    landed = landed_rows(manifest)
    assert sorted(r["custom_id"] for r in landed) == sorted(r["custom_id"] for r in rows)
    assert {r["tier"] for r in landed} == {"batch"}
    assert manifest["counts"]["succeeded"] == 0
    assert manifest["budget"]["stopped"] == "rescue"
    assert manifest["budget"]["skipped"] == 12
    assert "standard" not in emulator.billing()["by_tier"]


def sync_dag(dag_id: str, operator: Any, state_root: str) -> Any:
    from airflow.sdk import DAG

    with DAG(
        dag_id=dag_id,
        schedule=None,
        start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
        catchup=False,
        default_args={"retries": 0},
    ) as dag:
        operator(state_root)
    return dag


def small_rows(provider: str, n: int) -> list[dict[str, Any]]:
    if provider == "anthropic":
        return rows_for(provider, n, max_tokens=8)
    rows = rows_for(provider, n)
    for row in rows:
        row["body"]["max_completion_tokens"] = 8
    return rows


@pytest.mark.parametrize(
    ("provider", "operator_name", "tier"),
    [
        ("anthropic", "StandardOperator", "standard"),
        ("openai", "StandardOperator", "standard"),
        ("openai", "FlexOperator", "flex"),
    ],
)
def test_flex_and_standard_stop_at_the_cap_and_skip_the_rest(
    emulator, dag_id, state_root, provider, operator_name, tier
):
    from airflow_provider_tokentier import operators

    # Output capped at 8 tokens, which the emulator's replies reach: estimates are close to the bill.
    rows = small_rows(provider, 20)
    cap = row_estimate(provider, "standard", small_rows(provider, 1)[0]) * 5.5

    def build(root: str) -> Any:
        kwargs: dict[str, Any] = {"provider": provider} if operator_name == "StandardOperator" else {}
        return getattr(operators, operator_name)(
            task_id="run",
            requests=rows,
            state_root=root,
            max_concurrency=1,
            max_cost_usd=cap,
            # Skipped rows did not succeed, so the default (fail_on_partial=True) fails the task
            # after landing; this test reads the manifest of a run that goes on.
            fail_on_partial=False,
            **kwargs,
        )

    run = run_dag(sync_dag(dag_id, build, state_root))
    assert run.states == {"run": "success"}, run.states
    manifest = run.xcoms["run"]
    landed = landed_rows(manifest)
    assert sorted(r["custom_id"] for r in landed) == sorted(r["custom_id"] for r in rows)
    counts = manifest["counts"]
    assert counts["succeeded"] >= 5
    assert counts["skipped_budget"] >= 1
    assert counts["succeeded"] + counts["skipped_budget"] == 20
    skipped = [r for r in landed if r["status"] == "skipped_budget"]
    assert all(r["error"]["type"] == "budget_exceeded" and r["cost_usd"] == 0 for r in skipped)
    assert {r["tier"] for r in skipped} == {tier}
    assert manifest["budget"] == {
        "max_cost_usd": cap,
        "spent_usd": manifest["cost_usd"],
        "stopped": "sync",
        "skipped": counts["skipped_budget"],
    }
    billed = emulator.billing()
    assert billed["requests_billed"] == counts["succeeded"]
    assert billed["usd"] == pytest.approx(manifest["cost_usd"], abs=1e-9)
    assert billed["usd"] <= cap


def test_max_cost_usd_must_be_a_positive_number():
    from airflow_provider_tokentier.operators import BatchSubmitOperator, StandardOperator

    for bad in (0, -1, "5", float("nan"), True):
        with pytest.raises(ValueError, match="max_cost_usd"):
            BatchSubmitOperator(task_id="s", provider="anthropic", requests=[], max_cost_usd=bad)
        with pytest.raises(ValueError, match="max_cost_usd"):
            StandardOperator(task_id="t", provider="openai", requests=[], max_cost_usd=bad)
