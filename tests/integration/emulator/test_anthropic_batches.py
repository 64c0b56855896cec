"""The Message Batches API on the emulator, through the official Anthropic SDK over real HTTP.

Virtual time is moved with ``tokentier_emulator.advance``; nothing sleeps. Every response body is
validated strictly with the SDK's own pydantic types.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import socket
import tracemalloc
from collections import Counter
from typing import Any, TypeVar

import anthropic
import httpx
import msgspec
import pydantic
import pytest
from anthropic.types.messages import DeletedMessageBatch, MessageBatch, MessageBatchIndividualResponse

from airflow_provider_tokentier.core.pricing import default_price_table, usage_from_anthropic
from airflow_provider_tokentier.testing.emulator.server import Emulator

M = TypeVar("M", bound=pydantic.BaseModel)

MODEL = "claude-haiku-4-5"
DAY = 24 * 3600.0
#: With the default turnaround (3600 s, drawn 0.5x-1.5x per batch) every request is done by then.
ALL_DONE_S = 1.5 * 3600 + 10


def strict(model: type[M], raw: str | bytes) -> M:
    """Validate JSON strictly with an SDK type and refuse fields the type does not declare."""
    parsed = model.model_validate_json(raw, strict=True)
    _no_extra(parsed)
    return parsed


def _no_extra(value: Any) -> None:
    if isinstance(value, pydantic.BaseModel):
        assert not value.model_extra, f"undeclared fields on {type(value).__name__}: {value.model_extra}"
        for name in type(value).model_fields:
            _no_extra(getattr(value, name))
    elif isinstance(value, list):
        for item in value:
            _no_extra(item)


def requests(n: int, prefix: str = "req", **params: Any) -> list[dict[str, Any]]:
    return [
        {
            "custom_id": f"{prefix}-{i}",
            "params": {
                "model": MODEL,
                "max_tokens": 128,
                "messages": [{"role": "user", "content": f"Summarize ticket {i} for the weekly review."}],
                **params,
            },
        }
        for i in range(n)
    ]


def create(client: anthropic.Anthropic, reqs: list[dict[str, Any]]) -> MessageBatch:
    raw = client.messages.batches.with_raw_response.create(requests=reqs)  # type: ignore[arg-type]
    return strict(MessageBatch, raw.http_response.text)


def retrieve(client: anthropic.Anthropic, batch_id: str) -> MessageBatch:
    raw = client.messages.batches.with_raw_response.retrieve(batch_id)
    return strict(MessageBatch, raw.http_response.text)


def results(emulator: Emulator, batch: MessageBatch) -> list[MessageBatchIndividualResponse]:
    """Download ``results_url`` as is and validate every line strictly."""
    assert batch.results_url is not None
    assert batch.results_url == f"{emulator.base_url}/v1/messages/batches/{batch.id}/results"
    response = httpx.get(batch.results_url, headers={"x-api-key": "k"})
    assert response.status_code == 200, response.text
    body = response.content
    assert body.endswith(b"\n")
    lines = body[:-1].split(b"\n")
    assert all(line.strip() for line in lines), "blank line in results"
    return [strict(MessageBatchIndividualResponse, line) for line in lines]


def assert_counts_zero_until_ended(batch: MessageBatch, total: int) -> None:
    counts = batch.request_counts
    assert batch.processing_status != "ended"
    assert (counts.processing, counts.succeeded, counts.errored, counts.canceled, counts.expired) == (
        total,
        0,
        0,
        0,
        0,
    )
    assert batch.results_url is None
    assert batch.ended_at is None


def outcome_counts(lines: list[MessageBatchIndividualResponse]) -> Counter[str]:
    return Counter(line.result.type for line in lines)


def batch_cost(lines: list[MessageBatchIndividualResponse]) -> float:
    table = default_price_table()
    total = 0.0
    for line in lines:
        if line.result.type == "succeeded":
            usage = usage_from_anthropic(line.result.message.usage.model_dump())
            total += table.cost_usd("anthropic", line.result.message.model, "batch", usage) or 0.0
    return total


def timeline(emulator: Emulator, batch_id: str) -> Any:
    """White-box: the batch's planned timeline (the emulator runs in this process)."""
    return emulator.state._stores["anthropic"].batches[batch_id].timeline


# -- lifecycle ------------------------------------------------------------------------------------


