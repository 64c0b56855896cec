from __future__ import annotations

import datetime
import typing

import pytest

from airflow_provider_tokentier.core import jsonl
from airflow_provider_tokentier.core.pricing import (
    DEFAULT_PRICES,
    PriceTable,
    UnknownModelPriceWarning,
    Usage,
)
from airflow_provider_tokentier.core.result_rows import (
    PROVIDERS,
    RESULT_STATUSES,
    TIERS,
    LandedRow,
    OutcomeCounts,
    ResultRow,
    dumps_line,
    is_retryable_error,
    loads_line,
    make_error,
    make_result_row,
)

NOV = datetime.date(2026, 11, 15)
ROW_KEYS = {
    "custom_id",
    "status",
    "tier",
    "provider",
    "model",
    "batch_id",
    "round",
    "response",
    "error",
    "usage",
    "cost_usd",
    "standard_cost_usd",
}


@pytest.fixture
def prices() -> PriceTable:
    return PriceTable(DEFAULT_PRICES)


def test_contract_constants():
    assert RESULT_STATUSES == ("succeeded", "errored", "expired", "canceled", "missing", "skipped_budget")
    assert TIERS == ("batch", "flex", "standard")
    assert PROVIDERS == ("anthropic", "openai")
    assert set(typing.get_type_hints(ResultRow)) == ROW_KEYS


@pytest.mark.parametrize(
    ("tier", "cost", "standard_cost"),
    [("batch", 0.01, 0.02), ("flex", 0.01, 0.02), ("standard", 0.02, 0.02)],
)
def test_succeeded_row_is_priced_at_tier_and_standard(tier, cost, standard_cost, prices):
    usage = Usage(input_tokens=5000, output_tokens=1000)  # sonnet: 0.01 + 0.01 at standard
    row = make_result_row(
        custom_id="doc-1",
        status="succeeded",
        tier=tier,
        provider="anthropic",
        model="claude-sonnet-5-5-20261001",
        batch_id="msgbatch_1",
        round=1,
        response={"id": "msg_1"},
        usage=usage,
        prices=prices,
        on=NOV,
    )
    assert set(row) == ROW_KEYS
    assert (row["cost_usd"], row["standard_cost_usd"]) == (cost, standard_cost)
    assert row["usage"] == usage.to_dict()
    assert (row["batch_id"], row["round"], row["response"], row["error"]) == (
        "msgbatch_1",
        1,
        {"id": "msg_1"},
        None,
    )


@pytest.mark.parametrize("status", ["errored", "expired", "canceled", "missing"])
def test_unbilled_rows_cost_zero(status, prices):
    error = make_error("anthropic", "api_error", "boom") if status == "errored" else None
    row = make_result_row(
        custom_id="doc-1",
        status=status,
        tier="batch",
        provider="anthropic",
        model="claude-opus-5-5",
        error=error,
        prices=prices,
        on=NOV,
    )
    assert row["usage"] == Usage().to_dict()
    assert row["cost_usd"] == 0.0
    assert row["standard_cost_usd"] == 0.0
    assert row["response"] is None
    assert row["error"] == error


def test_unbilled_row_rejects_usage(prices):
    with pytest.raises(ValueError, match="not billed"):
        make_result_row(
            custom_id="doc-1",
            status="expired",
            tier="batch",
            provider="openai",
            model="gpt-6-luna",
            usage=Usage(input_tokens=1),
            prices=prices,
        )


@pytest.mark.parametrize("status", ["succeeded", "missing"])
def test_unknown_model_costs_none(status, prices):
    usage = Usage(input_tokens=10) if status == "succeeded" else None
    with pytest.warns(UnknownModelPriceWarning):
        row = make_result_row(
            custom_id="a",
            status=status,
            tier="batch",
            provider="openai",
            model="gpt-9",
            usage=usage,
            prices=prices,
            on=NOV,
        )
    assert row["cost_usd"] is None
    assert row["standard_cost_usd"] is None


