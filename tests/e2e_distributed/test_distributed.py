"""End to end on a multi-machine deployment: CeleryExecutor, PostgreSQL, Redis, state on S3.

Every scenario drives a DAG of ``dags/dist_scenarios.py`` through the REST API and checks where
its tasks ran (task instances' hostnames are machine names), what the emulator was asked for
(provider calls, batch lists) and what it billed (``/_emulator/billing``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_tokentier.testing import Emulator
from tests.e2e_distributed.conftest import PART_ROWS
from tests.e2e_distributed.dags.dist_scenarios import FLEX_ROWS, SPREAD_ROWS
from tests.e2e_distributed.deployment import DistributedStack

#: Generous per test: the first one also waits for the deployment to start, and CI machines are slow.
pytestmark = pytest.mark.timeout(900)

PROVIDERS = ("anthropic", "openai")
CREATE = {"anthropic": "POST /v1/messages/batches", "openai": "POST /v1/batches"}
RETRIEVE = {"anthropic": "GET /v1/messages/batches/{id}", "openai": "GET /v1/batches/{id}"}

#: Hold batches open until the test releases them (24 h of virtual time is 24 real minutes).
HOLD = {"time_scale": 60.0, "batch_turnaround_s": 1e7}


def release(emulator: Emulator) -> None:
    """Let every held batch end now (moves the virtual clock past the 24 h window)."""
    emulator.advance(25 * 3600)


def batches(emulator: Emulator, provider: str) -> list[dict[str, Any]]:
    return emulator.batches().get(provider, [])


def billed(emulator: Emulator, tier: str | None = None) -> int:
    """Requests the emulator billed, in ``tier`` or in all tiers."""
    bill = emulator.billing()
    if tier is None:
        return int(bill["requests_billed"])
    return int(bill["by_tier"].get(tier, {}).get("requests", 0))


def polls(emulator: Emulator, provider: str) -> int:
    return emulator.calls().get(RETRIEVE[provider], 0)


@pytest.fixture
def held(emulator: Emulator) -> Iterator[Emulator]:
    """The emulator holding every new batch open until `release`; released again at the end."""
    emulator.configure(**HOLD)
    yield emulator
    release(emulator)


# -- (1) submit, wait and resume on different machines, with expiries and re-batching ---------------


def test_batch_spread_over_machines_lands_every_id_once(
    deployment: DistributedStack, emulator: Emulator
) -> None:
    emulator.configure(
        # The 24 h window, and so each expiry, passes in 6 s; Anthropic keeps results for
        # 29 days, 3 minutes here: time enough for a busy worker to collect them.
        time_scale=14400.0,
        # Each round takes 1.5-4.5 s: long enough that every sensor try finds it still
        # running and defers, so each wait really runs on a triggerer.
        batch_turnaround_s=12 * 3600.0,
        expire_rate=0.1,
        error_rate=0.05,
    )
    runs = {
        f"dist_spread_{provider}": deployment.trigger(f"dist_spread_{provider}") for provider in PROVIDERS
    }
    # Which triggerer runs each sensor's wait, sampled (from the database: quick) as the runs go on.
    waited_on: dict[str, set[str]] = {dag_id: set() for dag_id in runs}

    def finished() -> bool:
        done = True
        for dag_id, run_id in runs.items():
            owner = deployment.trigger_owner(dag_id, run_id, "ready")
            if owner is not None:
                waited_on[dag_id].add(owner)
            (state,) = deployment.sql(
                "SELECT state FROM dag_run WHERE dag_id = %s AND run_id = %s", dag_id, run_id
            )[0]
            done = done and state in ("success", "failed")
        return done

    deployment.wait_for("both runs to finish", finished, timeout=480, interval=0.1)
    succeeded = 0
    manifests: dict[str, dict[str, Any]] = {}
    for provider in PROVIDERS:
        dag_id = f"dist_spread_{provider}"
        run_id = runs[dag_id]
        deployment.wait_run(dag_id, run_id, timeout=10)

        hosts = {t: deployment.ti(dag_id, run_id, t)["hostname"] for t in ("submit", "ready", "collect")}
        assert hosts == {"submit": "worker-a", "ready": "worker-b", "collect": "worker-a"}, hosts
        # The sensor deferred on worker-b, its wait ran on a triggerer, it resumed on worker-b.
        assert waited_on[dag_id], waited_on
        assert waited_on[dag_id] <= set(deployment.triggerers), waited_on

        manifest = manifests[provider] = deployment.xcom(dag_id, run_id, "ready")
        assert manifest["rounds"] >= 2, manifest  # the expiries and errors did force re-batching
        assert manifest["total"] == SPREAD_ROWS
        assert sum(manifest["counts"].values()) == SPREAD_ROWS
        collected = deployment.xcom(dag_id, run_id, "collect")
        assert sorted(collected) == [f"spread-{provider}-{i:04d}" for i in range(SPREAD_ROWS)]
        succeeded += manifest["counts"]["succeeded"]

        submitted = sum(b["request_count"] for b in batches(emulator, provider))
        assert emulator.calls()[CREATE[provider]] == len(batches(emulator, provider))
        assert submitted > SPREAD_ROWS  # the re-batched rows went out again ...
    # ... and yet every request the providers billed is one landed row: nothing paid twice.
    assert billed(emulator, "batch") == billed(emulator) == succeeded
    check_workloads_page(deployment, runs, manifests)


def check_workloads_page(
    deployment: DistributedStack, runs: dict[str, str], manifests: dict[str, dict[str, Any]]
) -> None:
    """The plugin's "LLM workloads" JSON on PostgreSQL: its JSON queries differ from SQLite's."""
    for provider, manifest in manifests.items():
        dag_id = f"dist_spread_{provider}"
        page = deployment.api.fetch("/tokentier/api/workloads", {"dag_id": dag_id}).json()
        rows = page["workloads"]
        assert [(r["run_id"], r["task_id"], r["state"], r["phase"]) for r in rows] == [
            (runs[dag_id], "ready", "success", "landed")
        ], rows
        (row,) = rows
        assert row["provider"] == provider
        assert row["counts"]["total"] == SPREAD_ROWS
        assert row["counts"]["succeeded"] == manifest["counts"]["succeeded"]
        assert row["cost_usd"] == pytest.approx(manifest["cost_usd"], abs=1e-6)
        by_dag = page["summary"]["by_dag"][dag_id]
        assert (by_dag["workloads"], by_dag["landed"]) == (1, 1)
        assert by_dag["cost_usd"] == pytest.approx(manifest["cost_usd"], abs=1e-6)
        assert [t["provider"] for t in page["summary"]["turnaround"]] == [provider]

        # The provider filter is a JSON path in the WHERE clause (PostgreSQL: ->> on a cast).
        only = deployment.api.fetch("/tokentier/api/workloads", {"provider": provider}).json()
        assert {r["provider"] for r in only["workloads"]} == {provider}
        assert dag_id in {r["dag_id"] for r in only["workloads"]}


# -- (2) the triggerer that owns a wait is SIGKILLed ----------------------------------------------


def test_triggerer_owning_the_wait_killed_the_other_adopts_it(
    deployment: DistributedStack, held: Emulator
) -> None:
    dag_id = "dist_triggerer_dies"
    run_id = deployment.trigger(dag_id)
    deployment.wait_ti(dag_id, run_id, "ready", "deferred", timeout=180)
    owner = deployment.wait_for(
        "a triggerer to take the trigger", lambda: deployment.trigger_owner(dag_id, run_id, "ready"), 120
    )
    assert owner in deployment.triggerers
    (other,) = set(deployment.triggerers) - {owner}
    deployment.wait_for("a status poll", lambda: polls(held, "openai"), 60)

    deployment.kill(owner)  # SIGKILL: the triggerer's supervisor and its trigger runner
    try:
        adopter = deployment.wait_for(
            "the other triggerer to adopt the trigger",
            lambda: (o := deployment.trigger_owner(dag_id, run_id, "ready")) not in (None, owner) and o,
            timeout=120,
        )
        assert adopter == other
        before = polls(held, "openai")
        deployment.wait_for("the adopter to poll", lambda: polls(held, "openai") > before, 60)
        release(held)
        deployment.wait_run(dag_id, run_id, timeout=180)
    finally:
        deployment.restart(owner)

    manifest = deployment.xcom(dag_id, run_id, "ready")
    assert manifest["counts"]["succeeded"] == 4
    assert len(batches(held, "openai")) == 1
    assert held.calls()[CREATE["openai"]] == 1
    assert billed(held, "batch") == billed(held) == 4


# -- (3) a Celery worker is SIGKILLed right after submission ----------------------------------------


def test_worker_killed_after_submission_retry_on_other_worker_reattaches(
    deployment: DistributedStack, emulator: Emulator
) -> None:
    dag_id = "dist_worker_dies"
    run_id = deployment.trigger(dag_id)
    deployment.wait_for("the batch to be submitted", lambda: batches(emulator, "anthropic"), 180)
    first = deployment.wait_ti(dag_id, run_id, "submit", "running", timeout=60)
    machine = first["hostname"]
    assert machine in deployment.workers, first

    deployment.kill(machine)  # the worker, its pool and the task process: the machine is gone
    try:
        deployment.wait_run(dag_id, run_id, timeout=240)
    finally:
        deployment.restart(machine)

    tries = deployment.tries(dag_id, run_id, "submit")
    assert [t["try_number"] for t in tries] == [1, 2], tries
    assert tries[0]["hostname"] == machine, tries
    assert tries[0]["state"] in ("failed", "up_for_retry"), tries
    (other,) = set(deployment.workers) - {machine}
    assert tries[1]["hostname"] == other, tries
    assert tries[1]["state"] == "success", tries

    manifest = deployment.xcom(dag_id, run_id, "ready")
    assert manifest["counts"]["succeeded"] == 3
    assert len(batches(emulator, "anthropic")) == 1  # the retry re-attached: one batch ...
    assert emulator.calls()[CREATE["anthropic"]] == 1
    assert billed(emulator, "batch") == billed(emulator) == 3  # ... and one bill
    assert "Re-attaching to batch" in deployment.task_logs(dag_id)


# -- (4) a flex run's worker is SIGKILLed mid-run -------------------------------------------------


def test_flex_worker_killed_mid_run_retry_pays_only_unsaved_rows(
    deployment: DistributedStack, emulator: Emulator
) -> None:
    dag_id = "dist_flex_worker_dies"
    emulator.configure(latency_ms=300.0)  # one row at a time, ~0.3 s each: ~12 s for the run
    run_id = deployment.trigger(dag_id)
    deployment.wait_for("half the rows to be billed", lambda: billed(emulator) >= FLEX_ROWS // 2, 180)
    ti = deployment.ti(dag_id, run_id, "enrich")
    machine = ti["hostname"]
    assert ti["state"] == "running", ti
    assert machine in deployment.workers, ti
    deployment.kill(machine)
    paid_before_kill = billed(emulator)
    try:
        emulator.configure(latency_ms=0.0)
        deployment.wait_run(dag_id, run_id, timeout=240)
    finally:
        deployment.restart(machine)

    tries = deployment.tries(dag_id, run_id, "enrich")
    assert [t["hostname"] for t in tries][-1] != machine, tries
    manifest = deployment.xcom(dag_id, run_id, "enrich")
    assert manifest["counts"]["succeeded"] == FLEX_ROWS
    assert paid_before_kill < FLEX_ROWS
    # At most one part's rows (plus the one call in flight) are paid for again.
    paid_again = billed(emulator) - FLEX_ROWS
    assert 0 <= paid_again <= PART_ROWS + 1, (paid_before_kill, billed(emulator))


# -- (5) nothing on the workers' and triggerers' own disks ------------------------------------------


def test_no_machine_keeps_tokentier_state_locally(deployment: DistributedStack, emulator: Emulator) -> None:
    run_id = deployment.trigger("dist_local_state")
    deployment.wait_run("dist_local_state", run_id, timeout=240)
    # Give any late writer (a supervisor finishing up) a moment before looking.
    time.sleep(2)

    state_keys = deployment.s3_keys()
    assert any("/dist_local_state/" in key for key in state_keys), state_keys[:20]
    for machine in (*deployment.workers, *deployment.triggerers):
        home = deployment.machine_home(machine)
        stray = [
            p.relative_to(home)
            for p in deployment.machine_files(machine)
            if not _is_airflow_bookkeeping(p.relative_to(home))
        ]
        assert not stray, f"{machine} keeps files outside its logs: {stray[:20]}"
        logs = list((home / "logs").rglob("*"))
        assert not [p for p in logs if p.is_file() and not p.name.endswith((".log", ".json"))], logs[:20]


def _is_airflow_bookkeeping(relative: Path) -> bool:
    """Airflow's own files on a machine: its logs and its configuration, nothing of tokentier."""
    return relative.parts[0] == "logs" or relative.name in {"airflow.cfg", "webserver_config.py"}