def test_in_progress_then_ended_with_results(
    anthropic_client: anthropic.Anthropic, tokentier_emulator: Emulator
) -> None:
    reqs = requests(40)
    batch = create(anthropic_client, reqs)
    assert batch.id.startswith("msgbatch_")
    assert batch.type == "message_batch"
    assert batch.processing_status == "in_progress"
    assert batch.expires_at - batch.created_at == datetime.timedelta(hours=24)
    assert batch.archived_at is None
    assert batch.cancel_initiated_at is None
    assert_counts_zero_until_ended(batch, 40)

    # Part-way: some requests are done inside, yet the outcome counts stay zero.
    plan = timeline(tokentier_emulator, batch.id)
    tokentier_emulator.advance(sorted(plan.finish_at)[20] - plan.created_at)
    assert_counts_zero_until_ended(retrieve(anthropic_client, batch.id), 40)

    tokentier_emulator.advance(ALL_DONE_S)
    ended = retrieve(anthropic_client, batch.id)
    assert ended.processing_status == "ended"
    assert ended.request_counts.model_dump() == {
        "processing": 0,
        "succeeded": 40,
        "errored": 0,
        "canceled": 0,
        "expired": 0,
    }
    assert ended.ended_at is not None
    assert ended.ended_at.timestamp() == pytest.approx(max(plan.finish_at), abs=1e-3)
    assert ended.created_at < ended.ended_at < ended.expires_at

    lines = results(tokentier_emulator, ended)
    assert sorted(line.custom_id for line in lines) == sorted(r["custom_id"] for r in reqs)
    assert [line.custom_id for line in lines] != [r["custom_id"] for r in reqs], "results follow input order"
    for line in lines:
        assert line.result.type == "succeeded"
        message = line.result.message
        assert message.id.startswith("msg_")
        assert message.model == MODEL
        assert message.usage.service_tier == "batch"
        assert message.stop_reason in ("end_turn", "max_tokens")
        index = line.custom_id.removeprefix("req-")
        assert message.content[0].type == "text"
        assert f"ticket {index}" in message.content[0].text

    # The SDK's own results() (retrieve + GET results_url) yields the same lines.
    via_sdk = list(anthropic_client.messages.batches.results(batch.id))
    assert [r.custom_id for r in via_sdk] == [line.custom_id for line in lines]

    billing = tokentier_emulator.billing()
    assert billing["by_tier"]["batch"]["requests"] == 40 == billing["requests_billed"]
    assert billing["by_tier"]["batch"]["usd"] == pytest.approx(batch_cost(lines), abs=1e-8)
    # Reading again does not bill again.
    retrieve(anthropic_client, batch.id)
    assert tokentier_emulator.billing() == billing


def test_results_before_end(anthropic_client: anthropic.Anthropic, tokentier_emulator: Emulator) -> None:
    batch = create(anthropic_client, requests(3))
    with pytest.raises(anthropic.AnthropicError, match="results_url"):
        anthropic_client.messages.batches.results(batch.id)
    response = httpx.get(
        f"{tokentier_emulator.base_url}/v1/messages/batches/{batch.id}/results", headers={"x-api-key": "k"}
    )
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"


def test_expiry_at_24h_with_partial_results(
    anthropic_client: anthropic.Anthropic, tokentier_emulator: Emulator
) -> None:
    tokentier_emulator.configure(expire_rate=0.3)
    batch = create(anthropic_client, requests(60))
    fated = sum(1 for fate in timeline(tokentier_emulator, batch.id).fates if fate == 2)
    assert 0 < fated < 60

    tokentier_emulator.advance(12 * 3600)  # every other request is long done
    assert_counts_zero_until_ended(retrieve(anthropic_client, batch.id), 60)

    tokentier_emulator.advance(12 * 3600 + 5)
    ended = retrieve(anthropic_client, batch.id)
    assert ended.processing_status == "ended"
    assert ended.ended_at == ended.expires_at
    assert ended.request_counts.expired == fated
    assert ended.request_counts.succeeded == 60 - fated
    lines = results(tokentier_emulator, ended)
    assert outcome_counts(lines) == {"expired": fated, "succeeded": 60 - fated}
    billing = tokentier_emulator.billing()
    assert billing["requests_billed"] == 60 - fated
    assert billing["usd"] == pytest.approx(batch_cost(lines), abs=1e-8)