@pytest.mark.parametrize(
    ("field", "value"),
    [("status", "failed"), ("tier", "priority"), ("provider", "cohere")],
)
def test_make_result_row_rejects_values_outside_the_contract(field, value, prices):
    kwargs = {
        "custom_id": "a",
        "status": "missing",
        "tier": "batch",
        "provider": "openai",
        "model": "gpt-6-luna",
    }
    kwargs[field] = value
    with pytest.raises(ValueError, match=f"unknown {field}"):
        make_result_row(**kwargs, prices=prices)


def test_result_row_round_trips_through_json_line(prices):
    row = make_result_row(
        custom_id="a",
        status="succeeded",
        tier="flex",
        provider="openai",
        model="gpt-6-luna",
        response={"output": "ü"},
        usage=Usage(input_tokens=3, output_tokens=4, reasoning_tokens=2),
        prices=prices,
        on=NOV,
    )
    assert loads_line(dumps_line(row) + b"\n") == row


@pytest.mark.parametrize(
    ("error_type", "retryable"),
    [
        ("invalid_request_error", False),
        ("authentication_error", False),
        ("permission_error", False),
        ("not_found_error", False),
        ("request_too_large", False),
        ("api_error", True),
        ("overloaded_error", True),
        ("rate_limit_error", True),
        ("timeout_error", True),
        (529, True),
        (400, False),
    ],
)
def test_anthropic_retryability(error_type, retryable):
    assert is_retryable_error("anthropic", error_type) is retryable


@pytest.mark.parametrize(
    ("code", "retryable"),
    [
        (500, True),
        (502, True),
        (429, True),
        (408, True),
        (0, True),
        ("503", True),
        (400, False),
        (401, False),
        (404, False),
        ("request_timeout", True),
        ("batch_expired", True),
        ("batch_cancelled", True),
        ("server_error", True),
        ("rate_limit_exceeded", True),
        ("token_limit_exceeded", True),
        ("invalid_request_error", False),
        ("context_length_exceeded", False),
    ],
)
def test_openai_retryability(code, retryable):
    assert is_retryable_error("openai", code) is retryable


def test_make_error():
    assert make_error("openai", 429, "slow down") == {
        "type": "429",
        "message": "slow down",
        "retryable": True,
    }
    assert make_error("anthropic", "invalid_request_error", "bad")["retryable"] is False
    with pytest.raises(ValueError, match="unknown provider 'cohere'"):
        is_retryable_error("cohere", "api_error")


def test_outcome_counts():
    counts = OutcomeCounts()
    assert counts.to_dict() == dict.fromkeys(RESULT_STATUSES, 0)
    counts.add("succeeded")
    counts.add("succeeded")
    counts.add("expired", 3)
    assert counts.to_dict() == {
        "succeeded": 2,
        "errored": 0,
        "expired": 3,
        "canceled": 0,
        "missing": 0,
        "skipped_budget": 0,
    }
    assert list(counts.to_dict()) == list(RESULT_STATUSES)
    assert counts.total == 5
    with pytest.raises(ValueError, match="unknown status 'cancelled'"):
        counts.add("cancelled")


@pytest.mark.parametrize(
    "obj",
    [
        {"b": 1, "a": [1, 2.5, None, True], "c": {"z": 'é\n"\\', "y": ""}},
        {"usage": {"input_tokens": 0}, "cost_usd": 0.00864185},
    ],
)
def test_msgspec_and_stdlib_encode_identically(obj):
    line = dumps_line(obj)
    assert line == jsonl._stdlib_encode(obj)
    assert list(loads_line(line)) == list(obj)  # key order kept
    assert jsonl._stdlib_decode(line) == loads_line(line) == obj


@pytest.mark.parametrize("data", [b"[1]", b'"x"', b"{", b""])
def test_loads_line_rejects_non_objects(data):
    with pytest.raises(ValueError, match=r"expected a JSON object|truncated"):
        loads_line(data)


def test_a_landed_row_has_the_result_row_contract_keys_in_order() -> None:
    # Harvest encodes LandedRow structs straight into results.jsonl; the documented contract is
    # ResultRow. The two are declared apart (a struct to encode, a TypedDict to type dicts).
    assert LandedRow.__struct_fields__ == tuple(ResultRow.__annotations__)
