"""The router's rule table (one case per rule) and its inputs, costs and decision format."""

from __future__ import annotations

import dataclasses
import datetime
import json
import warnings
from typing import Any

import pytest

from airflow_provider_tokentier.core.pricing import PriceTable, UnknownModelPriceWarning, default_price_table
from airflow_provider_tokentier.core.routing import (
    DEFAULT_BATCH_P50_S,
    DEFAULT_BATCH_P95_S,
    TurnaroundHistory,
    WorkloadProfile,
    choose_tier,
    estimate_costs,
    estimate_rescue_margin_s,
    format_duration,
    is_flex_model,
    parse_duration,
    profile_from_requests,
    synchronous_turnaround_s,
)

NOW = datetime.datetime(2026, 11, 15, 1, 0, tzinfo=datetime.timezone.utc)
HOUR = 3600.0


def profile(**overrides: Any) -> WorkloadProfile:
    """The nightly doc refresh on Claude Haiku 5.5, changed by ``overrides``."""
    base: dict[str, Any] = {
        "provider": "anthropic",
        "model": "claude-haiku-5-5",
        "request_count": 5000,
        "input_tokens_per_request": 4000,
        "output_tokens_per_request": 500,
        "latency_budget_s": 8 * HOUR,
    }
    base.update(overrides)
    return WorkloadProfile(**base)


def fast_history(provider: str = "anthropic", model: str = "claude-haiku-5-5") -> TurnaroundHistory:
    """25 observed batches of 10-34 minutes: trusted, p95 well under the default."""
    return TurnaroundHistory(provider, model, samples=tuple(600.0 + 60 * i for i in range(25)))


OPENAI_SOL = {"provider": "openai", "model": "gpt-6-sol"}
OPENAI_LUNA = {"provider": "openai", "model": "gpt-6-luna-2026-09-01"}
SMALL = {"request_count": 1, "input_tokens_per_request": 2000, "output_tokens_per_request": 200}

# (case id, profile overrides, history, expected tier, a phrase the reasons must contain)
RULES: list[tuple[str, dict[str, Any], TurnaroundHistory | None, str, str]] = [
    # Rule: sub-second budgets -> standard, whatever the volume or savings.
    ("sub-second budget", {"latency_budget_s": 0.5, **OPENAI_SOL}, None, "standard", "sub-second"),
    # Rule: a human or an agent loop waits -> standard, even with a day to spare and a big saving.
    ("interactive", {"interactive": True, "latency_budget_s": 24 * HOUR}, None, "standard", "waits on"),
    ("interactive, no budget", {"interactive": True, "latency_budget_s": None}, None, "standard", "waits on"),
    # Rule: seconds to minutes -> flex where offered...
    ("seconds, flex model", {**SMALL, **OPENAI_LUNA, "latency_budget_s": 90}, None, "flex", "Flex fits"),
    ("minutes, flex model", {**OPENAI_SOL, "request_count": 200, "latency_budget_s": 900}, None, "flex", ""),
    # ... else standard.
    ("seconds, no flex (anthropic)", {**SMALL, "latency_budget_s": 90}, None, "standard", "offers no flex"),
    (
        "minutes, no flex (model)",
        {
            **SMALL,
            "provider": "openai",
            "model": "gpt-6-sol-mini",
            "latency_budget_s": 900,
            "expected_spend_usd": 0.5,
        },
        None,
        "standard",
        "offers no flex",
    ),
    (
        "flex too slow for the budget",
        {**OPENAI_SOL, "request_count": 2000, "latency_budget_s": 600},
        None,
        "standard",
        "Flex would typically take",
    ),
    # Rule: hours -> batch when p95 x stages + rescue margin fits.
    ("nightly 5,000-doc refresh", {}, None, "batch", "covers a single batch stage"),
    ("nightly refresh on openai", {**OPENAI_SOL}, None, "batch", "batch at half price"),
    (
        "deadline instead of budget",
        {"latency_budget_s": None, "deadline": NOW + datetime.timedelta(hours=10)},
        None,
        "batch",
        "",
    ),
    (
        "two stages fit in a day",
        {"chained_batch_stages": 2, "latency_budget_s": 24 * HOUR},
        None,
        "batch",
        "a chain of 2 batch stages",
    ),
    # A chain that cannot fit is named, and the work goes to flex or standard.
    (
        "three-stage chain does not fit",
        {"chained_batch_stages": 3},
        None,
        "standard",
        "a chain of 3 batch stages needs 18h at p95",
    ),
    (
        "three-stage chain, flex model",
        {"chained_batch_stages": 3, **OPENAI_SOL},
        None,
        "flex",
        "a chain of 3 batch stages",
    ),
    (
        "default p95 does not fit 2h",
        {"latency_budget_s": 2 * HOUR},
        None,
        "standard",
        "0 of the 20 anthropic/claude-haiku-5-5 batches",
    ),
    # History replaces the defaults once trusted.
    (
        "trusted fast history fits 2h",
        {"latency_budget_s": 2 * HOUR},
        fast_history(),
        "batch",
        "p95 of 25 recorded anthropic/claude-haiku-5-5 batches",
    ),
    # Rule: volume below the engineering crossover -> not batch.
    ("one-off 50-doc summary", {"request_count": 50}, None, "standard", "under the $1.00 crossover"),
    ("one-off 50-doc summary, flex model", {"request_count": 50, **OPENAI_LUNA}, None, "flex", "crossover"),
    ("crossover lowered", {"request_count": 50, "min_batch_savings_usd": 0.0}, None, "batch", ""),
    ("expected spend clears crossover", {"request_count": 50, "expected_spend_usd": 10.0}, None, "batch", ""),
    ("expected spend under crossover", {"expected_spend_usd": 1.5}, None, "standard", "crossover"),
    # Rule: caching-dominated -> compare with batch cache hits treated as best effort.
    (
        "cached long prompts, short answers",
        {
            "model": "claude-sonnet-5-5",
            "input_tokens_per_request": 50000,
            "output_tokens_per_request": 100,
            "cached_input_ratio": 0.9,
        },
        None,
        "standard",
        "Caching-dominated",
    ),
    (
        "cached prompts, long answers",
        {
            "model": "claude-sonnet-5-5",
            "input_tokens_per_request": 2000,
            "output_tokens_per_request": 2000,
            "cached_input_ratio": 0.9,
            "latency_budget_s": 24 * HOUR,
        },
        None,
        "batch",
        "batch stays cheaper",
    ),
    (
        "cached on a flex model",
        {
            **OPENAI_SOL,
            "input_tokens_per_request": 50000,
            "output_tokens_per_request": 100,
            "cached_input_ratio": 0.95,
        },
        None,
        "flex",
        "not cheaper than flex",
    ),
    # Below the threshold there is no caching rule, but batch (costed without cache hits) still loses.
    (
        "79% cached is not caching-dominated",
        {
            "model": "claude-sonnet-5-5",
            "input_tokens_per_request": 50000,
            "output_tokens_per_request": 100,
            "cached_input_ratio": 0.79,
        },
        None,
        "standard",
        "more than standard: batch cache hits are best effort",
    ),
]


