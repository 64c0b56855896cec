"""TieredInferenceOperator: the router's decision is logged, returned, kept on retry, and obeyed."""

from __future__ import annotations

import datetime

import pendulum
import pytest

from tests.airflow.helpers import landed_rows, provider_batches, rows_for, run_dag


@pytest.fixture
def tiered_dag(dag_id, state_root):
    from airflow.sdk import DAG

    from airflow_provider_tokentier.operators import TieredInferenceOperator

    def build(provider, rows, **kwargs):
        with DAG(dag_id=dag_id, schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC")) as dag:
            TieredInferenceOperator(
                task_id="infer",
                provider=provider,
                requests=rows,
                state_root=state_root,
                poll_interval=0.2,
                **kwargs,
            )
        return dag

    return build


def _check_billing(emulator, manifest, rows):
    landed = landed_rows(manifest)
    assert sorted(r["custom_id"] for r in landed) == sorted(r["custom_id"] for r in rows)
    assert sum(r["cost_usd"] for r in landed) == pytest.approx(emulator.billing()["usd"], abs=1e-6)
    assert manifest["cost_usd"] == pytest.approx(emulator.billing()["usd"], abs=1e-6)
    return landed


def test_interactive_work_runs_on_standard(emulator, tiered_dag):
    rows = rows_for("anthropic", 5)
    run = run_dag(tiered_dag("anthropic", rows, interactive=True, latency_budget="2m"))
    manifest = run.xcoms["infer"]
    assert run.states == {"infer": "success"}
    assert manifest["decision"]["tier"] == "standard"
    assert manifest["decision"]["reasons"]
    landed = _check_billing(emulator, manifest, rows)
    assert {r["tier"] for r in landed} == {"standard"}
    assert provider_batches(emulator, "anthropic") == []


def test_a_budget_of_minutes_goes_to_flex_where_offered(emulator, tiered_dag):
    rows = rows_for("openai", 6)
    run = run_dag(tiered_dag("openai", rows, latency_budget="20m"))
    manifest = run.xcoms["infer"]
    assert manifest["decision"]["tier"] == "flex", manifest["decision"]["reasons"]
    landed = _check_billing(emulator, manifest, rows)
    assert {r["tier"] for r in landed} == {"flex"}
    assert emulator.billing()["by_tier"]["flex"]["requests"] == len(rows)


def test_a_long_budget_with_enough_volume_goes_to_batch_and_waits_like_the_sensor(emulator, tiered_dag):
    rows = rows_for("openai", 20)
    run = run_dag(tiered_dag("openai", rows, latency_budget="20h", min_batch_savings_usd=0.0))
    manifest = run.xcoms["infer"]
    assert run.states == {"infer": "success"}
    assert manifest["decision"]["tier"] == "batch", manifest["decision"]["reasons"]
    landed = _check_billing(emulator, manifest, rows)
    assert {r["tier"] for r in landed} == {"batch"}
    assert manifest["tiers"]["batch"] == len(rows)
    assert len(provider_batches(emulator, "openai")) == 1


def test_small_volume_stays_synchronous_even_with_a_long_budget(emulator, tiered_dag):
    rows = rows_for("anthropic", 3)
    run = run_dag(tiered_dag("anthropic", rows, latency_budget="20h"))
    manifest = run.xcoms["infer"]
    assert manifest["decision"]["tier"] == "standard"
    assert any("crossover" in reason for reason in manifest["decision"]["reasons"])


def test_forced_batch_with_rescue_lands_everything_before_the_deadline(emulator, tiered_dag):
    emulator.configure(expire_rate=1.0, seed=9)
    rows = rows_for("anthropic", 8)
    dag = tiered_dag(
        "anthropic",
        rows,
        tier="batch",
        deadline=datetime.timedelta(seconds=6),
        rescue_tier="standard",
        rescue_margin=3,
    )
    run = run_dag(dag)
    manifest = run.xcoms["infer"]
    assert run.states == {"infer": "success"}
    assert manifest["decision"]["tier"] == "batch"
    assert manifest["decision"]["forced"]
    landed = _check_billing(emulator, manifest, rows)
    assert {(r["status"], r["tier"]) for r in landed} == {("succeeded", "standard")}


def test_a_retry_keeps_the_tier_it_started_on(emulator, tiered_dag):
    rows = rows_for("openai", 4)
    first = run_dag(tiered_dag("openai", rows, tier="standard"))
    again = run_dag(tiered_dag("openai", rows, tier="flex"))  # same task instance, different argument
    assert first.xcoms["infer"]["decision"] == again.xcoms["infer"]["decision"]
    assert again.xcoms["infer"]["decision"]["tier"] == "standard"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"latency_budget": -5}, "negative"),
        ({"latency_budget": "soon"}, "duration"),
        ({"deadline": datetime.datetime(2020, 1, 1, tzinfo=datetime.timezone.utc)}, "past"),
        ({"tier": "express"}, "tier: must be one of"),
        ({"tier": "flex"}, "no flex"),
        ({"cached_input_ratio": 1.5}, "cached_input_ratio"),
        ({"rescue_tier": "priority"}, "rescue_tier"),
    ],
)
def test_bad_arguments_fail_when_the_dag_is_parsed(kwargs, message):
    from airflow_provider_tokentier.operators import TieredInferenceOperator

    with pytest.raises(ValueError, match=message):
        TieredInferenceOperator(task_id="infer", provider="anthropic", requests=[], **kwargs)
