"""OpenAI Batch API of the emulator, through the official SDK over real HTTP."""

from __future__ import annotations

import json
import time

import openai
import pytest
from openai.types import Completion, CreateEmbeddingResponse
from openai.types.chat import ChatCompletion
from openai.types.responses import Response
from pydantic import BaseModel

from airflow_provider_tokentier.core.pricing import default_price_table, usage_from_openai

try:
    from ._openai_helpers import (
        MODEL,
        VALIDATION_MAX_S,
        async_client,
        chat_line,
        client,
        jsonl,
        read_lines,
        retrieve,
        strict,
        submit,
        upload,
    )
except ImportError:
    from _openai_helpers import (  # type: ignore[no-redef,unused-ignore]
        MODEL,
        VALIDATION_MAX_S,
        async_client,
        chat_line,
        client,
        jsonl,
        read_lines,
        retrieve,
        strict,
        submit,
        upload,
    )

DAY = 24 * 3600
BODY_TYPES: dict[str, type[BaseModel]] = {
    "/v1/chat/completions": ChatCompletion,
    "/v1/responses": Response,
    "/v1/embeddings": CreateEmbeddingResponse,
    "/v1/completions": Completion,
}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _check_output(lines: list[dict], endpoint: str) -> None:
    for line in lines:
        assert set(line) == {"id", "custom_id", "response", "error"}
        assert line["id"].startswith("batch_req_")
        assert line["error"] is None
        assert line["response"]["status_code"] == 200
        BODY_TYPES[endpoint].model_validate(line["response"]["body"])


def _batch_cost(lines: list[dict], model: str = MODEL) -> float:
    total = 0.0
    for line in lines:
        cost = default_price_table().cost_usd(
            "openai", model, "batch", usage_from_openai(line["response"]["body"]["usage"])
        )
        assert cost is not None
        total += cost
    return total


def test_full_lifecycle_with_finalizing_stall(tokentier_emulator) -> None:
    tokentier_emulator.configure(batch_turnaround_s=3600, finalizing_stall_s=7200)
    c = client(tokentier_emulator)
    n = 40
    batch = submit(c, [chat_line(f"req-{i}") for i in range(n)], metadata={"run": "r1", "dag": "d"})
    assert batch.status == "validating"
    assert batch.id.startswith("batch_")
    assert batch.object == "batch"
    assert batch.metadata == {"run": "r1", "dag": "d"}
    assert batch.model == MODEL
    assert batch.completion_window == "24h"
    assert batch.expires_at == batch.created_at + DAY
    assert batch.output_file_id is None
    assert batch.usage is None

    tokentier_emulator.advance(VALIDATION_MAX_S)
    batch = retrieve(c, batch.id)
    assert batch.status == "in_progress"
    assert batch.in_progress_at is not None
    assert batch.created_at + 30 <= batch.in_progress_at <= batch.created_at + 120
    assert batch.request_counts is not None
    assert batch.request_counts.total == n
    seen = [batch.request_counts.completed]
    for _ in range(6):
        tokentier_emulator.advance(900)
        batch = retrieve(c, batch.id)
        assert batch.request_counts is not None
        seen.append(batch.request_counts.completed)
    assert seen == sorted(seen)
    assert seen[0] < n
    assert batch.status == "finalizing", batch.status  # 5,400+ s covers 1.5x turnaround
    assert batch.request_counts is not None
    assert batch.request_counts.completed == n
    assert batch.finalizing_at is not None
    assert batch.output_file_id is None

    tokentier_emulator.advance(3600)
    assert retrieve(c, batch.id).status == "finalizing"  # stalled
    tokentier_emulator.advance(3700)
    batch = retrieve(c, batch.id)
    assert batch.status == "completed"
    assert batch.completed_at is not None
    assert batch.finalizing_at is not None
    assert batch.completed_at >= batch.finalizing_at + 7200
    assert batch.error_file_id is None
    assert batch.output_file_id is not None
    out_file = c.files.retrieve(batch.output_file_id)
    assert out_file.purpose == "batch_output"
    lines = read_lines(c, batch.output_file_id)
    assert sorted(line["custom_id"] for line in lines) == sorted(f"req-{i}" for i in range(n))
    assert [line["custom_id"] for line in lines] != [f"req-{i}" for i in range(n)]  # shuffled
    _check_output(lines, "/v1/chat/completions")
    bodies = [line["response"]["body"] for line in lines]
    usage = batch.usage
    assert usage is not None
    assert usage.input_tokens == sum(b["usage"]["prompt_tokens"] for b in bodies)
    assert usage.output_tokens == sum(b["usage"]["completion_tokens"] for b in bodies)
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens
    billing = tokentier_emulator.billing()
    assert billing["by_tier"].keys() == {"batch"}
    assert billing["requests_billed"] == n
    assert billing["usd"] == pytest.approx(_batch_cost(lines), abs=1e-9)
    # Reading again never bills twice or rewrites the files.
    again = retrieve(c, batch.id)
    assert again.output_file_id == batch.output_file_id
    assert tokentier_emulator.billing() == billing
    summary = tokentier_emulator.batches()["openai"]
    assert [(s["id"], s["request_count"], s["status"]) for s in summary] == [(batch.id, n, "completed")]


