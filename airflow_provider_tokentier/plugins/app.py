"""The plugin's FastAPI app, mounted by the api-server at ``/tokentier``.

HTML pages and their JSON twins:

- ``/ti/{dag_id}/{run_id}/{task_id}?map_index=N`` (``/api/ti/...``): one task instance;
- ``/workloads`` (``/api/workloads``): every tokentier task instance the user may read.

Access goes through Airflow's auth manager with Airflow's own dependencies: ``get_user`` (the
JWT from the ``Authorization`` header or the UI's session cookie; 401 without one) and
``requires_access_dag`` (403 for a DAG the user may not read). A mounted sub-app does not get
the api-server's ``app.state.auth_manager``, so nothing here uses ``AuthManagerDep``; the
module-level ``get_auth_manager()`` is the same instance.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from typing import Annotated, Any

from airflow.api_fastapi.app import get_auth_manager
from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
from airflow.api_fastapi.common.db.common import SessionDep
from airflow.api_fastapi.core_api.security import GetUserDep, requires_access_dag
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import HTMLResponse

from airflow_provider_tokentier.plugins import pages
from airflow_provider_tokentier.plugins.records import (
    TaskInstanceKey,
    WorkloadFilter,
    list_workloads,
    read_task_instance,
    summary_rows,
)
from airflow_provider_tokentier.plugins.summary import summarize

#: Rows per page of the workloads list (totals and percentiles cover every matching row).
PAGE_SIZE = 100

_read_ti = [Depends(requires_access_dag("GET", DagAccessEntity.TASK_INSTANCE))]


def _map_index(value: str | None) -> int:
    """``map_index`` from the query; Airflow's UI leaves ``{MAP_INDEX}`` as is for unmapped tasks."""
    try:
        return int(value) if value is not None else -1
    except ValueError:
        return -1


def _task_instance(session: Any, dag_id: str, run_id: str, task_id: str, map_index: str | None) -> Any:
    view = read_task_instance(session, TaskInstanceKey(dag_id, run_id, task_id, _map_index(map_index)))
    if view is None:
        raise HTTPException(404, f"No task instance {dag_id}/{run_id}/{task_id}")
    return view


def _day(value: str | None, *, end: bool = False) -> datetime | None:
    """Midnight UTC of a ``YYYY-MM-DD`` filter (the next midnight for the ``until`` bound)."""
    if not value:
        return None
    try:
        day = date.fromisoformat(value)
    except ValueError:
        raise HTTPException(400, f"since/until must be dates like 2026-11-29, got {value!r}") from None
    start = datetime(day.year, day.month, day.day, tzinfo=timezone.utc)
    return start + timedelta(days=1) if end else start


def _workloads(
    user: Any, session: Any, dag_id: str | None, state: str | None, provider: str | None,
    since: str | None, until: str | None, page: int,
) -> tuple[dict[str, Any], Any, WorkloadFilter, list[str]]:  # fmt: skip
    readable = sorted(get_auth_manager().get_authorized_dag_ids(user=user, method="GET"))
    flt = WorkloadFilter(
        dag_ids=readable,
        dag_id=dag_id or None,
        state=state or None,
        provider=provider or None,
        since=_day(since),
        until=_day(until, end=True),
    )
    rows = list_workloads(session, flt, PAGE_SIZE, (page - 1) * PAGE_SIZE)
    summary = summarize(summary_rows(session, flt))
    return pages.workloads_page(rows, summary, flt, page, PAGE_SIZE), summary, flt, readable


def create_app() -> FastAPI:
    """The FastAPI app the plugin registers (``fastapi_apps``)."""
    app = FastAPI(title="tokentier", description="LLM workload monitoring for Airflow", docs_url=None)

    @app.get("/ti/{dag_id}/{run_id}/{task_id}", response_class=HTMLResponse, dependencies=_read_ti)
    def task_instance_html(
        request: Request,
        dag_id: str,
        run_id: str,
        task_id: str,
        session: SessionDep,
        map_index: str | None = None,
    ) -> HTMLResponse:
        """The task-instance tab."""
        view = _task_instance(session, dag_id, run_id, task_id, map_index)
        json_url = pages.tab_url(dag_id, run_id, task_id, view.key.map_index).replace("/ti/", "/api/ti/", 1)
        return HTMLResponse(
            pages.render("task_instance.html", d=pages.task_instance_page(view), json_url=json_url)
        )

    @app.get("/api/ti/{dag_id}/{run_id}/{task_id}", dependencies=_read_ti)
    def task_instance_json(
        dag_id: str, run_id: str, task_id: str, session: SessionDep, map_index: str | None = None
    ) -> dict[str, Any]:
        """The task-instance tab's JSON twin."""
        return pages.task_instance_page(_task_instance(session, dag_id, run_id, task_id, map_index))

    @app.get("/workloads", response_class=HTMLResponse)
    def workloads_html(
        user: GetUserDep,
        session: SessionDep,
        dag_id: str | None = None,
        state: str | None = None,
        provider: str | None = None,
        since: str | None = None,
        until: str | None = None,
        page: Annotated[int, Query(ge=1)] = 1,
    ) -> HTMLResponse:
        """The "LLM workloads" page."""
        data, summary, flt, readable = _workloads(user, session, dag_id, state, provider, since, until, page)
        return HTMLResponse(pages.workloads_html(data, summary, flt, readable))

    @app.get("/api/workloads")
    def workloads_json(
        user: GetUserDep,
        session: SessionDep,
        dag_id: str | None = None,
        state: str | None = None,
        provider: str | None = None,
        since: str | None = None,
        until: str | None = None,
        page: Annotated[int, Query(ge=1)] = 1,
    ) -> dict[str, Any]:
        """The workloads page's JSON twin."""
        return _workloads(user, session, dag_id, state, provider, since, until, page)[0]

    return app
