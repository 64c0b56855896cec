from __future__ import annotations

import datetime
import json
import math
import random
import warnings

import pytest

from airflow_provider_tokentier.core.pricing import (
    DEFAULT_PRICES,
    ModelPrice,
    PriceTable,
    UnknownModelPriceWarning,
    Usage,
    default_price_table,
    round_to_nanos,
    savings_usd,
    sum_usd,
    usage_from_anthropic,
    usage_from_openai,
)

NOV = datetime.date(2026, 11, 15)
MILLION = 1_000_000


@pytest.fixture
def table() -> PriceTable:
    return PriceTable(DEFAULT_PRICES)


@pytest.mark.parametrize(
    ("provider", "model", "known", "input_price", "output_price"),
    [
        ("anthropic", "claude-opus-5-5", "claude-opus-5-5", 4, 20),
        ("anthropic", "claude-sonnet-5-5-20261001", "claude-sonnet-5-5", 2, 10),
        ("anthropic", "claude-haiku-5-5-latest", "claude-haiku-5-5", 0.10, 0.50),
        ("anthropic", "claude-haiku-4-5-20251001", "claude-haiku-4-5", 1, 5),
        ("openai", "gpt-6-luna-2026-09-01", "gpt-6-luna", 0.10, 0.50),
        ("openai", "gpt-6.1-sol", "gpt-6.1-sol", 2, 10),
        ("openai", "text-embedding-4-small", "text-embedding-4-small", 0.02, 0),
    ],
)
def test_lookup_exact_and_dated_suffix(provider, model, known, input_price, output_price, table):
    price = table.lookup(provider, model, NOV)
    assert price is not None
    assert (price.model, price.input, price.output) == (known, input_price, output_price)


@pytest.mark.parametrize(
    ("provider", "model"),
    [
        ("openai", "gpt-6-sol-mini"),  # a different model, not a dated gpt-6-sol
        ("openai", "gpt-6-solar"),
        ("openai", "gpt-6"),
        ("anthropic", "gpt-6-sol"),  # right model, wrong provider
        ("anthropic", "claude-unknown-1"),
    ],
)
def test_lookup_does_not_invent_prices_from_loose_prefixes(provider, model, table):
    assert table.lookup(provider, model, NOV) is None


def test_lookup_prefers_longest_known_prefix():
    table = PriceTable(
        [
            ModelPrice.create("openai", "m", input=1, output=1),
            ModelPrice.create("openai", "m-2", input=2, output=2),
        ]
    )
    price = table.lookup("openai", "m-2-2026-01-01", NOV)
    assert price is not None
    assert price.model == "m-2"


def test_lookup_by_effective_date():
    table = PriceTable(
        [
            ModelPrice.create("openai", "m", input=3, output=9, effective=datetime.date(2026, 1, 1)),
            ModelPrice.create("openai", "m", input=2, output=8, effective=datetime.date(2026, 6, 1)),
        ]
    )
    assert table.lookup("openai", "m", datetime.date(2025, 12, 31)) is None
    assert table.lookup("openai", "m", datetime.date(2026, 5, 31)).input == 3
    assert table.lookup("openai", "m", datetime.date(2026, 6, 1)).input == 2
    # A datetime is accepted and reduced to its date.
    assert table.lookup("openai", "m", datetime.datetime(2026, 6, 1, 23, 59)).input == 2


def test_default_prices_are_not_in_force_before_their_effective_date(table):
    assert table.lookup("anthropic", "claude-opus-5-5", datetime.date(2026, 9, 30)) is None
    assert table.lookup("openai", "gpt-6-sol", datetime.date(2026, 9, 1)) is not None


@pytest.mark.parametrize(
    ("tier", "expected"),
    [("standard", 12.0), ("batch", 6.0), ("flex", 6.0), ("priority", 24.0)],
)
def test_tier_multipliers(tier, expected, table):
    usage = Usage(input_tokens=MILLION, output_tokens=MILLION)
    assert table.cost_usd("anthropic", "claude-sonnet-5-5", tier, usage, NOV) == expected


def test_unknown_tier_is_rejected(table):
    with pytest.raises(ValueError, match="unknown tier"):
        table.cost_usd("anthropic", "claude-sonnet-5-5", "cheap", Usage(), NOV)


