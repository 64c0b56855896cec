"""Harvest and land, fed crafted result lines through the real parsers, gate and state files.

Succeeded lines of the documented shape are decoded only in part (custom_id, type, model, usage)
and their response is copied into the row as raw bytes; every other line goes through the
whole-line dict parser. These tests hold both to the row contract: a landed row has the values
`make_result_row` gives for the same outcome, and an odd line lands as the dict parser reads it.
"""

from __future__ import annotations

import datetime
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk import ObjectStoragePath

from airflow_provider_tokentier.backends import anthropic as anthropic_backend
from airflow_provider_tokentier.backends import openai as openai_backend
from airflow_provider_tokentier.backends.base import BatchStatus, Outcome
from airflow_provider_tokentier.core.pricing import Usage
from airflow_provider_tokentier.core.records import SubmittedBatch
from airflow_provider_tokentier.core.result_rows import dumps_line, make_result_row
from airflow_provider_tokentier.state.blockio import copy_blocks, open_block_writer
from airflow_provider_tokentier.workflow.gate import BatchGate, GateSettings

SCOPE = "t0123456789"
MODEL = {"anthropic": "claude-haiku-4-5", "openai": "gpt-6-luna"}
PARSERS = {"anthropic": anthropic_backend.parse_result_line, "openai": openai_backend.parse_result_line}


class _LinesBackend:
    """Yields the outcomes of fixed result lines, parsed by the provider's real parser."""

    def __init__(self, provider: str, lines: list[bytes]) -> None:
        self.provider = provider
        self._lines = lines

    def iter_outcomes(self, batch_id: str) -> Iterator[Outcome]:
        for line in self._lines:
            yield from PARSERS[self.provider](line)


def _request(provider: str, custom_id: str) -> dict[str, Any]:
    messages = [{"role": "user", "content": "hi"}]
    if provider == "anthropic":
        return {
            "custom_id": custom_id,
            "params": {"model": MODEL[provider], "max_tokens": 8, "messages": messages},
        }
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": MODEL[provider], "messages": messages},
    }


def _wire(provider: str, custom_id: str) -> str:
    return f"{SCOPE}-{custom_id}" if provider == "anthropic" else custom_id


def _succeeded_line(provider: str, custom_id: str, response: dict[str, Any]) -> bytes:
    if provider == "anthropic":
        line = {"custom_id": _wire(provider, custom_id), "result": {"type": "succeeded", "message": response}}
    else:
        line = {"id": "r", "custom_id": custom_id, "response": {"status_code": 200, "body": response}}
    return json.dumps(line).encode()


def _harvest_and_land(tmp_path: Path, provider: str, ids: list[str], lines: list[bytes]) -> dict[str, Any]:
    chunk = tmp_path / "chunk.jsonl"
    chunk.write_text("".join(json.dumps(_request(provider, i)) + "\n" for i in ids))
    scope = SCOPE if provider == "anthropic" else None
    batch = SubmittedBatch("batch_1", 0, 0, len(ids), chunk.stat().st_size, f"file://{chunk}", scope)
    (tmp_path / "state").mkdir()
    gate = BatchGate(
        manifest={"batches": [batch.to_dict()], "submitted_at": None},
        state_dir=ObjectStoragePath(f"file://{tmp_path / 'state'}"),
        settings=GateSettings(provider=provider),
        task_key="dag/task",
    )
    status = BatchStatus("batch_1", provider, "ended", "ended", True, len(ids), {}, 0.0)
    gate.harvest(batch, status, _LinesBackend(provider, lines))  # type: ignore[arg-type]
    manifest = gate.land(None, deadline=None)
    manifest["rows"] = {
        row["custom_id"]: row
        for row in map(
            json.loads, Path(manifest["results_uri"].removeprefix("file://")).read_text().splitlines()
        )
    }
    return manifest


def _expected(provider: str, custom_id: str, response: dict[str, Any], usage: Usage, model: str) -> Any:
    """The row `make_result_row` builds for this outcome, as JSON reads it back."""
    row = make_result_row(
        custom_id=custom_id,
        status="succeeded",
        tier="batch",
        provider=provider,
        model=model,
        batch_id="batch_1",
        round=0,
        response=response,
        usage=usage,
        on=datetime.datetime.now(datetime.timezone.utc).date(),
    )
    return json.loads(dumps_line(row))


