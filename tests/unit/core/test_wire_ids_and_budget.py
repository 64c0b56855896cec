"""Task-scoped wire custom_ids and the spend-cap arithmetic (pure core)."""

from __future__ import annotations

import math

import pytest

from airflow_provider_tokentier.core.budget import (
    DEFAULT_OUTPUT_TOKENS,
    SpendMeter,
    check_max_cost,
    check_within_cap,
    estimate_row_cost,
    estimate_rows_cost,
)
from airflow_provider_tokentier.core.pricing import UnknownModelPriceWarning
from airflow_provider_tokentier.core.requests import CUSTOM_ID_PATTERN, serialize_request
from airflow_provider_tokentier.core.wire_ids import (
    MAX_CUSTOM_ID,
    MAX_VERBATIM_ID,
    from_wire,
    id_scope,
    is_scope,
    rewrite_line,
    to_wire,
)


def test_scope_is_stable_short_and_distinct_per_task_workload_and_chunk():
    scope = id_scope(["dag/run/task/-1", "fp", "r0-c0"])
    assert is_scope(scope)
    assert len(scope) == 11
    assert scope == id_scope(["dag/run/task/-1", "fp", "r0-c0"])
    assert scope != id_scope(["dag/run/task/-1", "fp", "r0-c1"])
    assert scope != id_scope(["dag/run/other/-1", "fp", "r0-c0"])
    assert scope != id_scope(["dag/run/task/-1", "fp2", "r0-c0"])


@pytest.mark.parametrize("custom_id", ["a", "doc-000001", "x" * MAX_VERBATIM_ID, "y" * 53, "z" * 64])
def test_wire_ids_fit_the_provider_pattern_and_map_back(custom_id):
    scope = id_scope(["t", "f", "c"])
    wire = to_wire(scope, custom_id, 17)
    assert len(wire) <= MAX_CUSTOM_ID
    assert CUSTOM_ID_PATTERN.match(wire)
    back = from_wire(scope, wire)
    assert back == (custom_id if len(custom_id) <= MAX_VERBATIM_ID else 17)


def test_ids_under_another_scope_or_unscoped_are_foreign():
    mine, theirs = id_scope(["a"]), id_scope(["b"])
    assert from_wire(mine, to_wire(theirs, "doc-1", 0)) is None
    assert from_wire(mine, "doc-1") is None
    assert from_wire(mine, mine) is None
    assert from_wire(mine, f"{mine}_01") is None  # not a canonical line number
    assert from_wire(mine, f"{mine}_x") is None


def test_rewrite_line_changes_only_the_custom_id():
    row = {"custom_id": "doc-7", "params": {"model": "m", "max_tokens": 5, "messages": []}}
    line = serialize_request(row, "anthropic")
    scope = id_scope(["s"])
    rewritten = rewrite_line(line, scope, 3)
    assert rewritten == line.replace(b'"doc-7"', f'"{scope}-doc-7"'.encode())
    with pytest.raises(ValueError, match="custom_id"):
        rewrite_line(b'{"params":{},"custom_id":"a"}', scope, 0)


def test_max_cost_usd_is_checked():
    assert check_max_cost(None) is None
    assert check_max_cost(3) == 3.0
    for bad in (0, -0.5, math.inf, math.nan, "2", True):
        with pytest.raises(ValueError, match="max_cost_usd"):
            check_max_cost(bad)


def test_estimates_use_the_requests_output_cap_or_a_default():
    capped = {"custom_id": "a", "params": {"model": "claude-haiku-4-5", "max_tokens": 100, "messages": []}}
    uncapped = {
        "custom_id": "b",
        "body": {"model": "gpt-6-luna", "messages": []},
        "url": "/v1/chat/completions",
    }
    batch = estimate_row_cost(capped, "anthropic", "batch")
    standard = estimate_row_cost(capped, "anthropic", "standard")
    assert batch is not None
    assert standard is not None
    assert batch == pytest.approx(standard / 2)
    assert standard > 100 * 5 / 1e6  # 100 output tokens at $5/M, plus the input
    default = estimate_row_cost(uncapped, "openai", "standard")
    assert default is not None
    assert default >= DEFAULT_OUTPUT_TOKENS * 0.5 / 1e6
    with pytest.warns(UnknownModelPriceWarning):
        total, unpriced = estimate_rows_cost(
            [capped, {"custom_id": "c", "params": {"model": "no-such-model", "max_tokens": 1}}],
            "anthropic",
            "batch",
        )
    assert total == pytest.approx(batch)
    assert unpriced == ["no-such-model"]
    assert "no known price" in (check_within_cap(1.0, 0.0, total, unpriced, "it") or "")
    assert check_within_cap(1.0, 0.5, 0.4, [], "it") is None
    assert "cross" in (check_within_cap(1.0, 0.7, 0.4, [], "it") or "")
    assert check_within_cap(None, 9.0, 9.0, ["x"], "it") is None


def test_the_meter_stops_for_good_at_the_first_request_that_does_not_fit():
    meter = SpendMeter(cap=1.0)
    assert meter.try_start(0.4)
    assert meter.try_start(0.4)
    assert not meter.try_start(0.4)  # 0.8 reserved
    meter.finish(0.4, 0.1)
    assert not meter.try_start(0.1)  # stopped: the rest is skipped, not squeezed in
    assert meter.report() == {"max_cost_usd": 1.0, "spent_usd": 0.1, "stopped": "sync", "skipped": 2}
    unlimited = SpendMeter(cap=None)
    assert unlimited.try_start(None)
    assert unlimited.report() is None
    assert not SpendMeter(cap=1.0).try_start(None)  # an unpriced request cannot be metered