@pytest.mark.parametrize(
    ("tier", "usage", "expected"),
    [
        # Sonnet input 2/M: read 0.1x = 0.2/M, 5-minute write 1.25x = 2.5/M, 1-hour write 2x = 4/M.
        ("standard", Usage(cache_read_tokens=MILLION), 0.2),
        ("batch", Usage(cache_read_tokens=MILLION), 0.1),
        ("standard", Usage(cache_write_tokens=MILLION), 2.5),
        ("batch", Usage(cache_write_tokens=MILLION), 1.25),
        ("batch", Usage(cache_write_tokens=MILLION, cache_write_1h_tokens=MILLION), 2.0),
        (
            "batch",
            Usage(
                input_tokens=1000,
                output_tokens=500,
                cache_read_tokens=10_000,
                cache_write_tokens=4000,
                cache_write_1h_tokens=1000,
            ),
            # (1000*2 + 500*10 + 10000*0.2 + 3000*2.5 + 1000*4) / 1e6 * 0.5
            0.01025,
        ),
    ],
)
def test_anthropic_cache_prices_stack_with_tier(tier, usage, expected, table):
    assert table.cost_usd("anthropic", "claude-sonnet-5-5", tier, usage, NOV) == expected


@pytest.mark.parametrize(
    ("model", "tier", "expected"),
    [
        # 800 uncached input, 200 cached, 100 output.
        ("gpt-6-sol", "standard", (800 * 2 + 200 * 0.20 + 100 * 10) / MILLION),
        ("gpt-6.1-sol", "standard", (800 * 2 + 200 * 0.10 + 100 * 10) / MILLION),
        ("gpt-6-luna", "flex", (800 * 0.10 + 200 * 0.01 + 100 * 0.50) / MILLION * 0.5),
        ("gpt-6-sol", "batch", (800 * 2 + 200 * 0.20 + 100 * 10) / MILLION * 0.5),
    ],
)
def test_openai_cached_input_uses_cached_price(model, tier, expected, table):
    usage = usage_from_openai(
        {"prompt_tokens": 1000, "completion_tokens": 100, "prompt_tokens_details": {"cached_tokens": 200}}
    )
    assert table.cost_usd("openai", model, tier, usage, NOV) == round(expected, 9)


def test_embedding_model_priced_on_input_only(table):
    usage = usage_from_openai({"prompt_tokens": 2_000_000, "total_tokens": 2_000_000})
    assert table.cost_usd("openai", "text-embedding-4-small", "batch", usage, NOV) == 0.02


def test_unknown_model_costs_none_and_warns_once_per_model(table):
    with pytest.warns(UnknownModelPriceWarning) as record:  # noqa: PT031 -- the warnings of all calls together
        costs = [table.cost_usd("openai", "gpt-9", "batch", Usage(input_tokens=5), NOV) for _ in range(3)]
        costs.append(table.cost_usd("anthropic", "gpt-9", "batch", Usage(), NOV))
        costs.append(table.cost_usd("openai", "gpt-6-sol", "batch", Usage(), NOV))
    assert costs == [None, None, None, None, 0.0]
    messages = [str(warning.message) for warning in record]
    assert len(messages) == 2
    assert "openai model 'gpt-9'" in messages[0]
    assert "anthropic model 'gpt-9'" in messages[1]
    # Each table warns on its own.
    with pytest.warns(UnknownModelPriceWarning):
        PriceTable(DEFAULT_PRICES).cost_usd("openai", "gpt-9", "batch", Usage(), NOV)


def test_costs_are_rounded_to_nano_dollars(table):
    usage = Usage(input_tokens=123_457, output_tokens=9_876)
    # (123457 * 0.10 + 9876 * 0.50) / 1e6 * 0.5, which raw float arithmetic does not hit exactly.
    assert table.cost_usd("anthropic", "claude-haiku-5-5", "batch", usage, NOV) == 0.00864185
    tiny = PriceTable([ModelPrice.create("openai", "m", input=0.0004, output=0.0016)])
    assert tiny.cost_usd("openai", "m", "standard", Usage(input_tokens=1), NOV) == 0.0
    assert tiny.cost_usd("openai", "m", "standard", Usage(output_tokens=1), NOV) == 2e-9


def test_sum_usd_is_order_independent(table):
    rng = random.Random(7)
    costs = [
        table.cost_usd(
            "openai",
            "gpt-6-luna",
            "batch",
            Usage(input_tokens=rng.randrange(1, 5000), output_tokens=rng.randrange(1, 900)),
            NOV,
        )
        for _ in range(2000)
    ]
    forward = sum_usd(costs)
    shuffled = list(costs)
    rng.shuffle(shuffled)
    assert forward == sum_usd(shuffled) == sum_usd(reversed(costs))
    assert forward is not None
    assert abs(forward - sum(c for c in costs if c is not None)) < 1e-9


