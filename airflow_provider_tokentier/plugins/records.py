"""Read tokentier's progress records and results manifests from Airflow's metadata DB.

The api-server never reads ``state_root``: everything the plugin shows comes from the progress
record the worker writes (the task state store on Airflow >= 3.3, an XCom before), the results
manifest XCom (``return_value``) and Airflow's own task instance table. The workloads list is
two SQL statements whatever the number of task instances: one page of rows, and one pass of a
few fields (extracted by the database from the record's JSON) for the totals and turnarounds.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from airflow.models.taskinstance import TaskInstance
from airflow.models.xcom import XComModel
from sqlalchemy import JSON, String, and_, cast, func, select, type_coerce
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from airflow_provider_tokentier.core.progress import PROGRESS_KEY

#: Key of the results manifest XCom.
MANIFEST_KEY = "return_value"
#: Operators of this package (``TaskInstance.operator`` holds the class name).
TOKENTIER_OPERATORS = frozenset(
    {"BatchSubmitOperator", "BatchSensor", "TieredInferenceOperator", "FlexOperator", "StandardOperator"}
)

#: The operator whose records the workloads list leaves to the sensor that follows it.
SUBMIT_OPERATOR = "BatchSubmitOperator"

try:  # Airflow >= 3.3
    from airflow.models.task_state_store import TaskStateStoreModel as _StoreModel
except ImportError:  # pragma: no cover - Airflow 3.1/3.2: the record is an XCom
    _StoreModel = None  # type: ignore[assignment,misc]


@dataclass(frozen=True)
class TaskInstanceKey:
    """Which task instance a view is about."""

    dag_id: str
    run_id: str
    task_id: str
    map_index: int = -1


@dataclass
class TaskInstanceView:
    """What the task-instance tab shows: the TI's own columns, its record and its manifest."""

    key: TaskInstanceKey
    state: str | None
    operator: str | None
    start_date: datetime | None
    end_date: datetime | None
    record: dict[str, Any] | None
    manifest: dict[str, Any] | None

    @property
    def is_tokentier(self) -> bool:
        """A task of this package, or one (a subclass, say) that wrote a progress record."""
        return self.record is not None or (self.operator or "") in TOKENTIER_OPERATORS


def _as_mapping(value: Any) -> dict[str, Any] | None:
    """The stored value as a dict (tolerates a JSON string inside the JSON), else ``None``."""
    if isinstance(value, (str, bytes)):
        try:
            value = json.loads(value)
        except ValueError:
            return None
        if isinstance(value, str):
            return _as_mapping(value)
    return value if isinstance(value, dict) else None


def _xcom_value(session: Session, key: TaskInstanceKey, xcom_key: str) -> Any:
    return session.scalar(
        select(XComModel.value).where(
            XComModel.dag_id == key.dag_id,
            XComModel.run_id == key.run_id,
            XComModel.task_id == key.task_id,
            XComModel.map_index == key.map_index,
            XComModel.key == xcom_key,
        )
    )


def read_progress(session: Session, key: TaskInstanceKey) -> dict[str, Any] | None:
    """The task instance's progress record: the task state store first, then the XCom."""
    if _StoreModel is not None:
        stored = session.scalar(
            select(_StoreModel.value).where(
                _StoreModel.dag_id == key.dag_id,
                _StoreModel.run_id == key.run_id,
                _StoreModel.task_id == key.task_id,
                _StoreModel.map_index == key.map_index,
                _StoreModel.key == PROGRESS_KEY,
            )
        )
        if stored is not None:
            return _as_mapping(stored)
    return _as_mapping(_xcom_value(session, key, PROGRESS_KEY))


def read_task_instance(session: Session, key: TaskInstanceKey) -> TaskInstanceView | None:
    """Everything the task-instance tab needs, or ``None`` if there is no such task instance."""
    row = session.execute(
        select(
            TaskInstance.state, TaskInstance.operator, TaskInstance.start_date, TaskInstance.end_date
        ).where(
            TaskInstance.dag_id == key.dag_id,
            TaskInstance.run_id == key.run_id,
            TaskInstance.task_id == key.task_id,
            TaskInstance.map_index == key.map_index,
        )
    ).first()
    if row is None:
        return None
    manifest = _as_mapping(_xcom_value(session, key, MANIFEST_KEY))
    return TaskInstanceView(
        key=key,
        state=None if row.state is None else str(row.state),
        operator=row.operator,
        start_date=row.start_date,
        end_date=row.end_date,
        record=read_progress(session, key),
        # The submit operator returns a submission, not results: only a manifest has results_uri.
        manifest=manifest if manifest is not None and "results_uri" in manifest else None,
    )


# -- the workloads list --------------------------------------------------------------------------


@dataclass(frozen=True)
class WorkloadFilter:
    """What the workloads page is asked for; ``dag_ids`` are the DAGs the user may read."""

    dag_ids: Collection[str]
    dag_id: str | None = None
    state: str | None = None
    provider: str | None = None
    since: datetime | None = None
    until: datetime | None = None


#: Fields the summary statement extracts from the record's JSON (path, SQL type).
SUMMARY_FIELDS: dict[str, tuple[tuple[str, ...], str]] = {
    "provider": (("provider",), "str"),
    "model": (("model",), "str"),
    "phase": (("phase",), "str"),
    "cost_usd": (("cost_usd",), "float"),
    "standard_cost_usd": (("standard_cost_usd",), "float"),
    "savings_usd": (("savings_usd",), "float"),
    "started_at": (("started_at",), "str"),
    "updated_at": (("updated_at",), "str"),
}


