"""What the Airflow UI reads, written by real task runs: progress records, extra links, asset events, logs.

Every test runs a real DAG with ``dag.test()`` against the emulator and reads back what the
api-server would read: the ``task_state_store`` and ``xcom`` tables and the asset events.
"""

from __future__ import annotations

import json
from typing import Any

import pendulum
import pytest

from airflow_provider_tokentier.core.links import provider_batch_url, task_instance_view_url
from airflow_provider_tokentier.core.progress import PROGRESS_KEY
from airflow_provider_tokentier.links import ProviderBatchLink, TokentierViewLink
from airflow_provider_tokentier.triggers.batch import BatchTrigger
from tests.airflow.helpers import rows_for, run_dag, slow_rebatch_rounds, task_output


def _stored_progress(dag_id: str, task_id: str) -> dict[str, Any] | None:
    """The progress record as the api-server reads it: the task_state_store row."""
    from airflow.models.task_state_store import TaskStateStoreModel
    from airflow.utils.session import create_session

    with create_session() as session:
        row = (
            session.query(TaskStateStoreModel)
            .filter_by(dag_id=dag_id, task_id=task_id, map_index=-1, key=PROGRESS_KEY)
            .one_or_none()
        )
        return None if row is None else json.loads(row.value)


def _xcoms(dag_id: str, task_id: str) -> dict[str, Any]:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        rows = session.query(XComModel).filter_by(dag_id=dag_id, task_id=task_id)
        return {r.key: XComModel.deserialize_value(r) for r in rows}


def _api_server_link(dag: Any, dag_id: str, run_id: str, task_id: str, name: str) -> str | None:
    """The link as the api-server resolves it: from the serialized DAG, never our code."""
    from airflow.models.dagbag import DBDagBag
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    with create_session() as session:
        serialized = DBDagBag().get_latest_version_of_dag(dag_id, session=session)
        ti = session.query(TaskInstance).filter_by(dag_id=dag_id, run_id=run_id, task_id=task_id).one()
        assert serialized is not None
        return serialized.get_task(task_id).get_extra_links(ti, name)


@pytest.fixture
def deferral_snapshots(monkeypatch: pytest.MonkeyPatch, dag_id: str) -> list[dict[str, Any]]:
    """While each trigger of the ``ready`` task runs (the task is deferred), what the UI could read."""
    snapshots: list[dict[str, Any]] = []
    original = BatchTrigger.run

    async def run(self: BatchTrigger):
        snapshots.append(
            {
                "batch_ids": list(self.batch_ids),
                "progress": _stored_progress(dag_id, "ready"),
                "xcoms": _xcoms(dag_id, "ready"),
            }
        )
        async for event in original(self):
            yield event

    monkeypatch.setattr(BatchTrigger, "run", run)
    return snapshots


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
def test_progress_record_and_links_while_deferred_across_rounds_and_after(
    emulator, make_dag, dag_id, deferral_snapshots, provider, capfd, caplog, monkeypatch
):
    # 24 h of virtual time in about a second: round 1 ends with expiries, round 2 re-batches them
    # (slowed down, so the sensor always defers on it).
    emulator.configure(time_scale=86400.0, expire_rate=0.3, seed=3)
    rebatched = slow_rebatch_rounds(monkeypatch, emulator)
    rows = rows_for(provider, 20)
    sensor_kwargs = {"rebatch": "expired", "max_rounds": 3, "poll_interval": 0.1}
    dag = make_dag(provider, rows, sensor_kwargs=sensor_kwargs)
    run = run_dag(dag)
    assert run.states == {"submit": "success", "ready": "success"}, run.states
    manifest = run.xcoms["ready"]
    assert (manifest["rounds"], rebatched) == (2, [1]), manifest

    # While deferred: the record shows the round being waited on, and both links point at it.
    rounds_seen = [s["progress"]["round"] for s in deferral_snapshots]
    assert rounds_seen, rounds_seen
    assert set(rounds_seen) <= {1, 2}, rounds_seen
    assert rounds_seen[-1] == 2, rounds_seen
    view_url = task_instance_view_url("", dag_id, run.dag_run.run_id, "ready", -1)
    for snap in deferral_snapshots:
        progress = snap["progress"]
        assert progress["phase"] == "waiting"
        assert progress["operator"] == "BatchSensor"
        assert progress["provider"] == provider
        assert progress["tier"] == "batch"
        assert progress["max_rounds"] == 3
        assert progress["totals"]["total"] == 20
        waiting_on = [b for b in progress["batches"] if b["round"] == progress["round"]]
        assert [b["id"] for b in waiting_on] == snap["batch_ids"]
        assert progress["expected_finish"]["p50"] <= progress["expected_finish"]["p95"]
        assert snap["xcoms"][ProviderBatchLink.key] == provider_batch_url(provider, snap["batch_ids"][0])
        assert snap["xcoms"][TokentierViewLink.key] == view_url
    later = deferral_snapshots[-1]["progress"]
    # Round 1's outcome read back while round 2 runs: each request counted once, at its latest round.
    assert later["totals"]["succeeded"] > 0
    assert later["totals"]["pending"] > 0
    assert later["totals"]["expired"] == 0
    assert later["totals"]["succeeded"] + later["totals"]["pending"] == 20
    first_round = [b for b in later["batches"] if b["round"] == 1]
    assert first_round
    assert all(b["status"] == "ended" and b["counts"]["expired"] > 0 for b in first_round)
    assert later["cost_usd"] > 0
    assert later["standard_cost_usd"] > later["cost_usd"]

    # After: the record is final, the links stay (resolved the api-server's way).
    final = _stored_progress(dag_id, "ready")
    assert final["phase"] == "landed"
    assert final["round"] == manifest["rounds"]
    assert final["totals"]["pending"] == 0
    assert final["totals"]["succeeded"] == manifest["counts"]["succeeded"]
    assert final["cost_usd"] == pytest.approx(manifest["cost_usd"])
    assert final["savings_usd"] == pytest.approx(manifest["savings_usd"])
    assert final["results_uri"] == manifest["results_uri"]
    last_batch = manifest["batches"][-1]
    assert _api_server_link(dag, dag_id, run.dag_run.run_id, "ready", "Provider batch") == provider_batch_url(
        provider, last_batch
    )
    assert _api_server_link(dag, dag_id, run.dag_run.run_id, "ready", "tokentier") == view_url
    submit_record = _stored_progress(dag_id, "submit")
    assert submit_record["operator"] == "BatchSubmitOperator"
    assert submit_record["batches"]

    # The log: no transport lines, one group per round, the summary block.
    log = task_output(capfd, caplog)
    assert "HTTP Request" not in log
    assert log.count("::group::Round 1/3") >= 1
    assert "::group::Round 2/3: re-batching" in log
    assert "::endgroup::" in log
    assert "tokentier summary" in log
    assert f"results:          {manifest['results_uri']}" in log