def test_sum_usd_with_unknown_cost_is_unknown():
    assert sum_usd([0.1, None, 0.2]) is None
    assert sum_usd([0.1, 0.2]) == 0.3
    assert sum_usd([]) == 0.0


@pytest.mark.parametrize(
    ("standard", "cost", "expected"),
    [(0.3, 0.15, 0.15), (0.1, 0.1, 0.0), (None, 0.1, None), (0.1, None, None)],
)
def test_savings_usd(standard, cost, expected):
    assert savings_usd(standard, cost) == expected


OVERRIDES = {
    "anthropic": {"claude-x": {"input": 1, "output": 5, "cached_input": 0.3, "effective": "2026-11-01"}},
    "openai": {
        "gpt-6-luna": [{"input": 0.2, "output": 1.0, "effective": "2026-12-01"}],
        "gpt-new": {"input": 1, "output": 2},
    },
}


def _check_overridden(table: PriceTable) -> None:
    claude_x = table.lookup("anthropic", "claude-x-20261101", NOV)
    assert claude_x is not None
    assert (claude_x.cache_read, claude_x.cache_write, claude_x.cache_write_1h) == (0.3, 1.25, 2.0)
    assert table.lookup("anthropic", "claude-x", datetime.date(2026, 10, 31)) is None
    # A new dated entry adds to the history instead of replacing it.
    november = table.lookup("openai", "gpt-6-luna", NOV)
    assert november is not None
    assert november.input == 0.1
    december = table.lookup("openai", "gpt-6-luna", datetime.date(2026, 12, 1))
    assert december is not None
    assert december.input == 0.2
    assert december.cache_read == 0.2
    # No effective date: in force on any day.
    assert table.lookup("openai", "gpt-new", datetime.date(2000, 1, 1)) is not None


def test_overrides_from_dict_json_and_path(tmp_path, table):
    path = tmp_path / "prices.json"
    path.write_text(json.dumps(OVERRIDES))
    for source in (OVERRIDES, json.dumps(OVERRIDES), str(path), path):
        _check_overridden(table.with_overrides(source))
    # The original table is unchanged.
    assert table.lookup("anthropic", "claude-x", NOV) is None


def test_override_with_same_date_replaces_entry(table):
    overridden = table.with_overrides(
        {"anthropic": {"claude-opus-5-5": {"input": 5, "output": 25, "effective": "2026-10-01"}}}
    )
    assert overridden.lookup("anthropic", "claude-opus-5-5", NOV).input == 5
    assert len([p for p in overridden.prices() if p.model == "claude-opus-5-5"]) == 1


@pytest.mark.parametrize(
    ("source", "match"),
    [
        ({"openai": {"m": {"input": 1}}}, "missing"),
        ({"openai": {"m": {"input": 1, "output": 1, "cachd_input": 0.1}}}, "unknown keys"),
        ({"openai": {"m": {"input": -1, "output": 1}}}, "negative"),
        ({"openai": {"m": {"input": "1", "output": 1}}}, "finite number"),
        ({"openai": {"m": {"input": 1, "output": 1, "effective": "soon"}}}, "ISO date"),
        ({"openai": ["m"]}, "keyed by model"),
        ("[1, 2]", "keyed by provider"),
        ('{"openai": ', "Expecting"),
        ("/nonexistent/prices.json", "No such file"),
    ],
)
def test_invalid_overrides_are_rejected(source, match, table):
    with pytest.raises((ValueError, OSError), match=match):
        table.with_overrides(source)


def test_default_price_table_is_shared():
    assert default_price_table() is default_price_table()
    assert default_price_table().prices() == PriceTable(DEFAULT_PRICES).prices()


