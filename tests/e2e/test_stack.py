"""End to end on real Airflow processes: deferral, crashes, clears, user kills and chaos.

Every scenario drives a DAG of ``tests/e2e/dags/e2e_scenarios.py`` through the REST API and
checks the outcome in Airflow (task states), in the task's ledger and in the emulator (the
batches a provider would hold and bill).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_tokentier.testing import Emulator
from tests.e2e.harness import AirflowStack

#: Hold batches open until the test releases them: every request finishes just before the
#: 24 h window closes, and 24 h of virtual time takes 24 real minutes at this speed.
HOLD = {"time_scale": 60.0, "batch_turnaround_s": 1e7}

#: Paid or mutating provider calls, as the emulator's /_emulator/calls names them.
CREATE = {"anthropic": "POST /v1/messages/batches", "openai": "POST /v1/batches"}
RETRIEVE = {"anthropic": "GET /v1/messages/batches/{id}", "openai": "GET /v1/batches/{id}"}
CANCEL = {"anthropic": "POST /v1/messages/batches/{id}/cancel", "openai": "POST /v1/batches/{id}/cancel"}


def release(emulator: Emulator) -> None:
    """Let every held batch end now (moves the virtual clock past the 24 h window)."""
    emulator.advance(25 * 3600)


def provider_calls(emulator: Emulator) -> dict[str, int]:
    return {k: v for k, v in emulator.calls().items() if " /v1/" in k and v}


def batches(emulator: Emulator, provider: str) -> list[dict[str, Any]]:
    return emulator.batches().get(provider, [])


def wait_polled(stack: AirflowStack, emulator: Emulator, provider: str, timeout: float = 60.0) -> int:
    """Wait until some process polls the provider again (the trigger is running) and return the count."""
    before = emulator.calls().get(RETRIEVE[provider], 0)
    after: int = stack.wait_for(
        f"a {provider} status poll",
        lambda: n if (n := emulator.calls().get(RETRIEVE[provider], 0)) > before else 0,
        timeout,
        interval=0.2,
    )
    return after


def read_rows(results_uri: str) -> list[dict[str, Any]]:
    path = Path(results_uri.removeprefix("file://"))
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture
def held(emulator: Emulator) -> Iterator[Emulator]:
    """The emulator holding every new batch open until `release`; released again at the end."""
    emulator.configure(**HOLD)
    yield emulator
    release(emulator)


# -- (1) a deferred wait holds no worker slot --------------------------------------------------------


def test_deferred_sensor_frees_the_only_worker_slot(stack: AirflowStack, held: Emulator) -> None:
    dag_id = "e2e_deferred_wait"
    run_id = stack.trigger(dag_id)
    stack.wait_ti(dag_id, run_id, "ready", "deferred")
    wait_polled(stack, held, "anthropic")

    pool = stack.api.get("/pools/default_pool")
    assert pool["running_slots"] == 0, pool
    assert pool["deferred_slots"] == 1, pool

    # parallelism=1: the side DAG can only run if the waiting sensor holds no executor slot.
    side = stack.trigger("e2e_side_task")
    stack.wait_run("e2e_side_task", side, timeout=120)
    assert stack.ti(dag_id, run_id, "ready")["state"] == "deferred"

    release(held)
    stack.wait_run(dag_id, run_id)
    manifest = stack.xcom(dag_id, run_id, "ready")
    assert manifest["counts"]["succeeded"] == 4
    assert len(batches(held, "anthropic")) == 1


# -- (2) the triggerer is SIGKILLed mid-wait and restarted ---------------------------------------------


def test_triggerer_killed_mid_wait_resumes_without_restarting(stack: AirflowStack, held: Emulator) -> None:
    dag_id = "e2e_triggerer_restart"
    run_id = stack.trigger(dag_id)
    stack.wait_ti(dag_id, run_id, "ready", "deferred")
    wait_polled(stack, held, "openai")
    deadline_file = stack.ledger_dir(dag_id, run_id, "ready") / "deadline.json"
    deadline_before = json.loads(deadline_file.read_text())
    assert deadline_before["at"] > time.time()

    stack.kill("triggerer")  # SIGKILL to its process group: supervisor and trigger runner
    time.sleep(1.0)
    polls = held.calls().get(RETRIEVE["openai"], 0)
    time.sleep(2.0)
    assert held.calls().get(RETRIEVE["openai"], 0) == polls, "something still polls with the triggerer dead"
    assert stack.ti(dag_id, run_id, "ready")["state"] == "deferred"

    stack.restart("triggerer")
    # The new triggerer adopts the orphaned trigger once the dead one's heartbeat is stale.
    wait_polled(stack, held, "openai", timeout=90)
    release(held)
    stack.wait_run(dag_id, run_id)

    assert json.loads(deadline_file.read_text()) == deadline_before
    manifest = stack.xcom(dag_id, run_id, "ready")
    assert manifest["counts"]["succeeded"] == 4
    assert len(batches(held, "openai")) == 1
    assert provider_calls(held)[CREATE["openai"]] == 1


# -- (3) the worker dies right after submission ----------------------------------------------------


def test_worker_killed_after_submission_retry_reattaches(stack: AirflowStack, emulator: Emulator) -> None:
    runs = {
        ("e2e_worker_dies", "anthropic"): None,
        ("e2e_worker_dies_unrecorded", "openai"): None,
    }
    started = {key: stack.trigger(key[0]) for key in runs}
    for (dag_id, provider), run_id in started.items():
        stack.wait_run(dag_id, run_id, timeout=150)
        submit = stack.ti(dag_id, run_id, "submit")
        assert submit["try_number"] == 2, submit  # the first try died, the retry finished
        tries = stack.api.get(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/submit/tries")
        first = min(tries["task_instances"], key=lambda t: t["try_number"])
        assert first["state"] in ("failed", "up_for_retry"), tries
        assert len(batches(emulator, provider)) == 1, batches(emulator, provider)
        assert provider_calls(emulator)[CREATE[provider]] == 1
        manifest = stack.xcom(dag_id, run_id, "ready")
        assert manifest["counts"]["succeeded"] == 3
    logs = stack.task_logs("e2e_worker_dies")
    assert "Re-attaching to batch" in logs
    logs = stack.task_logs("e2e_worker_dies_unrecorded")
    assert "adopting it" in logs


# -- (4) a finished sensor task is cleared ----------------------------------------------------------


def test_cleared_sensor_relands_without_provider_calls(stack: AirflowStack, emulator: Emulator) -> None:
    dag_id = "e2e_clear_finished"
    run_id = stack.trigger(dag_id)
    stack.wait_run(dag_id, run_id)
    first = stack.xcom(dag_id, run_id, "ready")
    rows_before = read_rows(first["results_uri"])
    calls_before = provider_calls(emulator)
    tries_before = stack.ti(dag_id, run_id, "ready")["try_number"]

    cleared = stack.clear(dag_id, run_id, ["ready"])
    assert [t["task_id"] for t in cleared] == ["ready"]
    stack.wait_for(
        "the cleared sensor to run again",
        lambda: (
            (ti := stack.ti(dag_id, run_id, "ready"))["try_number"] > tries_before
            and ti["state"] == "success"
        ),
        timeout=120,
    )
    stack.wait_run(dag_id, run_id)

    assert provider_calls(emulator) == calls_before  # not one provider call, paid or not
    again = stack.xcom(dag_id, run_id, "ready")
    assert again["results_uri"] == first["results_uri"]
    assert again["counts"] == first["counts"] == {**first["counts"], "succeeded": 5}
    assert read_rows(again["results_uri"]) == rows_before
    assert len(batches(emulator, "anthropic")) == 1


# -- (5) the user marks the deferred sensor failed ---------------------------------------------------


def test_marking_deferred_sensor_failed_cancels_its_batches(stack: AirflowStack, held: Emulator) -> None:
    dags = {"openai": "e2e_mark_failed_openai", "anthropic": "e2e_mark_failed_anthropic"}
    runs = {provider: stack.trigger(dag_id) for provider, dag_id in dags.items()}
    for provider, dag_id in dags.items():
        stack.wait_ti(dag_id, runs[provider], "ready", "deferred")
        wait_polled(stack, held, provider)

    for provider, dag_id in dags.items():
        stack.set_ti_state(dag_id, runs[provider], "ready", "failed")

    cancelled = {"openai": ("cancelling", "cancelled"), "anthropic": ("canceling", "ended")}
    status_key = {"openai": "status", "anthropic": "processing_status"}

    def cancelled_on(provider: str) -> bool:
        held_batches = batches(held, provider)
        return bool(held_batches) and all(
            b[status_key[provider]] in cancelled[provider] for b in held_batches
        )

    for provider, dag_id in dags.items():
        stack.wait_for(f"the {provider} batch to be cancelled", lambda: cancelled_on(provider), timeout=60)  # noqa: B023
        assert held.calls()[CANCEL[provider]] == 1
        assert len(batches(held, provider)) == 1
        stack.wait_run(dag_id, runs[provider], state="failed")
        assert stack.ti(dag_id, runs[provider], "ready")["state"] == "failed"
    assert "Cancelled" in stack.task_logs("e2e_mark_failed_openai") + stack.describe(200000)


# -- (6) chaos ---------------------------------------------------------------------------------------


def test_chaos_run_lands_every_custom_id_exactly_once(stack: AirflowStack, emulator: Emulator) -> None:
    emulator.configure(
        time_scale=86400.0,  # the 24 h window, and so each expiry, passes in a second
        batch_turnaround_s=3600.0,
        expire_rate=0.1,
        error_rate=0.05,
        poll_error_rate=0.1,
        flex_429_rate=0.5,
    )
    dags = {"anthropic": "e2e_chaos_anthropic", "openai": "e2e_chaos_openai"}
    runs = {provider: stack.trigger(dag_id) for provider, dag_id in dags.items()}
    flex_run = stack.trigger("e2e_chaos_flex")
    for provider, dag_id in dags.items():
        stack.wait_run(dag_id, runs[provider], timeout=180)
        manifest = stack.xcom(dag_id, runs[provider], "ready")
        rows = read_rows(manifest["results_uri"])
        ids = [r["custom_id"] for r in rows]
        expected = {f"{dag_id[-12:]}-{i:04d}" for i in range(120)}
        assert len(ids) == len(set(ids)) == 120, "a custom_id landed twice or not at all"
        assert set(ids) == expected
        assert manifest["total"] == 120
        assert sum(manifest["counts"].values()) == 120
        assert manifest["rounds"] >= 2, manifest  # the faults did force re-batching
        assert manifest["counts"]["succeeded"] >= 110, manifest["counts"]
    stack.wait_run("e2e_chaos_flex", flex_run, timeout=180)
    flex = stack.xcom("e2e_chaos_flex", flex_run, "enrich")
    flex_ids = [r["custom_id"] for r in read_rows(flex["results_uri"])]
    assert sorted(flex_ids) == sorted(f"chaos_flex-{i:04d}" for i in range(60))
    assert flex["counts"]["succeeded"] == 60
    # Both tiers served some rows: the 429s really happened and really fell back.
    assert flex["tiers"]["flex"] > 0, flex["tiers"]
    assert flex["tiers"]["standard"] > 0, flex["tiers"]