def _record_source() -> tuple[Any, Any, ColumnElement[bool]]:
    """(table, its JSON value column, the condition selecting progress records)."""
    if _StoreModel is not None:
        return _StoreModel, _StoreModel.value, _StoreModel.key == PROGRESS_KEY
    return XComModel, XComModel.value, XComModel.key == PROGRESS_KEY  # pragma: no cover


def _json_field(value: Any, path: tuple[str, ...], kind: str, dialect: str) -> ColumnElement[Any]:
    """``value`` (JSON text) at ``path``, extracted by the database, typed ``kind``."""
    # PostgreSQL stores the task state store's value as TEXT: it must be cast to JSON to be
    # indexed; SQLite and MySQL index JSON text as it is.
    doc = cast(value, postgresql.JSON) if dialect == "postgresql" else type_coerce(value, JSON)
    element = doc[path if len(path) > 1 else path[0]]
    if kind == "float":
        return element.as_float()
    if kind == "int":
        return element.as_integer()
    return element.as_string()


def _base_query(columns: Sequence[Any], flt: WorkloadFilter, dialect: str) -> Any:
    store, value, is_record = _record_source()
    stmt = (
        select(*columns)
        .select_from(TaskInstance)
        .join(
            store,
            and_(
                store.dag_id == TaskInstance.dag_id,
                store.run_id == TaskInstance.run_id,
                store.task_id == TaskInstance.task_id,
                store.map_index == TaskInstance.map_index,
                is_record,
            ),
        )
        .where(TaskInstance.dag_id.in_(sorted(flt.dag_ids)))
        # A submit/sensor pair is one workload: its sensor's record carries it from submission on.
        # (Airflow's own column rather than the record's field: no record is parsed to filter.)
        .where(func.coalesce(TaskInstance.operator, "") != SUBMIT_OPERATOR)
    )
    if flt.dag_id:
        stmt = stmt.where(TaskInstance.dag_id == flt.dag_id)
    if flt.state:
        stmt = stmt.where(TaskInstance.state == flt.state)
    if flt.provider:
        stmt = stmt.where(_json_field(value, ("provider",), "str", dialect) == flt.provider)
    if flt.since is not None:
        stmt = stmt.where(TaskInstance.start_date >= flt.since)
    if flt.until is not None:
        stmt = stmt.where(TaskInstance.start_date < flt.until)
    return stmt


@dataclass
class WorkloadRow:
    """One task instance on the workloads page."""

    dag_id: str
    run_id: str
    task_id: str
    map_index: int
    state: str | None
    start_date: datetime | None
    record: dict[str, Any]


def list_workloads(session: Session, flt: WorkloadFilter, limit: int, offset: int = 0) -> list[WorkloadRow]:
    """One page of tokentier task instances, newest first (one SQL statement)."""
    if not flt.dag_ids:
        return []
    _store, value, _ = _record_source()
    dialect = session.get_bind().dialect.name
    stmt = (
        _base_query(
            [
                TaskInstance.dag_id,
                TaskInstance.run_id,
                TaskInstance.task_id,
                TaskInstance.map_index,
                TaskInstance.state,
                TaskInstance.start_date,
                value,
            ],
            flt,
            dialect,
        )
        .order_by(TaskInstance.start_date.desc(), TaskInstance.dag_id, TaskInstance.task_id)
        .limit(limit)
        .offset(offset)
    )
    return [
        WorkloadRow(
            dag_id=row[0],
            run_id=row[1],
            task_id=row[2],
            map_index=row[3],
            state=None if row[4] is None else str(row[4]),
            start_date=row[5],
            record=_as_mapping(row[6]) or {},
        )
        for row in session.execute(stmt)
    ]


def _start_day(dialect: str) -> ColumnElement[str]:
    """The task's start day in UTC as ``YYYY-MM-DD``, computed by the database.

    SQLite keeps the UTC time as text: cut it, so no row goes through a datetime conversion.
    PostgreSQL's ``timestamptz`` is converted to UTC explicitly (the session's time zone is the
    server's); Airflow sets MySQL sessions to UTC, so the date of the value is the UTC day.
    """
    if dialect == "sqlite":
        return func.substr(type_coerce(TaskInstance.start_date, String), 1, 10)
    if dialect == "postgresql":
        return func.to_char(func.timezone("UTC", TaskInstance.start_date), "YYYY-MM-DD")
    return cast(func.date(TaskInstance.start_date), String)


def summary_rows(session: Session, flt: WorkloadFilter) -> list[tuple[Any, ...]]:
    """``(dag_id, start day, *SUMMARY_FIELDS)`` of every matching record (one SQL statement).

    The database extracts the fields from the JSON. On SQLite one ``json_extract`` call with
    every path parses each record once (a field per call would parse it once per field) and
    answers a small JSON array per row.
    """
    if not flt.dag_ids:
        return []
    _store, value, _ = _record_source()
    dialect = session.get_bind().dialect.name
    if dialect == "sqlite":
        paths = ["$." + ".".join(path) for path, _kind in SUMMARY_FIELDS.values()]
        stmt = _base_query(
            [TaskInstance.dag_id, _start_day(dialect), func.json_extract(value, *paths)], flt, dialect
        )
        return [(dag_id, start, *json.loads(fields)) for dag_id, start, fields in session.execute(stmt)]
    fields = [_json_field(value, path, kind, dialect) for path, kind in SUMMARY_FIELDS.values()]
    stmt = _base_query([TaskInstance.dag_id, _start_day(dialect), *fields], flt, dialect)
    return [tuple(row) for row in session.execute(stmt)]
