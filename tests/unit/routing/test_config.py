"""``[tokentier] prices``: inline JSON or a path, layered under per-call overrides."""

from __future__ import annotations

import datetime
import json

import pytest

from airflow_provider_tokentier.core.pricing import Usage, default_price_table
from airflow_provider_tokentier.runtime import settings as config

DAY = datetime.date(2026, 11, 15)
MILLION = Usage(input_tokens=1_000_000)
SONNET_OVERRIDE = {
    "anthropic": {"claude-sonnet-5-5": {"input": 1.5, "output": 7.5, "effective": "2026-11-01"}}
}


def standard_input_price(table, model="claude-sonnet-5-5"):
    return table.cost_usd("anthropic", model, "standard", MILLION, DAY)


@pytest.fixture(autouse=True)
def _clear_cache():
    config._table_for.cache_clear()
    yield
    config._table_for.cache_clear()


def test_unset_config_gives_the_builtin_table(monkeypatch):
    monkeypatch.delenv("AIRFLOW__TOKENTIER__PRICES", raising=False)
    assert config.configured_prices() is None
    assert config.resolve_price_table() is default_price_table()


def test_inline_json_from_env(monkeypatch):
    monkeypatch.setenv("AIRFLOW__TOKENTIER__PRICES", json.dumps(SONNET_OVERRIDE))
    table = config.resolve_price_table()
    assert standard_input_price(table) == 1.5
    assert standard_input_price(table, "claude-opus-5-5") == 4.0  # the rest of the table is kept


def test_path_from_env(monkeypatch, tmp_path):
    path = tmp_path / "prices.json"
    path.write_text(json.dumps(SONNET_OVERRIDE))
    monkeypatch.setenv("AIRFLOW__TOKENTIER__PRICES", str(path))
    assert standard_input_price(config.resolve_price_table()) == 1.5


def test_per_call_override_wins_over_config(monkeypatch):
    monkeypatch.setenv("AIRFLOW__TOKENTIER__PRICES", json.dumps(SONNET_OVERRIDE))
    mine = {"anthropic": {"claude-sonnet-5-5": {"input": 1.0, "output": 5, "effective": "2026-11-10"}}}
    assert standard_input_price(config.resolve_price_table(mine)) == 1.0
    assert standard_input_price(config.resolve_price_table(json.dumps(mine))) == 1.0


def test_use_config_false_ignores_config(monkeypatch):
    monkeypatch.setenv("AIRFLOW__TOKENTIER__PRICES", json.dumps(SONNET_OVERRIDE))
    assert standard_input_price(config.resolve_price_table(use_config=False)) == 2.0


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("{not json", r"\[tokentier\] prices: not valid JSON"),
        ("/nonexistent/prices.json", r"\[tokentier\] prices: not inline JSON and not a readable JSON file"),
        ('{"anthropic": {"m": {"input": 1}}}', r"\[tokentier\] prices: .*missing \['output'\]"),
    ],
)
def test_bad_config_names_its_source(monkeypatch, value, message):
    monkeypatch.setenv("AIRFLOW__TOKENTIER__PRICES", value)
    with pytest.raises(ValueError, match=message):
        config.resolve_price_table()


def test_bad_override_names_its_source(monkeypatch):
    monkeypatch.delenv("AIRFLOW__TOKENTIER__PRICES", raising=False)
    with pytest.raises(ValueError, match=r"prices override: .*unknown keys"):
        config.resolve_price_table({"openai": {"gpt-x": {"input": 1, "output": 2, "bogus": 3}}})