@pytest.mark.parametrize(
    ("lines", "code", "line_no"),
    [
        (["{not json", chat_line("a")], "invalid_json_line", 1),
        ([chat_line("a"), chat_line("a")], "duplicate_custom_id", 2),
        ([chat_line("a"), chat_line("b", model="gpt-6-sol")], "mismatched_model", 2),
        ([chat_line("a"), {**chat_line("b"), "url": "/v1/embeddings"}], "invalid_url", 2),
        ([{**chat_line("a"), "method": "GET"}], "invalid_method", 1),
        ([{**chat_line("a"), "custom_id": "bad id!"}], "invalid_custom_id", 1),
        (
            [{"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": {"messages": []}}],
            "missing_required_parameter",
            1,
        ),
        ([], "empty_file", None),
    ],
)
def test_invalid_input_fails_after_validation(tokentier_emulator, lines, code, line_no) -> None:
    c = client(tokentier_emulator)
    batch = submit(c, lines)
    assert batch.status == "validating"
    tokentier_emulator.advance(VALIDATION_MAX_S)
    batch = retrieve(c, batch.id)
    assert batch.status == "failed"
    assert batch.failed_at is not None
    assert batch.in_progress_at is None
    assert batch.errors is not None
    assert batch.errors.object == "list"
    assert batch.errors.data
    assert batch.errors.data[0].code == code
    assert batch.errors.data[0].line == line_no
    assert batch.output_file_id is None
    assert batch.error_file_id is None
    assert tokentier_emulator.billing()["requests_billed"] == 0


def test_too_many_requests_fails(tokentier_emulator) -> None:
    c = client(tokentier_emulator)
    line = json.dumps(chat_line("x"))
    data = "".join(line.replace('"x"', f'"r{i}"', 1) + "\n" for i in range(50_001)).encode()
    f = upload(c, data)
    batch = c.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h")
    tokentier_emulator.advance(VALIDATION_MAX_S)
    batch = retrieve(c, batch.id)
    assert batch.status == "failed"
    assert batch.errors is not None
    assert batch.errors.data
    assert batch.errors.data[0].code == "too_many_requests"


def test_embeddings_input_limit(tokentier_emulator) -> None:
    c = client(tokentier_emulator)
    lines = [
        {
            "custom_id": f"e{i}",
            "method": "POST",
            "url": "/v1/embeddings",
            "body": {"model": "text-embedding-4-small", "input": ["w"] * 20_000},
        }
        for i in range(3)
    ]
    batch = submit(c, lines, endpoint="/v1/embeddings")
    tokentier_emulator.advance(VALIDATION_MAX_S)
    batch = retrieve(c, batch.id)
    assert batch.status == "failed"
    assert batch.errors
    assert batch.errors.data
    assert batch.errors.data[0].code == "too_many_requests"


