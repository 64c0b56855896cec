"""Many `BatchTrigger`s on one loop share one status poller: real async SDKs over HTTP to the emulator."""

from __future__ import annotations

import asyncio
import io
import json
import math
from typing import Any

import pytest

from airflow_provider_tokentier.testing import Emulator
from airflow_provider_tokentier.triggers.batch import BatchTrigger
from airflow_provider_tokentier.triggers.status_poller import active_pollers
from tests.airflow.helpers import anthropic_client, anthropic_rows, openai_client, openai_rows

LIST = {"anthropic": "GET /v1/messages/batches", "openai": "GET /v1/batches"}
RETRIEVE = {"anthropic": "GET /v1/messages/batches/{id}", "openai": "GET /v1/batches/{id}"}
PAGE = {"anthropic": 1000, "openai": 100}
#: Enough waits for several OpenAI pages; Anthropic's 1,000-batch page holds them all.
WAITS = {"anthropic": 60, "openai": 230}


def _create(emulator: Emulator, provider: str, count: int) -> list[str]:
    if provider == "anthropic":
        with anthropic_client(emulator) as client:
            return [client.messages.batches.create(requests=anthropic_rows(1)).id for _ in range(count)]
    with openai_client(emulator) as client:
        data = "".join(json.dumps(r) + "\n" for r in openai_rows(1)).encode()
        upload = client.files.create(file=("in.jsonl", io.BytesIO(data)), purpose="batch")
        return [
            client.batches.create(
                input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h"
            ).id
            for _ in range(count)
        ]


def _trigger(provider: str, batch_id: str, conn_id: str | None = None, **kwargs: Any) -> BatchTrigger:
    return BatchTrigger(
        provider=provider,
        conn_id=conn_id or f"{provider}_default",
        batch_ids=[batch_id],
        **{"poll_interval": 0.5, **kwargs},
    )


async def _first_event(trigger: BatchTrigger) -> dict[str, Any]:
    async for event in trigger.run():
        return dict(event.payload)
    raise AssertionError("the trigger ended without an event")