UNUSUAL = {
    "anthropic": {
        "id": "msg_1",
        "type": "message",
        "model": "claude-haiku-4-5-20261001",
        "content": [
            {"type": "text", "text": 'caf\u00e9 \\ "quoted" \n \u2603 \U0001f600', "citations": None}
        ],
        "stop_reason": "end_turn",
        "container": {"id": "c", "expires_at": "2026-11-29T00:00:00Z", "nested": [[1, 2.5e3, -0.0], {}]},
        "usage": {
            "input_tokens": 1200,
            "output_tokens": 34,
            "cache_read_input_tokens": 500,
            "cache_creation_input_tokens": 300,
            "cache_creation": {"ephemeral_1h_input_tokens": 100, "ephemeral_5m_input_tokens": 200},
            "server_tool_use": {"web_search_requests": 2},
            "service_tier": "batch",
        },
    },
    "openai": {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": "gpt-6-luna-2026-09-01",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "caf\u00e9 \u2603", "refusal": None}}
        ],
        "usage": {
            "prompt_tokens": 1200,
            "completion_tokens": 34,
            "total_tokens": 1234,
            "prompt_tokens_details": {"cached_tokens": 500, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 20, "accepted_prediction_tokens": 0},
        },
        "system_fingerprint": None,
        "service_tier": "flex",
    },
}
UNUSUAL_USAGE = {
    "anthropic": Usage(
        input_tokens=1200,
        output_tokens=34,
        cache_read_tokens=500,
        cache_write_tokens=300,
        cache_write_1h_tokens=100,
    ),
    "openai": Usage(input_tokens=700, output_tokens=34, cache_read_tokens=500, reasoning_tokens=20),
}


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
def test_a_result_with_unusual_fields_lands_its_whole_response(tmp_path, provider):
    response = UNUSUAL[provider]
    line = _succeeded_line(provider, "a", response)
    # The extra fields around the response are skipped, not landed.
    odd = json.loads(line)
    odd["unexpected"] = {"deep": [None, True, "x"]}
    manifest = _harvest_and_land(tmp_path, provider, ["a"], [json.dumps(odd, ensure_ascii=False).encode()])
    row = manifest["rows"]["a"]
    assert row["response"] == response
    assert row == _expected(provider, "a", response, UNUSUAL_USAGE[provider], response["model"])
    assert manifest["cost_usd"] == row["cost_usd"] > 0
    assert manifest["standard_cost_usd"] == row["standard_cost_usd"] == 2 * row["cost_usd"]


def _with_usage(provider: str, **counts: Any) -> dict[str, Any]:
    response = json.loads(json.dumps(UNUSUAL[provider]))
    response["usage"] = counts
    return response


