"""Hostile provider output never loses or invents a row, and is never counted as succeeded.

Each fault comes from the emulator's ``faults`` knob (``testing/emulator/faults.py``) and goes
through the real SDKs, the real sensor and ``dag.test()``. A fault armed once is a transient
glitch (the download is retried); armed many times it is what the provider keeps sending.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.airflow.helpers import landed_rows, rows_for, run_dag

PROVIDERS = ["anthropic", "openai"]
ALWAYS = 1000
N = 8


def run_with_fault(emulator: Any, make_dag: Any, provider: str, fault: str, times: int) -> dict[str, Any]:
    emulator.configure(faults={fault: times})
    rows = rows_for(provider, N)
    run = run_dag(make_dag(provider, rows, sensor_kwargs={"fail_on_partial": False}))
    assert run.states == {"submit": "success", "ready": "success"}, run.states
    manifest: dict[str, Any] = run.xcoms["ready"]
    landed = landed_rows(manifest)
    # One row per request sent, none invented, none lost.
    assert sorted(r["custom_id"] for r in landed) == sorted(r["custom_id"] for r in rows)
    assert manifest["total"] == N
    assert manifest["counts"]["succeeded"] == sum(r["status"] == "succeeded" for r in landed)
    for row in landed:
        if row["status"] == "succeeded":
            assert row["error"] is None
            assert row["response"] is not None
            assert all(value >= 0 for value in row["usage"].values())
    return manifest


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("fault", ["cut_stream", "truncate_line", "html_200"])
def test_a_broken_results_download_is_downloaded_again(emulator, make_dag, provider, fault):
    manifest = run_with_fault(emulator, make_dag, provider, fault, 1)
    assert manifest["counts"]["succeeded"] == N
    assert manifest["rounds"] == 1
    assert emulator._call("GET", "/_emulator/config")["faults"] == {fault: 0}


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_results_body_that_is_always_html_fails_the_task_without_landing(emulator, make_dag, provider):
    emulator.configure(faults={"html_200": ALWAYS})
    rows = rows_for(provider, 3)
    run = run_dag(make_dag(provider, rows))
    assert run.states["ready"] == "failed"
    assert run.xcoms["ready"] is None  # nothing landed, nothing re-batched (that would pay twice)
    assert len(emulator.batches()[provider]) == 1


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("fault", ["unknown_type", "usage_absent", "usage_negative"])
def test_an_unreadable_result_line_lands_errored(emulator, make_dag, provider, fault):
    manifest = run_with_fault(emulator, make_dag, provider, fault, ALWAYS)
    landed = landed_rows(manifest)
    errored = [r for r in landed if r["status"] != "succeeded"]
    assert len(errored) == 1, errored
    assert errored[0]["status"] == "errored"
    assert errored[0]["error"]["type"] == "malformed_result"
    assert errored[0]["cost_usd"] == 0
    assert manifest["counts"]["succeeded"] == N - 1


@pytest.mark.parametrize("provider", PROVIDERS)
def test_results_for_ids_never_sent_are_dropped_and_reported(emulator, make_dag, provider):
    manifest = run_with_fault(emulator, make_dag, provider, "foreign_ids", ALWAYS)
    assert manifest["counts"]["succeeded"] == N
    assert manifest["dropped_results"] == {"foreign": 2, "repeated": 0}
    assert manifest["disowned_batches"] == []


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_repeated_id_keeps_its_first_outcome_and_is_reported(emulator, make_dag, provider):
    manifest = run_with_fault(emulator, make_dag, provider, "duplicate_ids", ALWAYS)
    assert manifest["counts"]["succeeded"] == N
    assert manifest["dropped_results"] == {"foreign": 0, "repeated": 1}


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_missing_id_is_rebatched(emulator, make_dag, provider):
    manifest = run_with_fault(emulator, make_dag, provider, "missing_ids", 1)
    assert manifest["counts"]["succeeded"] == N
    assert manifest["rounds"] == 2
    landed = landed_rows(manifest)
    assert sum(r["round"] == 1 for r in landed) == 1


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_missing_id_that_stays_missing_lands_missing(emulator, make_dag, provider):
    manifest = run_with_fault(emulator, make_dag, provider, "missing_ids", ALWAYS)
    assert manifest["counts"]["missing"] == 1
    assert manifest["counts"]["succeeded"] == N - 1


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_100kb_error_message_is_clipped(emulator, make_dag, provider):
    manifest = run_with_fault(emulator, make_dag, provider, "huge_error", ALWAYS)
    errored = [r for r in landed_rows(manifest) if r["status"] == "errored"]
    assert len(errored) == 1
    message = errored[0]["error"]["message"]
    assert len(message) < 2200
    assert "more characters cut" in message
    assert manifest["counts"]["succeeded"] == N - 1


def test_an_unknown_fault_name_is_refused(emulator):
    import httpx

    with pytest.raises(httpx.HTTPStatusError):
        emulator.configure(faults={"no_such_fault": 1})
    with pytest.raises(httpx.HTTPStatusError):
        emulator.configure(faults={"html_200": -1})