@pytest.mark.filterwarnings("ignore::airflow_provider_tokentier.core.pricing.UnknownModelPriceWarning")
@pytest.mark.parametrize(
    ("overrides", "history", "tier", "phrase"),
    [case[1:] for case in RULES],
    ids=[case[0] for case in RULES],
)
def test_rule_table(overrides, history, tier, phrase):
    decision = choose_tier(profile(**overrides), history=history, now=NOW)
    text = " ".join(decision.reasons)
    assert decision.tier == tier, text
    assert phrase in text
    assert decision.reasons
    assert all(r.endswith(".") for r in decision.reasons)


def test_caching_rule_applies_only_from_the_threshold():
    below = choose_tier(profile(cached_input_ratio=0.79), now=NOW)
    assert not any("Caching-dominated" in r for r in below.reasons)
    at = choose_tier(profile(cached_input_ratio=0.8), now=NOW)
    assert any("Caching-dominated" in r for r in at.reasons)


def test_nightly_batch_decision_costs_and_finish():
    decision = choose_tier(profile(), now=NOW)
    # 20M input tokens at $0.10/M + 2.5M output at $0.50/M.
    assert decision.estimated_cost_usd == {"standard": 3.25, "flex": None, "batch": 1.625}
    assert decision.savings_usd == 1.625
    assert decision.expected_finish == NOW + datetime.timedelta(seconds=DEFAULT_BATCH_P50_S)
    assert decision.expected_finish_p95 == NOW + datetime.timedelta(seconds=DEFAULT_BATCH_P95_S)
    assert decision.expected_finish_by_tier["flex"] is None
    assert decision.rescue_margin_s == pytest.approx(
        estimate_rescue_margin_s("anthropic", 5000, 4000, 500), rel=1e-9
    )
    assert decision.budget_s == 8 * HOUR


def test_flex_costs_half_with_cache_and_batch_assumes_no_hits():
    costs = estimate_costs(
        profile(
            **OPENAI_SOL,
            request_count=1000,
            input_tokens_per_request=1000,
            output_tokens_per_request=0,
            cached_input_ratio=0.5,
        ),
        on=NOW.date(),
    )
    # 500k uncached at $2 + 500k cached at $0.20 = $1.10 standard; flex half; batch 1M at $1.
    assert costs == {"standard": 1.1, "flex": 0.55, "batch": 1.0}


