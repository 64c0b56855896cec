"""Turnaround history on ObjectStoragePath: record, load, record from results manifests."""

from __future__ import annotations

import datetime
import json

import pytest
from airflow.sdk import ObjectStoragePath

from airflow_provider_tokentier.core.routing import DEFAULT_BATCH_P95_S, WorkloadProfile, choose_tier
from airflow_provider_tokentier.state.history import TurnaroundStore, record_from_manifest

T0 = datetime.datetime(2026, 11, 15, 1, 0, tzinfo=datetime.timezone.utc)


@pytest.fixture
def store(tmp_path) -> TurnaroundStore:
    return TurnaroundStore(ObjectStoragePath(f"file://{tmp_path}"), keep=30)


def manifest(seconds: float, *, uri: str = "file:///r/results.jsonl", **extra) -> dict:
    return {
        "results_uri": uri,
        "provider": "anthropic",
        "model": "claude-haiku-5-5",
        "tiers": {"batch": 10, "flex": 0, "standard": 0},
        "submitted_at": T0.isoformat(),
        "finished_at": (T0 + datetime.timedelta(seconds=seconds)).isoformat(),
        **extra,
    }


def test_empty_history_uses_defaults(store):
    history = store.load("anthropic", "claude-haiku-5-5")
    assert history.samples == ()
    assert not history.trusted
    assert history.p95() == DEFAULT_BATCH_P95_S


def test_record_and_load_round_trip(store, tmp_path):
    store.record("openai", "gpt-6-sol-2026-09-01", 1800, at=T0)
    history = store.record("openai", "gpt-6-sol-2026-09-01", 2400.5, at=T0)
    assert history.samples == (1800.0, 2400.5)
    assert store.load("openai", "gpt-6-sol-2026-09-01").samples == (1800.0, 2400.5)
    stored = json.loads((tmp_path / "_history" / "openai" / "gpt-6-sol-2026-09-01.json").read_text())
    assert stored["provider"] == "openai"
    assert stored["samples"][0] == {"seconds": 1800.0, "at": T0.isoformat(), "key": None}


def test_keeps_only_the_last_n(store):
    for i in range(40):
        store.record("anthropic", "m", float(i), at=T0)
    assert store.load("anthropic", "m").samples == tuple(float(i) for i in range(10, 40))


def test_model_ids_are_made_path_safe(store, tmp_path):
    store.record("openai", "ft:gpt-6-luna/team", 60, at=T0)
    assert (tmp_path / "_history" / "openai" / "ft_gpt-6-luna_team.json").exists()
    assert store.load("openai", "ft:gpt-6-luna/team").samples == (60.0,)


@pytest.mark.parametrize(
    ("seconds", "message"),
    [(-1, "cannot be negative"), (float("inf"), "finite"), (40 * 86400, "implausible")],
)
def test_record_rejects_bad_turnarounds(store, seconds, message):
    with pytest.raises(ValueError, match=message):
        store.record("anthropic", "m", seconds, at=T0)


def test_record_rejects_unknown_provider(store):
    with pytest.raises(ValueError, match="unknown provider"):
        store.record("mistral", "m", 1.0)


def test_record_from_manifest_and_deduplicate_retries(store):
    assert record_from_manifest(store, manifest(3000)) == 3000
    assert store.record_manifest(manifest(3000)) == 3000  # the same landing, recorded again
    assert store.load("anthropic", "claude-haiku-5-5").samples == (3000.0,)
    store.record_manifest(manifest(4000, uri="file:///r2/results.jsonl"))
    assert store.load("anthropic", "claude-haiku-5-5").samples == (3000.0, 4000.0)


def test_manifest_without_model_needs_the_argument(store):
    landed = manifest(900)
    del landed["model"]
    with pytest.raises(ValueError, match="pass model="):
        record_from_manifest(store, landed)
    assert record_from_manifest(store, landed, model="claude-haiku-5-5") == 900


def test_manifest_with_nothing_on_batch_is_skipped(store):
    assert record_from_manifest(store, manifest(30, tiers={"batch": 0, "flex": 0, "standard": 5})) is None
    assert store.load("anthropic", "claude-haiku-5-5").samples == ()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"submitted_at": None}, "no 'submitted_at'"),
        ({"finished_at": "yesterday"}, "not an ISO 8601 time"),
        ({"finished_at": "2026-11-15T02:00:00"}, "must carry a timezone"),
        ({"finished_at": "2026-11-14T02:00:00+00:00"}, "is before submitted_at"),
        ({"provider": None}, "no known 'provider'"),
    ],
)
def test_bad_manifests_are_rejected(store, extra, message):
    with pytest.raises(ValueError, match=message):
        record_from_manifest(store, manifest(60, **extra))


def test_recorded_history_steers_the_router(store):
    for i in range(20):
        store.record_manifest(manifest(1200 + i, uri=f"file:///r{i}/results.jsonl"))
    history = store.load("anthropic", "claude-haiku-5-5")
    assert history.trusted
    assert history.p95() == 1218
    profile = WorkloadProfile(
        provider="anthropic",
        model="claude-haiku-5-5",
        request_count=5000,
        input_tokens_per_request=4000,
        output_tokens_per_request=500,
        latency_budget_s=3 * 3600,
    )
    assert choose_tier(profile, now=T0).tier == "standard"  # defaults: 6 h p95 does not fit
    assert choose_tier(profile, now=T0, history=history).tier == "batch"
