"""Result-line parsing and the download helper, fed crafted bytes (no server needed).

The emulator never writes malformed lines, so the validation paths are exercised here directly.
"""

from __future__ import annotations

import contextlib
import json
import logging
import pathlib
import random
from collections.abc import Iterator

import httpx2
import pytest

from airflow_provider_tokentier.backends import anthropic as anthropic_backend
from airflow_provider_tokentier.backends import openai as openai_backend
from airflow_provider_tokentier.backends.base import (
    BatchStatus,
    Outcome,
    split_lines,
    stream_result_lines,
)


def _line(obj: object) -> bytes:
    return json.dumps(obj).encode()


def _one(outcomes: Iterator[Outcome]) -> Outcome:
    [outcome] = list(outcomes)
    return outcome


# -- Anthropic -----------------------------------------------------------------------------------


def test_anthropic_succeeded_line():
    message = {
        "id": "msg_1",
        "type": "message",
        "model": "claude-haiku-4-5",
        "content": [],
        "usage": {"input_tokens": 10, "output_tokens": 5, "cache_read_input_tokens": 3},
    }
    outcome = _one(
        anthropic_backend.parse_result_line(
            _line({"custom_id": "a", "result": {"type": "succeeded", "message": message}})
        )
    )
    assert (outcome.custom_id, outcome.status, outcome.model) == ("a", "succeeded", "claude-haiku-4-5")
    assert outcome.usage.to_dict() == {
        "input_tokens": 10,
        "output_tokens": 5,
        "cache_read_tokens": 3,
        "cache_write_tokens": 0,
        "reasoning_tokens": 0,
    }


@pytest.mark.parametrize(
    ("error_type", "retryable"),
    [("invalid_request_error", False), ("api_error", True), ("overloaded_error", True)],
)
def test_anthropic_errored_line(error_type: str, retryable: bool):
    line = _line(
        {
            "custom_id": "e",
            "result": {
                "type": "errored",
                "error": {
                    "type": "error",
                    "error": {"type": error_type, "message": "boom"},
                    "request_id": "r",
                },
            },
        }
    )
    outcome = _one(anthropic_backend.parse_result_line(line))
    assert outcome.status == "errored"
    assert outcome.error == {"type": error_type, "message": "boom", "retryable": retryable}


@pytest.mark.parametrize(
    "line",
    [
        b'{"custom_id":"m1","result":{"type":"succeeded","message":{"usage":"nope"}}}',
        b'{"custom_id":"m1","result":{"type":"mystery"}}',
        b'{"custom_id":"m1","result":{"type":"succeeded","message":{"usage":{"input_tokens":-1}}}}',
        b'{"custom_id":"m1","result":{"type":"errored","error":{"type":"error","error":{}}}}',
        b'{"custom_id":"m1","result": truncated',
    ],
)
def test_anthropic_malformed_lines_become_errored(line: bytes):
    outcome = _one(anthropic_backend.parse_result_line(line))
    assert (outcome.custom_id, outcome.status) == ("m1", "errored")
    assert outcome.error is not None
    assert outcome.error["type"] == "malformed_result"
    assert outcome.error["retryable"] is True


def test_line_without_custom_id_is_logged_not_raised(caplog: pytest.LogCaptureFixture):
    with caplog.at_level(logging.WARNING):
        assert list(anthropic_backend.parse_result_line(b"not json at all")) == []
        assert list(openai_backend.parse_result_line(b'{"response":{"status_code":200}}')) == []
    assert caplog.text.count("without a readable custom_id") == 2


# -- OpenAI --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status_code", "retryable"),
    [(0, True), (408, True), (429, True), (500, True), (503, True), (400, False)],
)
def test_openai_non_200_lines_are_errored(status_code: int, retryable: bool):
    body = {"error": {"type": "server_error" if status_code else None, "message": "x", "code": None}}
    line = _line(
        {"id": "b", "custom_id": "o", "response": {"status_code": status_code, "body": body}, "error": None}
    )
    outcome = _one(openai_backend.parse_result_line(line))
    assert outcome.status == "errored"
    assert outcome.response is None
    assert outcome.error is not None
    assert outcome.error["retryable"] is retryable
    assert outcome.error["type"] == ("server_error" if status_code else "http_0")


def test_openai_status_0_without_body():
    line = _line({"custom_id": "z", "response": {"status_code": 0, "body": None}, "error": None})
    outcome = _one(openai_backend.parse_result_line(line))
    assert outcome.error == {
        "type": "http_0",
        "message": "no response recorded for this request",
        "retryable": True,
    }


@pytest.mark.parametrize(
    ("code", "status", "retryable"),
    [
        ("batch_expired", "expired", True),
        ("batch_cancelled", "canceled", True),
        ("request_timeout", "errored", True),
        ("invalid_json_line", "errored", False),
    ],
)
def test_openai_error_file_lines(code: str, status: str, retryable: bool):
    line = _line({"custom_id": "q", "response": None, "error": {"code": code, "message": "m"}})
    outcome = _one(openai_backend.parse_result_line(line))
    assert outcome.status == status
    assert outcome.error == {"type": code, "message": "m", "retryable": retryable}


def test_openai_succeeded_line_normalizes_usage():
    body = {
        "object": "chat.completion",
        "model": "gpt-6-luna-2026-09-01",
        "usage": {
            "prompt_tokens": 100,
            "completion_tokens": 7,
            "prompt_tokens_details": {"cached_tokens": 40},
        },
    }
    line = _line({"custom_id": "s", "response": {"status_code": 200, "body": body}, "error": None})
    outcome = _one(openai_backend.parse_result_line(line + b"\r"))
    assert (outcome.status, outcome.model) == ("succeeded", "gpt-6-luna-2026-09-01")
    assert (outcome.usage.input_tokens, outcome.usage.cache_read_tokens, outcome.usage.output_tokens) == (
        60,
        40,
        7,
    )