def test_errored_lines_retryable_and_invalid(
    anthropic_client: anthropic.Anthropic, tokentier_emulator: Emulator
) -> None:
    tokentier_emulator.configure(error_rate=0.4)
    reqs = requests(50)
    reqs.append(
        {
            "custom_id": "no-max-tokens",
            "params": {"model": MODEL, "messages": [{"role": "user", "content": "x"}]},
        }
    )
    reqs.append({"custom_id": "no-messages", "params": {"model": MODEL, "max_tokens": 5, "messages": []}})
    reqs.append(
        {
            "custom_id": "bad-max",
            "params": {"model": MODEL, "max_tokens": -1, "messages": [{"role": "user", "content": "x"}]},
        }
    )
    batch = create(anthropic_client, reqs)  # invalid params are not a 400 on create
    tokentier_emulator.advance(ALL_DONE_S)
    ended = retrieve(anthropic_client, batch.id)
    lines = {line.custom_id: line for line in results(tokentier_emulator, ended)}

    invalid = {
        "no-max-tokens": "max_tokens: Field required",
        "no-messages": "messages",
        "bad-max": "max_tokens",
    }
    for custom_id, fragment in invalid.items():
        result = lines.pop(custom_id).result
        assert result.type == "errored"
        assert result.error.error.type == "invalid_request_error"
        assert fragment in result.error.error.message
        assert result.error.type == "error"
        assert result.error.request_id
    kinds = Counter(
        line.result.error.error.type if line.result.type == "errored" else line.result.type
        for line in lines.values()
    )
    assert set(kinds) == {"succeeded", "api_error", "overloaded_error"}
    errored = kinds["api_error"] + kinds["overloaded_error"]
    assert ended.request_counts.errored == errored + 3
    assert ended.request_counts.succeeded == kinds["succeeded"]

    billing = tokentier_emulator.billing()
    assert billing["requests_billed"] == kinds["succeeded"]
    assert billing["usd"] == pytest.approx(batch_cost(list(lines.values())), abs=1e-8)


def test_cancel_then_ended_with_canceled(
    anthropic_client: anthropic.Anthropic, tokentier_emulator: Emulator
) -> None:
    batch = create(anthropic_client, requests(40))
    plan = timeline(tokentier_emulator, batch.id)
    tokentier_emulator.advance(sorted(plan.finish_at)[15] - plan.created_at + 0.5)

    raw = anthropic_client.messages.batches.with_raw_response.cancel(batch.id)
    canceling = strict(MessageBatch, raw.http_response.text)
    assert canceling.processing_status == "canceling"
    assert canceling.cancel_initiated_at is not None
    assert_counts_zero_until_ended(canceling, 40)
    cancel_at = canceling.cancel_initiated_at.timestamp()
    finished_before = {f"req-{i}" for i, t in enumerate(plan.finish_at) if t <= cancel_at}
    assert len(finished_before) >= 16

    # Canceling again is harmless; the batch stays canceling for cancel_latency_s (60 s).
    again = anthropic_client.messages.batches.cancel(batch.id)
    assert again.processing_status == "canceling"
    assert again.cancel_initiated_at == canceling.cancel_initiated_at
    tokentier_emulator.advance(30)
    assert retrieve(anthropic_client, batch.id).processing_status == "canceling"

    tokentier_emulator.advance(31)
    ended = retrieve(anthropic_client, batch.id)
    assert ended.processing_status == "ended"
    assert ended.ended_at is not None
    assert ended.ended_at.timestamp() == pytest.approx(cancel_at + 60, abs=1e-3)
    lines = results(tokentier_emulator, ended)
    for line in lines:
        expected = "succeeded" if line.custom_id in finished_before else "canceled"
        assert line.result.type == expected, line.custom_id
    assert ended.request_counts.succeeded == len(finished_before)
    assert ended.request_counts.canceled == 40 - len(finished_before)
    assert tokentier_emulator.billing()["requests_billed"] == len(finished_before)

    with pytest.raises(anthropic.BadRequestError):
        anthropic_client.messages.batches.cancel(batch.id)


