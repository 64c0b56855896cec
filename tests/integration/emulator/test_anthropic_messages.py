"""`POST /v1/messages` on the emulator, through the official Anthropic SDK over real HTTP."""

from __future__ import annotations

from typing import Any, TypeVar

import anthropic
import httpx
import pydantic
import pytest
from anthropic.types import Message

from airflow_provider_tokentier.core.pricing import default_price_table, usage_from_anthropic
from airflow_provider_tokentier.testing.emulator.server import Emulator
from airflow_provider_tokentier.testing.emulator.simulation import estimate_tokens

M = TypeVar("M", bound=pydantic.BaseModel)

MODEL = "claude-haiku-4-5"
LONG = "Background material for the cache. " * 200  # ~1,750 tokens


def strict(model: type[M], raw: str | bytes) -> M:
    """Validate JSON strictly with an SDK type and refuse fields the type does not declare."""
    parsed = model.model_validate_json(raw, strict=True)
    _no_extra(parsed)
    return parsed


def _no_extra(value: Any) -> None:
    if isinstance(value, pydantic.BaseModel):
        assert not value.model_extra, f"undeclared fields on {type(value).__name__}: {value.model_extra}"
        for name in type(value).model_fields:
            _no_extra(getattr(value, name))
    elif isinstance(value, list):
        for item in value:
            _no_extra(item)


def create(client: anthropic.Anthropic, **params: Any) -> Message:
    params.setdefault("model", MODEL)
    params.setdefault("max_tokens", 200)
    raw = client.messages.with_raw_response.create(**params)
    message = strict(Message, raw.http_response.text)
    assert raw.http_response.headers["request-id"].startswith("req_")
    return message


def test_message_shape_tokens_and_billing(
    anthropic_client: anthropic.Anthropic, tokentier_emulator: Emulator
) -> None:
    system = "You are terse."
    content = "Summarize the quarterly report for the board."
    message = create(anthropic_client, system=system, messages=[{"role": "user", "content": content}])

    assert message.id.startswith("msg_")
    assert message.type == "message"
    assert message.role == "assistant"
    assert message.model == MODEL
    assert message.stop_reason == "end_turn"
    assert message.stop_sequence is None
    assert len(message.content) == 1
    assert message.content[0].type == "text"
    assert message.content[0].text.startswith("[You are terse.")
    usage = message.usage
    assert usage.input_tokens == estimate_tokens(f"{system}\n{content}")
    assert usage.cache_creation_input_tokens == 0
    assert usage.cache_read_input_tokens == 0
    assert 0 < usage.output_tokens <= 200
    assert usage.service_tier == "standard"

    expected = default_price_table().cost_usd(
        "anthropic", MODEL, "standard", usage_from_anthropic(usage.model_dump())
    )
    billing = tokentier_emulator.billing()
    assert billing["requests_billed"] == 1
    assert billing["by_tier"]["standard"]["usd"] == pytest.approx(expected)
    assert expected
    assert expected > 0


def test_same_prompt_same_text_and_max_tokens_stop(anthropic_client: anthropic.Anthropic) -> None:
    messages = [{"role": "user", "content": "Describe the release plan in detail, with owners and risks."}]
    first = create(anthropic_client, messages=messages)
    second = create(anthropic_client, messages=messages)
    assert first.content == second.content
    assert first.id != second.id

    short = create(anthropic_client, messages=messages, max_tokens=3)
    assert short.stop_reason == "max_tokens"
    assert short.usage.output_tokens == 3


def test_multi_turn_and_block_content(anthropic_client: anthropic.Anthropic) -> None:
    message = create(
        anthropic_client,
        system=[{"type": "text", "text": "Be brief."}],
        messages=[
            {"role": "user", "content": [{"type": "text", "text": "Hi"}]},
            {"role": "assistant", "content": "Hello."},
            {"role": "user", "content": [{"type": "text", "text": "Plan?"}]},
        ],
    )
    assert message.usage.input_tokens == estimate_tokens("Be brief.\nHi\nHello.\nPlan?")


def test_prompt_caching_write_read_and_ttl(
    anthropic_client: anthropic.Anthropic, tokentier_emulator: Emulator
) -> None:
    system = [{"type": "text", "text": LONG, "cache_control": {"type": "ephemeral"}}]
    prefix = estimate_tokens(LONG)
    total = estimate_tokens(f"{LONG}\nFirst question?")

    first = create(anthropic_client, system=system, messages=[{"role": "user", "content": "First question?"}])
    assert first.usage.cache_creation_input_tokens == prefix
    assert first.usage.cache_creation is not None
    assert first.usage.cache_creation.ephemeral_5m_input_tokens == prefix
    assert first.usage.cache_read_input_tokens == 0
    assert first.usage.input_tokens == total - prefix

    second = create(
        anthropic_client, system=system, messages=[{"role": "user", "content": "First question?"}]
    )
    assert second.usage.cache_read_input_tokens == prefix
    assert second.usage.cache_creation_input_tokens == 0

    # The 5-minute cache lapses; another model never shares a cache entry.
    tokentier_emulator.advance(301)
    third = create(anthropic_client, system=system, messages=[{"role": "user", "content": "First question?"}])
    assert third.usage.cache_creation_input_tokens == prefix
    other = create(
        anthropic_client,
        model="claude-sonnet-5-5",
        system=system,
        messages=[{"role": "user", "content": "Q?"}],
    )
    assert other.usage.cache_creation_input_tokens == prefix

    # Cache writes and reads are billed with their multipliers through the price table.
    table = default_price_table()
    costs = [
        table.cost_usd("anthropic", m.model, "standard", usage_from_anthropic(m.usage.model_dump()))
        for m in (first, second, third, other)
    ]
    assert tokentier_emulator.billing()["usd"] == pytest.approx(sum(c or 0 for c in costs))
    assert (costs[1] or 0) < (costs[0] or 0)


