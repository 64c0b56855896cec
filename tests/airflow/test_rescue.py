"""Deadline rescue: unfinished requests move to a faster tier so every row lands in time."""

from __future__ import annotations

import datetime

import pytest

from tests.airflow.helpers import landed_rows, provider_batches, rows_for, run_dag


@pytest.mark.parametrize(
    ("provider", "tier"), [("openai", "standard"), ("openai", "flex"), ("anthropic", "standard")]
)
def test_rescue_lands_every_row_before_the_deadline(emulator, make_dag, provider, tier):
    # Every request of the batch is fated to expire at the 24 h mark (60 s here); the deadline
    # is 8 s after the sensor starts (a templated deadline, rendered then, so a slow task start --
    # Airflow 3.1's dag.test() on a loaded machine -- cannot eat it) and the rescue starts 5 s
    # before it (a margin loose enough for a loaded machine).
    emulator.configure(time_scale=1440.0, expire_rate=1.0, cancel_latency_s=60.0, seed=5)
    rows = rows_for(provider, 12)
    dag = make_dag(
        provider,
        rows,
        sensor_kwargs={
            "deadline": "{{ (macros.datetime.utcnow() + macros.timedelta(seconds=8)).isoformat() }}",
            "rescue_tier": tier,
            "rescue_margin": datetime.timedelta(seconds=5),
        },
    )
    run = run_dag(dag)
    assert run.states == {"submit": "success", "ready": "success"}, run.states
    submission, manifest = run.xcoms["submit"], run.xcoms["ready"]

    landed = landed_rows(manifest)
    assert sorted(r["custom_id"] for r in landed) == sorted(r["custom_id"] for r in rows)
    assert {r["status"] for r in landed} == {"succeeded"}
    assert {r["tier"] for r in landed} == {tier}
    assert manifest["tiers"] == {"batch": 0, "flex": 0, "standard": 0, tier: len(rows)}
    assert manifest["counts"]["succeeded"] == len(rows)
    assert datetime.datetime.fromisoformat(manifest["finished_at"]) <= datetime.datetime.fromisoformat(
        manifest["deadline"]
    )
    # The batch was cancelled, never re-batched; what ran on the rescue tier was billed there.
    assert [b["id"] for b in provider_batches(emulator, provider)] == [b["id"] for b in submission["batches"]]
    billed = emulator.billing()
    assert billed["by_tier"][tier]["requests"] == len(rows)
    assert sum(r["cost_usd"] for r in landed) == pytest.approx(billed["usd"], abs=1e-6)


def test_rescue_flex_on_anthropic_is_refused_up_front():
    from airflow_provider_tokentier.sensors import BatchSensor

    with pytest.raises(ValueError, match="no flex"):
        BatchSensor(task_id="ready", provider="anthropic", batch_ids=["msgbatch_x"], rescue_tier="flex")