@pytest.mark.parametrize(
    ("provider", "counts", "usage"),
    [
        # Counts the dict parser reads with int(): accepted as before.
        ("anthropic", {"input_tokens": 10.0, "output_tokens": True}, Usage(input_tokens=10, output_tokens=1)),
        ("anthropic", {"input_tokens": "7", "output_tokens": None}, Usage(input_tokens=7)),
        ("openai", {"prompt_tokens": 9.0, "completion_tokens": "3"}, Usage(input_tokens=9, output_tokens=3)),
        # A Responses-API usage: "input_tokens" present, even null, decides which counts are read.
        ("openai", {"input_tokens": None, "output_tokens": 4, "prompt_tokens": 99}, Usage(output_tokens=4)),
    ],
)
def test_counts_of_other_json_types_land_as_the_dict_parser_reads_them(tmp_path, provider, counts, usage):
    response = _with_usage(provider, **counts)
    manifest = _harvest_and_land(tmp_path, provider, ["a"], [_succeeded_line(provider, "a", response)])
    assert manifest["rows"]["a"] == _expected(provider, "a", response, usage, response["model"])


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
def test_a_model_that_is_not_a_string_falls_back_to_the_requested_one(tmp_path, provider):
    response = {**UNUSUAL[provider], "model": 5}
    manifest = _harvest_and_land(tmp_path, provider, ["a"], [_succeeded_line(provider, "a", response)])
    assert manifest["rows"]["a"] == _expected(
        provider, "a", response, UNUSUAL_USAGE[provider], MODEL[provider]
    )


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
def test_malformed_lines_land_errored_with_the_same_reason_and_counts(tmp_path, provider):
    good = _succeeded_line(provider, "ok", UNUSUAL[provider])
    # Not UTF-8 inside the response: the part decoders skip it, so it must still be refused.
    not_utf8 = _succeeded_line(provider, "bytes", UNUSUAL[provider]).replace(b"caf\\u00e9", b"caf\xe9")
    assert b"\xe9" in not_utf8
    counts = {"output_tokens": -1} if provider == "anthropic" else {"completion_tokens": -1}
    negative = _succeeded_line(provider, "negative", _with_usage(provider, **counts))
    no_usage = _succeeded_line(provider, "no_usage", {"id": "x", "model": MODEL[provider]})
    lines = [good, not_utf8, negative, no_usage, good]  # the repeated line is dropped and counted
    manifest = _harvest_and_land(tmp_path, provider, ["ok", "bytes", "negative", "no_usage"], lines)
    rows = manifest["rows"]
    assert manifest["counts"]["succeeded"] == 1
    assert manifest["counts"]["errored"] == 3
    assert manifest["dropped_results"] == {"foreign": 0, "repeated": 1}
    reasons = {cid: rows[cid]["error"]["message"] for cid in ("bytes", "negative", "no_usage")}
    assert reasons["bytes"].startswith(
        f"unreadable {provider} result line: 'utf-8' codec can't decode byte 0xe9"
    )
    assert "must be a non-negative int" in reasons["negative"]
    assert reasons["no_usage"] == f"unreadable {provider} result line: succeeded without " + (
        "a message with usage" if provider == "anthropic" else "usage"
    )
    for cid in ("bytes", "negative", "no_usage"):
        assert rows[cid]["error"]["type"] == "malformed_result"
        assert rows[cid]["error"]["retryable"] is True
        assert (rows[cid]["status"], rows[cid]["response"], rows[cid]["cost_usd"]) == ("errored", None, 0.0)


def test_an_id_too_long_to_travel_verbatim_lands_under_its_own_id(tmp_path):
    long_id = "x" * 60  # sent as {scope}_{line}: see core.wire_ids
    response = UNUSUAL["anthropic"]
    lines = [
        json.dumps(
            {"custom_id": f"{SCOPE}_1", "result": {"type": "succeeded", "message": response}}
        ).encode(),
        _succeeded_line("anthropic", "short", response),
        json.dumps(
            {"custom_id": f"{SCOPE}_7", "result": {"type": "succeeded", "message": response}}
        ).encode(),
    ]
    manifest = _harvest_and_land(tmp_path, "anthropic", ["short", long_id], lines)
    assert sorted(manifest["rows"]) == sorted(["short", long_id])
    assert manifest["rows"][long_id]["response"] == response
    assert manifest["dropped_results"] == {"foreign": 1, "repeated": 0}


def test_copied_files_land_in_order_between_written_rows(tmp_path):
    first = b"".join(b'{"n":%d}\n' % i for i in range(300_000))  # several blocks
    second = b'{"second":1}\n'
    (tmp_path / "first").write_bytes(first)
    (tmp_path / "second").write_bytes(second)
    target = ObjectStoragePath(f"file://{tmp_path / 'target'}")
    with open_block_writer(target) as out:
        out.write(b"head\n")
        copy_blocks(ObjectStoragePath(f"file://{tmp_path / 'first'}"), out)
        out.write(b"middle\n")
        copy_blocks(ObjectStoragePath(f"file://{tmp_path / 'second'}"), out)
        out.write(b"tail\n")
    assert (tmp_path / "target").read_bytes() == b"head\n" + first + b"middle\n" + second + b"tail\n"


@pytest.mark.skipif(not hasattr(os, "copy_file_range"), reason="os.copy_file_range is Linux only")
def test_local_files_are_copied_by_the_kernel(tmp_path):
    (tmp_path / "source").write_bytes(b"rows\n")
    target = ObjectStoragePath(f"file://{tmp_path / 'target'}")
    with (
        open_block_writer(target) as out,
        ObjectStoragePath(f"file://{tmp_path / 'source'}").open("rb") as source,
    ):
        assert out.copy_local_file(source)
    assert (tmp_path / "target").read_bytes() == b"rows\n"