def test_token_limit_exceeded(tokentier_emulator) -> None:
    tokentier_emulator.configure(enqueued_token_limit=300)
    c = client(tokentier_emulator)
    first = submit(c, [chat_line(f"a{i}", prompt="x" * 400) for i in range(2)])  # ~200 tokens
    second = submit(c, [chat_line(f"b{i}", prompt="x" * 400) for i in range(2)])
    other_model = submit(c, [chat_line(f"c{i}", prompt="x" * 400, model="gpt-6-sol") for i in range(2)])
    tokentier_emulator.advance(VALIDATION_MAX_S)
    assert retrieve(c, first.id).status == "in_progress"
    failed = retrieve(c, second.id)
    assert failed.status == "failed"
    assert failed.errors
    assert failed.errors.data
    assert failed.errors.data[0].code == "token_limit_exceeded"
    assert retrieve(c, other_model.id).status == "in_progress"


def test_create_rejections(tokentier_emulator) -> None:
    c = client(tokentier_emulator)
    f = upload(c, jsonl([chat_line("a")]))
    create = c.batches.create
    with pytest.raises(openai.BadRequestError, match="input_file_id"):
        create(input_file_id="file-missing", endpoint="/v1/chat/completions", completion_window="24h")
    with pytest.raises(openai.BadRequestError, match="endpoint"):
        create(input_file_id=f.id, endpoint="/v1/nope", completion_window="24h")  # type: ignore[arg-type]
    with pytest.raises(openai.BadRequestError, match="completion_window"):
        create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="48h")  # type: ignore[arg-type]
    for metadata in ({f"k{i}": "v" for i in range(17)}, {"k" * 65: "v"}, {"k": "v" * 513}):
        with pytest.raises(openai.BadRequestError, match="metadata"):
            create(
                input_file_id=f.id,
                endpoint="/v1/chat/completions",
                completion_window="24h",
                metadata=metadata,
            )
    with pytest.raises(openai.NotFoundError):
        c.batches.retrieve("batch_nope")
    assert tokentier_emulator.batches()["openai"] == []


def test_expired_keeps_finished_work(tokentier_emulator) -> None:
    tokentier_emulator.configure(expire_rate=0.5, batch_turnaround_s=3600)
    c = client(tokentier_emulator)
    n = 30
    batch = submit(c, [chat_line(f"r{i}") for i in range(n)])
    tokentier_emulator.advance(6 * 3600)
    mid = retrieve(c, batch.id)
    assert mid.status == "in_progress"
    assert mid.request_counts is not None
    done = mid.request_counts.completed
    assert 0 < done < n
    tokentier_emulator.advance(DAY)
    batch = retrieve(c, batch.id)
    assert batch.status == "expired"
    assert batch.expired_at == batch.expires_at
    assert batch.request_counts is not None
    assert batch.request_counts.completed == done
    out = read_lines(c, batch.output_file_id)
    err = read_lines(c, batch.error_file_id)
    assert len(out) == done
    assert len(err) == n - done
    _check_output(out, "/v1/chat/completions")
    for line in err:
        assert line["response"] is None
        assert line["error"]["code"] == "batch_expired"
        assert line["error"]["message"]
    assert {line["custom_id"] for line in out} | {line["custom_id"] for line in err} == {
        f"r{i}" for i in range(n)
    }
    billing = tokentier_emulator.billing()
    assert billing["requests_billed"] == done
    assert billing["usd"] == pytest.approx(_batch_cost(out), abs=1e-9)


def test_errored_and_invalid_lines_go_to_error_file(tokentier_emulator) -> None:
    tokentier_emulator.configure(error_rate=0.3, batch_turnaround_s=600)
    c = client(tokentier_emulator)
    lines = [chat_line(f"r{i}") for i in range(20)]
    lines.append(
        {"custom_id": "nomsg", "method": "POST", "url": "/v1/chat/completions", "body": {"model": MODEL}}
    )
    batch = submit(c, lines)
    tokentier_emulator.advance(3 * 3600)
    batch = retrieve(c, batch.id)
    assert batch.status == "completed"
    out, err = read_lines(c, batch.output_file_id), read_lines(c, batch.error_file_id)
    assert batch.request_counts is not None
    assert batch.request_counts.completed == len(out)
    assert batch.request_counts.failed == len(err)
    assert len(out) + len(err) == 21
    _check_output(out, "/v1/chat/completions")
    codes = {}
    for line in err:
        assert line["error"] is None
        response = line["response"]
        codes[line["custom_id"]] = response["status_code"]
        assert response["request_id"]
        openai_error = response["body"]["error"]
        assert {"message", "type", "param", "code"} <= set(openai_error)
        expected_type = "invalid_request_error" if response["status_code"] == 400 else "server_error"
        assert openai_error["type"] == expected_type
    assert codes.pop("nomsg") == 400
    assert codes
    assert set(codes.values()) == {500}
    assert tokentier_emulator.billing()["requests_billed"] == len(out)


