"""Where the progress record goes: the task state store when Airflow has one (3.3+), else XCom."""

from __future__ import annotations

from typing import Any

from airflow_provider_tokentier.core.progress import PROGRESS_KEY, ProgressRecord
from airflow_provider_tokentier.runtime.progress import publish_progress

RECORD = ProgressRecord(operator="BatchSensor", provider="openai", tier="batch", phase="waiting", round=1)


class _Store:
    def __init__(self) -> None:
        self.values: dict[str, Any] = {}

    def set(self, key: str, value: Any) -> None:
        self.values[key] = value


class _TaskInstance:
    def __init__(self) -> None:
        self.pushed: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.pushed[key] = value


def test_airflow_with_a_task_state_store_gets_the_record_there_and_not_in_xcom():
    store, ti = _Store(), _TaskInstance()
    written = publish_progress({"task_state_store": store, "ti": ti}, RECORD)
    assert store.values == {PROGRESS_KEY: written}
    assert ti.pushed == {}
    assert written["phase"] == "waiting"
    assert written["schema_version"] == 1


def test_airflow_without_one_gets_the_record_as_xcom():
    ti = _TaskInstance()
    written = publish_progress({"ti": ti}, RECORD)
    assert ti.pushed == {PROGRESS_KEY: written}
