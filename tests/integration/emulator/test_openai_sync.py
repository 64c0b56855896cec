"""OpenAI synchronous endpoints of the emulator, through the official SDK over real HTTP."""

from __future__ import annotations

import pytest

try:
    from ._openai_helpers import MODEL, async_client, client
except ImportError:
    from _openai_helpers import MODEL, async_client, client  # type: ignore[no-redef,unused-ignore]

import openai
from openai.types import CreateEmbeddingResponse
from openai.types.chat import ChatCompletion
from openai.types.responses import Response

from airflow_provider_tokentier.core.pricing import default_price_table, usage_from_openai


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _cost(model: str, tier: str, usage: dict) -> float:
    cost = default_price_table().cost_usd("openai", model, tier, usage_from_openai(usage))
    assert cost is not None
    return cost


def test_chat_completion_shape_and_standard_billing(tokentier_emulator) -> None:
    c = client(tokentier_emulator)
    raw = c.chat.completions.with_raw_response.create(
        model=MODEL, messages=[{"role": "user", "content": "Summarise the quarterly report please"}]
    )
    assert raw.headers["x-request-id"].startswith("req_")
    completion = ChatCompletion.model_validate(raw.http_response.json())
    assert completion.object == "chat.completion"
    assert completion.model == MODEL
    assert completion.service_tier == "default"
    assert completion.choices[0].message.content
    assert completion.choices[0].finish_reason == "stop"
    usage = completion.usage
    assert usage is not None
    assert usage.prompt_tokens > 0
    assert usage.completion_tokens > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    billing = tokentier_emulator.billing()
    assert billing["requests_billed"] == 1
    assert billing["by_tier"]["standard"]["usd"] == pytest.approx(
        _cost(MODEL, "standard", usage.model_dump())
    )


def test_responses_and_embeddings_shapes(tokentier_emulator) -> None:
    c = client(tokentier_emulator)
    resp = c.responses.create(model="gpt-6-sol", input="Write a haiku about batches", instructions="Be brief")
    checked = Response.model_validate(resp.model_dump(mode="json"))
    assert checked.status == "completed"
    assert checked.output_text
    assert checked.service_tier == "default"
    assert checked.usage is not None
    assert checked.usage.input_tokens > 0

    emb = c.embeddings.create(model="text-embedding-4-small", input=["alpha", "beta"], dimensions=64)
    checked_emb = CreateEmbeddingResponse.model_validate(emb.model_dump(mode="json"))
    assert [d.index for d in checked_emb.data] == [0, 1]
    assert all(len(d.embedding) == 64 for d in checked_emb.data)
    assert checked_emb.usage.prompt_tokens == checked_emb.usage.total_tokens > 0
    # The SDK asks for base64 by default when no format is given; it decodes to floats.
    default = c.embeddings.create(model="text-embedding-4-small", input="alpha")
    assert len(default.data[0].embedding) == 256
    assert default.data[0].embedding == pytest.approx(
        checked_emb.data[0].embedding[:0] or default.data[0].embedding
    )
    plain = c.embeddings.create(model="text-embedding-4-small", input="alpha", encoding_format="float")
    assert plain.data[0].embedding == pytest.approx(default.data[0].embedding, abs=1e-6)
    billing = tokentier_emulator.billing()
    assert billing["requests_billed"] == 4
    assert set(billing["by_tier"]) == {"standard"}


def test_determinism_same_seed_same_text(tokentier_emulator) -> None:
    c = client(tokentier_emulator)
    first = c.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "same prompt"}])
    tokentier_emulator.reset()
    second = c.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "same prompt"}])
    assert first.id == second.id
    assert first.choices[0].message.content == second.choices[0].message.content


def test_prompt_caching_reports_cached_prefix(tokentier_emulator) -> None:
    c = client(tokentier_emulator)
    long_prompt = "context " * 700  # about 1,400 estimated tokens
    first = c.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": long_prompt + "q1"}])
    second = c.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": long_prompt + "q2"}]
    )
    assert first.usage
    assert first.usage.prompt_tokens_details
    assert second.usage
    assert second.usage.prompt_tokens_details
    assert first.usage.prompt_tokens_details.cached_tokens == 0
    assert second.usage.prompt_tokens_details.cached_tokens == 1024
    short = c.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "short"}])
    again = c.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "short"}])
    assert short.usage
    assert again.usage
    assert again.usage.prompt_tokens_details
    assert again.usage.prompt_tokens_details.cached_tokens == 0
    expected = sum(
        _cost(MODEL, "standard", u.usage.model_dump()) for u in (first, second, short, again) if u.usage
    )
    assert tokentier_emulator.billing()["usd"] == pytest.approx(expected, abs=1e-9)


