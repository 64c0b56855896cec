"""Provider adapters over the official ``anthropic`` and ``openai`` SDKs (no Airflow imports).

Sync backends submit, poll, stream results, cancel and recover lost submissions; the async
twins poll and cancel from triggers without blocking the event loop.
"""

from __future__ import annotations

from typing import Any

from airflow_provider_tokentier.backends.anthropic import AnthropicBatchBackend, AsyncAnthropicBatchBackend
from airflow_provider_tokentier.backends.base import (
    ANTHROPIC_LIMITS,
    OPENAI_LIMITS,
    AsyncBatchBackend,
    BatchBackend,
    BatchLimits,
    BatchNotEndedError,
    BatchStatus,
    Outcome,
)
from airflow_provider_tokentier.backends.openai import AsyncOpenAIBatchBackend, OpenAIBatchBackend

__all__ = [
    "ANTHROPIC_LIMITS",
    "OPENAI_LIMITS",
    "AnthropicBatchBackend",
    "AsyncAnthropicBatchBackend",
    "AsyncBatchBackend",
    "AsyncOpenAIBatchBackend",
    "BatchBackend",
    "BatchLimits",
    "BatchNotEndedError",
    "BatchStatus",
    "OpenAIBatchBackend",
    "Outcome",
    "async_batch_backend",
    "batch_backend",
]


def batch_backend(provider: str, client: Any) -> BatchBackend:
    """Return the sync backend for ``provider`` ("anthropic" or "openai") around an SDK client."""
    if provider == "anthropic":
        return AnthropicBatchBackend(client)
    if provider == "openai":
        return OpenAIBatchBackend(client)
    raise ValueError(f"unknown provider {provider!r}; expected 'anthropic' or 'openai'")


def async_batch_backend(provider: str, client: Any) -> AsyncBatchBackend:
    """Return the async backend for ``provider`` around an async SDK client."""
    if provider == "anthropic":
        return AsyncAnthropicBatchBackend(client)
    if provider == "openai":
        return AsyncOpenAIBatchBackend(client)
    raise ValueError(f"unknown provider {provider!r}; expected 'anthropic' or 'openai'")