def test_prompt_caching_one_hour_and_several_breakpoints(
    anthropic_client: anthropic.Anthropic, tokentier_emulator: Emulator
) -> None:
    tools = [
        {
            "name": "lookup",
            "description": LONG,
            "input_schema": {"type": "object", "properties": {}},
            "cache_control": {"type": "ephemeral", "ttl": "1h"},
        }
    ]
    first = create(anthropic_client, tools=tools, messages=[{"role": "user", "content": "Go."}])
    tools_tokens = first.usage.cache_creation_input_tokens
    assert tools_tokens
    assert tools_tokens > estimate_tokens(LONG)
    assert first.usage.cache_creation is not None
    assert first.usage.cache_creation.ephemeral_1h_input_tokens == tools_tokens

    tokentier_emulator.advance(1800)  # the 1-hour entry survives
    messages = [
        {
            "role": "user",
            "content": [{"type": "text", "text": LONG + " more", "cache_control": {"type": "ephemeral"}}],
        }
    ]
    second = create(anthropic_client, tools=tools, messages=messages)
    assert second.usage.cache_read_input_tokens == tools_tokens
    assert second.usage.cache_creation_input_tokens
    assert second.usage.cache_creation_input_tokens > 0
    assert second.usage.cache_creation is not None
    assert second.usage.cache_creation.ephemeral_1h_input_tokens == 0
    third = create(anthropic_client, tools=tools, messages=messages)
    assert third.usage.cache_read_input_tokens == tools_tokens + second.usage.cache_creation_input_tokens
    assert third.usage.cache_creation_input_tokens == 0


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({"max_tokens": 10, "messages": [{"role": "user", "content": "x"}]}, "model: Field required"),
        ({"model": MODEL, "messages": [{"role": "user", "content": "x"}]}, "max_tokens: Field required"),
        ({"model": MODEL, "max_tokens": 0, "messages": [{"role": "user", "content": "x"}]}, "max_tokens"),
        ({"model": MODEL, "max_tokens": "5", "messages": [{"role": "user", "content": "x"}]}, "max_tokens"),
        ({"model": MODEL, "max_tokens": 5, "messages": []}, "messages"),
        ({"model": MODEL, "max_tokens": 5, "messages": [{"role": "robot", "content": "x"}]}, "role"),
        (
            {
                "model": MODEL,
                "max_tokens": 5,
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "text", "text": str(i), "cache_control": {"type": "ephemeral"}}
                            for i in range(5)
                        ],
                    }
                ],
            },
            "A maximum of 4 blocks with cache_control",
        ),
    ],
)
def test_invalid_bodies_are_bad_requests(
    anthropic_client: anthropic.Anthropic, tokentier_emulator: Emulator, params: dict[str, Any], fragment: str
) -> None:
    with pytest.raises(anthropic.BadRequestError) as caught:
        anthropic_client.post("/v1/messages", body=params, cast_to=Message)
    assert fragment in caught.value.message
    assert isinstance(caught.value.body, dict)
    assert caught.value.body["error"]["type"] == "invalid_request_error"
    assert caught.value.request_id
    assert caught.value.request_id.startswith("req_")
    assert tokentier_emulator.billing()["requests_billed"] == 0


def test_streaming_is_refused(anthropic_client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.BadRequestError, match="stream"):
        anthropic_client.messages.create(
            model=MODEL, max_tokens=5, messages=[{"role": "user", "content": "x"}], stream=True
        )


def test_invalid_json_is_a_bad_request(tokentier_emulator: Emulator) -> None:
    response = httpx.post(
        f"{tokentier_emulator.base_url}/v1/messages",
        content=b"{not json",
        headers={"x-api-key": "k", "content-type": "application/json"},
    )
    assert response.status_code == 400
    body = response.json()
    assert body["type"] == "error"
    assert body["error"]["type"] == "invalid_request_error"


def test_authentication(tokentier_emulator: Emulator) -> None:
    response = httpx.post(f"{tokentier_emulator.base_url}/v1/messages", json={})
    assert response.status_code == 401
    assert response.json()["error"]["type"] == "authentication_error"

    tokentier_emulator.configure(api_key="secret")
    try:
        params: dict[str, Any] = {
            "model": MODEL,
            "max_tokens": 5,
            "messages": [{"role": "user", "content": "x"}],
        }
        with anthropic.Anthropic(
            base_url=tokentier_emulator.base_url, api_key="wrong", max_retries=0
        ) as client:
            with pytest.raises(anthropic.AuthenticationError):
                client.messages.create(**params)
            with pytest.raises(anthropic.AuthenticationError):
                client.messages.batches.list()
        with anthropic.Anthropic(
            base_url=tokentier_emulator.base_url, api_key="secret", max_retries=0
        ) as client:
            assert client.messages.create(**params).type == "message"
    finally:
        tokentier_emulator.configure(api_key=None)


@pytest.mark.filterwarnings("ignore::airflow_provider_tokentier.core.pricing.UnknownModelPriceWarning")
def test_unknown_model_is_served_and_counted_at_zero_cost(
    anthropic_client: anthropic.Anthropic, tokentier_emulator: Emulator
) -> None:
    message = create(
        anthropic_client, model="claude-imaginary-9", messages=[{"role": "user", "content": "x"}]
    )
    assert message.model == "claude-imaginary-9"
    billing = tokentier_emulator.billing()
    assert billing["requests_billed"] == 1
    assert billing["usd"] == 0