def _calls(emulator: Emulator, provider: str) -> tuple[int, int]:
    calls = emulator.calls()
    return calls.get(LIST[provider], 0), calls.get(RETRIEVE[provider], 0)


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
def test_many_waits_share_one_poller_and_a_few_list_calls_per_cycle(emulator, provider):
    emulator.configure(time_scale=1.0)  # nothing ends during the test
    n = WAITS[provider]
    ids = _create(emulator, provider, n)

    async def scenario() -> dict[str, Any]:
        tasks = [asyncio.ensure_future(_first_event(_trigger(provider, b))) for b in ids]
        await asyncio.sleep(2.0)  # start-up: every wait reads its first status
        (poller,) = active_pollers().values()
        assert poller.deliveries >= n, "every wait got a status"
        list0, retrieve0 = _calls(emulator, provider)
        cycles0, deliveries0 = poller.cycles, poller.deliveries
        await asyncio.sleep(3.0)
        list1, retrieve1 = _calls(emulator, provider)
        cycles, deliveries = poller.cycles - cycles0, poller.deliveries - deliveries0
        assert not any(t.done() for t in tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.sleep(0)
        return {
            "lists": list1 - list0,
            "retrieves": retrieve1 - retrieve0,
            "cycles": cycles,
            "deliveries": deliveries,
            "left": active_pollers(),
            "task": poller._task,
        }

    seen = asyncio.run(scenario())
    pages = math.ceil(n / PAGE[provider])
    assert seen["cycles"] >= 3
    # Every provider call of a cycle: the pages covering the watched batches (plus the one
    # spare page a cycle may read), no retrieve at all once the listing is known.
    assert seen["retrieves"] == 0
    assert seen["lists"] <= seen["cycles"] * (pages + 1)
    # ...and each wait still gets a fresh status at about its interval (0.5 s over 3 s).
    assert seen["deliveries"] >= n * 3.0 / 0.5 * 0.6
    # The last wait leaving stops the poller and forgets it: nothing leaks.
    assert seen["left"] == {}
    assert seen["task"] is None or seen["task"].done()


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
def test_one_cancelled_wait_never_stops_the_others(emulator, provider):
    emulator.configure(time_scale=1.0)
    ids = _create(emulator, provider, 3)

    async def scenario() -> list[Any]:
        tasks = [asyncio.ensure_future(_first_event(_trigger(provider, b, poll_interval=0.2))) for b in ids]
        await asyncio.sleep(1.0)
        tasks[0].cancel()  # the task was cleared: its trigger is cancelled mid-wait
        await asyncio.sleep(0.5)
        (poller,) = active_pollers().values()
        before = poller.deliveries
        await asyncio.sleep(1.0)
        assert poller.deliveries - before >= 2 * 3, "the other two waits are still polled"
        emulator.configure(time_scale=100_000.0)  # now every batch ends
        return await asyncio.gather(*tasks, return_exceptions=True)

    results = asyncio.run(scenario())
    assert isinstance(results[0], asyncio.CancelledError)
    assert [r["status"] for r in results[1:]] == ["ended", "ended"]


def test_waits_of_different_connections_never_share_a_poller(emulator, monkeypatch):
    emulator.configure(time_scale=1.0)
    conn = {"conn_type": "tokentier_anthropic", "host": emulator.base_url, "password": "other-key"}
    monkeypatch.setenv("AIRFLOW_CONN_ANTHROPIC_OTHER", json.dumps(conn))
    ids = _create(emulator, "anthropic", 2)

    async def scenario() -> dict[tuple[str, str], Any]:
        tasks = [
            asyncio.ensure_future(_first_event(_trigger("anthropic", ids[0]))),
            asyncio.ensure_future(_first_event(_trigger("anthropic", ids[1], conn_id="anthropic_other"))),
        ]
        await asyncio.sleep(1.0)
        pollers = active_pollers()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        return pollers

    pollers = asyncio.run(scenario())
    assert set(pollers) == {("anthropic", "anthropic_default"), ("anthropic", "anthropic_other")}
    default, other = pollers[("anthropic", "anthropic_default")], pollers[("anthropic", "anthropic_other")]
    assert default is not other
    assert default._reader._client is not other._reader._client
    assert default.deliveries >= 1
    assert other.deliveries >= 1


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
def test_a_stretch_of_failing_list_calls_ends_no_wait(emulator, provider):
    emulator.configure(time_scale=1.0)
    n = 40
    ids = _create(emulator, provider, n)

    async def scenario() -> list[dict[str, Any]]:
        tasks = [asyncio.ensure_future(_first_event(_trigger(provider, b, poll_interval=0.2))) for b in ids]
        await asyncio.sleep(1.0)
        emulator.configure(list_error_rate=1.0, poll_error_rate=1.0)  # every status read fails
        lists_before = _calls(emulator, provider)[0]
        await asyncio.sleep(2.0)
        assert _calls(emulator, provider)[0] > lists_before, "the poller kept trying"
        assert not any(t.done() for t in tasks), "a transient error must not end a wait"
        emulator.configure(list_error_rate=0.0, poll_error_rate=0.0, time_scale=100_000.0)
        return await asyncio.wait_for(asyncio.gather(*tasks), 60)

    events = asyncio.run(scenario())
    assert [e["status"] for e in events] == ["ended"] * n


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
def test_an_unknown_batch_ends_only_its_own_wait(emulator, provider):
    emulator.configure(time_scale=1.0)
    ids = _create(emulator, provider, 5)
    missing = "msgbatch_doesnotexist" if provider == "anthropic" else "batch_doesnotexist"

    async def scenario() -> tuple[dict[str, Any], list[bool]]:
        tasks = [asyncio.ensure_future(_first_event(_trigger(provider, b, poll_interval=0.2))) for b in ids]
        lost = await asyncio.wait_for(_first_event(_trigger(provider, missing, poll_interval=0.2)), 30)
        await asyncio.sleep(0.5)
        still = [not t.done() for t in tasks]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        return lost, still

    lost, still = asyncio.run(scenario())
    assert lost["status"] == "error"
    assert "NotFound" in lost["message"] or "404" in lost["message"]
    assert all(still)