def test_usage_from_anthropic():
    usage = usage_from_anthropic(
        {
            "input_tokens": 10,
            "output_tokens": 20,
            "cache_creation_input_tokens": 30,
            "cache_read_input_tokens": None,
            "cache_creation": {"ephemeral_5m_input_tokens": 10, "ephemeral_1h_input_tokens": 20},
            "service_tier": "batch",
        }
    )
    assert usage == Usage(
        input_tokens=10,
        output_tokens=20,
        cache_write_tokens=30,
        cache_read_tokens=0,
        cache_write_1h_tokens=20,
    )
    assert usage_from_anthropic({"input_tokens": 1, "output_tokens": 2}) == Usage(1, 2)
    malformed = {"cache_creation_input_tokens": 5, "cache_creation": {"ephemeral_1h_input_tokens": 9}}
    assert usage_from_anthropic(malformed) == Usage(cache_write_tokens=5, cache_write_1h_tokens=5)


@pytest.mark.parametrize(
    ("native", "expected"),
    [
        (  # chat completions
            {
                "prompt_tokens": 100,
                "completion_tokens": 50,
                "total_tokens": 150,
                "prompt_tokens_details": {"cached_tokens": 40},
                "completion_tokens_details": {"reasoning_tokens": 30},
            },
            Usage(input_tokens=60, output_tokens=50, cache_read_tokens=40, reasoning_tokens=30),
        ),
        (  # chat completions with null details
            {"prompt_tokens": 100, "completion_tokens": 5, "prompt_tokens_details": None},
            Usage(input_tokens=100, output_tokens=5),
        ),
        (  # responses / batch usage
            {
                "input_tokens": 100,
                "output_tokens": 50,
                "input_tokens_details": {"cached_tokens": 90},
                "output_tokens_details": {"reasoning_tokens": 7},
                "total_tokens": 150,
            },
            Usage(input_tokens=10, output_tokens=50, cache_read_tokens=90, reasoning_tokens=7),
        ),
        (  # embeddings
            {"prompt_tokens": 12, "total_tokens": 12},
            Usage(input_tokens=12),
        ),
        (  # malformed: more cached than prompt never gives negative input
            {"prompt_tokens": 10, "completion_tokens": 1, "prompt_tokens_details": {"cached_tokens": 20}},
            Usage(input_tokens=0, output_tokens=1, cache_read_tokens=10),
        ),
    ],
)
def test_usage_from_openai(native, expected):
    assert usage_from_openai(native) == expected


def test_usage_dict_round_trip_has_schema_keys():
    usage = Usage(1, 2, 3, 4, 5)
    assert list(usage.to_dict()) == [
        "input_tokens",
        "output_tokens",
        "cache_read_tokens",
        "cache_write_tokens",
        "reasoning_tokens",
    ]
    assert Usage.from_dict(usage.to_dict()) == usage
    assert Usage.from_dict({"input_tokens": None}) == Usage()


@pytest.mark.parametrize(
    "kwargs",
    [{"input_tokens": -1}, {"output_tokens": 1.5}, {"reasoning_tokens": True}, {"cache_write_1h_tokens": 1}],
)
def test_usage_rejects_invalid_counts(kwargs):
    with pytest.raises(ValueError, match=r"^Usage\."):
        Usage(**kwargs)


def test_no_warning_for_known_model(table):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert table.cost_usd("anthropic", "claude-opus-5-5", "batch", Usage(output_tokens=1000), NOV) == 0.01


def test_undated_override_beats_a_dated_builtin_on_every_date() -> None:
    override = {"anthropic": {"claude-haiku-5-5": {"input": 7, "output": 9}}}
    table = default_price_table().with_overrides(override)
    for day in (datetime.date(2026, 1, 1), datetime.date(2026, 10, 2), datetime.date(2030, 1, 1)):
        price = table.lookup("anthropic", "claude-haiku-5-5", day)
        assert price is not None
        assert (price.input, price.output) == (7, 9)


def test_round_to_nanos_is_round_to_9_places():
    rng = random.Random(11)
    values = [rng.random() * 10 ** rng.randint(-12, 7) for _ in range(20_000)]
    # Exact decimal ties and their float neighbours, where the shortcut must hand over to round().
    ties = [(rng.randrange(10**13) + 0.5) / 1e9 for _ in range(20_000)]
    values += ties + [math.nextafter(t, 0) for t in ties] + [math.nextafter(t, 1) for t in ties]
    values += [0.0, -0.0, -1.25e-9, 5e-10, 1.5e-9, 2.5e-9, 8796.093022208, 1e30, math.inf]
    values += [n * rate * 0.5 / MILLION for n in range(0, 5000, 7) for rate in (0.01, 0.1, 0.5, 2.0, 20.0)]
    for value in values:
        expected = round(value, 9)
        assert repr(round_to_nanos(value)) == repr(expected), value