def test_cancel_gives_partial_output(tokentier_emulator) -> None:
    tokentier_emulator.configure(batch_turnaround_s=7200, cancel_latency_s=600)
    c = client(tokentier_emulator)
    n = 30
    batch = submit(c, [chat_line(f"r{i}") for i in range(n)])
    tokentier_emulator.advance(2400)
    cancelling = strict(c.batches.cancel(batch.id))
    assert cancelling.status == "cancelling"
    assert cancelling.cancelling_at is not None
    assert strict(c.batches.cancel(batch.id)).cancelling_at == cancelling.cancelling_at  # idempotent
    tokentier_emulator.advance(300)
    assert retrieve(c, batch.id).status == "cancelling"
    tokentier_emulator.advance(301)
    batch = retrieve(c, batch.id)
    assert batch.status == "cancelled"
    assert batch.cancelling_at is not None
    assert batch.cancelled_at == batch.cancelling_at + 600
    out, err = read_lines(c, batch.output_file_id), read_lines(c, batch.error_file_id)
    assert 0 < len(out) < n
    assert len(out) + len(err) == n
    assert batch.request_counts is not None
    assert batch.request_counts.completed == len(out)
    assert {line["error"]["code"] for line in err} == {"batch_cancelled"}
    _check_output(out, "/v1/chat/completions")
    assert tokentier_emulator.billing()["usd"] == pytest.approx(_batch_cost(out), abs=1e-9)
    with pytest.raises(openai.ConflictError):
        c.batches.cancel(batch.id)


def test_cancel_while_validating(tokentier_emulator) -> None:
    tokentier_emulator.configure(cancel_latency_s=60)
    c = client(tokentier_emulator)
    batch = submit(c, [chat_line("a")])
    assert strict(c.batches.cancel(batch.id)).status == "cancelling"
    tokentier_emulator.advance(61)
    batch = retrieve(c, batch.id)
    assert batch.status == "cancelled"
    assert batch.output_file_id is None


@pytest.mark.parametrize("endpoint", ["/v1/responses", "/v1/embeddings", "/v1/completions"])
def test_other_endpoints(tokentier_emulator, endpoint) -> None:
    c = client(tokentier_emulator)
    model = "text-embedding-4-small" if endpoint == "/v1/embeddings" else "gpt-6-sol"
    body = {
        "/v1/responses": {"model": model, "input": "hello"},
        "/v1/embeddings": {"model": model, "input": ["a", "b"]},
        "/v1/completions": {"model": model, "prompt": "hello"},
    }[endpoint]
    lines = [{"custom_id": f"r{i}", "method": "POST", "url": endpoint, "body": body} for i in range(5)]
    batch = submit(c, lines, endpoint=endpoint)
    tokentier_emulator.advance(3 * 3600)
    batch = retrieve(c, batch.id)
    assert batch.status == "completed"
    assert batch.model == model
    out = read_lines(c, batch.output_file_id)
    assert len(out) == 5
    _check_output(out, endpoint)
    assert tokentier_emulator.billing()["requests_billed"] == 5


def test_list_paging_newest_first(tokentier_emulator) -> None:
    c = client(tokentier_emulator)
    f = upload(c, jsonl([chat_line("a")]))
    ids = [
        c.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h").id
        for _ in range(5)
    ]
    page = c.batches.list(limit=2)
    assert [b.id for b in page.data] == ids[::-1][:2]
    assert page.has_more is True
    assert [strict(b).id for b in c.batches.list(limit=2)] == ids[::-1]  # auto-pagination via `after`
    last = c.batches.list(limit=2, after=ids[1])
    assert [b.id for b in last.data] == [ids[0]]
    assert last.has_more is False
    with pytest.raises(openai.BadRequestError):
        c.batches.list(limit=101)


