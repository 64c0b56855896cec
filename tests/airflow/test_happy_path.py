"""Submit -> sensor -> land, for both providers: every row once, costs that match the bill."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from tests.airflow.helpers import landed_rows, provider_batches, rows_for, run_dag

PROVIDERS = ["anthropic", "openai"]


@pytest.mark.parametrize("provider", PROVIDERS)
def test_happy_path_lands_every_row_once_and_costs_match_the_bill(emulator, make_dag, provider):
    rows = rows_for(provider, 12)
    run = run_dag(make_dag(provider, rows))

    assert run.states == {"submit": "success", "ready": "success"}, run.states
    submission, manifest = run.xcoms["submit"], run.xcoms["ready"]

    landed = landed_rows(manifest)
    ids = Counter(r["custom_id"] for r in landed)
    assert ids == Counter(r["custom_id"] for r in rows), "every custom_id lands exactly once"
    assert {r["status"] for r in landed} == {"succeeded"}
    assert all(r["tier"] == "batch" and r["provider"] == provider and r["round"] == 0 for r in landed)
    assert all(r["response"] and r["error"] is None for r in landed)
    assert all(r["usage"]["input_tokens"] > 0 and r["usage"]["output_tokens"] > 0 for r in landed)

    billed = emulator.billing()
    assert billed["requests_billed"] == len(rows)
    assert sum(r["cost_usd"] for r in landed) == pytest.approx(billed["usd"], abs=1e-6)
    assert manifest["cost_usd"] == pytest.approx(billed["usd"], abs=1e-6)
    assert manifest["standard_cost_usd"] == pytest.approx(2 * manifest["cost_usd"], rel=1e-3)
    assert manifest["savings_usd"] == pytest.approx(
        manifest["standard_cost_usd"] - manifest["cost_usd"], abs=1e-6
    )

    assert manifest["total"] == len(rows)
    assert manifest["counts"] == {
        "succeeded": 12,
        "errored": 0,
        "expired": 0,
        "canceled": 0,
        "missing": 0,
        "skipped_budget": 0,
    }
    assert manifest["rounds"] == 1
    assert manifest["tiers"] == {"batch": 12, "flex": 0, "standard": 0}
    assert manifest["batches"] == [b["id"] for b in submission["batches"]]
    assert manifest["submitted_at"] == submission["submitted_at"]
    assert manifest["finished_at"]
    assert manifest["deadline"] is None
    assert len(json.dumps(manifest).encode()) < 64 * 1024

    assert submission["provider"] == provider
    assert submission["total"] == len(rows)
    assert len(json.dumps(submission).encode()) < 64 * 1024
    in_emulator = provider_batches(emulator, provider)
    assert [b["id"] for b in in_emulator] == [b["id"] for b in submission["batches"]]
    assert [b["request_count"] for b in in_emulator] == [len(rows)]


@pytest.mark.parametrize(
    ("provider", "cap", "expected_sizes"),
    [
        ("anthropic", {"max_requests_per_batch": 7}, [7, 7, 7, 7, 2]),
        ("openai", {"max_requests_per_batch": 7}, [7, 7, 7, 7, 2]),
        ("anthropic", "bytes", None),
        ("openai", "bytes", None),
    ],
    ids=["anthropic-count", "openai-count", "anthropic-bytes", "openai-bytes"],
)
def test_chunking_across_caps(emulator, make_dag, state_root, provider, cap, expected_sizes):
    rows = rows_for(provider, 30)
    if cap == "bytes":
        # Room for about four rows per batch (the byte cap is filled to 95%).
        line = len(json.dumps(rows[0], separators=(",", ":")).encode())
        cap = {"max_bytes_per_batch": int(line * 4.6 / 0.95)}
    run = run_dag(make_dag(provider, rows, submit_kwargs=cap))

    assert run.states == {"submit": "success", "ready": "success"}, run.states
    submission, manifest = run.xcoms["submit"], run.xcoms["ready"]
    in_emulator = provider_batches(emulator, provider)
    sizes = [b["request_count"] for b in in_emulator]
    assert [b["id"] for b in in_emulator] == [b["id"] for b in submission["batches"]]
    assert sizes == [b["requests"] for b in submission["batches"]]
    assert sum(sizes) == 30
    if expected_sizes is not None:
        assert sizes == expected_sizes
    else:
        assert len(sizes) >= 6, sizes
        assert max(sizes) <= 4, sizes
        limit = cap["max_bytes_per_batch"]
        assert all(b["bytes"] <= limit for b in submission["batches"])

    landed = landed_rows(manifest)
    assert sorted(r["custom_id"] for r in landed) == sorted(r["custom_id"] for r in rows)
    assert manifest["counts"]["succeeded"] == 30
    assert manifest["batches"] == [b["id"] for b in submission["batches"]]
    assert {r["batch_id"] for r in landed} == {b["id"] for b in in_emulator}
