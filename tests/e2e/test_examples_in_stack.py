"""Every example DAG of ``dags_examples/`` runs green on the real Airflow stack.

The session stack loads ``dags_examples/`` beside the scenario DAGs, with the small sizes and
short polls of `tests.e2e.conftest.EXAMPLES_ENV`, against the emulator on its fast clock (an hour
of batch time in about a second; no expiries, errors or 429s). The test triggers one run of each
example through the REST API, all at once, then polls them together: the sensors wait in the
triggerer, so the runs interleave on the single worker slot. Each must end ``success``, and the
last task's XCom (read through the API) must account for every request.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

import pytest

from airflow_provider_tokentier.testing import Emulator
from tests.e2e.conftest import EXAMPLES_ENV
from tests.e2e.harness import FINISHED_RUN, AirflowStack, StackError

EXAMPLES = (
    "nightly_doc_refresh",
    "overnight_eval",
    "embedding_backfill",
    "flex_enrichment",
    "routed_workloads",
)


def _n(name: str) -> int:
    return int(EXAMPLES_ENV[name])


@pytest.fixture
def example_runs(stack: AirflowStack, emulator: Emulator) -> Iterator[dict[str, str]]:
    """One manual run of each example, triggered together. Afterwards the DAGs are paused again and
    a run left unfinished (a failed test) is marked failed, so nothing of it runs into the next test."""
    stack.wait_dags(EXAMPLES)
    runs: dict[str, str] = {}
    try:
        for dag_id in EXAMPLES:
            runs[dag_id] = stack.trigger(dag_id)
        yield runs
    finally:
        for dag_id in EXAMPLES:
            with contextlib.suppress(StackError):
                stack.api.patch(f"/dags/{dag_id}", {"is_paused": True})
        for dag_id, run_id in runs.items():
            with contextlib.suppress(StackError):
                if stack.run_state(dag_id, run_id) not in FINISHED_RUN:
                    stack.api.patch(f"/dags/{dag_id}/dagRuns/{run_id}", {"state": "failed"})


def wait_all(stack: AirflowStack, runs: dict[str, str], timeout: float) -> dict[str, str]:
    """Poll every run (one API call for all, every second: the api-server shares two cores with
    the tasks) until all have finished; fail at once, with its tasks and logs, on a failed one."""
    wanted = {(dag_id, run_id) for dag_id, run_id in runs.items()}
    done: dict[str, str] = {}
    deadline = time.monotonic() + timeout
    while len(done) < len(runs):
        stack.check_alive()
        listed = stack.api.post("/dags/~/dagRuns/list", {"dag_ids": list(runs), "page_limit": 100})
        for run in listed["dag_runs"]:
            dag_id, run_id, state = run["dag_id"], run["dag_run_id"], run["state"]
            if (dag_id, run_id) not in wanted or state not in FINISHED_RUN or dag_id in done:
                continue
            done[dag_id] = state
            if state != "success":
                raise StackError(
                    f"run {dag_id}/{run_id} ended {state}; tasks: {stack.ti_states(dag_id, run_id)}"
                    f"\n{stack.task_logs(dag_id)[-12000:]}"
                )
        if len(done) < len(runs) and time.monotonic() > deadline:
            states = {d: stack.ti_states(d, r) for d, r in runs.items() if d not in done}
            raise StackError(f"timed out after {timeout:.0f}s; still running: {states}")
        time.sleep(1.0)
    return done


def test_every_example_dag_runs_green(
    stack: AirflowStack, emulator: Emulator, example_runs: dict[str, str]
) -> None:
    runs = example_runs
    started = time.monotonic()
    assert wait_all(stack, runs, timeout=300) == dict.fromkeys(EXAMPLES, "success")
    print(f"all {len(runs)} example runs succeeded in {time.monotonic() - started:.1f}s")
    for dag_id, run_id in runs.items():
        states = stack.ti_states(dag_id, run_id)
        assert set(states.values()) == {"success"}, (dag_id, states)

    def xcom(dag_id: str, task_id: str) -> Any:
        return stack.xcom(dag_id, runs[dag_id], task_id)

    # nightly_doc_refresh: every doc summarized and stored, nothing failed or missing.
    docs = _n("TOKENTIER_DEMO_DOCS")
    stored = xcom("nightly_doc_refresh", "store_summaries")
    assert stored["stored"] == docs, stored
    assert stored["counts"]["succeeded"] == sum(stored["counts"].values()) == docs, stored
    assert stored["savings_usd"] > 0

    # overnight_eval: both chained stages landed every case, on their own provider's batch.
    cases = _n("TOKENTIER_EVAL_CASES")
    report = xcom("overnight_eval", "report")
    assert report["cases"] == report["answered"] == report["judged"] == cases, report
    for stage in ("generate", "judge"):
        counts = report["stages"][stage]["counts"]
        assert counts["succeeded"] == sum(counts.values()) == cases, (stage, counts)
    assert report["stages"]["generate"]["tiers"].get("batch") == cases, report["stages"]
    assert report["stages"]["judge"]["tiers"].get("batch") == cases, report["stages"]
    generated = xcom("overnight_eval", "generate_ready")
    judged = xcom("overnight_eval", "judge_ready")
    assert judged["submitted_at"] >= generated["finished_at"]  # the judge waited for the answers

    # embedding_backfill: more rows than one (demo-capped) batch holds, chunked, all landed.
    backfill = _n("TOKENTIER_BACKFILL_DOCS")
    per_batch = _n("TOKENTIER_MAX_REQUESTS_PER_BATCH")
    vectors = xcom("embedding_backfill", "store_vectors")
    assert vectors["docs"] == backfill, vectors
    assert vectors["vectors"] == backfill * _n("TOKENTIER_PASSAGES_PER_DOC"), vectors
    assert sum(vectors["batch_sizes"]) == backfill
    assert max(vectors["batch_sizes"]) <= per_batch
    assert vectors["batches"] == -(-backfill // per_batch) > 1, vectors
    assert vectors["counts"]["succeeded"] == sum(vectors["counts"].values()) == backfill

    # flex_enrichment: every ticket labelled, served by flex (no 429s on this clock) or standard.
    tickets = _n("TOKENTIER_TICKETS")
    labels = xcom("flex_enrichment", "store_labels")
    assert labels["labelled"] == tickets, labels
    assert set(labels["served_by_tier"]) <= {"flex", "standard"}, labels
    assert sum(labels["served_by_tier"].values()) == tickets, labels
    assert labels["counts"]["succeeded"] == tickets, labels

    # routed_workloads: each workload on the tier the router picked, with its reasons, all landed.
    decisions = xcom("routed_workloads", "show_decisions")
    assert {name: d["tier"] for name, d in decisions.items()} == {
        "draft_agent_replies": "standard",
        "summarize_incidents": "flex",
        "catalog_descriptions": "batch",
    }
    for name, env in (
        ("draft_agent_replies", "TOKENTIER_REPLY_REQUESTS"),
        ("summarize_incidents", "TOKENTIER_INCIDENT_REQUESTS"),
        ("catalog_descriptions", "TOKENTIER_CATALOG_REQUESTS"),
    ):
        decision = decisions[name]
        assert decision["reasons"], decision
        assert decision["counts"]["succeeded"] == sum(decision["counts"].values()) == _n(env), decision
        served = {tier: n for tier, n in decision["tiers"].items() if n}
        assert served == {decision["tier"]: _n(env)}, decision
    assert "catalog_descriptions: BATCH" in stack.task_logs("routed_workloads")

    # One batch per batch stage (embedding_backfill's chunks aside): no stray paid submission.
    batches = emulator.batches()
    assert len(batches.get("anthropic", [])) == 3  # nightly, generate, catalog
    assert len(batches.get("openai", [])) == 1 + vectors["batches"]  # judge + the backfill chunks
