"""The example DAGs in dags_examples/ run green with dag.test() against the emulator.

Each module reads its settings from the environment at import, so the test sets small sizes and
short poll intervals first and then (re)loads the module. State lands under the test's
``tmp_path`` through ``[tokentier] state_root``.
"""

from __future__ import annotations

import importlib
from collections import Counter
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.airflow.helpers import landed_rows, provider_batches, run_dag


@pytest.fixture
def load_example(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setenv("AIRFLOW__TOKENTIER__STATE_ROOT", str(tmp_path / "state"))
    monkeypatch.setenv("TOKENTIER_POLL_INTERVAL", "0.2")

    def load(name: str, **env: str) -> ModuleType:
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        module = importlib.import_module(f"dags_examples.{name}")
        return importlib.reload(module)

    return load


def _ids(manifest: dict[str, Any]) -> list[str]:
    return [row["custom_id"] for row in landed_rows(manifest)]


def test_overnight_eval_runs_both_chained_stages(emulator, load_example):
    module = load_example("overnight_eval", TOKENTIER_EVAL_CASES="12")
    run = run_dag(module.dag)
    assert run.state == "success", run.states
    assert set(run.states.values()) == {"success"}
    generated, judged = run.xcoms["generate_ready"], run.xcoms["judge_ready"]
    cases = [f"case-{i:05d}" for i in range(12)]
    # Every custom_id exactly once in each stage's results.
    assert sorted(_ids(generated)) == cases
    assert Counter(_ids(judged)) == Counter(f"judge-{c}" for c in cases)
    assert {r["provider"] for r in landed_rows(generated)} == {"anthropic"}
    assert {r["provider"] for r in landed_rows(judged)} == {"openai"}
    assert generated["tiers"]["batch"] == 12
    assert judged["tiers"]["batch"] == 12
    # One batch per provider: the judge stage was submitted only after the generate stage landed.
    (anthropic_batch,) = provider_batches(emulator, "anthropic")
    (openai_batch,) = provider_batches(emulator, "openai")
    assert judged["submitted_at"] >= generated["finished_at"]
    # The 09:00 deadline of the (past) logical date fell back to the late budget, in the future.
    deadlines = run.xcoms["morning_deadlines"]
    assert deadlines["generate"] < deadlines["judge"]
    assert judged["deadline"] is not None
    assert generated["deadline"] is not None
    report = run.xcoms["report"]
    assert report["cases"] == 12
    assert report["answered"] == 12
    assert report["judged"] == 12
    assert report["cost_usd"] == pytest.approx(generated["cost_usd"] + judged["cost_usd"])
    assert report["savings_usd"] > 0
    assert anthropic_batch
    assert openai_batch


def test_embedding_backfill_splits_into_several_batches(emulator, load_example):
    module = load_example(
        "embedding_backfill",
        TOKENTIER_BACKFILL_DOCS="25",
        TOKENTIER_PASSAGES_PER_DOC="2",
        TOKENTIER_MAX_REQUESTS_PER_BATCH="10",
        TOKENTIER_MAX_EMBEDDING_INPUTS_PER_BATCH="0",
    )
    run = run_dag(module.dag)
    assert run.state == "success", run.states
    summary = run.xcoms["store_vectors"]
    assert summary["batches"] == 3
    assert summary["batch_sizes"] == [10, 10, 5]
    assert len(provider_batches(emulator, "openai")) == 3
    assert summary["docs"] == 25
    assert summary["vectors"] == 50
    assert sorted(_ids(run.xcoms["embeddings_ready"])) == [f"doc-{i:06d}" for i in range(25)]


def test_embedding_backfill_caps_embedding_inputs_too(emulator, load_example):
    module = load_example(
        "embedding_backfill",
        TOKENTIER_BACKFILL_DOCS="12",
        TOKENTIER_PASSAGES_PER_DOC="3",
        TOKENTIER_MAX_REQUESTS_PER_BATCH="0",
        TOKENTIER_MAX_EMBEDDING_INPUTS_PER_BATCH="18",
    )
    run = run_dag(module.dag)
    assert run.state == "success", run.states
    assert run.xcoms["store_vectors"]["batch_sizes"] == [6, 6]


def test_flex_enrichment_runs_on_flex_and_falls_back_to_standard(emulator, load_example):
    emulator.configure(flex_429_rate=0.5, seed=3)
    module = load_example("flex_enrichment", TOKENTIER_TICKETS="20", TOKENTIER_FLEX_PATIENCE="0.5")
    run = run_dag(module.dag)
    assert run.state == "success", run.states
    manifest = run.xcoms["classify_tickets"]
    assert sorted(_ids(manifest)) == [f"ticket-{i:06d}" for i in range(20)]
    summary = run.xcoms["store_labels"]
    assert summary["labelled"] == 20
    assert set(summary["served_by_tier"]) <= {"flex", "standard"}
    assert summary["served_by_tier"].get("flex", 0) > 0
    assert provider_batches(emulator, "openai") == []


def test_routed_workloads_land_on_three_tiers(emulator, load_example):
    module = load_example(
        "routed_workloads",
        TOKENTIER_REPLY_REQUESTS="3",
        TOKENTIER_INCIDENT_REQUESTS="6",
        TOKENTIER_CATALOG_REQUESTS="20",
        TOKENTIER_MIN_BATCH_SAVINGS="0",
    )
    run = run_dag(module.dag)
    assert run.state == "success", run.states
    decisions = run.xcoms["show_decisions"]
    tiers = {name: d["tier"] for name, d in decisions.items()}
    assert tiers == {
        "draft_agent_replies": "standard",
        "summarize_incidents": "flex",
        "catalog_descriptions": "batch",
    }
    assert all(d["reasons"] for d in decisions.values())
    for name, count in (("draft_agent_replies", 3), ("summarize_incidents", 6), ("catalog_descriptions", 20)):
        landed = landed_rows(run.xcoms[name])
        assert len(landed) == count
        assert {r["tier"] for r in landed} == {tiers[name]}
    assert len(provider_batches(emulator, "anthropic")) == 1