def test_archived_after_29_days(anthropic_client: anthropic.Anthropic, tokentier_emulator: Emulator) -> None:
    batch = create(anthropic_client, requests(5))
    tokentier_emulator.advance(ALL_DONE_S)
    ended = retrieve(anthropic_client, batch.id)
    assert ended.ended_at is not None
    assert ended.archived_at is None

    tokentier_emulator.advance(28 * DAY)
    still = retrieve(anthropic_client, batch.id)
    assert still.archived_at is None
    assert len(list(anthropic_client.messages.batches.results(batch.id))) == 5

    tokentier_emulator.advance(1 * DAY)
    archived = retrieve(anthropic_client, batch.id)
    assert archived.archived_at is not None
    assert archived.archived_at - ended.ended_at == datetime.timedelta(days=29)
    assert archived.processing_status == "ended"
    assert archived.request_counts.succeeded == 5
    with pytest.raises(anthropic.NotFoundError):
        list(anthropic_client.messages.batches.results(batch.id))


def test_delete(anthropic_client: anthropic.Anthropic, tokentier_emulator: Emulator) -> None:
    batch = create(anthropic_client, requests(3))
    with pytest.raises(anthropic.BadRequestError):
        anthropic_client.messages.batches.delete(batch.id)
    tokentier_emulator.advance(ALL_DONE_S)
    ended = retrieve(anthropic_client, batch.id)

    raw = anthropic_client.messages.batches.with_raw_response.delete(batch.id)
    deleted = strict(DeletedMessageBatch, raw.http_response.text)
    assert deleted.id == batch.id
    assert deleted.type == "message_batch_deleted"
    with pytest.raises(anthropic.NotFoundError):
        anthropic_client.messages.batches.retrieve(batch.id)
    with pytest.raises(anthropic.NotFoundError):
        anthropic_client.messages.batches.delete(batch.id)
    with pytest.raises(anthropic.NotFoundError):
        anthropic_client.messages.batches.cancel(batch.id)
    assert ended.results_url is not None
    assert httpx.get(ended.results_url, headers={"x-api-key": "k"}).status_code == 404
    assert [b.id for b in anthropic_client.messages.batches.list()] == []
    assert tokentier_emulator.batches()["anthropic"] == []


def test_unknown_ids_are_not_found(anthropic_client: anthropic.Anthropic) -> None:
    for call in (
        anthropic_client.messages.batches.retrieve,
        anthropic_client.messages.batches.cancel,
        anthropic_client.messages.batches.delete,
    ):
        with pytest.raises(anthropic.NotFoundError) as caught:
            call("msgbatch_nope")
        assert isinstance(caught.value.body, dict)
        assert caught.value.body["error"]["type"] == "not_found_error"
    with pytest.raises(anthropic.NotFoundError):
        anthropic_client.get("/v1/messages/batches/msgbatch_nope/results", cast_to=httpx.Response)


# -- list -------------------------------------------------------------------------------------------


def test_list_paging_with_cursors(
    anthropic_client: anthropic.Anthropic, tokentier_emulator: Emulator
) -> None:
    ids = [create(anthropic_client, requests(1, prefix=f"b{i}")).id for i in range(23)]
    newest_first = ids[::-1]

    raw = anthropic_client.messages.batches.with_raw_response.list()
    page = json.loads(raw.http_response.text)
    assert set(page) == {"data", "has_more", "first_id", "last_id"}
    assert [strict(MessageBatch, json.dumps(item)).id for item in page["data"]] == newest_first[:20]
    assert page["has_more"] is True
    assert (page["first_id"], page["last_id"]) == (newest_first[0], newest_first[19])

    first = anthropic_client.messages.batches.list(limit=5)
    assert [b.id for b in first.data] == newest_first[:5]
    assert first.has_more
    second = anthropic_client.messages.batches.list(limit=5, after_id=first.last_id or "")
    assert [b.id for b in second.data] == newest_first[5:10]
    back = anthropic_client.messages.batches.list(limit=5, before_id=second.first_id or "")
    assert [b.id for b in back.data] == newest_first[:5]
    assert back.has_more is False
    tail = anthropic_client.messages.batches.list(limit=5, after_id=newest_first[19])
    assert [b.id for b in tail.data] == newest_first[20:]
    assert tail.has_more is False

    # The SDK's auto-pagination walks every page with the cursors.
    assert [b.id for b in anthropic_client.messages.batches.list(limit=4)] == newest_first
    assert [b.id for b in anthropic_client.messages.batches.list(limit=1000)] == newest_first

    for bad in (0, 1001):
        with pytest.raises(anthropic.BadRequestError):
            anthropic_client.messages.batches.list(limit=bad)
    with pytest.raises(anthropic.BadRequestError):
        anthropic_client.messages.batches.list(after_id="msgbatch_unknown")

    # Ended batches show their counts in the list too.
    tokentier_emulator.advance(ALL_DONE_S)
    listed = anthropic_client.messages.batches.list(limit=3)
    assert all(b.processing_status == "ended" and b.request_counts.succeeded == 1 for b in listed.data)

    summary = tokentier_emulator.batches()["anthropic"]
    assert sorted(s["id"] for s in summary) == sorted(ids)
    assert all(s["request_count"] == 1 and s["processing_status"] == "ended" for s in summary)


