"""Page building of the tokentier plugin: summaries, the task-instance tab and the workloads page."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from airflow_provider_tokentier.get_provider_info import get_provider_info
from airflow_provider_tokentier.plugins import TASK_INSTANCE_HREF, TokentierPlugin, pages
from airflow_provider_tokentier.plugins.records import (
    TaskInstanceKey,
    TaskInstanceView,
    WorkloadFilter,
    WorkloadRow,
    _as_mapping,
)
from airflow_provider_tokentier.plugins.summary import percentile, summarize, turnaround_svg

NOW = datetime(2026, 11, 29, 4, 0, tzinfo=timezone.utc)


def record(**overrides: Any) -> dict[str, Any]:
    """A record as the worker writes it for a deferred sensor in its second round."""
    base: dict[str, Any] = {
        "schema_version": 1,
        "operator": "BatchSensor",
        "provider": "anthropic",
        "model": "claude-haiku-4-5",
        "tier": "batch",
        "decision": {
            "tier": "batch",
            "reasons": ["deadline 8h leaves room for a 24h-window batch at p95 5h"],
            "costs": {"batch": 1.6, "flex": None, "standard": 3.2},
        },
        "phase": "waiting",
        "round": 2,
        "max_rounds": 3,
        "batches": [
            {
                "id": "msgbatch_01",
                "round": 1,
                "status": "ended",
                "requests": 1000,
                "counts": {"succeeded": 980, "expired": 20},
                "url": "https://console.anthropic.com/workspaces/default/batches/msgbatch_01",
            },
            {
                "id": "msgbatch_02",
                "round": 2,
                "status": "in_progress",
                "requests": 20,
                "counts": {"processing": 20},
                "url": "javascript:alert(1)",
            },
        ],
        "batches_total": 2,
        "totals": {"total": 1000, "succeeded": 980, "errored": 7, "expired": 0, "pending": 13},
        "cost_usd": 0.07,
        "standard_cost_usd": 0.14,
        "savings_usd": 0.07,
        "deadline": "2026-11-29T09:00:00+00:00",
        "expected_finish": {"p50": "2026-11-29T06:00:00+00:00", "p95": "2026-11-29T10:00:00+00:00"},
        "errors": [
            {
                "type": "overloaded_error",
                "count": 7,
                "examples": [{"custom_id": "doc-1", "message": "Overloaded <b>now</b>"}],
            }
        ],
        "started_at": "2026-11-29T01:00:00+00:00",
        "updated_at": "2026-11-29T04:00:00+00:00",
    }
    base.update(overrides)
    return base


def view(rec: dict[str, Any] | None, operator: str = "BatchSensor") -> TaskInstanceView:
    key = TaskInstanceKey("nightly", "manual__2026-11-29T00:00:00+00:00", "ready")
    return TaskInstanceView(key, "deferred", operator, NOW, None, rec, None)


def test_task_instance_tab_shows_the_whole_record() -> None:
    data = pages.task_instance_page(view(record()))
    assert data["progress"] == {"done": 987, "total": 1000, "percent": 98.7}
    assert data["deadline_status"] == "at risk"  # p95 after the deadline, p50 before
    html = pages.render("task_instance.html", d=data, json_url="/x")
    text = re.sub(r"<[^>]+>", "", html)
    assert "2 of 3" in text
    assert "succeeded 980" in text
    assert "errored 7" in text
    assert "pending 13" in text
    assert "$0.070000" in text
    assert "$0.140000" in text
    assert "at risk" in text
    assert "deadline 8h leaves room" in text
    assert "overloaded_error" in text
    assert "doc-1" in text
    # Record text is escaped, and only web URLs become links.
    assert "Overloaded &lt;b&gt;now&lt;/b&gt;" in html
    links = re.findall(r'class="tt-batch-link" href="([^"]+)"', html)
    assert links == ["https://console.anthropic.com/workspaces/default/batches/msgbatch_01"]
    assert "javascript:" not in html
    assert 'style="width: 98.7%"' in html


def test_a_task_that_is_not_tokentier_gets_one_line() -> None:
    data = pages.task_instance_page(view(None, operator="PythonOperator"))
    assert data["tokentier"] is False
    html = pages.render("task_instance.html", d=data, json_url="/x")
    assert "ready is not a tokentier task (PythonOperator)" in html
    assert "<h1>" not in html


def test_a_tokentier_task_before_its_first_record() -> None:
    html = pages.render("task_instance.html", d=pages.task_instance_page(view(None)), json_url="/x")
    assert "has not reported progress yet (state: deferred)" in html


@pytest.mark.parametrize(
    ("p50", "p95", "expected"),
    [("06:00", "08:00", "on track"), ("06:00", "10:00", "at risk"), ("10:00", "12:00", "late")],
)
def test_deadline_against_expected_finish(p50: str, p95: str, expected: str) -> None:
    rec = record(expected_finish={"p50": f"2026-11-29T{p50}:00+00:00", "p95": f"2026-11-29T{p95}:00+00:00"})
    assert pages.deadline_status(rec) == expected
    assert pages.deadline_status(record(deadline=None)) is None


def test_stored_values_parse_whatever_their_encoding() -> None:
    assert _as_mapping('{"a": 1}') == {"a": 1}
    assert _as_mapping('"{\\"a\\": 1}"') == {"a": 1}  # a JSON string holding JSON
    assert _as_mapping({"a": 1}) == {"a": 1}
    assert _as_mapping("not json") is None
    assert _as_mapping([1]) is None


def summary_row(
    dag: str, day: int, phase: str, cost: float, std: float, hours: float, model: str = "m"
) -> tuple:
    start = datetime(2026, 11, day, 1, tzinfo=timezone.utc)
    end = start + timedelta(hours=hours)
    day_iso = start.date().isoformat()
    return (
        dag,
        day_iso,
        "anthropic",
        model,
        phase,
        cost,
        std,
        std - cost,
        start.isoformat(),
        end.isoformat(),
    )


def test_summary_totals_count_landed_spend_once() -> None:
    rows = [
        summary_row("a", 27, "landed", 1.0, 2.0, 1),
        summary_row("a", 28, "landed", 2.0, 4.0, 3),
        summary_row("b", 28, "waiting", 9.0, 9.0, 5),  # in flight: counted, not billed yet
        summary_row("b", 28, "landed", 0.5, 1.0, 2, model="n"),
    ]
    summary = summarize(rows).as_dict()
    assert summary["overall"] == {
        "workloads": 4,
        "landed": 3,
        "cost_usd": 3.5,
        "standard_cost_usd": 7.0,
        "savings_usd": 3.5,
    }
    assert list(summary["by_day"]) == ["2026-11-28", "2026-11-27"]
    assert summary["by_day"]["2026-11-28"]["cost_usd"] == 2.5
    assert summary["by_dag"]["b"] == {
        "workloads": 2,
        "landed": 1,
        "cost_usd": 0.5,
        "standard_cost_usd": 1.0,
        "savings_usd": 0.5,
    }
    turnaround = {(t["model"], t["count"], t["p50_s"], t["p95_s"]) for t in summary["turnaround"]}
    assert turnaround == {("m", 2, 3600.0, 10800.0), ("n", 1, 7200.0, 7200.0)}


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 95) == 95.0
    assert percentile([7.0], 95) == 7.0


def test_workloads_page_rows_chart_and_pager() -> None:
    rows = [
        WorkloadRow("nightly", "run1", "ready", -1, "success", NOW, record(phase="landed")),
        WorkloadRow("nightly", "run1", "judge", 3, "deferred", NOW, record(provider="openai")),
    ]
    summary = summarize([summary_row("nightly", 29, "landed", 0.07, 0.14, 3)])
    flt = WorkloadFilter(dag_ids=["nightly"], provider="anthropic")
    data = pages.workloads_page(rows, summary, flt, page=1, page_size=1)
    first, second = data["workloads"]
    assert first["turnaround_s"] == 3 * 3600
    assert first["elapsed_s"] is None
    assert second["turnaround_s"] is None
    started = datetime.fromisoformat(record()["started_at"])
    assert second["elapsed_s"] >= (datetime.now(timezone.utc) - started).total_seconds() - 60
    assert second["tab_url"] == "/tokentier/ti/nightly/run1/judge?map_index=3"
    assert second["airflow_url"] == "/dags/nightly/runs/run1/tasks/judge/mapped/3"
    html = pages.workloads_html(data, summary, flt, ["nightly"])
    assert "<svg" in html
    assert "p50 3h00m" in html
    assert "nightly / judge[3]" in html
    assert 'href="?provider=anthropic&amp;page=2"' not in html  # one entry: no older page
    data["total_entries"] = 5
    assert "provider=anthropic&amp;page=2" in pages.workloads_html(data, summary, flt, ["nightly"])


def test_turnaround_chart_escapes_labels() -> None:
    summary = summarize([summary_row("d", 29, "landed", 1, 2, 1, model="<m>")])
    svg = turnaround_svg(summary.turnaround)
    assert "&lt;m&gt;" in svg
    assert "<m>" not in svg
    assert turnaround_svg([]) == ""


def test_plugin_is_declared_in_the_provider_info() -> None:
    (declared,) = get_provider_info()["plugins"]
    assert declared == {
        "name": "tokentier",
        "plugin-class": "airflow_provider_tokentier.plugins.TokentierPlugin",
    }
    assert [app["url_prefix"] for app in TokentierPlugin.fastapi_apps] == ["/tokentier"]
    destinations = {v["destination"]: v["href"] for v in TokentierPlugin.external_views}
    assert destinations == {"task_instance": TASK_INSTANCE_HREF, "nav": "/tokentier/workloads"}


def test_the_app_is_built_on_its_first_request_and_wants_a_user() -> None:
    from fastapi.testclient import TestClient

    from airflow_provider_tokentier.plugins import LazyApp

    with TestClient(LazyApp()) as client:
        assert client.get("/workloads").status_code == 401
        assert client.get("/api/ti/d/r/t", params={"map_index": "{MAP_INDEX}"}).status_code == 401
