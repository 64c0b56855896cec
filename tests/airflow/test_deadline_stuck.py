"""Deadlines stop further rounds and cancel what is still running; stuck batches fail the task."""

from __future__ import annotations

import datetime

import pytest

from tests.airflow.helpers import (
    anthropic_client,
    landed_rows,
    provider_batches,
    rows_for,
    run_dag,
    task_output,
)

PROVIDERS = ["anthropic", "openai"]


@pytest.mark.parametrize("provider", PROVIDERS)
def test_deadline_cancels_outstanding_batches_and_starts_no_new_round(emulator, make_dag, provider):
    # Half the requests are fated to expire, so their batch runs for the whole 24 h window (60 s
    # here: long enough to still be running when a slow task start-up -- Airflow 3.1's dag.test()
    # takes over ten seconds per task on a loaded machine -- reaches the first poll); without the
    # deadline they would be re-batched. The deadline comes 2 s in.
    emulator.configure(time_scale=1440.0, expire_rate=0.5, cancel_latency_s=600.0, seed=11)
    rows = rows_for(provider, 16)
    dag = make_dag(
        provider,
        rows,
        submit_kwargs={"max_requests_per_batch": 8},
        sensor_kwargs={
            "deadline": datetime.timedelta(seconds=2),
            "rebatch": "expired+retryable",
            "fail_on_partial": False,
        },
    )
    run = run_dag(dag)
    assert run.states == {"submit": "success", "ready": "success"}, run.states
    submission, manifest = run.xcoms["submit"], run.xcoms["ready"]
    submitted = [b["id"] for b in submission["batches"]]

    # No new round: the emulator holds only the batches of the submission, all cancelled.
    in_emulator = provider_batches(emulator, provider)
    assert [b["id"] for b in in_emulator] == submitted
    if provider == "openai":
        assert {b["status"] for b in in_emulator} == {"cancelled"}
    else:
        assert {b["processing_status"] for b in in_emulator} == {"ended"}
        with anthropic_client(emulator) as client:
            for batch_id in submitted:
                assert client.messages.batches.retrieve(batch_id).cancel_initiated_at is not None

    landed = landed_rows(manifest)
    assert sorted(r["custom_id"] for r in landed) == sorted(r["custom_id"] for r in rows)
    assert {r["round"] for r in landed} == {0}
    statuses = {r["status"] for r in landed}
    assert statuses <= {"succeeded", "canceled", "expired", "missing"}
    unfinished = [r for r in landed if r["status"] != "succeeded"]
    assert unfinished, "the requests fated to expire never finished"
    assert all(r["response"] is None and r["cost_usd"] == 0 for r in unfinished)
    assert manifest["rounds"] == 1
    assert manifest["batches"] == submitted
    assert manifest["deadline"] is not None
    deadline = datetime.datetime.fromisoformat(manifest["deadline"])
    submitted_at = datetime.datetime.fromisoformat(submission["submitted_at"])
    assert deadline - submitted_at == datetime.timedelta(seconds=2)
    billed = emulator.billing()
    assert sum(r["cost_usd"] for r in landed) == pytest.approx(billed["usd"], abs=1e-6)


def test_deadline_already_past_at_first_poke_cancels_and_lands_round_0_only(emulator, make_dag):
    # The deadline has passed before the sensor first looks; the batch holds requests fated to
    # expire (which would otherwise be re-batched): cancel, land, and start no round 2. The clock
    # gives the batch 4 s of real time before it would end on its own: the sensor's first look
    # must find it running even on a loaded machine.
    emulator.configure(time_scale=21600.0, expire_rate=0.4, seed=3)
    rows = rows_for("anthropic", 10)
    dag = make_dag(
        "anthropic",
        rows,
        sensor_kwargs={"deadline": datetime.timedelta(milliseconds=1), "fail_on_partial": False},
    )
    run = run_dag(dag)
    assert run.states == {"submit": "success", "ready": "success"}, run.states
    submission, manifest = run.xcoms["submit"], run.xcoms["ready"]
    assert [b["id"] for b in provider_batches(emulator, "anthropic")] == [
        b["id"] for b in submission["batches"]
    ]
    assert manifest["rounds"] == 1
    with anthropic_client(emulator) as client:
        assert (
            client.messages.batches.retrieve(submission["batches"][0]["id"]).cancel_initiated_at is not None
        )
    landed = landed_rows(manifest)
    assert len(landed) == len(rows)
    assert {r["round"] for r in landed} == {0}


def test_stuck_finalizing_batch_fails_the_sensor_naming_the_batch(emulator, make_dag, capfd, caplog):
    # The batch reaches `finalizing` after about half a second and stays there for ~a year.
    emulator.configure(finalizing_stall_s=3.0e7)
    rows = rows_for("openai", 6)
    dag = make_dag("openai", rows, sensor_kwargs={"stuck_after": 1.0, "poll_interval": 0.1})
    run = run_dag(dag)
    output = task_output(capfd, caplog)
    assert run.states == {"submit": "success", "ready": "failed"}, run.states
    batch_id = run.xcoms["submit"]["batches"][0]["id"]
    assert provider_batches(emulator, "openai")[0]["status"] == "finalizing"
    failure = [line for line in output.splitlines() if "BatchStuckError" in line]
    assert failure, output[-3000:]
    assert any(batch_id in line and "finalizing" in line for line in failure), failure