def test_list_skips_deleted_batches_keeps_their_cursors_and_counts_calls(
    anthropic_client: anthropic.Anthropic, tokentier_emulator: Emulator
) -> None:
    ids = [create(anthropic_client, requests(1, prefix=f"d{i}")).id for i in range(12)]
    newest_first = ids[::-1]
    tokentier_emulator.advance(ALL_DONE_S)
    for gone in (newest_first[3], newest_first[4]):
        anthropic_client.messages.batches.delete(gone)
    alive = [i for i in newest_first if i not in (newest_first[3], newest_first[4])]
    before = tokentier_emulator.calls().get("GET /v1/messages/batches", 0)

    first = anthropic_client.messages.batches.list(limit=3)
    assert [b.id for b in first.data] == alive[:3]
    assert first.has_more
    # A deleted batch's id still works as a cursor.
    after_deleted = anthropic_client.messages.batches.list(limit=3, after_id=newest_first[3])
    assert [b.id for b in after_deleted.data] == alive[3:6]
    before_deleted = anthropic_client.messages.batches.list(limit=2, before_id=newest_first[4])
    assert [b.id for b in before_deleted.data] == alive[1:3]
    assert before_deleted.has_more
    assert [b.id for b in anthropic_client.messages.batches.list(limit=4)] == alive  # 3 pages

    calls = tokentier_emulator.calls()
    assert calls["GET /v1/messages/batches"] - before == 3 + 3
    assert "GET /v1/messages/batches/{id}" not in calls, "listing is not a status poll"


def test_list_errors_at_list_error_rate(
    anthropic_client: anthropic.Anthropic, tokentier_emulator: Emulator
) -> None:
    create(anthropic_client, requests(1))
    tokentier_emulator.configure(list_error_rate=1.0)
    with pytest.raises(anthropic.OverloadedError):
        anthropic_client.messages.batches.list()
    with pytest.raises(anthropic.InternalServerError):
        anthropic_client.messages.batches.list()
    tokentier_emulator.configure(list_error_rate=0.0)
    assert len(anthropic_client.messages.batches.list().data) == 1


# -- create validation ------------------------------------------------------------------------------

_PARAMS = {"model": MODEL, "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({}, "requests"),
        ({"requests": []}, "requests"),
        ({"requests": "nope"}, "requests"),
        ({"requests": [{"custom_id": "a b", "params": _PARAMS}]}, "custom_id"),
        ({"requests": [{"custom_id": "", "params": _PARAMS}]}, "custom_id"),
        ({"requests": [{"custom_id": "x" * 65, "params": _PARAMS}]}, "custom_id"),
        ({"requests": [{"custom_id": 7, "params": _PARAMS}]}, "custom_id"),
        (
            {"requests": [{"custom_id": "a", "params": _PARAMS}, {"custom_id": "a", "params": _PARAMS}]},
            "Duplicate",
        ),
        ({"requests": [{"custom_id": "a", "params": [1]}]}, "params"),
        ({"requests": [{"custom_id": "a", "params": {**_PARAMS, "stream": True}}]}, "stream"),
        ({"requests": [{"custom_id": "a"}]}, "params"),
        ({"requests": [{"custom_id": "a", "params": _PARAMS}], "metadata": {}}, "metadata"),
    ],
)
def test_create_validation_errors(
    anthropic_client: anthropic.Anthropic, tokentier_emulator: Emulator, body: dict[str, Any], fragment: str
) -> None:
    with pytest.raises(anthropic.BadRequestError) as caught:
        anthropic_client.post("/v1/messages/batches", body=body, cast_to=MessageBatch)
    assert fragment in caught.value.message
    assert isinstance(caught.value.body, dict)
    assert caught.value.body["error"]["type"] == "invalid_request_error"
    assert tokentier_emulator.batches()["anthropic"] == []