def test_list_pages_of_a_hundred_and_counts_calls(tokentier_emulator) -> None:
    c = client(tokentier_emulator)
    f = upload(c, jsonl([chat_line("a")]))
    ids = [
        c.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h").id
        for _ in range(230)
    ]
    before = tokentier_emulator.calls().get("GET /v1/batches", 0)
    assert [b.id for b in c.batches.list(limit=100)] == ids[::-1]  # 3 pages: 100, 100, 30
    assert tokentier_emulator.calls()["GET /v1/batches"] - before == 3
    middle = c.batches.list(limit=100, after=ids[::-1][99])
    assert [b.id for b in middle.data] == ids[::-1][100:200]
    assert middle.has_more
    assert c.batches.list(after="batch_unknown").data == []
    tokentier_emulator.configure(list_error_rate=1.0)
    with pytest.raises(openai.InternalServerError):
        c.batches.list()


def test_poll_errors_surface(tokentier_emulator) -> None:
    c = client(tokentier_emulator)
    batch = submit(c, [chat_line("a")])
    tokentier_emulator.configure(poll_error_rate=1.0)
    with pytest.raises(openai.InternalServerError) as info:
        c.batches.retrieve(batch.id)
    assert info.value.status_code in (500, 502, 503)
    tokentier_emulator.configure(poll_error_rate=0.5)
    outcomes = []
    for _ in range(40):
        try:
            c.batches.retrieve(batch.id)
            outcomes.append(True)
        except openai.InternalServerError:
            outcomes.append(False)
    assert 5 < outcomes.count(False) < 35


def _story(emu) -> tuple:
    emu.configure(error_rate=0.2, expire_rate=0.1, batch_turnaround_s=3600)
    c = client(emu)
    batch = submit(c, [chat_line(f"r{i}") for i in range(25)])
    emu.advance(DAY + 10)
    batch = retrieve(c, batch.id)
    out, err = read_lines(c, batch.output_file_id), read_lines(c, batch.error_file_id)
    return (
        batch.id,
        batch.status,
        batch.output_file_id,
        batch.error_file_id,
        # Absolute timestamps follow the virtual clock, which a reset does not rewind.
        [(line["id"], line["custom_id"], {**line["response"]["body"], "created": 0}) for line in out],
        [(line["custom_id"], line["response"] and line["response"]["status_code"]) for line in err],
        emu.billing(),
    )


def test_determinism(tokentier_emulator) -> None:
    first = _story(tokentier_emulator)
    tokentier_emulator.reset()
    second = _story(tokentier_emulator)
    assert first[:6] == second[:6]
    assert first[6] == second[6]
    assert first[1] == "expired"


@pytest.mark.anyio
async def test_async_many_pollers(tokentier_emulator) -> None:
    import asyncio
    import io

    async with async_client(tokentier_emulator) as c:
        f = await c.files.create(
            file=("in.jsonl", io.BytesIO(jsonl([chat_line(f"r{i}") for i in range(10)]))), purpose="batch"
        )
        batch = await c.batches.create(
            input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        tokentier_emulator.advance(3 * 3600)
        polls = await asyncio.gather(*(c.batches.retrieve(batch.id) for _ in range(200)))
    assert {p.status for p in polls} == {"completed"}
    assert len({p.output_file_id for p in polls}) == 1
    assert tokentier_emulator.billing()["requests_billed"] == 10


def test_fifty_thousand_lines(tokentier_emulator) -> None:
    tokentier_emulator.configure(batch_turnaround_s=3600)
    c = client(tokentier_emulator)
    template = json.dumps(chat_line("ID", prompt="p"))
    data = "".join(template.replace("ID", f"r{i}") + "\n" for i in range(50_000)).encode()
    started = time.monotonic()
    f = upload(c, data)
    batch = c.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h")
    tokentier_emulator.advance(3 * 3600)
    batch = retrieve(c, batch.id)
    assert batch.status == "completed"
    assert batch.request_counts is not None
    assert batch.request_counts.completed == 50_000
    assert batch.output_file_id is not None
    count = 0
    with c.files.with_streaming_response.content(batch.output_file_id) as response:
        for raw in response.iter_lines():
            if raw:
                count += 1
    assert count == 50_000
    assert tokentier_emulator.billing()["requests_billed"] == 50_000
    assert time.monotonic() - started < 60
