"""Where a task instance keeps its durable state, and how it names itself in tags and logs."""

from __future__ import annotations

from typing import Any

from airflow.sdk import Context, ObjectStoragePath

from airflow_provider_tokentier.state.ledger import resolve_state_root, task_state_dir

#: The task_state_store key holding the task instance's state URI (visible in the UI too).
STATE_POINTER_KEY = "tokentier_state_uri"


def state_dir_for(context: Context, state_root: str | None) -> ObjectStoragePath:
    """``{state_root}/{dag_id}/{run_id}/{task_id}/{map_index}`` for the running task instance.

    Keyed by what stays the same across retries and clears -- never the try number -- so
    every try finds what the earlier ones recorded. Where Airflow has a ``task_state_store``
    (3.3+), the URI is also kept there: a later try then finds the state even if the
    ``state_root`` setting changed in between, and the UI shows where the state lives.
    """
    store = context.get("task_state_store")
    pointer = store.get(STATE_POINTER_KEY) if store is not None else None
    if isinstance(pointer, str) and pointer:
        return ObjectStoragePath(pointer)
    ti = context["ti"]
    path = task_state_dir(resolve_state_root(state_root), ti.dag_id, ti.run_id, ti.task_id, _map_index(ti))
    if store is not None:
        store.set(STATE_POINTER_KEY, str(path))
    return path


def task_key(context: Context) -> str:
    """A stable, human-readable name of the task instance, used in batch metadata tags."""
    ti = context["ti"]
    return f"{ti.dag_id}/{ti.run_id}/{ti.task_id}/{_map_index(ti)}"


def _map_index(ti: Any) -> int:
    index = getattr(ti, "map_index", -1)
    return -1 if index is None else int(index)