def test_create_limits(anthropic_client: anthropic.Anthropic, tokentier_emulator: Emulator) -> None:
    too_many = {"requests": [{"custom_id": f"r{i}", "params": {}} for i in range(100_001)]}
    response = httpx.post(
        f"{tokentier_emulator.base_url}/v1/messages/batches",
        content=msgspec.json.encode(too_many),
        headers={"x-api-key": "k", "content-type": "application/json"},
        timeout=60,
    )
    assert response.status_code == 400
    assert "100000" in response.json()["error"]["message"]

    # A body over 256 MB is refused from its declared length, before it is read.
    with socket.create_connection(("127.0.0.1", tokentier_emulator.port)) as sock:
        sock.sendall(
            b"POST /v1/messages/batches HTTP/1.1\r\nHost: x\r\nx-api-key: k\r\n"
            b"content-type: application/json\r\ncontent-length: 268435457\r\n\r\n{"
        )
        reply = b""
        while b"\r\n\r\n" not in reply or not reply.rstrip().endswith(b"}"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            reply += chunk
    head, _, payload = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413")
    assert json.loads(payload)["error"]["type"] == "request_too_large"
    assert tokentier_emulator.batches()["anthropic"] == []


# -- determinism, faults ----------------------------------------------------------------------------


def _story(client: anthropic.Anthropic, emulator: Emulator) -> list[Any]:
    emulator.configure(seed=1234, error_rate=0.2, expire_rate=0.1)
    first = create(client, requests(30))
    second = create(client, requests(10, prefix="other"))
    emulator.advance(DAY + 10)
    story: list[Any] = []
    for batch in (first, second):
        ended = retrieve(client, batch.id)
        assert ended.ended_at is not None
        took = round((ended.ended_at - ended.created_at).total_seconds(), 3)
        story.append((ended.id, ended.request_counts.model_dump(), took))
        story.append([line.model_dump() for line in results(emulator, ended)])
    return story


def test_same_seed_same_story(anthropic_client: anthropic.Anthropic, tokentier_emulator: Emulator) -> None:
    story = _story(anthropic_client, tokentier_emulator)
    billing = tokentier_emulator.billing()
    tokentier_emulator.reset()
    assert _story(anthropic_client, tokentier_emulator) == story
    assert tokentier_emulator.billing() == billing

    tokentier_emulator.reset()
    tokentier_emulator.configure(seed=99)
    assert create(anthropic_client, requests(1)).id != story[0][0]


def test_poll_errors_surface_without_retries(
    anthropic_client: anthropic.Anthropic, tokentier_emulator: Emulator
) -> None:
    batch = create(anthropic_client, requests(2))
    tokentier_emulator.advance(ALL_DONE_S)
    retrieve(anthropic_client, batch.id)
    tokentier_emulator.configure(poll_error_rate=1.0)

    with pytest.raises(anthropic.OverloadedError) as overloaded:
        anthropic_client.messages.batches.retrieve(batch.id)
    assert overloaded.value.status_code == 529
    with pytest.raises(anthropic.InternalServerError) as internal:
        anthropic_client.messages.batches.retrieve(batch.id)
    assert internal.value.status_code == 500
    assert isinstance(internal.value.body, dict)
    assert internal.value.body["error"]["type"] == "api_error"

    url = f"{tokentier_emulator.base_url}/v1/messages/batches/{batch.id}/results"
    statuses = [httpx.get(url, headers={"x-api-key": "k"}).status_code for _ in range(2)]
    assert statuses == [529, 500]
    # Creating, listing and canceling are not status polls.
    assert anthropic_client.messages.batches.list().data


def test_poll_errors_absorbed_by_default_retries(tokentier_emulator: Emulator) -> None:
    with anthropic.Anthropic(base_url=tokentier_emulator.base_url, api_key="k") as client:  # max_retries=2
        batch = create(client, requests(4))
        tokentier_emulator.advance(ALL_DONE_S)
        tokentier_emulator.configure(poll_error_rate=0.3)
        for _ in range(3):
            assert client.messages.batches.retrieve(batch.id).processing_status == "ended"
        assert len(list(client.messages.batches.results(batch.id))) == 4
    calls = tokentier_emulator.calls()
    polls = calls["GET /v1/messages/batches/{id}"] + calls["GET /v1/messages/batches/{id}/results"]
    assert polls > 3 + 2, "no poll error was injected (and retried)"


# -- async client, concurrency, scale ---------------------------------------------------------------


async def _raw_get(emulator: Emulator, path: str) -> bytes:
    reader, writer = await asyncio.open_connection(emulator.host, emulator.port)
    host = f"{emulator.host}:{emulator.port}"
    writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nx-api-key: k\r\nConnection: close\r\n\r\n".encode())
    await writer.drain()
    reply = await reader.read()
    writer.close()
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 "), reply[:200]
    return body


@pytest.mark.anyio
async def test_async_client_and_a_thousand_pollers(
    async_anthropic_client: anthropic.AsyncAnthropic, tokentier_emulator: Emulator
) -> None:
    client = async_anthropic_client
    batch = await client.messages.batches.create(requests=requests(25))  # type: ignore[arg-type]
    raw = await client.messages.batches.with_raw_response.retrieve(batch.id)
    assert_counts_zero_until_ended(strict(MessageBatch, raw.http_response.text), 25)

    tokentier_emulator.advance(ALL_DONE_S)
    # A thousand pollers at the moment the batch ends (plain HTTP/1.1 connections, since the SDK's
    # own client-side cost would dominate), then the SDK's: one materialization, one bill.
    bodies = await asyncio.gather(
        *(_raw_get(tokentier_emulator, f"/v1/messages/batches/{batch.id}") for _ in range(1000))
    )
    seen = [strict(MessageBatch, body) for body in bodies]
    seen += await asyncio.gather(*(client.messages.batches.retrieve(batch.id) for _ in range(50)))
    assert {(b.processing_status, b.request_counts.succeeded) for b in seen} == {("ended", 25)}
    assert len({b.model_dump_json() for b in seen}) == 1
    assert tokentier_emulator.billing()["requests_billed"] == 25

    lines = [line async for line in await client.messages.batches.results(batch.id)]
    assert len(lines) == 25
    assert all(line.result.type == "succeeded" for line in lines)
    page = await client.messages.batches.list(limit=1)
    assert [b.id for b in page.data] == [batch.id]
    deleted = await client.messages.batches.delete(batch.id)
    assert deleted.type == "message_batch_deleted"


@pytest.mark.anyio
async def test_async_cancel(
    async_anthropic_client: anthropic.AsyncAnthropic, tokentier_emulator: Emulator
) -> None:
    batch = await async_anthropic_client.messages.batches.create(requests=requests(5))  # type: ignore[arg-type]
    canceling = await async_anthropic_client.messages.batches.cancel(batch.id)
    assert canceling.processing_status == "canceling"
    tokentier_emulator.advance(61)
    ended = await async_anthropic_client.messages.batches.retrieve(batch.id)
    assert ended.processing_status == "ended"
    assert ended.request_counts.canceled == 5
    assert tokentier_emulator.billing()["requests_billed"] == 0


def test_hundred_thousand_requests(
    anthropic_client: anthropic.Anthropic, tokentier_emulator: Emulator
) -> None:
    n = 100_000
    batch = create(anthropic_client, requests(n))
    assert batch.request_counts.processing == n
    tokentier_emulator.advance(ALL_DONE_S)
    ended = retrieve(anthropic_client, batch.id)
    assert ended.request_counts.succeeded == n
    assert tokentier_emulator.billing()["requests_billed"] == n

    # The download streams from disk: memory stays far below the file's size.
    assert ended.results_url is not None
    tracemalloc.start()
    try:
        size = lines = 0
        with httpx.stream("GET", ended.results_url, headers={"x-api-key": "k"}) as response:
            assert response.status_code == 200
            for chunk in response.iter_raw():
                size += len(chunk)
                lines += chunk.count(b"\n")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert lines == n
    assert size > 40 * 2**20
    assert peak < 16 * 2**20, f"peak {peak / 2**20:.1f} MiB while streaming {size / 2**20:.1f} MiB"

    stream = anthropic_client.messages.batches.results(batch.id)
    head = [line for _, line in zip(range(3), stream, strict=False)]
    stream.close()
    assert len(head) == 3
    assert all(line.result.type == "succeeded" for line in head)