def test_rescue_margin_decides_whether_batch_fits():
    tight = profile(latency_budget_s=DEFAULT_BATCH_P95_S + 600)
    assert choose_tier(tight, now=NOW, rescue_margin_s=300).tier == "batch"
    decision = choose_tier(tight, now=NOW, rescue_margin_s=1200)
    assert decision.tier == "standard"
    assert "20m rescue margin" in " ".join(decision.reasons)


def test_budget_and_deadline_take_the_earlier():
    both = profile(latency_budget_s=24 * HOUR, deadline=NOW + datetime.timedelta(hours=2))
    decision = choose_tier(both, now=NOW)
    assert decision.budget_s == 2 * HOUR
    assert decision.tier == "standard"


def test_forced_tier_skips_rules_but_estimates_every_tier():
    decision = choose_tier(profile(request_count=50), now=NOW, force_tier="batch")
    assert decision.tier == "batch"
    assert decision.forced
    assert "forced" in decision.reasons[0]
    assert decision.estimated_cost_usd["standard"] == 0.0325


def test_explicit_flex_capability_overrides_the_known_list():
    assert choose_tier(profile(**SMALL, latency_budget_s=90, flex_capable=True), now=NOW).tier == "flex"
    off = profile(**SMALL, **OPENAI_SOL, latency_budget_s=90, flex_capable=False)
    assert choose_tier(off, now=NOW).tier == "standard"


@pytest.mark.parametrize(
    ("provider", "model", "flex"),
    [
        ("openai", "gpt-6-sol", True),
        ("openai", "gpt-6.1-sol-2026-10-01", True),
        ("openai", "gpt-6-luna-latest", True),
        ("openai", "gpt-6-sol-mini", False),
        ("openai", "text-embedding-4-small", False),
        ("anthropic", "claude-haiku-5-5", False),
        ("anthropic", "gpt-6-sol", False),
    ],
)
def test_flex_model_list(provider, model, flex):
    assert is_flex_model(provider, model) is flex


def test_unknown_model_costs_are_null_and_routing_uses_time():
    table = PriceTable(default_price_table().prices())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        decision = choose_tier(profile(model="claude-mystery-9"), now=NOW, prices=table)
    assert decision.estimated_cost_usd == {"standard": None, "flex": None, "batch": None}
    assert decision.tier == "batch"
    assert "crossover could not be checked" in " ".join(decision.reasons)
    assert sum(issubclass(w.category, UnknownModelPriceWarning) for w in caught) == 1


def test_expected_spend_scales_tier_estimates():
    decision = choose_tier(profile(**OPENAI_SOL, expected_spend_usd=40.0), now=NOW)
    assert decision.estimated_cost_usd == {"standard": 40.0, "flex": 20.0, "batch": 20.0}


def test_price_overrides_are_used():
    table = default_price_table().with_overrides(
        {"anthropic": {"claude-haiku-5-5": {"input": 1, "output": 5, "effective": "2026-11-01"}}}
    )
    decision = choose_tier(profile(request_count=50), now=NOW, prices=table)
    assert decision.estimated_cost_usd["standard"] == 0.325


def test_to_dict_is_json_ready():
    decision = choose_tier(profile(chained_batch_stages=2, latency_budget_s=24 * HOUR), now=NOW)
    data = json.loads(json.dumps(decision.to_dict()))
    assert data["tier"] == "batch"
    assert data["expected_finish"] == "2026-11-15T02:00:00+00:00"
    assert data["expected_finish_p95"] == "2026-11-15T07:00:00+00:00"
    assert data["expected_finish_by_tier"]["flex"] is None
    assert set(data["expected_finish_by_tier"]["standard"]) == {"p50", "p95"}
    assert data["estimated_cost_usd"] == {"standard": 3.25, "flex": None, "batch": 1.625}
    assert data["savings_usd"] == 1.625
    assert data["decided_at"] == NOW.isoformat()
    assert isinstance(data["reasons"], list)
    assert data["reasons"]


def test_decision_is_frozen() -> None:
    decision = choose_tier(profile(), now=NOW)
    with pytest.raises(dataclasses.FrozenInstanceError):
        decision.tier = "standard"  # type: ignore[misc]  # the point: it is frozen


# -- bad inputs --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"latency_budget_s": -5}, "latency_budget_s must be >= 0"),
        ({"latency_budget_s": 0}, "latency_budget_s must be positive"),
        ({"provider": "mistral"}, "unknown provider 'mistral'"),
        ({"request_count": 0}, "request_count must be an int >= 1"),
        ({"request_count": 2.5}, "request_count must be an int"),
        ({"input_tokens_per_request": -1}, "input_tokens_per_request"),
        ({"cached_input_ratio": 1.2}, "cached_input_ratio must be between 0 and 1"),
        ({"cached_input_ratio": -0.1}, "cached_input_ratio must be between 0 and 1"),
        ({"chained_batch_stages": 0}, "chained_batch_stages must be an int >= 1"),
        ({"min_batch_savings_usd": -1}, "min_batch_savings_usd"),
        ({"expected_spend_usd": float("nan")}, "expected_spend_usd must be a finite number"),
        ({"latency_budget_s": None}, "give a latency_budget_s and/or a deadline"),
        ({"deadline": datetime.datetime(2026, 11, 16, 9)}, "timezone-aware"),
        ({"model": ""}, "model must be a non-empty string"),
    ],
)
def test_bad_profiles_are_rejected(overrides, message):
    with pytest.raises(ValueError, match=message):
        profile(**overrides)


