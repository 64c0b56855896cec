"""`BatchTrigger` on its own, driven with asyncio against the emulator."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from airflow_provider_tokentier.hooks.base import provider_hook
from airflow_provider_tokentier.triggers.batch import BatchTrigger
from tests.airflow.helpers import anthropic_client, anthropic_rows, openai_client, openai_rows, task_output

PROVIDERS = ["anthropic", "openai"]


def _create_batch(emulator, provider: str, n: int = 4) -> str:
    import io
    import json

    if provider == "anthropic":
        with anthropic_client(emulator) as client:
            return client.messages.batches.create(requests=anthropic_rows(n)).id
    with openai_client(emulator) as client:
        data = "".join(json.dumps(r) + "\n" for r in openai_rows(n)).encode()
        upload = client.files.create(file=("in.jsonl", io.BytesIO(data)), purpose="batch")
        return client.batches.create(
            input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h"
        ).id


def _first_event(trigger: BatchTrigger, timeout: float = 30.0) -> dict[str, Any]:
    async def first() -> dict[str, Any]:
        event = await asyncio.wait_for(anext(trigger.run()), timeout)
        return event.payload

    return asyncio.run(first())


def _trigger(provider: str, batch_ids: list[str], **kwargs: Any) -> BatchTrigger:
    return BatchTrigger(
        provider=provider,
        conn_id=f"{provider}_default",
        batch_ids=batch_ids,
        **{"poll_interval": 0.1, **kwargs},
    )


@pytest.mark.parametrize("provider", PROVIDERS)
def test_trigger_yields_ended_when_every_batch_ends(emulator, provider):
    ids = [_create_batch(emulator, provider), _create_batch(emulator, provider, 2)]
    event = _first_event(_trigger(provider, ids))
    assert event["status"] == "ended"
    assert event["provider"] == provider
    assert [b["batch_id"] for b in event["batches"]] == ids
    assert all(b["ended"] for b in event["batches"])
    # Ended means ended at the provider too.
    if provider == "anthropic":
        with anthropic_client(emulator) as client:
            assert {client.messages.batches.retrieve(i).processing_status for i in ids} == {"ended"}
    else:
        with openai_client(emulator) as client:
            assert {client.batches.retrieve(i).status for i in ids} == {"completed"}


@pytest.mark.parametrize("provider", PROVIDERS)
def test_trigger_yields_deadline_at_the_absolute_deadline_and_keeps_it_across_restarts(emulator, provider):
    emulator.configure(time_scale=1.0)  # the batch will not end during the test
    batch_id = _create_batch(emulator, provider)
    deadline = time.time() + 2.0
    trigger = _trigger(provider, [batch_id], deadline=deadline)

    started = time.monotonic()
    event = _first_event(trigger)
    assert event["status"] == "deadline"
    assert time.time() >= deadline
    assert time.monotonic() - started < 10

    # A triggerer restart re-creates the trigger from its serialized kwargs: the deadline is the
    # same absolute time, so the new trigger fires at once instead of waiting two more seconds.
    classpath, kwargs = trigger.serialize()
    assert classpath == "airflow_provider_tokentier.triggers.batch.BatchTrigger"
    assert kwargs["deadline"] == deadline
    restarted = BatchTrigger(**kwargs)
    assert restarted.deadline == deadline
    started = time.monotonic()
    assert _first_event(restarted)["status"] == "deadline"
    assert time.monotonic() - started < 1.5


@pytest.mark.parametrize("provider", PROVIDERS)
def test_the_deadline_cuts_a_long_poll_interval_and_a_hung_status_read(emulator, provider):
    emulator.configure(time_scale=1.0)
    batch_id = _create_batch(emulator, provider)
    # Every status read now takes 20 s and the next one is due a minute later: the deadline,
    # 1.5 s away, must end the wait on time all the same.
    emulator.configure(latency_ms=20_000)
    trigger = _trigger(provider, [batch_id], poll_interval=60, deadline=time.time() + 1.5)

    started = time.monotonic()
    event = _first_event(trigger)
    assert event["status"] == "deadline"
    assert time.monotonic() - started < 6


@pytest.mark.parametrize("provider", PROVIDERS)
def test_trigger_yields_error_for_an_unknown_batch(emulator, provider):
    missing = "msgbatch_doesnotexist" if provider == "anthropic" else "batch_doesnotexist"
    event = _first_event(_trigger(provider, [missing]))
    assert event["status"] == "error"
    assert "NotFound" in event["message"] or "404" in event["message"]


@pytest.mark.parametrize("provider", PROVIDERS)
def test_trigger_survives_a_stretch_of_transient_errors(emulator, provider):
    batch_id = _create_batch(emulator, provider)
    emulator.configure(poll_error_rate=1.0)  # every status call fails with a 5xx / 529

    async def scenario() -> dict[str, Any]:
        task = asyncio.ensure_future(anext(_trigger(provider, [batch_id]).run()))
        await asyncio.sleep(2.0)
        assert not task.done(), "a transient error must not end the wait"
        emulator.configure(poll_error_rate=0.0)
        event = await asyncio.wait_for(task, 30)
        return event.payload

    event = asyncio.run(scenario())
    assert event["status"] == "ended"
    assert (
        emulator.calls()[
            "GET /v1/messages/batches/{id}" if provider == "anthropic" else "GET /v1/batches/{id}"
        ]
        >= 3
    )


@pytest.mark.parametrize("provider", PROVIDERS)
def test_triggers_on_one_loop_share_one_async_client(emulator, provider):
    async def clients() -> tuple[Any, Any, Any, Any]:
        one = await provider_hook(provider, f"{provider}_default").get_async_client()
        two = await provider_hook(provider, f"{provider}_default").get_async_client()
        backend_a = await _trigger(provider, ["a"])._backend()
        backend_b = await _trigger(provider, ["b"])._backend()
        return one, two, backend_a._client, backend_b._client

    one, two, a, b = asyncio.run(clients())
    assert one is two
    assert a is one
    assert b is one

    other_loop = asyncio.run(clients())
    assert other_loop[0] is not one, "a client belongs to its own event loop"


@pytest.mark.parametrize("provider", PROVIDERS)
def test_trigger_on_kill_cancels_its_batches(emulator, provider):
    emulator.configure(time_scale=1.0)
    ids = [_create_batch(emulator, provider), _create_batch(emulator, provider)]
    asyncio.run(_trigger(provider, ids).on_kill())
    if provider == "anthropic":
        with anthropic_client(emulator) as client:
            assert all(client.messages.batches.retrieve(i).cancel_initiated_at for i in ids)
    else:
        with openai_client(emulator) as client:
            assert {client.batches.retrieve(i).status for i in ids} == {"cancelling"}


def test_trigger_logs_progress_lines(emulator, capfd, caplog):
    batch_id = _create_batch(emulator, "openai", 5)
    task_output(capfd, caplog)
    event = _first_event(_trigger("openai", [batch_id], progress_every=0.0))
    assert event["status"] == "ended"
    lines = [line for line in task_output(capfd, caplog).splitlines() if "batches ended" in line]
    assert lines
    assert all("openai: 0/1 batches ended" in line and "processing=" in line for line in lines), lines


def _closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("provider", PROVIDERS)
def test_an_unreachable_provider_ends_the_wait_after_poll_error_patience(emulator, monkeypatch, provider):
    import json

    dead = f"http://127.0.0.1:{_closed_port()}"
    conn_type = f"tokentier_{provider}"
    monkeypatch.setenv(
        f"AIRFLOW_CONN_{provider.upper()}_DEFAULT",
        json.dumps({"conn_type": conn_type, "host": dead, "password": "k"}),
    )
    trigger = _trigger(provider, ["batch_one", "batch_two"], poll_interval=0.05, poll_error_patience=1.0)
    assert trigger.serialize()[1]["poll_error_patience"] == 1.0
    started = time.monotonic()
    event = _first_event(trigger)
    assert 1.0 <= time.monotonic() - started < 10
    assert event["status"] == "error"
    message = event["message"]
    # Names the provider, the batches, how long it tried, and the last error.
    assert provider in message
    assert "batch_one" in message
    assert "batch_two" in message
    assert "poll_error_patience" in message
    assert "consecutive transient errors" in message
    assert "APIConnectionError" in message, message


def test_a_trigger_without_a_key_ends_with_an_error_event_naming_the_connection(emulator, monkeypatch):
    monkeypatch.delenv("AIRFLOW_CONN_ANTHROPIC_DEFAULT", raising=False)
    event = _first_event(BatchTrigger(provider="anthropic", conn_id="nowhere", batch_ids=["b"]))
    assert event["status"] == "error"
    assert "connection 'nowhere' does not exist" in event["message"]
    assert "ANTHROPIC_API_KEY" in event["message"]


@pytest.mark.parametrize("provider", PROVIDERS)
def test_trigger_ends_at_its_timeout_with_a_timeout_event(emulator, provider):
    emulator.configure(time_scale=1.0)  # the batch will not end during the test
    batch_id = _create_batch(emulator, provider)
    timeout_at = time.time() + 1.0
    event = _first_event(_trigger(provider, [batch_id], timeout_at=timeout_at))
    assert time.time() >= timeout_at
    assert event["status"] == "timeout"
    assert batch_id in event["message"]
    assert "timed out" in event["message"]
    assert BatchTrigger(
        **_trigger(provider, [batch_id], timeout_at=timeout_at).serialize()[1]
    ).timeout_at == (timeout_at)
