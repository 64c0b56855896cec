"""The async twins (used by triggers): retrieve and cancel through the async SDK clients."""

from __future__ import annotations

import anthropic
import openai
import pytest

from airflow_provider_tokentier.backends import (
    AnthropicBatchBackend,
    AsyncAnthropicBatchBackend,
    AsyncBatchBackend,
    AsyncOpenAIBatchBackend,
    BatchBackend,
    OpenAIBatchBackend,
    async_batch_backend,
    batch_backend,
)
from airflow_provider_tokentier.testing import Emulator
from tests.integration.backends.conftest import anthropic_row, openai_row

pytestmark = pytest.mark.anyio


async def test_anthropic_async_retrieve_and_cancel(
    emu: Emulator,
    anthropic_backend: AnthropicBatchBackend,
    async_anthropic_backend: AsyncAnthropicBatchBackend,
    write_chunk,
):
    emu.configure(batch_turnaround_s=4 * 3600, cancel_latency_s=60)
    batch_id = anthropic_backend.submit(
        write_chunk(anthropic_row(f"a{i}") for i in range(10)), request_count=10, tag={}
    )

    status = await async_anthropic_backend.retrieve(batch_id)
    assert status == anthropic_backend.retrieve(batch_id)
    assert (status.phase, status.ended, status.total) == ("running", False, 10)

    await async_anthropic_backend.cancel(batch_id)
    assert (await async_anthropic_backend.retrieve(batch_id)).phase in ("canceling", "ended")
    emu.advance(600)
    status = await async_anthropic_backend.retrieve(batch_id)
    assert status.ended
    assert status.counts["canceled"] > 0
    await async_anthropic_backend.cancel(batch_id)  # already ended: not an error


async def test_openai_async_retrieve_and_cancel(
    emu: Emulator,
    openai_backend: OpenAIBatchBackend,
    async_openai_backend: AsyncOpenAIBatchBackend,
    write_chunk,
):
    emu.configure(batch_turnaround_s=4 * 3600, cancel_latency_s=60)
    batch_id = openai_backend.submit(
        write_chunk(openai_row(f"o{i}") for i in range(10)), request_count=10, tag={}
    )
    emu.advance(600)

    status = await async_openai_backend.retrieve(batch_id)
    assert status == openai_backend.retrieve(batch_id)
    assert status.phase == "running"
    assert not status.ended

    await async_openai_backend.cancel(batch_id)
    assert (await async_openai_backend.retrieve(batch_id)).phase in ("canceling", "ended")
    emu.advance(600)
    status = await async_openai_backend.retrieve(batch_id)
    assert (status.status, status.ended) == ("cancelled", True)
    assert status.counts["canceled"] > 0
    await async_openai_backend.cancel(batch_id)  # already ended: not an error


async def test_async_retrieve_surfaces_transient_errors(
    emu: Emulator, async_openai_backend: AsyncOpenAIBatchBackend
):
    # No retry loop in retrieve: the trigger owns the backoff, so a 404 or 5xx reaches it.
    with pytest.raises(openai.NotFoundError):
        await async_openai_backend.retrieve("batch_does_not_exist")


def test_factories(emu: Emulator):
    sync_a = anthropic.Anthropic(base_url=emu.base_url, api_key="test")
    sync_o = openai.OpenAI(base_url=emu.openai_base_url, api_key="test")
    assert isinstance(batch_backend("anthropic", sync_a), AnthropicBatchBackend)
    assert isinstance(batch_backend("openai", sync_o), OpenAIBatchBackend)
    assert isinstance(batch_backend("openai", sync_o), BatchBackend)
    async_a = async_batch_backend(
        "anthropic", anthropic.AsyncAnthropic(base_url=emu.base_url, api_key="test")
    )
    async_o = async_batch_backend("openai", openai.AsyncOpenAI(base_url=emu.openai_base_url, api_key="test"))
    assert isinstance(async_a, AsyncAnthropicBatchBackend)
    assert isinstance(async_a, AsyncBatchBackend)
    assert isinstance(async_o, AsyncOpenAIBatchBackend)
    with pytest.raises(ValueError, match="unknown provider"):
        batch_backend("gemini", sync_a)
    sync_a.close()
    sync_o.close()
