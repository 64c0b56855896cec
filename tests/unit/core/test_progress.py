"""The progress record: per-request totals across rounds, capped lists, the JSON shape the UI reads."""

from __future__ import annotations

import json

import pytest

from airflow_provider_tokentier.core.progress import (
    MAX_BATCHES,
    MAX_ERROR_EXAMPLES,
    MAX_ERROR_TYPES,
    PROGRESS_KEY,
    BatchProgress,
    ErrorSamples,
    ProgressRecord,
    combine_rounds,
    expected_finish,
)


def test_combine_rounds_counts_each_request_once_at_its_latest_round():
    # Round 0: 100 requests, 90 succeeded, 6 expired, 4 errored (1 of them retryable and carried).
    # Round 1 took the 6 expired + 1 errored; 5 of them succeeded, 2 still running in round 2.
    round0 = {"succeeded": 90, "errored": 4, "expired": 6, "canceled": 0, "missing": 0}
    round1 = {"succeeded": 5, "errored": 0, "expired": 2, "canceled": 0, "missing": 0}
    totals = combine_rounds(100, [round0, round1, None], [7, 2, 0])
    assert totals == {
        "total": 100,
        "succeeded": 95,
        "errored": 3,
        "expired": 0,
        "canceled": 0,
        "missing": 0,
        "skipped_budget": 0,
        "pending": 2,
    }


def test_combine_rounds_with_nothing_harvested_yet_is_all_pending():
    assert combine_rounds(40, [None], [0])["pending"] == 40
    partial = combine_rounds(40, [{"succeeded": 10}], [0])  # one of two batches ended
    assert (partial["succeeded"], partial["pending"]) == (10, 30)


def test_expected_finish_adds_the_turnaround_percentiles_to_the_round_start():
    assert expected_finish(None, 60, 120) is None
    assert expected_finish(1_800_000_000, 3600, 7200) == {
        "p50": "2027-01-15T09:00:00+00:00",
        "p95": "2027-01-15T10:00:00+00:00",
    }


def test_error_samples_group_by_type_keep_few_examples_and_rank_by_count():
    errors = ErrorSamples()
    for i in range(7):
        errors.add_row(f"doc-{i}", "errored", {"type": "overloaded_error", "message": "Overloaded " * 100})
    errors.add_row("doc-x", "errored", {"type": "invalid_request_error", "message": "max_tokens too large"})
    errors.add_row("doc-ok", "succeeded", None)
    snapshot = errors.snapshot()
    ranked = [(g["type"], g["count"]) for g in snapshot]
    assert ranked == [("overloaded_error", 7), ("invalid_request_error", 1)]
    assert len(snapshot[0]["examples"]) == MAX_ERROR_EXAMPLES
    assert snapshot[0]["examples"][0]["custom_id"] == "doc-0"
    assert len(snapshot[0]["examples"][0]["message"]) <= 120

    merged = ErrorSamples()
    merged.merge(snapshot)
    merged.merge(snapshot)
    assert [(g["type"], g["count"]) for g in merged.snapshot()] == [
        ("overloaded_error", 14),
        ("invalid_request_error", 2),
    ]
    assert len(merged.snapshot()[0]["examples"]) == MAX_ERROR_EXAMPLES


def test_error_types_are_capped():
    errors = ErrorSamples()
    for i in range(150):
        errors.add(f"type_{i:03d}", f"id-{i}", "m")
    snapshot = errors.snapshot()
    assert len(snapshot) == MAX_ERROR_TYPES
    assert sum(g["count"] for g in ErrorSamples().snapshot(limit=1000)) == 0


def _record(**overrides):
    fields = {
        "operator": "BatchSensor",
        "provider": "anthropic",
        "model": "claude-haiku-4-5",
        "tier": "batch",
        "phase": "waiting",
        "round": 2,
        "max_rounds": 3,
        "cost_usd": 0.07,
        "standard_cost_usd": 0.14,
    }
    return ProgressRecord(**{**fields, **overrides})


def test_record_to_dict_has_the_contract_keys_and_savings():
    record = _record(
        batches=[BatchProgress("msgbatch_1", 1, "ended", 10, {"succeeded": 10}, "https://x/msgbatch_1")],
        decision={"tier": "batch", "reasons": ["cheap"], "estimated_cost_usd": {"batch": 1.6}, "budget_s": 9},
    ).to_dict()
    for key in (
        "schema_version", "operator", "provider", "model", "tier", "decision", "phase", "round", "max_rounds",
        "batches", "batches_total", "totals", "cost_usd", "standard_cost_usd", "savings_usd", "deadline",
        "expected_finish", "rescue", "errors", "results_uri", "started_at", "updated_at",
    ):  # fmt: skip
        assert key in record, key
    assert record["schema_version"] == 1
    assert PROGRESS_KEY == "tokentier_progress"
    assert record["savings_usd"] == pytest.approx(0.07)
    assert record["decision"] == {"tier": "batch", "reasons": ["cheap"], "costs": {"batch": 1.6}}
    assert record["batches"][0] == {
        "id": "msgbatch_1",
        "round": 1,
        "status": "ended",
        "requests": 10,
        "counts": {"succeeded": 10},
        "url": "https://x/msgbatch_1",
    }
    assert record["updated_at"].endswith("+00:00")
    as_json = json.loads(_record(updated_at="2026-11-29T05:00:00+00:00").to_json())
    assert as_json == _record(updated_at="2026-11-29T05:00:00+00:00").to_dict()


def test_record_stays_small_for_a_huge_workload():
    batches = [
        BatchProgress(f"msgbatch_{i:030d}", 1 + i // 100, "in_progress", 100_000, {"processing": 100_000}, f"https://console.anthropic.com/workspaces/default/batches/msgbatch_{i:030d}")
        for i in range(300)
    ]  # fmt: skip
    errors = ErrorSamples()
    for t in range(50):
        for i in range(5):
            errors.add(f"error_type_{t}", f"custom-id-{t}-{i}" * 3, "x" * 1000)
    record = _record(batches=batches, errors=errors.snapshot()).to_dict()
    assert len(record["batches"]) == MAX_BATCHES
    assert record["batches_total"] == 300
    assert record["batches"][-1]["id"] == batches[-1].id  # the most recent are kept
    assert len(_record(batches=batches, errors=errors.snapshot()).to_json()) < 16 * 1024


def test_unknown_phase_is_refused():
    with pytest.raises(ValueError, match="phase must be one of"):
        _record(phase="sleeping")
