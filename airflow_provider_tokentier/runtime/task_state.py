"""Where a task instance keeps its durable state, and how it names itself in tags and logs."""

from __future__ import annotations

from typing import Any

from airflow.sdk import Context, ObjectStoragePath

from airflow_provider_tokentier.runtime.settings import refuse_local_state
from airflow_provider_tokentier.state.ledger import resolve_state_root, storage_path, task_state_dir

#: The task_state_store key holding the task instance's state URI (visible in the UI too).
STATE_POINTER_KEY = "tokentier_state_uri"


def state_dir_for(context: Context, state_root: str | None) -> ObjectStoragePath:
    """``{state_root}/{dag_id}/{run_id}/{task_id}/{map_index}`` for the running task instance.

    Keyed by what stays the same across retries and clears -- never the try number -- so
    every try finds what the earlier ones recorded. Where Airflow has a ``task_state_store``
    (3.3+), the URI is also kept there: a later try then finds the state even if the
    ``state_root`` setting changed in between, and the UI shows where the state lives.

    Raises `~airflow_provider_tokentier.exceptions.LocalStateError` first when the DAG's tokentier
    tasks would keep state on local disk under a multi-machine executor (see
    `check_shared_state`).
    """
    check_shared_state(context)
    store = context.get("task_state_store")
    pointer = store.get(STATE_POINTER_KEY) if store is not None else None
    if isinstance(pointer, str) and pointer:
        return storage_path(pointer)
    ti = context["ti"]
    path = task_state_dir(resolve_state_root(state_root), ti.dag_id, ti.run_id, ti.task_id, _map_index(ti))
    if store is not None:
        store.set(STATE_POINTER_KEY, str(path))
    return path


def check_shared_state(context: Any) -> None:
    """Refuse local state for every tokentier task of the DAG under a multi-machine executor.

    Checked by whichever tokentier task runs first, before anything is paid: a sensor's local
    ``results_uri`` or ``state_root`` is refused at the submit task already. Values still
    holding a Jinja template are checked when their own task runs, rendered.
    """
    task = context.get("task")
    dag = context.get("dag") or getattr(task, "dag", None)
    tasks = {t.task_id: t for t in (dag.tasks if dag is not None else [])}
    if task is not None:
        tasks[task.task_id] = task  # the running task's fields are rendered
    default_root = str(resolve_state_root(None))
    locations: dict[str, str] = {}
    for task_id, candidate in tasks.items():
        if not _is_tokentier_task(candidate):
            continue
        for field in ("state_root", "results_uri"):
            value = _task_argument(candidate, field)
            if field == "state_root" and not value:
                value = default_root
            if isinstance(value, str) and value and "{{" not in value:
                locations[f"{field} of task {task_id!r}"] = value
    refuse_local_state(locations)


def _is_tokentier_task(task: Any) -> bool:
    operator_class = getattr(task, "operator_class", None) or type(task)
    module = operator_class if isinstance(operator_class, str) else operator_class.__module__
    return str(module).startswith("airflow_provider_tokentier.")


def _task_argument(task: Any, name: str) -> Any:
    partial = getattr(task, "partial_kwargs", None)  # a mapped task keeps its arguments here
    if isinstance(partial, dict) and name in partial:
        return partial[name]
    return getattr(task, name, None)


def task_key(context: Context) -> str:
    """A stable, human-readable name of the task instance, used in batch metadata tags."""
    ti = context["ti"]
    return f"{ti.dag_id}/{ti.run_id}/{ti.task_id}/{_map_index(ti)}"


def _map_index(ti: Any) -> int:
    index = getattr(ti, "map_index", -1)
    return -1 if index is None else int(index)
