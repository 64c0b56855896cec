"""``tokentier route``: presets, flags, JSON output, history and price overrides, errors."""

from __future__ import annotations

import io
import json

import pytest
from airflow.sdk import ObjectStoragePath

from airflow_provider_tokentier.cli import EXAMPLES, build_parser, main
from airflow_provider_tokentier.state.history import TurnaroundStore

NOW = "2026-11-15T01:00:00Z"


def route(*argv: str) -> str:
    out = io.StringIO()
    assert main(["route", "--now", NOW, "--no-config", *argv], out=out) == 0
    return out.getvalue()


def route_json(*argv: str) -> dict:
    return json.loads(route("--json", *argv))


@pytest.mark.parametrize(
    ("example", "tier"),
    [
        ("nightly-doc-refresh", "batch"),
        ("one-off-summary", "standard"),
        ("interactive-coding", "standard"),
        ("background-evals", "batch"),
    ],
)
def test_seed_workloads(example, tier):
    text = route("--example", example)
    assert f"tokentier route: {example}" in text
    assert f"decision   {tier.upper()}" in text
    assert f"  > {tier}" in text
    for name in ("standard", "flex", "batch"):
        assert f"{name:<10}" in text
    assert "reasons\n  - " in text
    assert route_json("--example", example)["tier"] == tier


def test_every_example_has_a_test():
    assert set(EXAMPLES) == {
        "nightly-doc-refresh",
        "one-off-summary",
        "interactive-coding",
        "background-evals",
    }


def test_table_shows_cost_on_every_tier_and_finish():
    text = route("--example", "background-evals")
    assert "$120.00" in text
    assert "$60.00" in text
    assert "2026-11-15 02:00 UTC (+1h)" in text  # batch p50
    assert "a chain of 2 batch stages" in text


def test_one_off_summary_names_the_crossover():
    text = route("--example", "one-off-summary")
    assert "under the $1.00 crossover" in text
    assert "not offered for this model" in text


def test_flags_override_the_preset():
    data = route_json("--example", "one-off-summary", "--requests", "5000")
    assert data["tier"] == "batch"
    assert route_json("--example", "one-off-summary", "--min-savings", "0")["tier"] == "batch"


def test_workload_from_flags_only():
    data = route_json(
        "--provider",
        "openai",
        "--model",
        "gpt-6-luna",
        "--requests",
        "10",
        "--input-tokens",
        "1000",
        "--output-tokens",
        "100",
        "--budget",
        "90s",
    )
    assert data["tier"] == "flex"
    assert data["budget_s"] == 90
    assert data["estimated_cost_usd"]["flex"] == data["estimated_cost_usd"]["batch"]


@pytest.mark.parametrize(
    ("budget", "tier"), [("500ms", "standard"), ("90s", "standard"), ("15m", "standard"), ("8h", "batch")]
)
def test_budget_units(budget, tier):
    assert route_json("--example", "nightly-doc-refresh", "--budget", budget)["tier"] == tier


def test_deadline_and_stages_flags():
    data = route_json(
        "--example",
        "nightly-doc-refresh",
        "--deadline",
        "2026-11-15T09:00:00+00:00",
        "--budget",
        "2d",
        "--stages",
        "2",
    )
    assert data["budget_s"] == 8 * 3600
    assert data["tier"] == "standard"
    assert any("a chain of 2 batch stages" in r for r in data["reasons"])


def test_cached_ratio_and_interactive_flags():
    data = route_json("--example", "nightly-doc-refresh", "--interactive")
    assert data["tier"] == "standard"
    data = route_json(
        "--example", "interactive-coding", "--no-interactive", "--budget", "8h", "--requests", "5000"
    )
    assert any("Caching-dominated" in r or "more than standard" in r for r in data["reasons"])
    assert data["tier"] == "standard"


def test_force_tier_and_rescue_margin():
    assert route_json("--example", "one-off-summary", "--force-tier", "batch")["forced"] is True
    data = route_json("--example", "nightly-doc-refresh", "--rescue-margin", "3h")
    assert data["tier"] == "standard"


def test_history_root(tmp_path):
    store = TurnaroundStore(ObjectStoragePath(f"file://{tmp_path}"))
    for _ in range(20):
        store.record("anthropic", "claude-haiku-5-5", 900.0)
    data = route_json("--example", "nightly-doc-refresh", "--budget", "2h", "--history-root", str(tmp_path))
    assert data["tier"] == "batch"
    assert any("p95 of 20 recorded" in r for r in data["reasons"])
    assert route_json("--example", "nightly-doc-refresh", "--budget", "2h")["tier"] == "standard"


def test_prices_flag_inline_and_path(tmp_path):
    override = {"anthropic": {"claude-haiku-5-5": {"input": 1, "output": 5, "effective": "2026-11-01"}}}
    data = route_json("--example", "one-off-summary", "--prices", json.dumps(override))
    assert data["estimated_cost_usd"]["standard"] == 0.325
    path = tmp_path / "prices.json"
    path.write_text(json.dumps(override))
    assert (
        route_json("--example", "one-off-summary", "--prices", str(path))["estimated_cost_usd"]["batch"]
        == 0.1625
    )


def test_config_prices_are_read_from_airflow_config(monkeypatch):
    from airflow_provider_tokentier.runtime import settings as config

    config._table_for.cache_clear()
    override = {"anthropic": {"claude-haiku-5-5": {"input": 1, "output": 5, "effective": "2026-11-01"}}}
    monkeypatch.setenv("AIRFLOW__TOKENTIER__PRICES", json.dumps(override))
    out = io.StringIO()
    try:
        assert main(["route", "--now", NOW, "--json", "--example", "one-off-summary"], out=out) == 0
    finally:
        config._table_for.cache_clear()
    assert json.loads(out.getvalue())["estimated_cost_usd"]["standard"] == 0.325


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--example", "nightly-doc-refresh", "--budget=-5m"], "cannot be negative"),
        (["--example", "nightly-doc-refresh", "--budget", "soon"], "cannot parse duration"),
        (
            ["--example", "nightly-doc-refresh", "--budget", "8h", "--deadline", "2026-11-14T00:00:00Z"],
            "is in the past",
        ),
        (["--example", "nightly-doc-refresh", "--deadline", "2026-11-16T00:00:00"], "must carry a timezone"),
        (["--example", "nightly-doc-refresh", "--force-tier", "priority"], "unknown tier 'priority'"),
        (["--example", "nightly-doc-refresh", "--cached-ratio", "1.5"], "cached_input_ratio"),
        (["--example", "nightly-doc-refresh", "--requests", "0"], "request_count"),
        (["--provider", "openai", "--model", "gpt-6-sol"], "missing --requests, --input-tokens"),
        (["--example", "one-off-summary", "--prices", "{oops"], "not valid JSON"),
    ],
)
def test_bad_input_exits_2_with_a_clear_message(argv, message, capsys):
    assert main(["route", "--now", NOW, "--no-config", *argv], out=io.StringIO()) == 2
    assert message in capsys.readouterr().err


def test_unknown_provider_is_an_argparse_error(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["route", "--example", "one-off-summary", "--provider", "mistral"])
    assert exc.value.code == 2
    assert "invalid choice: 'mistral'" in capsys.readouterr().err


def test_parser_has_subcommands_for_later_additions():
    parser = build_parser()
    with pytest.raises(SystemExit):
        parser.parse_args([])
    assert parser.parse_args(["route", "--example", "background-evals"]).command == "route"
