"""Provider adapters over the official ``anthropic`` and ``openai`` SDKs (no Airflow imports).

Sync backends submit, poll, stream results, cancel and recover lost submissions; the async
twins poll and cancel from triggers without blocking the event loop.
"""

from __future__ import annotations

from airflow_provider_tokentier.backends.anthropic import AnthropicBatchBackend, AsyncAnthropicBatchBackend
from airflow_provider_tokentier.backends.base import (
    AsyncBatchBackend,
    BatchBackend,
    BatchStatus,
    Outcome,
    async_batch_backend,
    batch_backend,
)
from airflow_provider_tokentier.backends.openai import AsyncOpenAIBatchBackend, OpenAIBatchBackend
from airflow_provider_tokentier.core.chunking import ANTHROPIC_CAPS, OPENAI_CAPS, ProviderCaps
from airflow_provider_tokentier.core.errors import BatchNotEndedError

__all__ = [
    "ANTHROPIC_CAPS",
    "OPENAI_CAPS",
    "AnthropicBatchBackend",
    "AsyncAnthropicBatchBackend",
    "AsyncBatchBackend",
    "AsyncOpenAIBatchBackend",
    "BatchBackend",
    "BatchNotEndedError",
    "BatchStatus",
    "OpenAIBatchBackend",
    "Outcome",
    "ProviderCaps",
    "async_batch_backend",
    "batch_backend",
]
