"""What the plugin's pages show, as plain data (the JSON twins) and as HTML (Jinja2 templates).

`task_instance_page` and `workloads_page` turn what `records` read into one dict each: the JSON
answer as it is, and the context of the HTML template. Nothing here touches the database.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from jinja2 import Environment, FileSystemLoader, select_autoescape

from airflow_provider_tokentier.core.links import PLUGIN_MOUNT, task_instance_view_url
from airflow_provider_tokentier.core.log_format import duration, usd
from airflow_provider_tokentier.plugins.records import TaskInstanceView, WorkloadFilter, WorkloadRow
from airflow_provider_tokentier.plugins.summary import (
    Summary,
    parse_time,
    turnaround_seconds,
    turnaround_svg,
)

#: Where the plugin is mounted on the api-server.
URL_PREFIX = PLUGIN_MOUNT

_TEMPLATES = Environment(
    loader=FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=select_autoescape(["html"]),
    trim_blocks=True,
    lstrip_blocks=True,
)


def _money(value: Any) -> str:
    """USD as the task logs print it (a record is data: anything not a number is unknown)."""
    return usd(float(value)) if isinstance(value, (int, float)) else usd(None)


def _safe_url(value: Any) -> str | None:
    """Only web links become ``href``s (a record is data, never a ``javascript:`` URL)."""
    return value if isinstance(value, str) and value.startswith(("https://", "http://")) else None


def _when(value: Any) -> str:
    """``2026-11-29 06:00 UTC`` for an ISO timestamp (as it is if it does not parse)."""
    parsed = parse_time(value)
    if parsed is None:
        return value if isinstance(value, str) else ""
    if parsed.utcoffset() is not None:
        return parsed.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return parsed.strftime("%Y-%m-%d %H:%M")


def _nonzero(counts: Any) -> list[tuple[str, Any]]:
    """A batch's counts without the zeros (``processing 4`` rather than five outcomes of 0)."""
    return [(k, v) for k, v in counts.items() if v] if isinstance(counts, dict) else []


_TEMPLATES.filters.update(nonzero=_nonzero, money=_money, duration=duration, safe_url=_safe_url, when=_when)

#: Row outcomes in the order the tab lists them.
COUNT_KEYS = ("succeeded", "errored", "expired", "canceled", "missing", "skipped_budget", "pending")


def render(template: str, **context: Any) -> str:
    """Render one of the plugin's templates."""
    return _TEMPLATES.get_template(template).render(prefix=URL_PREFIX, **context)


def airflow_ti_url(dag_id: str, run_id: str, task_id: str, map_index: int) -> str:
    """The task instance's page in Airflow's own UI."""
    path = f"/dags/{quote(dag_id, safe='')}/runs/{quote(run_id, safe='')}/tasks/{quote(task_id, safe='')}"
    return f"{path}/mapped/{map_index}" if map_index >= 0 else path


def tab_url(dag_id: str, run_id: str, task_id: str, map_index: int) -> str:
    """This plugin's task-instance view, relative to the api-server (as the "tokentier" extra link)."""
    return task_instance_view_url("", dag_id, run_id, task_id, map_index)


def progress(record: dict[str, Any]) -> dict[str, Any]:
    """Finished rows out of all rows, from the record's ``totals``."""
    totals = record.get("totals") or {}
    total = totals.get("total") or 0
    pending = totals.get("pending")
    done = sum(
        int(totals.get(k) or 0)
        for k in ("succeeded", "errored", "expired", "canceled", "missing", "skipped_budget")
    )
    if isinstance(pending, int) and total:
        done = max(done, total - pending)
    percent = round(100.0 * done / total, 1) if total else (100.0 if record.get("phase") == "landed" else 0.0)
    return {"done": done, "total": total, "percent": min(percent, 100.0)}


def deadline_status(record: dict[str, Any]) -> str | None:
    """``on track`` / ``at risk`` (p95 after the deadline) / ``late`` (p50 after it), or ``None``."""
    deadline = parse_time(record.get("deadline"))
    expected = record.get("expected_finish") or {}
    p50, p95 = parse_time(expected.get("p50")), parse_time(expected.get("p95"))
    if deadline is None or (p50 is None and p95 is None):
        return None
    try:
        if p50 is not None and p50 > deadline:
            return "late"
        if p95 is not None and p95 > deadline:
            return "at risk"
    except TypeError:  # one naive, one aware timestamp: nothing sensible to compare
        return None
    return "on track"


