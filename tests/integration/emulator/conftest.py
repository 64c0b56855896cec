"""Fixtures for the emulator integration tests (the `tokentier_emulator` fixture comes from our plugin)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import anthropic
import pytest

from airflow_provider_tokentier.testing.emulator.server import Emulator


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def anthropic_client(tokentier_emulator: Emulator) -> Iterator[anthropic.Anthropic]:
    """The official Anthropic SDK pointed at the emulator, with retries off so faults show."""
    with anthropic.Anthropic(base_url=tokentier_emulator.base_url, api_key="k", max_retries=0) as client:
        yield client


@pytest.fixture
async def async_anthropic_client(tokentier_emulator: Emulator) -> AsyncIterator[anthropic.AsyncAnthropic]:
    """The official async Anthropic SDK pointed at the emulator, with retries off."""
    async with anthropic.AsyncAnthropic(
        base_url=tokentier_emulator.base_url, api_key="k", max_retries=0
    ) as client:
        yield client
