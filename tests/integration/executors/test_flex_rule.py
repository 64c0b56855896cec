"""One flex-model rule: the router, the sync-tier executor and the emulator agree on every model id."""

from __future__ import annotations

from pathlib import Path

import openai
import pytest

from airflow_provider_tokentier.backends.sync_tiers import run_sync_tier
from airflow_provider_tokentier.core.errors import NonFlexModelError
from airflow_provider_tokentier.core.models import FLEX_MODELS
from airflow_provider_tokentier.core.routing import WorkloadProfile
from airflow_provider_tokentier.testing import Emulator
from tests.integration.executors.conftest import chat_rows, openai_factory

MODEL_IDS = [
    ("openai", "gpt-6-sol", True),
    ("openai", "gpt-6.1-sol", True),
    ("openai", "gpt-6-luna", True),
    ("openai", "gpt-6-luna@2026", True),
    ("openai", "gpt-6-luna-2026-09-01", True),
    ("openai", "gpt-6.1-sol-2026-10-01", True),
    ("openai", "gpt-6-sol-latest", True),
    ("openai", "gpt-6-luna-mini", False),
    ("openai", "gpt-6-sol-mini", False),
    ("openai", "gpt-6-luna-mini-2026-09-01", False),
    ("openai", "gpt-6-nova", False),
    ("openai", "gpt-6", False),
    ("anthropic", "claude-haiku-5-5", False),
    ("anthropic", "claude-sonnet-5-5-20261001", False),
]


def _router_says_flex(provider: str, model: str) -> bool:
    profile = WorkloadProfile(
        provider=provider,
        model=model,
        request_count=1,
        input_tokens_per_request=10,
        output_tokens_per_request=10,
        latency_budget_s=3600.0,
    )
    return profile.offers_flex


def _executor_says_flex(emu: Emulator, model: str, out: Path) -> bool:
    """The executor, told the known flex models, refuses a non-flex model before any call."""
    try:
        run_sync_tier(
            chat_rows(1, model=model),
            provider="openai",
            tier="flex",
            client=openai_factory(emu.openai_base_url),
            out=out,
            flex_models=FLEX_MODELS["openai"],
            non_flex_model="error",
        )
    except NonFlexModelError:
        return False
    return True


def _emulator_says_flex(emu: Emulator, model: str) -> bool:
    client = openai.OpenAI(base_url=emu.openai_base_url, api_key="test", max_retries=0)
    refusal = None
    try:
        reply = client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "hi"}], service_tier="flex"
        )
    except openai.BadRequestError as exc:
        refusal = str(exc)
    finally:
        client.close()
    if refusal is not None:
        assert "Flex processing is not available" in refusal, refusal
        return False
    assert reply.service_tier == "flex"
    return True


@pytest.mark.filterwarnings("ignore::airflow_provider_tokentier.core.pricing.UnknownModelPriceWarning")
@pytest.mark.parametrize(("provider", "model", "flex"), MODEL_IDS)
def test_router_executor_and_emulator_agree(
    tokentier_emulator: Emulator, tmp_path: Path, provider: str, model: str, flex: bool
) -> None:
    answers = {
        "router": _router_says_flex(provider, model),
        "executor": _executor_says_flex(tokentier_emulator, model, tmp_path / "rows.jsonl"),
        "emulator": _emulator_says_flex(tokentier_emulator, model),
    }
    assert answers == {"router": flex, "executor": flex, "emulator": flex}