def test_reschedule_mode_persists_links_and_progress_on_every_poke(emulator, make_dag, dag_id):
    emulator.configure(batch_turnaround_s=7200.0)
    rows = rows_for("openai", 6)
    run = run_dag(make_dag("openai", rows, sensor_kwargs={"deferrable": False, "poll_interval": 0.2}))
    assert run.states == {"submit": "success", "ready": "success"}, run.states
    xcoms = _xcoms(dag_id, "ready")
    batch_id = run.xcoms["submit"]["batches"][0]["id"]
    assert xcoms[ProviderBatchLink.key] == provider_batch_url("openai", batch_id)
    assert xcoms[TokentierViewLink.key].startswith(f"/tokentier/ti/{dag_id}/")
    record = _stored_progress(dag_id, "ready")
    assert record["phase"] == "landed"
    assert record["totals"]["succeeded"] == 6


def test_landed_results_emit_an_asset_event_with_what_landed(emulator, dag_id, state_root):
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.sdk import DAG, Asset, AssetAlias
    from airflow.utils.session import create_session

    from airflow_provider_tokentier.operators import BatchSubmitOperator, StandardOperator
    from airflow_provider_tokentier.sensors import BatchSensor

    summaries = Asset(uri="s3://wiki/summaries", name="wiki_summaries")
    per_run = AssetAlias(name="tokentier_results")
    with DAG(dag_id=dag_id, schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC")) as dag:
        submit = BatchSubmitOperator(
            task_id="submit", provider="anthropic", requests=rows_for("anthropic", 5), state_root=state_root
        )
        BatchSensor(
            task_id="ready",
            submission=submit.output,
            state_root=state_root,
            poll_interval=0.2,
            results_asset=summaries,
        )
        StandardOperator(
            task_id="standard",
            provider="openai",
            requests=rows_for("openai", 3),
            state_root=state_root,
            results_asset=per_run,
        )
    run = run_dag(dag)
    assert run.states == {"submit": "success", "ready": "success", "standard": "success"}, run.states
    with create_session() as session:
        events = {
            e.source_task_id: (session.get(AssetModel, e.asset_id).uri, e.extra)
            for e in session.query(AssetEvent).filter(AssetEvent.source_dag_id == dag_id)
        }
    uri, extra = events["ready"]
    manifest = run.xcoms["ready"]
    assert uri == "s3://wiki/summaries"
    assert extra["results_uri"] == manifest["results_uri"]
    assert extra["counts"] == manifest["counts"] == {**extra["counts"], "succeeded": 5}
    assert (extra["rounds"], extra["tiers"]["batch"]) == (1, 5)
    assert extra["cost_usd"] == pytest.approx(manifest["cost_usd"])
    assert extra["savings_usd"] == pytest.approx(manifest["savings_usd"])
    assert extra["savings_usd"] > 0
    uri, extra = events["standard"]
    standard = run.xcoms["standard"]
    assert uri.endswith("results.jsonl")
    assert uri == (
        standard["results_uri"] if "://" in standard["results_uri"] else f"file://{standard['results_uri']}"
    )
    assert extra["tiers"]["standard"] == 3
    assert extra["savings_usd"] == 0
    record = _stored_progress(dag_id, "standard")
    assert record["operator"] == "StandardOperator"
    assert record["phase"] == "landed"
    assert record["tier"] == "standard"
    assert record["totals"]["succeeded"] == 3


def test_a_results_asset_that_is_not_an_asset_is_refused():
    from airflow_provider_tokentier.sensors import BatchSensor

    with pytest.raises(TypeError, match=r"results_asset must be an airflow\.sdk Asset or AssetAlias"):
        BatchSensor(task_id="s", provider="openai", batch_ids=["b"], results_asset="s3://x")


def test_standard_run_refreshes_the_record_every_progress_every_rows(
    emulator, dag_id, state_root, monkeypatch
):
    from airflow.sdk import DAG

    from airflow_provider_tokentier.operators import StandardOperator
    from airflow_provider_tokentier.runtime import reporting

    published: list[dict[str, Any]] = []
    original = reporting.publish_progress

    def publish(context: Any, record: Any) -> dict[str, Any]:
        published.append(original(context, record))  # a side channel: the real write happens
        return published[-1]

    monkeypatch.setattr(reporting, "publish_progress", publish)
    with DAG(dag_id=dag_id, schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC")) as dag:
        StandardOperator(
            task_id="standard",
            provider="anthropic",
            requests=rows_for("anthropic", 6),
            state_root=state_root,
            progress_every=2,
            max_concurrency=1,
        )
    run = run_dag(dag)
    assert run.states == {"standard": "success"}, run.states
    running = [r for r in published if r["phase"] == "running"]
    done = [r["totals"]["total"] - r["totals"]["pending"] for r in running]
    assert (done[0], done[-1]) == (0, 6), done
    assert {2, 4} <= set(done), done
    assert all(r["totals"]["total"] == 6 and r["tier"] == "standard" for r in running)
    assert running[-1]["cost_usd"] > 0
    assert running[-1]["savings_usd"] == 0
    assert published[-1]["phase"] == "landed"
    assert _stored_progress(dag_id, "standard") == published[-1]


def test_landed_record_lists_only_errors_that_landed(emulator, make_dag, dag_id, monkeypatch):
    # Round 1 errors some rows (retryable api_error/overloaded_error); round 2 re-runs them cleanly.
    emulator.configure(time_scale=86400.0, error_rate=0.3, seed=5)
    slow_rebatch_rounds(monkeypatch, emulator)
    seen: list[dict[str, Any] | None] = []
    original = BatchTrigger.run

    async def run(self: BatchTrigger):
        seen.append(_stored_progress(dag_id, "ready"))
        async for event in original(self):
            yield event

    monkeypatch.setattr(BatchTrigger, "run", run)
    sensor_kwargs = {"rebatch": "expired+retryable", "poll_interval": 0.1}
    run = run_dag(make_dag("anthropic", rows_for("anthropic", 20), sensor_kwargs=sensor_kwargs))
    assert run.states == {"submit": "success", "ready": "success"}, run.states
    assert run.xcoms["ready"]["rounds"] == 2
    assert run.xcoms["ready"]["counts"]["errored"] == 0
    while_round_2 = seen[-1]
    assert while_round_2 is not None
    assert while_round_2["round"] == 2
    groups = while_round_2["errors"]
    assert groups, groups
    assert {g["type"] for g in groups} <= {"api_error", "overloaded_error"}, groups
    assert sum(g["count"] for g in groups) == while_round_2["totals"]["pending"]
    assert all(e["custom_id"].startswith("a-") and e["message"] for g in groups for e in g["examples"])
    assert _stored_progress(dag_id, "ready")["errors"] == []