def counts(record: dict[str, Any], manifest: dict[str, Any]) -> list[tuple[str, int]]:
    """Rows per outcome: the record's totals, else the manifest's counts; unknown ones left out."""
    source = record.get("totals") or manifest.get("counts") or {}
    return [(k, source[k]) for k in COUNT_KEYS if isinstance(source.get(k), int)]


def task_instance_page(view: TaskInstanceView) -> dict[str, Any]:
    """The JSON twin of the task-instance tab (also the template's context)."""
    key = view.key
    record = view.record or {}
    return {
        "dag_id": key.dag_id,
        "run_id": key.run_id,
        "task_id": key.task_id,
        "map_index": key.map_index,
        "state": view.state,
        "operator": view.operator,
        "tokentier": view.is_tokentier,
        "record": view.record,
        "manifest": view.manifest,
        "counts": counts(record, view.manifest or {}),
        "progress": progress(record) if view.record else None,
        "deadline_status": deadline_status(record) if view.record else None,
        "airflow_url": airflow_ti_url(key.dag_id, key.run_id, key.task_id, key.map_index),
    }


def _row(row: WorkloadRow) -> dict[str, Any]:
    rec = row.record
    totals = rec.get("totals") or {}
    landed = rec.get("phase") == "landed"
    # A landed workload's turnaround is submission to landing; one in flight has been waiting since.
    end = rec.get("updated_at") if landed else datetime.now(timezone.utc).isoformat()
    seconds = turnaround_seconds(rec.get("started_at"), end)
    return {
        "dag_id": row.dag_id,
        "run_id": row.run_id,
        "task_id": row.task_id,
        "map_index": row.map_index,
        "state": row.state,
        "start_date": row.start_date.isoformat() if isinstance(row.start_date, datetime) else None,
        "operator": rec.get("operator"),
        "provider": rec.get("provider"),
        "model": rec.get("model"),
        "tier": rec.get("tier"),
        "phase": rec.get("phase"),
        "round": rec.get("round"),
        "max_rounds": rec.get("max_rounds"),
        "counts": {k: totals.get(k) for k in ("total", "succeeded", "errored", "expired", "pending")},
        "cost_usd": rec.get("cost_usd"),
        "standard_cost_usd": rec.get("standard_cost_usd"),
        "savings_usd": rec.get("savings_usd"),
        "deadline": rec.get("deadline"),
        "expected_finish": (rec.get("expected_finish") or {}).get("p50"),
        "turnaround_s": seconds if landed else None,
        "elapsed_s": None if landed else seconds,
        "tab_url": tab_url(row.dag_id, row.run_id, row.task_id, row.map_index),
        "airflow_url": airflow_ti_url(row.dag_id, row.run_id, row.task_id, row.map_index),
    }


def filter_query(flt: WorkloadFilter, **overrides: Any) -> str:
    """The query string of the page for ``flt`` (and e.g. another ``page``)."""
    params = {
        "dag_id": flt.dag_id,
        "state": flt.state,
        "provider": flt.provider,
        "since": flt.since.date().isoformat() if flt.since else None,
        "until": flt.until.date().isoformat() if flt.until else None,
        **overrides,
    }
    return urlencode({k: v for k, v in params.items() if v not in (None, "")})


def workloads_page(
    rows: list[WorkloadRow], summary: Summary, flt: WorkloadFilter, page: int, page_size: int
) -> dict[str, Any]:
    """The JSON twin of the workloads page (the template adds the chart and the pager)."""
    total = summary.overall.workloads
    return {
        "filter": {
            "dag_id": flt.dag_id,
            "state": flt.state,
            "provider": flt.provider,
            "since": flt.since.isoformat() if flt.since else None,
            "until": flt.until.isoformat() if flt.until else None,
        },
        "page": page,
        "page_size": page_size,
        "total_entries": total,
        "summary": summary.as_dict(),
        "workloads": [_row(r) for r in rows],
    }


def workloads_html(data: dict[str, Any], summary: Summary, flt: WorkloadFilter, dag_ids: list[str]) -> str:
    """The workloads page as HTML."""
    page, size, total = data["page"], data["page_size"], data["total_entries"]
    return render(
        "workloads.html",
        data=data,
        chart=turnaround_svg(summary.turnaround),
        dag_ids=dag_ids,
        prev_query=filter_query(flt, page=page - 1) if page > 1 else None,
        next_query=filter_query(flt, page=page + 1) if page * size < total else None,
        json_query=filter_query(flt, page=page),
    )
