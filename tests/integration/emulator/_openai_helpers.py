"""Shared helpers for the OpenAI emulator tests (imported by the test_openai_* modules)."""

from __future__ import annotations

import io
import json
from collections.abc import Iterable
from typing import Any

import openai
from openai.types import Batch, FileObject

from airflow_provider_tokentier.testing.emulator.server import Emulator

#: Longer than any validation phase (30-120 virtual seconds).
VALIDATION_MAX_S = 121
MODEL = "gpt-6-luna"


def client(emu: Emulator, **kw: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=emu.openai_base_url, api_key=kw.pop("api_key", "k"), max_retries=0, **kw)


def async_client(emu: Emulator, **kw: Any) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        base_url=emu.openai_base_url, api_key=kw.pop("api_key", "k"), max_retries=0, **kw
    )


def chat_line(custom_id: str, prompt: str = "hello", model: str = MODEL, **body: Any) -> dict[str, Any]:
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": model, "messages": [{"role": "user", "content": f"{prompt} {custom_id}"}], **body},
    }


def jsonl(lines: Iterable[dict[str, Any] | str]) -> bytes:
    return b"".join((line if isinstance(line, str) else json.dumps(line)).encode() + b"\n" for line in lines)


def upload(c: openai.OpenAI, data: bytes, name: str = "input.jsonl", **kw: Any) -> FileObject:
    f = c.files.create(file=(name, io.BytesIO(data)), purpose="batch", **kw)
    return FileObject.model_validate(f.model_dump())


def submit(
    c: openai.OpenAI, lines: Iterable[dict[str, Any] | str], endpoint: str = "/v1/chat/completions", **kw: Any
) -> Batch:
    f = upload(c, jsonl(lines))
    return strict(c.batches.create(input_file_id=f.id, endpoint=endpoint, completion_window="24h", **kw))  # type: ignore[arg-type]


def strict(batch: Batch) -> Batch:
    """Re-validate a batch strictly from its JSON (not `construct`)."""
    return Batch.model_validate(batch.model_dump(mode="json"))


def retrieve(c: openai.OpenAI, batch_id: str) -> Batch:
    return strict(c.batches.retrieve(batch_id))


def read_lines(c: openai.OpenAI, file_id: str | None) -> list[dict[str, Any]]:
    if file_id is None:
        return []
    text = c.files.content(file_id).text
    assert text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]