def test_deadline_in_the_past_is_rejected():
    late = profile(latency_budget_s=None, deadline=NOW - datetime.timedelta(minutes=1))
    with pytest.raises(ValueError, match="is in the past"):
        choose_tier(late, now=NOW)


@pytest.mark.parametrize("tier", ["priority", "Batch", "cheap"])
def test_unknown_forced_tier_is_rejected(tier):
    with pytest.raises(ValueError, match=f"unknown tier '{tier}'"):
        choose_tier(profile(), now=NOW, force_tier=tier)


def test_forced_flex_without_flex_is_rejected():
    with pytest.raises(ValueError, match="does not offer the flex tier"):
        choose_tier(profile(), now=NOW, force_tier="flex")


def test_history_for_another_model_is_rejected():
    with pytest.raises(ValueError, match="history is for openai/gpt-6-sol"):
        choose_tier(profile(), now=NOW, history=fast_history("openai", "gpt-6-sol"))


def test_naive_now_and_negative_margin_are_rejected():
    with pytest.raises(ValueError, match="timezone-aware"):
        choose_tier(profile(), now=NOW.replace(tzinfo=None))
    with pytest.raises(ValueError, match="rescue_margin_s"):
        choose_tier(profile(), now=NOW, rescue_margin_s=-1)


# -- turnaround, durations, helpers ------------------------------------------------------------
def test_history_needs_enough_samples_before_it_is_trusted():
    few = TurnaroundHistory("anthropic", "m", samples=(60.0,) * 19)
    assert not few.trusted
    assert (few.p50(), few.p95()) == (DEFAULT_BATCH_P50_S, DEFAULT_BATCH_P95_S)
    enough = few.with_sample(7200.0)
    assert enough.trusted
    assert enough.p50() == 60.0
    assert enough.p95() == 60.0  # nearest rank: the 19th of 20
    spread = TurnaroundHistory("anthropic", "m", samples=tuple(float(i) for i in range(1, 101)))
    assert (spread.p50(), spread.p95()) == (50.0, 95.0)


def test_history_rejects_bad_samples():
    with pytest.raises(ValueError, match="finite and >= 0"):
        TurnaroundHistory("anthropic", "m", samples=(-1.0,))


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("500ms", 0.5), ("90s", 90), ("15m", 900), ("8h", 28800), ("2d", 172800), ("45", 45), ("1.5h", 5400)],
)
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["-5s", "soon", "5 weeks", ""])
def test_parse_duration_rejects(text):
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.45, "450ms"), (42, "42s"), (900, "15m"), (3600, "1h"), (25500, "7h 05m"), (183600, "2d 03h")],
)
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text


def test_synchronous_turnaround_model():
    p50, p95 = synchronous_turnaround_s("standard", 32, 0, 100, concurrency=16)
    assert p50 == 2 * 3.0  # two waves of 1 s overhead + 100 tokens at 50/s
    assert p95 == 3.0 + 9.0
    flex50, flex95 = synchronous_turnaround_s("flex", 32, 0, 100, concurrency=16)
    assert flex50 == 12.0
    assert flex95 == 6.0 + 900.0
    with pytest.raises(ValueError, match="synchronous tier must be 'standard' or 'flex'"):
        synchronous_turnaround_s("batch", 1, 1, 1)


def test_rescue_margin_includes_cancel_latency():
    assert estimate_rescue_margin_s("openai", 0, 100, 100) == 600
    assert estimate_rescue_margin_s("anthropic", 16, 0, 100) == 300 + 9.0


def test_profile_from_requests_estimates_tokens():
    rows = [
        {
            "custom_id": f"r{i}",
            "params": {
                "model": "claude-haiku-5-5",
                "max_tokens": 400,
                "messages": [{"role": "user", "content": "x" * 4000}],
            },
        }
        for i in range(10)
    ]
    built = profile_from_requests(rows, provider="anthropic", model="claude-haiku-5-5", latency_budget_s=60)
    assert built.request_count == 10
    assert 1000 < built.input_tokens_per_request < 1100
    assert built.output_tokens_per_request == 400
    with pytest.raises(ValueError, match="no request rows"):
        profile_from_requests([], provider="anthropic", model="m", latency_budget_s=60)
