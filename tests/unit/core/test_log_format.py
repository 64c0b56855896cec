"""The shared log format: progress lines, round groups and the summary block."""

from __future__ import annotations

from airflow_provider_tokentier.core.log_format import (
    GROUP_END,
    batch_progress_line,
    duration,
    group_start,
    round_title,
    summary_lines,
    sync_progress_line,
)

MANIFEST = {
    "results_uri": "file:///tmp/results.jsonl",
    "total": 100,
    "counts": {"succeeded": 97, "errored": 2, "expired": 1, "canceled": 0, "missing": 0},
    "rounds": 2,
    "tiers": {"batch": 100, "flex": 0, "standard": 0},
    "cost_usd": 0.05,
    "standard_cost_usd": 0.1,
    "savings_usd": 0.05,
    "provider": "anthropic",
    "model": "claude-haiku-4-5",
}


def test_summary_block_names_counts_rounds_tiers_costs_savings_and_results():
    lines = summary_lines(MANIFEST)
    assert lines[0] == "tokentier summary (anthropic / claude-haiku-4-5)"
    text = "\n".join(lines)
    assert "requests:         100 -> succeeded=97 errored=2 expired=1 canceled=0 missing=0" in text
    assert "rounds:           2" in text
    assert "tiers:            batch=100" in text
    assert "cost:             $0.050000" in text
    assert "cost at standard: $0.100000" in text
    assert "savings:          $0.050000 (50% of standard)" in text
    assert "results:          file:///tmp/results.jsonl" in text
    routed = summary_lines({**MANIFEST, "decision": {"tier": "batch"}})
    assert "  router chose:     batch" in routed


def test_summary_of_an_unpriced_model_says_unknown():
    unpriced = {**MANIFEST, "cost_usd": None, "standard_cost_usd": None, "savings_usd": None}
    text = "\n".join(summary_lines(unpriced))
    assert "cost:             unknown" in text
    assert "savings:          unknown" in text


def test_batch_progress_line_has_round_batches_counts_elapsed_finish_and_cost():
    line = batch_progress_line(
        provider="openai",
        round_=1,
        max_rounds=3,
        batches_ended=1,
        batches_total=4,
        counts={"succeeded": 90, "errored": 1, "processing": 9},
        elapsed_s=3725,
        expected_finish={"p50": "2026-11-29T05:10:00+00:00", "p95": "2026-11-29T07:30:00+00:00"},
        cost_so_far_usd=0.0312,
    )
    assert line == (
        "Round 2/3 | openai: 1/4 batches ended | succeeded=90 errored=1 processing=9 | elapsed 1h02m | "
        "expected finish p50 2026-11-29 05:10 UTC, p95 2026-11-29 07:30 UTC | cost so far $0.031200"
    )


def test_sync_progress_line_estimates_the_finish_from_the_rate():
    line = sync_progress_line(
        provider="openai",
        tier="flex",
        done=100,
        total=400,
        counts={"succeeded": 99, "errored": 1},
        tiers={"flex": 98, "standard": 2},
        elapsed_s=60,
        cost_so_far_usd=0.01,
    )
    assert "100/400 rows done" in line
    assert "expected finish in 3m00s" in line
    assert "tiers flex=98 standard=2" in line
    assert "cost so far $0.010000" in line


def test_groups_and_durations():
    assert group_start(round_title(0, 3, "2 batches")) == "::group::Round 1/3: 2 batches"
    assert GROUP_END == "::endgroup::"
    seconds = (None, 5, 125, 3 * 3600 + 7 * 60, 26 * 3600)
    assert [duration(s) for s in seconds] == ["?", "5s", "2m05s", "3h07m", "1d02h"]
