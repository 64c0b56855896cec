"""Fixtures for the backend tests: real SDK clients pointed at the emulator, and chunk files."""

from __future__ import annotations

import json
import pathlib
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from typing import Any

import anthropic
import openai
import pytest

from airflow_provider_tokentier.backends import (
    AnthropicBatchBackend,
    AsyncAnthropicBatchBackend,
    AsyncOpenAIBatchBackend,
    OpenAIBatchBackend,
)
from airflow_provider_tokentier.testing import Emulator

ANTHROPIC_MODEL = "claude-haiku-4-5"
OPENAI_MODEL = "gpt-6-luna"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def emu(tokentier_emulator: Emulator) -> Emulator:
    """The emulator with a short batch turnaround, so a batch ends after a small clock advance."""
    tokentier_emulator.configure(batch_turnaround_s=60)
    return tokentier_emulator


@pytest.fixture
def anthropic_backend(emu: Emulator) -> Iterator[AnthropicBatchBackend]:
    with anthropic.Anthropic(base_url=emu.base_url, api_key="test", max_retries=0) as client:
        yield AnthropicBatchBackend(client)


@pytest.fixture
def openai_backend(emu: Emulator) -> Iterator[OpenAIBatchBackend]:
    with openai.OpenAI(base_url=emu.openai_base_url, api_key="test", max_retries=0) as client:
        yield OpenAIBatchBackend(client)


@pytest.fixture
async def async_anthropic_backend(emu: Emulator) -> AsyncIterator[AsyncAnthropicBatchBackend]:
    async with anthropic.AsyncAnthropic(base_url=emu.base_url, api_key="test", max_retries=0) as client:
        yield AsyncAnthropicBatchBackend(client)


@pytest.fixture
async def async_openai_backend(emu: Emulator) -> AsyncIterator[AsyncOpenAIBatchBackend]:
    async with openai.AsyncOpenAI(base_url=emu.openai_base_url, api_key="test", max_retries=0) as client:
        yield AsyncOpenAIBatchBackend(client)


def anthropic_row(custom_id: str, **params: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": ANTHROPIC_MODEL,
        "max_tokens": 64,
        "messages": [{"role": "user", "content": f"Summarize item {custom_id}."}],
    }
    body.update(params)
    return {"custom_id": custom_id, "params": body}


def openai_row(custom_id: str, **body_fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": OPENAI_MODEL,
        "messages": [{"role": "user", "content": f"Summarize item {custom_id}."}],
    }
    body.update(body_fields)
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": body}


@pytest.fixture
def write_chunk(tmp_path: pathlib.Path) -> Callable[[Iterable[dict[str, Any]]], pathlib.Path]:
    """Write provider-native rows as a JSONL chunk file and return its path."""
    counter = iter(range(1_000_000))

    def write(rows: Iterable[dict[str, Any]]) -> pathlib.Path:
        path = tmp_path / f"chunk-{next(counter)}.jsonl"
        with path.open("w", encoding="utf-8") as handle:
            for row in rows:
                handle.write(json.dumps(row, separators=(",", ":")) + "\n")
        return path

    return write