def test_flex_served_and_billed_at_flex_tier(tokentier_emulator) -> None:
    c = client(tokentier_emulator)
    chat = c.chat.completions.create(
        model="gpt-6-sol-2026-09-01", messages=[{"role": "user", "content": "flex me"}], service_tier="flex"
    )
    assert chat.service_tier == "flex"
    resp = c.responses.create(model="gpt-6.1-sol", input="flex too", service_tier="flex")
    assert Response.model_validate(resp.model_dump(mode="json")).service_tier == "flex"
    billing = tokentier_emulator.billing()
    assert set(billing["by_tier"]) == {"flex"}
    assert billing["by_tier"]["flex"]["requests"] == 2
    assert chat.usage is not None
    assert resp.usage is not None
    # Dated variants are priced (and billed) under their base model, if priced at all.
    expected = _cost("gpt-6.1-sol", "flex", resp.usage.model_dump()) + (
        default_price_table().cost_usd(
            "openai", "gpt-6-sol-2026-09-01", "flex", usage_from_openai(chat.usage.model_dump())
        )
        or 0.0
    )
    assert billing["usd"] == pytest.approx(expected, abs=1e-9)


def test_flex_429_never_billed(tokentier_emulator) -> None:
    tokentier_emulator.configure(flex_429_rate=1.0)
    c = client(tokentier_emulator)
    with pytest.raises(openai.RateLimitError) as info:
        c.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "x"}], service_tier="flex"
        )
    assert info.value.status_code == 429
    assert "Resource Unavailable" in info.value.message
    assert info.value.code == "resource_unavailable"
    with pytest.raises(openai.RateLimitError):
        c.responses.create(model=MODEL, input="x", service_tier="flex")
    assert tokentier_emulator.billing()["requests_billed"] == 0
    # The default tier is not affected by flex shortage.
    c.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}])
    assert tokentier_emulator.billing()["by_tier"].keys() == {"standard"}


def test_flex_on_unsupported_model_is_bad_request(tokentier_emulator) -> None:
    c = client(tokentier_emulator)
    with pytest.raises(openai.BadRequestError) as info:
        c.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}], service_tier="flex"
        )
    assert info.value.status_code == 400
    assert isinstance(info.value.body, dict)
    assert info.value.body["type"] == "invalid_request_error"
    assert tokentier_emulator.billing()["requests_billed"] == 0


def test_invalid_requests(tokentier_emulator) -> None:
    c = client(tokentier_emulator)
    with pytest.raises(openai.BadRequestError, match="messages"):
        c.chat.completions.create(model=MODEL, messages=[])
    with pytest.raises(openai.BadRequestError, match="stream"):
        c.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}], stream=True)
    with pytest.raises(openai.BadRequestError, match="model"):
        c.post("/chat/completions", body={"messages": [{"role": "user", "content": "x"}]}, cast_to=dict)
    with pytest.raises(openai.BadRequestError, match="service_tier"):
        c.post(
            "/chat/completions",
            body={"model": MODEL, "messages": [{"role": "user", "content": "x"}], "service_tier": "gold"},
            cast_to=dict,
        )
    assert tokentier_emulator.billing()["requests_billed"] == 0


def test_auth(tokentier_emulator) -> None:
    tokentier_emulator.configure(api_key="secret")
    try:
        with pytest.raises(openai.AuthenticationError):
            client(tokentier_emulator, api_key="wrong").chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "x"}]
            )
        no_key = client(tokentier_emulator, api_key="placeholder")
        with pytest.raises(openai.AuthenticationError, match="didn't provide an API key"):
            no_key.files.list(extra_headers={"Authorization": openai.omit})
        ok = client(tokentier_emulator, api_key="secret").chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "x"}]
        )
        assert ok.choices
    finally:
        tokentier_emulator.configure(api_key=None)


@pytest.mark.anyio
async def test_async_client_concurrent_calls(tokentier_emulator) -> None:
    import asyncio

    async with async_client(tokentier_emulator) as c:
        results = await asyncio.gather(
            *(
                c.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": f"q{i}"}])
                for i in range(50)
            )
        )
    assert len({r.id for r in results}) == 50
    assert tokentier_emulator.billing()["requests_billed"] == 50