@pytest.mark.parametrize(
    "line",
    [
        b'{"custom_id":"m2","response":{"status_code":true,"body":{}}}',
        b'{"custom_id":"m2","response":{"status_code":"200","body":{}}}',
        b'{"custom_id":"m2","response":{"status_code":200,"body":"text"}}',
        b'{"custom_id":"m2","response":null,"error":null}',
        b'{"custom_id":"m2","response":null,"error":{"message":"no code"}}',
        b'{"custom_id":"m2","response":{"status_code":200,"body":{"usage":{"prompt_tokens":-5}}}}',
    ],
)
def test_openai_malformed_lines_become_errored(line: bytes):
    outcome = _one(openai_backend.parse_result_line(line))
    assert outcome.error is not None
    assert (outcome.custom_id, outcome.status, outcome.error["type"]) == ("m2", "errored", "malformed_result")


def test_openai_batch_status_counts_and_failure():
    from openai.types import Batch

    def batch(status: str, **extra: object) -> Batch:
        return Batch.model_validate(
            {
                "id": "batch_1",
                "object": "batch",
                "endpoint": "/v1/chat/completions",
                "input_file_id": "file_1",
                "completion_window": "24h",
                "status": status,
                "created_at": 1_800_000_000,
                "request_counts": {"total": 10, "completed": 6, "failed": 1},
                **extra,
            }
        )

    assert openai_backend.batch_status(batch("in_progress")).counts["processing"] == 3
    expired = openai_backend.batch_status(batch("expired"))
    assert expired.counts == {"processing": 0, "succeeded": 6, "errored": 1, "expired": 3, "canceled": 0}
    errors = {"object": "list", "data": [{"code": "c", "message": f"m{i}", "line": i} for i in range(7)]}
    failed = openai_backend.batch_status(batch("failed", errors=errors))
    assert failed.failure == "c: m0; c: m1; c: m2; c: m3; c: m4; (+2 more)"
    assert BatchStatus.from_dict(json.loads(json.dumps(failed.to_dict()))) == failed


# -- shared helpers ------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(20))
def test_streamed_lines_are_the_split_lines_of_the_body_however_it_is_chunked(seed: int):
    rng = random.Random(seed)
    body = b"".join(
        rng.choice([b'{"n":%d}\n' % i, b"\n", b"  \r\n", b'{"n":%d} \r\n' % i]) for i in range(200)
    ) + rng.choice([b"", b'{"last":1}', b"   "])
    body = b'{"first":0}\n' + body
    cuts = sorted(rng.sample(range(1, len(body)), 30))
    chunks = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True)]

    @contextlib.contextmanager
    def open_stream() -> Iterator[_ChunksResponse]:
        yield _ChunksResponse(chunks)

    lines = list(stream_result_lines(open_stream, is_transient=lambda e: False, what="t"))
    assert lines == list(split_lines([body]))


class _ChunksResponse:
    def __init__(self, chunks: list[bytes]) -> None:
        self._chunks = chunks

    def iter_bytes(self, chunk_size: int | None = None) -> Iterator[bytes]:
        yield from self._chunks


def test_split_lines_across_chunk_boundaries():
    chunks = [b'{"a":1}\n{"b"', b':2}\n\n  \n{"c":3}', b""]
    assert list(split_lines(chunks)) == [b'{"a":1}', b'{"b":2}', b'{"c":3}']


class _FlakyResponse:
    def __init__(self, data: bytes, break_after: int | None) -> None:
        self._data = data
        self._break_after = break_after

    def iter_bytes(self, chunk_size: int | None = None) -> Iterator[bytes]:
        for index, line in enumerate(self._data.splitlines(keepends=True)):
            if self._break_after is not None and index == self._break_after:
                raise httpx2.RemoteProtocolError("peer closed connection")
            yield line


def test_stream_resumes_after_a_mid_stream_break_without_duplicates():
    data = b"".join(b'{"n":%d}\n' % i for i in range(10))
    breaks = [4, 7, None]

    @contextlib.contextmanager
    def open_stream() -> Iterator[_FlakyResponse]:
        yield _FlakyResponse(data, breaks.pop(0))

    lines = list(
        stream_result_lines(
            open_stream, is_transient=lambda e: isinstance(e, httpx2.TransportError), what="t"
        )
    )
    assert lines == data.splitlines()


def test_stream_gives_up_on_a_permanent_error():
    calls = []

    @contextlib.contextmanager
    def open_stream() -> Iterator[_FlakyResponse]:
        calls.append(1)
        raise PermissionError("no")
        yield  # pragma: no cover

    with pytest.raises(PermissionError):
        list(stream_result_lines(open_stream, is_transient=lambda e: False, what="t"))
    assert len(calls) == 1


def test_anthropic_request_body_is_reiterable_and_sized(tmp_path: pathlib.Path):
    path = tmp_path / "c.jsonl"
    rows = [
        {"custom_id": f"r{i}", "params": {"model": "m", "max_tokens": 1, "messages": []}} for i in range(3)
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\r\n\n")
    body = anthropic_backend._RequestsBody(path)
    first, second = b"".join(body), b"".join(body)
    assert first == second
    assert len(first) == body.content_length()
    assert json.loads(first) == {"requests": rows}
