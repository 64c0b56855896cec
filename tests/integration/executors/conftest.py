"""Helpers for the synchronous-tier executor tests: request rows and client factories."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anthropic
import openai

from airflow_provider_tokentier.core.requests import iter_validated

OPENAI_MODEL = "gpt-6-luna"  # offers flex on the emulator
NON_FLEX_MODEL = "gpt-6-nova"  # no flex tier (and no known price)
ANTHROPIC_MODEL = "claude-haiku-4-5"
EMBEDDING_MODEL = "text-embedding-4-small"


def chat_rows(n: int, model: str = OPENAI_MODEL, prefix: str = "r") -> Iterator[dict[str, Any]]:
    raw = (
        {
            "custom_id": f"{prefix}{i}",
            "body": {"model": model, "messages": [{"role": "user", "content": f"Summarize item {i}."}]},
        }
        for i in range(n)
    )
    return iter_validated(raw, "openai", endpoint="/v1/chat/completions")


def responses_rows(n: int, model: str = OPENAI_MODEL) -> Iterator[dict[str, Any]]:
    raw = (
        {"custom_id": f"r{i}", "body": {"model": model, "input": f"Classify ticket {i}."}} for i in range(n)
    )
    return iter_validated(raw, "openai", endpoint="/v1/responses")


def embedding_rows(n: int) -> Iterator[dict[str, Any]]:
    raw = ({"custom_id": f"e{i}", "body": {"model": EMBEDDING_MODEL, "input": f"doc {i}"}} for i in range(n))
    return iter_validated(raw, "openai", endpoint="/v1/embeddings")


def anthropic_rows(n: int) -> Iterator[dict[str, Any]]:
    raw = (
        {
            "custom_id": f"a{i}",
            "params": {
                "model": ANTHROPIC_MODEL,
                "max_tokens": 64,
                "messages": [{"role": "user", "content": f"Summarize item {i}."}],
            },
        }
        for i in range(n)
    )
    return iter_validated(raw, "anthropic")


def openai_factory(base_url: str, **kwargs: Any) -> Any:
    """A zero-argument factory: the client is built (and closed) on the run's event loop."""
    return lambda: openai.AsyncOpenAI(base_url=base_url, api_key="test", **kwargs)


def anthropic_factory(base_url: str, **kwargs: Any) -> Any:
    return lambda: anthropic.AsyncAnthropic(base_url=base_url, api_key="test", **kwargs)
