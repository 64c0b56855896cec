"""Ways of waiting: through transient poll errors, without deferring, and on external batches."""

from __future__ import annotations

import io
import json
import threading

import pendulum
import pytest
from airflow.sdk import DAG

from airflow_provider_tokentier.sensors import BatchSensor
from tests.airflow.helpers import (
    anthropic_client,
    anthropic_rows,
    landed_rows,
    openai_client,
    openai_rows,
    paid_calls,
    rows_for,
    run_dag,
)

PROVIDERS = ["anthropic", "openai"]


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("seed", [1, 2])
def test_transient_poll_errors_are_absorbed(emulator, make_dag, provider, seed):
    emulator.configure(poll_error_rate=float(__import__("os").environ.get("PER", "0.3")), seed=seed)
    rows = rows_for(provider, 10)
    run = run_dag(make_dag(provider, rows, submit_kwargs={"max_requests_per_batch": 4}))
    assert run.states == {"submit": "success", "ready": "success"}, run.states
    landed = landed_rows(run.xcoms["ready"])
    assert sorted(r["custom_id"] for r in landed) == sorted(r["custom_id"] for r in rows)
    assert {r["status"] for r in landed} == {"succeeded"}


@pytest.mark.parametrize("provider", PROVIDERS)
def test_sensor_rides_out_a_short_provider_outage_when_it_resumes(emulator, make_dag, monkeypatch, provider):
    """A 3-second stretch of 5xx/529 answers right when the trigger fires and the sensor resumes.

    The trigger absorbs such errors with backoff; the worker side must as well, instead of failing
    the task on the first status call that the SDK's own two quick retries could not save.
    """
    from airflow_provider_tokentier.triggers.batch import BatchTrigger

    original = BatchTrigger.run
    outages: list[threading.Timer] = []

    async def run(self: BatchTrigger):
        async for event in original(self):
            emulator.configure(poll_error_rate=1.0)
            timer = threading.Timer(3.0, emulator.configure, kwargs={"poll_error_rate": 0.0})
            timer.start()
            outages.append(timer)
            yield event

    monkeypatch.setattr(BatchTrigger, "run", run)
    # Slow enough (2.5-7.5 s) that the batch is still running when the sensor first looks,
    # so it always defers and the outage always hits its resumption.
    emulator.configure(batch_turnaround_s=36000.0)
    rows = rows_for(provider, 6)
    try:
        result = run_dag(make_dag(provider, rows))
    finally:
        for timer in outages:
            timer.join()
    assert outages, "the sensor deferred at least once"
    assert result.states == {"submit": "success", "ready": "success"}, result.states
    assert result.xcoms["ready"]["counts"]["succeeded"] == len(rows)


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("mode", ["reschedule", "poke"])
def test_non_deferrable_sensor(emulator, make_dag, provider, mode, serialized_batch_triggers):
    rows = rows_for(provider, 8)
    sensor_kwargs = {"deferrable": False, "poll_interval": 0.2}
    if mode == "poke":
        sensor_kwargs["mode"] = "poke"
    dag = make_dag(provider, rows, sensor_kwargs=sensor_kwargs)
    assert dag.task_dict["ready"].mode == mode
    run = run_dag(dag)
    assert run.states == {"submit": "success", "ready": "success"}, run.states
    manifest = run.xcoms["ready"]
    assert manifest["counts"]["succeeded"] == len(rows)
    assert len(landed_rows(manifest)) == len(rows)
    assert serialized_batch_triggers == [], "a non-deferrable sensor never defers"


@pytest.fixture
def serialized_batch_triggers(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    from airflow_provider_tokentier.triggers.batch import BatchTrigger

    seen: list[object] = []
    original = BatchTrigger.serialize

    def serialize(self: BatchTrigger):
        seen.append(original(self))
        return seen[-1]

    monkeypatch.setattr(BatchTrigger, "serialize", serialize)
    return seen


def _external_batch(emulator, provider: str, rows: list[dict]) -> str:
    if provider == "anthropic":
        with anthropic_client(emulator) as client:
            return client.messages.batches.create(requests=rows).id
    with openai_client(emulator) as client:
        data = "".join(json.dumps(r) + "\n" for r in rows).encode()
        upload = client.files.create(file=("in.jsonl", io.BytesIO(data)), purpose="batch")
        return client.batches.create(
            input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h"
        ).id


@pytest.mark.parametrize("provider", PROVIDERS)
def test_sensor_on_external_batches_lands_their_rows(emulator, dag_id, state_root, provider):
    first = anthropic_rows(4, prefix="x") if provider == "anthropic" else openai_rows(4, prefix="x")
    second = anthropic_rows(3, prefix="y") if provider == "anthropic" else openai_rows(3, prefix="y")
    batch_ids = [_external_batch(emulator, provider, first), _external_batch(emulator, provider, second)]
    before = paid_calls(emulator.calls())

    with DAG(dag_id=dag_id, schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC")) as dag:
        BatchSensor(
            task_id="ready",
            provider=provider,
            batch_ids=batch_ids,
            state_root=state_root,
            poll_interval=0.2,
        )
    run = run_dag(dag)
    assert run.states == {"ready": "success"}, run.states
    manifest = run.xcoms["ready"]
    landed = landed_rows(manifest)
    assert sorted(r["custom_id"] for r in landed) == sorted(r["custom_id"] for r in first + second)
    assert {r["status"] for r in landed} == {"succeeded"}
    assert {r["batch_id"] for r in landed} == set(batch_ids)
    assert manifest["counts"]["succeeded"] == 7
    assert manifest["batches"] == batch_ids
    assert manifest["cost_usd"] == pytest.approx(emulator.billing()["usd"], abs=1e-6)
    assert paid_calls(emulator.calls()) == before, "the sensor submits nothing"
